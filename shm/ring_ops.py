"""The ring's header layout and its operations as ``@njit`` functions over numpy arrays.

A ring is one shared segment: a 4096-byte header of int64 words, then
``capacity`` fixed-size record slots. Cursors are absolute record counts that
only grow (2**63 records outlast the machine); slot = cursor & (capacity - 1).
The producer owns ``published``, the consumer owns ``released``; each lives on
its own 64-byte cache line so the two sides do not invalidate each other's line
on every update, and each is written as one atomic aligned 8-byte store.

Ordering: records are written, then ``published`` is stored with release
semantics; the consumer loads ``published`` with acquire semantics before it
reads the records. Symmetrically the consumer reads the records before storing
``released`` with release semantics, so the producer never overwrites a slot
still being read.

Doorbells (Dekker-style, so no wake-up is lost): a side about to sleep sets its
``*_sleeping`` flag, fences, and checks the cursors once more; the other side
stores its cursor, fences, and rings only if it sees the flag (clearing it, so
one sleep costs one ring). Either the sleeper sees the new cursor or the ringer
sees the flag. The fast path costs one fence per batch and no system call.
Each side counts the sleeps it announced and the bells it rang, in the header
(``inspect_ring`` reads them): a spinning waiter (``shm.wait``) announces none,
so its peer never rings.

These functions are usable from the shard's compiled loop as they are; the
Python classes in ``shm.producer`` and ``shm.consumer`` call them too.
"""

import numpy as np
from numba import njit, types

from shm.atomics import cpu_relax, exchange, fence, load_acquire, store_release

MAGIC = 0x31474E4952484358  # b"XCHRING1" read as a little-endian int64
VERSION = 1
HEADER_BYTES = 4096
HEADER_WORDS = HEADER_BYTES // 8
LINE_WORDS = 8  # one 64-byte cache line

# line 0: the layout, written once by the creator before the segment is visible
H_MAGIC = 0
H_VERSION = 1
H_HEADER_BYTES = 2
H_RECORD_SIZE = 3
H_CAPACITY = 4
H_LAYOUT_HASH = 5  # fingerprint of the record dtype's fields
H_OWNER = 6  # process token of the creator (see shm.proc)
# a random 63-bit number drawn at creation: what tells this ring from any earlier or
# later one of the same name (a wall clock can repeat, e.g. across a reboot). A ring
# made by older code holds its creation time here, which serves the same purpose.
H_INCARNATION = 7
# line 1: written by the producer
H_PUBLISHED = 1 * LINE_WORDS
H_PRODUCER = 1 * LINE_WORDS + 1  # process token of the attached producer, 0 if none
# 1 while the producer writes records no consumer asked for, decided because a consumer
# was attached (``Producer.unasked``); a consumer that leaves waits it out
# (``Consumer.leave``), so such records are either read or never written
H_PRODUCER_UNASKED = 1 * LINE_WORDS + 2
# line 2: written by the consumer
H_RELEASED = 2 * LINE_WORDS
H_CONSUMER = 2 * LINE_WORDS + 1
# line 3: set by the consumer before it sleeps, cleared by whoever wakes it
H_CONSUMER_SLEEPING = 3 * LINE_WORDS
# how many sleeps the consumer has announced (written by the consumer alone) and how
# many times the producer rang the data bell (by the producer alone): slow-path
# counts, on the line the sleep already writes; both stay 0 with a spinning consumer
H_CONSUMER_SLEEPS = 3 * LINE_WORDS + 1
H_DATA_RINGS = 3 * LINE_WORDS + 2
# line 4: set by the producer before it sleeps waiting for space; its counts likewise
H_PRODUCER_SLEEPING = 4 * LINE_WORDS
H_PRODUCER_SLEEPS = 4 * LINE_WORDS + 1
H_SPACE_RINGS = 4 * LINE_WORDS + 2

# which side of the ring a waiting function acts for
CONSUMER = 0
PRODUCER = 1

_write = types.ExternalFunction("write", types.intp(types.int32, types.voidptr, types.uintp))
_sched_yield = types.ExternalFunction("sched_yield", types.int32())


@njit(cache=True, nogil=True)
def readable(hdr):
    """Records published and not yet released."""
    return load_acquire(hdr, H_PUBLISHED) - load_acquire(hdr, H_RELEASED)


@njit(cache=True, nogil=True)
def writable(hdr):
    """Free slots the producer may fill now."""
    return hdr[H_CAPACITY] - (load_acquire(hdr, H_PUBLISHED) - load_acquire(hdr, H_RELEASED))


@njit(cache=True, nogil=True)
def available(hdr, side):
    """What ``side`` waits for: readable records (CONSUMER) or free slots (PRODUCER)."""
    if side == CONSUMER:
        return readable(hdr)
    return writable(hdr)


@njit(cache=True, nogil=True)
def read_span(hdr, max_n):
    """(slot, n): the next n <= max_n readable records sit in slots [slot, slot + n).

    The span stops at the end of the slot array, so it can be shorter than
    ``readable``; the rest comes with the next call after a release.
    """
    released = load_acquire(hdr, H_RELEASED)
    cap = hdr[H_CAPACITY]
    slot = released & (cap - 1)
    n = min(load_acquire(hdr, H_PUBLISHED) - released, max_n, cap - slot)
    return slot, max(n, 0)


