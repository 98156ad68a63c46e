"""Latency histograms with fixed log-scale buckets, as int64 words in shared memory.

Values (nanoseconds, or any non-negative int64) below 16 get a bucket each;
above, every power of two is split into 8 equal buckets, so a bucket is at most
12.5% wide relative to its values, which is plenty to tell p50, p99 and p99.9
apart. Values of 2**40 and more (about 18 minutes in ns) share the last bucket.

A histogram occupies ``HIST_WORDS`` words: count, sum, then the buckets. Every
update is an atomic add, so readers in other processes never see a torn word
and any number of threads may record into the same histogram.
"""

import numpy as np
from numba import njit

from shm.atomics import fetch_add

SUB_BITS = 3
SUB = 1 << SUB_BITS  # buckets per power of two
LINEAR = 2 * SUB  # values below this are counted exactly
MAX_BITS = 40  # values from 2**MAX_BITS on go to the overflow bucket
N_BUCKETS = LINEAR + (MAX_BITS - SUB_BITS - 1) * SUB + 1  # the last one counts overflows
H_COUNT = 0
H_SUM = 1
H_BUCKETS = 2
HIST_WORDS = H_BUCKETS + N_BUCKETS


@njit(cache=True, nogil=True)
def bucket_of(value):
    if value < LINEAR:
        return max(value, 0)
    shift = 0
    top = value >> (SUB_BITS + 1)
    while top:
        top >>= 1
        shift += 1
    # value >> shift is now in [SUB, 2 * SUB): its low bits pick the sub-bucket
    b = LINEAR + (shift - 1) * SUB + ((value >> shift) - SUB)
    return min(b, N_BUCKETS - 1)


@njit(cache=True, nogil=True)
def hist_record(words, at, value):
    """Count ``value`` in the histogram stored at ``words[at : at + HIST_WORDS]``."""
    value = max(value, 0)
    fetch_add(words, at + H_COUNT, 1)
    fetch_add(words, at + H_SUM, value)
    fetch_add(words, at + H_BUCKETS + bucket_of(value), 1)


def bucket_high(b: int) -> int:
    """The largest value that falls into bucket ``b`` (the last bucket has no bound)."""
    if b < LINEAR:
        return b
    shift = (b - LINEAR) // SUB + 1
    return ((((b - LINEAR) % SUB + SUB) + 1) << shift) - 1


def percentile(buckets: np.ndarray, q: float) -> int:
    """An upper bound of the ``q`` quantile (0 < q <= 1) of the counted values; 0 if empty.

    It is the top of the bucket holding that quantile: at most 12.5% above the
    true value (exact below 16).
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q!r} must be in (0, 1]")
    cumulative = np.cumsum(buckets)
    total = int(cumulative[-1]) if len(cumulative) else 0
    if total == 0:
        return 0
    rank = max(1, int(np.ceil(q * total)))
    return bucket_high(int(np.searchsorted(cumulative, rank)))
