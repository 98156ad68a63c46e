"""Telling systemd how a process is (``sd_notify``): READY, STATUS, WATCHDOG, STOPPING.

A ``Type=notify`` unit waits for ``READY=1`` before it counts the process as
started (and starts what is ordered after it); with ``WatchdogSec=`` it kills and
restarts a process that has not sent ``WATCHDOG=1`` for that long: a loop that
hangs (a deadlock, a process stopped with SIGSTOP) is restarted instead of
looking alive. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.

The datagrams are a few lines of ``NAME=value``, sent over the unix socket
systemd names in ``NOTIFY_SOCKET`` (``@`` for an abstract one). systemd sets
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) when a watchdog is on; ``Watchdog``
pings at half that period, the interval systemd's documentation recommends.
"""

import os
import socket
import time

SEND_SECONDS = 1.0  # the longest a READY, STATUS or STOPPING waits for systemd to read


def notify(*states: str, wait: float = SEND_SECONDS) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; whether it went.

    A unix datagram socket whose reader lags (a few datagrams queued) blocks the
    sender: a send waits at most ``wait`` seconds (0: not at all, for the watchdog's
    pings from a serving loop, where a ping dropped is made up by the next one)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        try:
            s.connect(address)
            s.send("\n".join(states).encode())
        except (BlockingIOError, TimeoutError):
            return False
    return True


class Watchdog:
    """``kick()`` from a loop's every turn: a WATCHDOG=1 (with the status, if one is
    given) once every half watchdog period, nothing in between."""

    def __init__(self, clock=time.monotonic):
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = int(os.environ.get("WATCHDOG_PID", "0") or 0)
        on = usec > 0 and pid in (0, os.getpid())  # the watchdog is this process's
        self.every = usec / 2e6 if on else None
        self.clock = clock
        self.due = 0.0

    def kick(self, status=None) -> None:
        """``status``: a callable giving the STATUS text, asked only when a ping is sent."""
        if self.every is None:
            return
        now = self.clock()
        if now >= self.due:
            self.due = now + self.every
            if status is None:
                notify("WATCHDOG=1", wait=0)
            else:
                notify("WATCHDOG=1", f"STATUS={status()}", wait=0)
