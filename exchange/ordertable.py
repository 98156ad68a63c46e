"""A hash table of live orders keyed by order id, as an int64 array, for Numba code.

Row ``i`` of the ``(size, columns)`` table is a free entry when its column 0
(the id) is ``EMPTY``; the other columns are the user's. Open addressing with
linear probing and backward-shift deletion (the book kernel's scheme): no
tombstones, so a long-lived table never degrades. ``fit`` grows it (doubling,
rehashing) before a batch that could take it past half full, so a probe always
ends at a free entry.
"""

import numpy as np
from numba import njit

EMPTY = np.iinfo(np.int64).min  # the id of a free entry
MIN_SIZE = 1 << 10


def new_table(columns: int, capacity: int = MIN_SIZE) -> np.ndarray:
    """An empty table with room for ``capacity`` ids at half load (columns include the id)."""
    size = 1 << max(2 * capacity - 1, MIN_SIZE - 1).bit_length()
    table = np.zeros((size, columns), np.int64)
    table[:, 0] = EMPTY
    return table


def fit(table: np.ndarray, entries: int) -> np.ndarray:
    """``table``, or a larger copy holding the same entries, with room for ``entries``."""
    if 2 * entries <= len(table):
        return table
    bigger = new_table(table.shape[1], entries)
    _rehash(table, bigger)
    return bigger


def live(table: np.ndarray) -> np.ndarray:
    """The used rows (a copy), in table order."""
    return table[table[:, 0] != EMPTY].copy()


@njit(cache=True)
def _home(oid, mask):
    # order ids count up per shard, the shard's index in the high bits: fold them in
    return (oid ^ (oid >> 32)) & mask


@njit(cache=True)
def find(table, oid):
    """The index of ``oid``'s entry, or -1."""
    mask = table.shape[0] - 1
    i = _home(oid, mask)
    while True:
        k = table[i, 0]
        if k == oid:
            return i
        if k == EMPTY:
            return -1
        i = (i + 1) & mask


@njit(cache=True)
def insert(table, oid):
    """The index of a new entry for ``oid`` (the caller fills its columns; the id must
    not be in the table, and the table must have a free entry)."""
    mask = table.shape[0] - 1
    i = _home(oid, mask)
    while table[i, 0] != EMPTY:
        i = (i + 1) & mask
    table[i, 0] = oid
    return i


@njit(cache=True)
def remove(table, i):
    """Free entry ``i``, moving later entries of its probe run back into the hole."""
    mask = table.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[j, 0]
        if k == EMPTY:
            break
        # an entry may move into the hole only if the hole is on its probe path
        if ((j - _home(k, mask)) & mask) >= ((j - i) & mask):
            table[i] = table[j]
            i = j
    table[i, 0] = EMPTY


@njit(cache=True)
def _rehash(old, new):
    for i in range(old.shape[0]):
        if old[i, 0] != EMPTY:
            new[insert(new, old[i, 0])] = old[i]
