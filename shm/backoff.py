"""How an end waits for the other: spin briefly, back off, then sleep on a doorbell.

Spinning answers in well under a microsecond but burns a core, and the
machines here have two cores shared by the gateway, the shards and the bots.
So a waiter spins for a few tens of microseconds (covering the gaps inside a
burst), then yields the CPU a few times (letting the other side run if it is
on our core), then announces it is going to sleep and blocks on its doorbell,
which the other side rings at its next publish/release. An idle waiter thus
costs nothing, and a sleeping one wakes within a scheduler wake-up (tens of
microseconds).
"""

import os
import time

from shm import ring_ops as ops

SPIN_ROUNDS = 2000  # PAUSE-paced polls: about 20-60 us, depending on the CPU
YIELD_ROUNDS = 20


def wait_for(hdr, side: int, want: int, bell, timeout: float | None) -> int:
    """Wait until ``side`` has ``want`` records/slots available or ``timeout`` seconds pass.

    Returns what is available then (possibly less than ``want`` on timeout).
    ``timeout`` None waits forever; 0 only looks.
    """
    if timeout is not None and timeout <= 0:
        return ops.available(hdr, side)
    n = ops.spin(hdr, side, want, SPIN_ROUNDS)
    for _ in range(YIELD_ROUNDS):
        if n >= want:
            return n
        os.sched_yield()
        n = ops.available(hdr, side)
    deadline = None if timeout is None else time.monotonic() + timeout
    while n < want:
        n = ops.sleep_begin(hdr, side)
        if n < want:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                ops.sleep_end(hdr, side)
                return n
            bell.sleep(remaining)
            bell.drain()
        ops.sleep_end(hdr, side)
        n = ops.available(hdr, side)
        if deadline is not None and time.monotonic() >= deadline:
            break
    return n
