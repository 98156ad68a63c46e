"""A doorbell: a named FIFO one process rings and another sleeps on.

Both sides open the FIFO read-write and non-blocking, which on Linux never
blocks, never raises EPIPE when the other side is gone, and never reports
end-of-file: a bell rung while its sleeper is dead just leaves a byte that the
next sleeper drains. The file descriptor is an ordinary readable-when-rung fd,
so a sleeper can hand it to ``select``, ``zmq.Poller`` or an asyncio loop.
Ringing is writing one byte to the fd, done by ``shm.ring_ops.ring_bell`` so
that compiled code can ring too.
"""

import os
import select
import stat

from shm.errors import SegmentExistsError, SegmentNotFoundError


def create(path: str) -> None:
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        raise SegmentExistsError(f"doorbell {path} exists already") from None


class Doorbell:
    def __init__(self, path: str):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SegmentNotFoundError(f"no doorbell {path}") from None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise SegmentNotFoundError(f"{path} is not a doorbell (not a FIFO)")
        self.path = path
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> int:
        """Consume pending rings; return how many there were."""
        n = 0
        while True:
            try:
                got = len(os.read(self.fd, 4096))
            except BlockingIOError:
                return n
            if got == 0:
                return n
            n += got

    def sleep(self, timeout: float | None) -> bool:
        """Block until rung or ``timeout`` seconds pass (None: forever); True if rung."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return bool(poller.poll(ms))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
