"""Which idempotency pairs the gateway's store may hold: a Bloom filter in memory.

Nearly every keyed NEW carries a key never used before, and a client's keys are
random. Looking each one up in the store would read a page of it at random, and
a process that reads a file at random ends up with all of it mapped (the store
is the size of the key window). The filter answers "never used" for a pair it
does not hold without touching the store; only a pair it may hold (every pair
used, and about 1 % of the others) is looked up there.

Two generations, rotating: pairs are added to the current one; once it holds
``capacity`` pairs it becomes the previous one and the one before is cleared.
Together they hold at least the last ``capacity`` pairs added, so with
``capacity`` = the store's key window, every pair the store keeps (the store
counts ages the same way: one per pair added). The store's pairs at start fill
the previous generation (``GatewayStore.fill_filter``).

The hashes are plain functions of (key, client): no state but the bit arrays.
"""

import numpy as np
from numba import njit

BITS_PER_PAIR = 10  # with HASHES = 7: about 1 % false positives at capacity
HASHES = 7
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S6 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(6)
_ONE, _LOW6 = np.uint64(1), np.uint64(63)


@njit(cache=True, inline="always")
def _mix(x):
    """splitmix64's finaliser: every input bit moves every output bit."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@njit(cache=True, inline="always")
def _hashes(key, client):
    h1 = _mix(np.uint64(key) ^ (np.uint64(client) * _GOLDEN))
    return h1, _mix(h1) | _ONE


@njit(cache=True)
def add(bits, keys, clients):
    """Set the pairs' bits in one generation's ``bits`` (uint64 words)."""
    nbits = np.uint64(bits.shape[0] * 64)
    for i in range(keys.shape[0]):
        h1, h2 = _hashes(keys[i], clients[i])
        for j in range(HASHES):
            b = (h1 + np.uint64(j) * h2) % nbits
            bits[b >> _S6] |= _ONE << (b & _LOW6)


@njit(cache=True)
def _holds(bits, h1, h2):
    nbits = np.uint64(bits.shape[0] * 64)
    for j in range(HASHES):
        b = (h1 + np.uint64(j) * h2) % nbits
        if not (bits[b >> _S6] >> (b & _LOW6)) & _ONE:
            return False
    return True


@njit(cache=True)
def may_hold(current, previous, key, client):
    h1, h2 = _hashes(key, client)
    return _holds(current, h1, h2) or _holds(previous, h1, h2)


@njit(cache=True)
def may_hold_each(current, previous, keys, clients, out):
    """``may_hold`` of each pair, into ``out``: one call for a turn's keys."""
    for i in range(keys.shape[0]):
        h1, h2 = _hashes(keys[i], clients[i])
        out[i] = _holds(current, h1, h2) or _holds(previous, h1, h2)


class KeyFilter:
    def __init__(self, capacity: int):
        self.capacity = capacity
        words = max(1, -(-capacity * BITS_PER_PAIR // 64))
        self._current = np.zeros(words, np.uint64)
        self._previous = np.zeros(words, np.uint64)
        self._added = 0  # pairs added to the current generation

    def may_hold(self, client: int, key: int) -> bool:
        # as uint64: a key may be above int64's range, which is Numba's default for an int
        return may_hold(self._current, self._previous, np.uint64(key), np.uint64(client))

    def may_hold_many(self, clients: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``may_hold`` of each pair (uint64 arrays), as a bool array."""
        out = np.zeros(len(keys), np.bool_)
        may_hold_each(self._current, self._previous, keys, clients, out)
        return out

    def add(self, clients: np.ndarray, keys: np.ndarray) -> None:
        """Pairs added to the store, in the order of their ages."""
        at = 0
        while at < len(keys):
            room = self.capacity - self._added
            if room == 0:
                self._current, self._previous = self._previous, self._current
                self._current[:] = 0
                self._added, room = 0, self.capacity
            part = slice(at, at + room)
            add(self._current, keys[part].astype(np.uint64), clients[part].astype(np.uint64))
            self._added += len(keys[part])
            at += room

    def load(self, clients: np.ndarray, keys: np.ndarray) -> None:
        """Some of the pairs a store held when it was opened (at most ``capacity`` in all:
        its window)."""
        add(self._previous, keys.astype(np.uint64), clients.astype(np.uint64))
