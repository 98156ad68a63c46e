"""Giving back the pages of a mapped file that this process has read.

LMDB reads through a read-only map of its data file: every page a process reads
stays in its map, and so in its RSS, until the map is closed. A file read at
random (idempotency keys, orders) ends up whole in the RSS of the process that
reads it, though those pages are page cache, shared and reclaimable, and the
kernel's OOM killer counts them. ``release`` unmaps them (madvise
MADV_DONTNEED on the file's mappings, found in /proc/self/maps): the page cache
keeps them, and the next read maps them again.
"""

import ctypes
import os

_MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def release(path: str) -> int:
    """Unmap every page of file ``path`` this process has mapped; returns the bytes of
    map given back. OSError if the kernel refuses."""
    real = os.path.realpath(path)
    released = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == real:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if _libc.madvise(start, end - start, _MADV_DONTNEED) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"madvise on {real}: {os.strerror(err)}")
                released += end - start
    return released
