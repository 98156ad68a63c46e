"""CLOCK_MONOTONIC in nanoseconds for ``@njit`` code: the clock of ``time.monotonic_ns()``.

Being the same clock in every process and in Python, a timestamp taken in one
process's compiled loop can be subtracted from one taken in another.
"""

import numpy as np
from numba import njit, types

CLOCK_MONOTONIC = 1

_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.voidptr))


@njit(cache=True, nogil=True)
def monotonic_ns():
    ts = np.empty(2, np.int64)  # struct timespec {tv_sec; tv_nsec}
    _clock_gettime(CLOCK_MONOTONIC, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]
