"""How a ring end waits for the other side: the wait strategies, in the Disruptor's words.

``SLEEPING`` (config ``wait = "sleep"``, the default): spin a few tens of
microseconds, yield the CPU a few times, then announce a sleep and block on
the ring's doorbell, which the other side rings at its next publish/release
(``shm.backoff``). An idle process costs nothing and a sleeping one wakes
within a scheduler wake-up (tens of microseconds, more on a loaded machine).
Right wherever processes share cores, which is the machine this was written on.

``SPINNING`` (``wait = "spin"``): busy-wait on the other side's cursor
(PAUSE-paced polls), never announce a sleep; so the other side never rings a
doorbell, and neither side makes a system call to hand work over. It answers
within a cache-line transfer, and burns its core at 100 % even with nothing to
do: only for a process pinned to a core of its own (``cpus`` in the config),
where that core has nothing else to run. Spinning on a shared core takes the
CPU from the very process it waits for.

A strategy is stateless; an end (``shm.consumer``, ``shm.producer``) holds the
one it was given and uses it in ``wait`` / ``wait_writable``. Loops that wait
on something else besides (the gateway's sockets) read ``spins`` and do the
same themselves (``gateway.loops``).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from shm import backoff
from shm import ring_ops as ops

SPIN_CHUNK = 2000  # PAUSE-paced polls between two looks at the clock: about 20-60 us


def _spin_for(hdr, side: int, want: int, bell, timeout: float | None) -> int:
    """Poll the cursors until ``want`` are available or ``timeout`` seconds pass; never
    sleeps, so never asks to be rung. Python runs signal handlers between chunks."""
    if timeout is not None and timeout <= 0:
        return ops.available(hdr, side)
    n = ops.spin(hdr, side, want, SPIN_CHUNK)
    if n >= want:
        return n
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        n = ops.spin(hdr, side, want, SPIN_CHUNK)
        if n >= want or (deadline is not None and time.monotonic() >= deadline):
            return n


@dataclass(frozen=True)
class WaitStrategy:
    name: str  # as in the config
    spins: bool  # never sleeps: busy-waits instead
    # (header, side, want, the bell this end sleeps on, timeout) -> what is available
    wait_for: Callable[..., int]


SLEEPING = WaitStrategy("sleep", False, backoff.wait_for)
SPINNING = WaitStrategy("spin", True, _spin_for)
STRATEGIES = {s.name: s for s in (SLEEPING, SPINNING)}


def strategy(name: str) -> WaitStrategy:
    """The strategy the config calls ``name`` ("sleep" or "spin")."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"no wait strategy {name!r}; one of {sorted(STRATEGIES)}") from None
