"""The producer end of a ring: write batches, never block unless asked to wait.

    p = Producer(namespace, "shard-0.requests", COMMAND_DTYPE)
    n = p.write(batch)            # the first n records of batch are published
    if n < len(batch): ...        # the ring is full: answer "busy", or p.wait_writable()

Zero-copy alternative: ``view = p.claim(k)`` gives up to k free slots (fewer at
the end of the slot array), fill them, then ``p.publish(len(view))``.

Compiled code uses ``shm.ring_ops`` on ``p.header`` / ``p.words`` with
``p.wake_fd`` as the bell to ring.
"""

from contextlib import contextmanager

import numpy as np

from shm import ring_ops as ops
from shm.atomics import exchange_word, load_word
from shm.ring import RingEnd, check_count


class Producer(RingEnd):
    SIDE = ops.PRODUCER

    @contextmanager
    def unasked(self):
        """Around writing records no consumer asked for, only while one reads (a shard's
        own commands' events): yields whether a consumer is attached. Marked in the
        header first (a full barrier), so a consumer leaving (``Consumer.leave``) either
        is seen gone here or waits until what was decided is written."""
        exchange_word(self.header, ops.H_PRODUCER_UNASKED, 1)
        try:
            yield self.peer_alive()
        finally:
            exchange_word(self.header, ops.H_PRODUCER_UNASKED, 0)

    def writable(self) -> int:
        """How many records a write could take now (non-blocking)."""
        return int(ops.writable(self.header))

    def write(self, batch: np.ndarray) -> int:
        """Publish the longest prefix of ``batch`` that fits; return its length.

        Never blocks and never drops: the records after the returned count were
        not written and are still the caller's.
        """
        if not isinstance(batch, np.ndarray) or batch.dtype != self.dtype or batch.ndim != 1:
            raise ValueError(
                f"write expects a 1-d array of the ring's dtype {self.dtype}, got "
                f"{getattr(batch, 'dtype', type(batch).__name__)} "
                f"with shape {getattr(batch, 'shape', None)}"
            )
        if batch.shape[0] == 0:
            return 0
        rows = np.ascontiguousarray(batch).view(np.int64).reshape(batch.shape[0], -1)
        return int(ops.push(self.header, self.words, rows, self.wake_fd))

    def unconsumed(self) -> np.ndarray:
        """A copy of the records published and not yet released, oldest first: what an
        earlier producer left for the consumer. Their slots are not the producer's to
        reuse until released, so they cannot change under the copy."""
        released = int(load_word(self.header, ops.H_RELEASED))
        published = int(load_word(self.header, ops.H_PUBLISHED))
        return self.records[np.arange(released, published) & (self.capacity - 1)]

    def claim(self, max_n: int) -> np.ndarray:
        """A view of up to ``max_n`` free slots to fill in place, then ``publish``."""
        slot, n = ops.write_span(self.header, check_count(max_n, "claim"))
        return self.records[slot : slot + n]

    def publish(self, n: int) -> None:
        """Expose the next ``n`` filled slots (from ``claim``) to the consumer."""
        ops.publish(self.header, check_count(n, "publish"), self.wake_fd)

    def wait_writable(self, want: int = 1, timeout: float | None = None) -> int:
        """Wait until ``want`` slots are free (the end's ``wait_strategy``: spin, back off,
        sleep; or spin only); return the free count."""
        want = check_count(want, "wait_writable")
        if want > self.capacity:
            raise ValueError(f"wait_writable({want}) can never succeed: capacity {self.capacity}")
        return self.wait_strategy.wait_for(
            self.header, ops.PRODUCER, want, self._sleep_bell, timeout
        )

    def prepare_sleep(self) -> int:
        """Before sleeping on ``fileno()`` elsewhere (a poller): announce it.

        Returns the free slots; sleep only if that is not enough, then call
        ``finish_sleep`` whatever woke you.
        """
        return int(ops.sleep_begin(self.header, ops.PRODUCER))

    def finish_sleep(self) -> None:
        self._sleep_bell.drain()
        ops.sleep_end(self.header, ops.PRODUCER)
