"""The consumer end of a ring: look at batches in place, release them when done.

    c = Consumer(namespace, "shard-0.requests", COMMAND_DTYPE)
    c.wait(timeout=1.0)           # spin, back off, sleep on the doorbell (or spin only)
    view = c.peek(1024)           # up to 1024 records, in place (fewer at the wrap)
    ...                           # process, journal, publish the results
    c.release(len(view))          # only now may the producer reuse those slots

Records stay in the ring until released, so a consumer killed mid-batch is
restarted at the first unreleased record. ``read(n)`` copies and releases at
once, for a consumer that needs no such guarantee.

To wait inside another poll loop: register ``fileno()``; before polling, call
``prepare_sleep()`` and poll only if it returned 0; after polling, call
``finish_sleep()``.
"""

import time

import numpy as np

from shm import ring_ops as ops
from shm.atomics import load_word, swap_word
from shm.ring import RingEnd, check_count

LEAVE_POLL_SECONDS = 0.001


class Consumer(RingEnd):
    SIDE = ops.CONSUMER

    def readable(self) -> int:
        return int(ops.readable(self.header))

    def leave(self, timeout: float) -> bool:
        """Stop being this ring's consumer for the producer (``peer_alive`` says no), but
        go on reading what is in it until ``close``: first wait until the producer has
        written the records it decided to write unasked while this side was attached
        (``Producer.unasked``), so a read after this returns misses none of them.
        False if that wait ran out (a producer stuck or gone mid-write)."""
        swap_word(self.header, ops.H_CONSUMER, self._token, 0)  # a full barrier
        deadline = time.monotonic() + timeout
        while load_word(self.header, ops.H_PRODUCER_UNASKED) and self.peer_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(LEAVE_POLL_SECONDS)
        return True

    def peek(self, max_n: int) -> np.ndarray:
        """A read-only view of up to ``max_n`` unreleased records, oldest first.

        Valid until those records are released. The view stops at the end of
        the slot array; the records after it come with the next peek.
        """
        slot, n = ops.read_span(self.header, check_count(max_n, "peek"))
        view = self.records[slot : slot + n]
        view.flags.writeable = False
        return view

    def release(self, n: int) -> None:
        """Hand the oldest ``n`` unreleased records' slots back to the producer."""
        ops.release(self.header, check_count(n, "release"), self.wake_fd)

    def read(self, max_n: int) -> np.ndarray:
        """A copy of up to ``max_n`` records (across the wrap), released at once."""
        out = np.empty(check_count(max_n, "read"), self.dtype)
        rows = out.view(np.int64).reshape(out.shape[0], self.dtype.itemsize // 8)
        n = ops.pull(self.header, self.words, rows, self.wake_fd)
        return out[:n]

    def wait(self, timeout: float | None = None) -> int:
        """Wait until records are readable (the end's ``wait_strategy``: spin, back off,
        sleep; or spin only); return how many."""
        return self.wait_strategy.wait_for(self.header, ops.CONSUMER, 1, self._sleep_bell, timeout)

    def prepare_sleep(self) -> int:
        """Announce a sleep on ``fileno()``; returns the readable count (sleep only if 0)."""
        return int(ops.sleep_begin(self.header, ops.CONSUMER))

    def finish_sleep(self) -> None:
        self._sleep_bell.drain()
        ops.sleep_end(self.header, ops.CONSUMER)
