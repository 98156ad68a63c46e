"""Files in /dev/shm mapped into memory: created whole or not at all, attached, unlinked.

A segment is a plain file on a tmpfs mapped with mmap, not a
``multiprocessing.shared_memory.SharedMemory``: the latter's resource tracker
unlinks segments when a process that merely attached exits, and a restarted
process must find its rings where it left them.
"""

import contextlib
import mmap
import os

from shm.errors import SegmentExistsError, SegmentNotFoundError


def create(path: str, size: int, init) -> mmap.mmap:
    """Create the file ``path`` of ``size`` zero bytes, call ``init(mapping)``, then publish it.

    The file is built under a temporary name and linked to ``path`` only once
    ``init`` has returned, so no other process ever sees it half-initialized;
    the link fails if ``path`` exists, so two creators cannot both win.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size)
        try:
            init(mapping)
            os.link(tmp, path)
        except FileExistsError:
            close(mapping)
            raise SegmentExistsError(f"shared-memory segment {path} exists already") from None
        except BaseException:
            close(mapping)
            raise
    finally:
        os.close(fd)
        os.unlink(tmp)
    return mapping


def attach(path: str, *, writable: bool = True) -> mmap.mmap:
    """Map the existing file ``path`` (read-only when ``writable`` is false)."""
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SegmentNotFoundError(f"no shared-memory segment {path}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise SegmentNotFoundError(f"shared-memory segment {path} is empty")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(fd, size, access=access)
    finally:
        os.close(fd)


def close(mapping: mmap.mmap) -> None:
    """Unmap, unless numpy views of it are still alive: then the last view's release unmaps."""
    with contextlib.suppress(BufferError):
        mapping.close()


def unlink(path: str) -> bool:
    """Remove ``path``; False if it did not exist. Mappings already made stay valid."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