@njit(cache=True, nogil=True)
def write_span(hdr, max_n):
    """(slot, n): the next n <= max_n free slots are [slot, slot + n), not wrapping."""
    published = load_acquire(hdr, H_PUBLISHED)
    cap = hdr[H_CAPACITY]
    slot = published & (cap - 1)
    n = min(cap - (published - load_acquire(hdr, H_RELEASED)), max_n, cap - slot)
    return slot, max(n, 0)


@njit(cache=True, nogil=True)
def ring_bell(fd):
    """Write one byte to the doorbell fd (a full pipe already means "wake up").

    Then yield the CPU: the kernel tends to queue the woken process on the
    waker's CPU, where it waits for the waker's time slice to end (measured here:
    milliseconds when the waker stays busy, ~0.1 ms when it yields). This runs
    once per sleep of the other side, never on the fast path.
    """
    if fd >= 0:
        one = np.ones(1, np.uint8)
        _write(fd, one.ctypes.data, 1)
        _sched_yield()


@njit(cache=True, nogil=True)
def _count(hdr, word):
    """One more in a count only this process writes."""
    store_release(hdr, word, load_acquire(hdr, word) + 1)


@njit(cache=True, nogil=True)
def _wake_if_sleeping(hdr, flag, rings, bell_fd):
    fence()  # our cursor store must be visible before we look at the flag
    if load_acquire(hdr, flag) != 0 and exchange(hdr, flag, 0) != 0:
        _count(hdr, rings)
        ring_bell(bell_fd)
        return True
    return False


@njit(cache=True, nogil=True)
def publish(hdr, n, bell_fd):
    """Expose the next n written slots to the consumer; ring ``bell_fd`` if it sleeps.

    Returns whether it rang. Raises ValueError, changing nothing, if n is
    negative or more than the free slots.
    """
    published = load_acquire(hdr, H_PUBLISHED)
    if n < 0 or n > hdr[H_CAPACITY] - (published - load_acquire(hdr, H_RELEASED)):
        raise ValueError("publish: n is negative or larger than the free slots")
    store_release(hdr, H_PUBLISHED, published + n)
    return _wake_if_sleeping(hdr, H_CONSUMER_SLEEPING, H_DATA_RINGS, bell_fd)


@njit(cache=True, nogil=True)
def release(hdr, n, bell_fd):
    """Give the next n read records' slots back; ring ``bell_fd`` if the producer sleeps.

    Returns whether it rang. Raises ValueError, changing nothing, if n is
    negative or more than the readable records.
    """
    released = load_acquire(hdr, H_RELEASED)
    if n < 0 or n > load_acquire(hdr, H_PUBLISHED) - released:
        raise ValueError("release: n is negative or larger than the readable records")
    store_release(hdr, H_RELEASED, released + n)
    return _wake_if_sleeping(hdr, H_PRODUCER_SLEEPING, H_SPACE_RINGS, bell_fd)


@njit(cache=True, nogil=True)
def push(hdr, words, batch, bell_fd):
    """Copy the longest prefix of ``batch`` that fits into the ring and publish it.

    ``words`` is the slot array and ``batch`` the records, both viewed as 2-d
    int64 (rows = records). Returns how many records were written; never waits.
    """
    cap = hdr[H_CAPACITY]
    published = load_acquire(hdr, H_PUBLISHED)
    n = min(batch.shape[0], cap - (published - load_acquire(hdr, H_RELEASED)))
    if n <= 0:
        return 0
    slot = published & (cap - 1)
    first = min(n, cap - slot)
    words[slot : slot + first] = batch[:first]
    words[: n - first] = batch[first:n]
    publish(hdr, n, bell_fd)
    return n


@njit(cache=True, nogil=True)
def pull(hdr, words, out, bell_fd):
    """Copy up to ``out.shape[0]`` readable records into ``out`` and release them.

    Same 2-d int64 views as ``push``. Returns how many records were copied.
    """
    cap = hdr[H_CAPACITY]
    released = load_acquire(hdr, H_RELEASED)
    n = min(out.shape[0], load_acquire(hdr, H_PUBLISHED) - released)
    if n <= 0:
        return 0
    slot = released & (cap - 1)
    first = min(n, cap - slot)
    out[:first] = words[slot : slot + first]
    out[first:n] = words[: n - first]
    release(hdr, n, bell_fd)
    return n


@njit(cache=True, nogil=True)
def spin(hdr, side, want, rounds):
    """Poll up to ``rounds`` times for ``want`` records/slots; returns what was available."""
    n = available(hdr, side)
    for _ in range(rounds):
        if n >= want:
            break
        cpu_relax()
        n = available(hdr, side)
    return n


@njit(cache=True, nogil=True)
def sleep_begin(hdr, side):
    """Announce that ``side`` is about to sleep; returns what is available after that.

    If the result is enough, the caller must not sleep (and calls ``sleep_end``).
    """
    flag = H_CONSUMER_SLEEPING if side == CONSUMER else H_PRODUCER_SLEEPING
    _count(hdr, H_CONSUMER_SLEEPS if side == CONSUMER else H_PRODUCER_SLEEPS)
    exchange(hdr, flag, 1)
    fence()  # the flag must be visible before we read the other side's cursor
    return available(hdr, side)


@njit(cache=True, nogil=True)
def sleep_end(hdr, side):
    flag = H_CONSUMER_SLEEPING if side == CONSUMER else H_PRODUCER_SLEEPING
    store_release(hdr, flag, 0)
