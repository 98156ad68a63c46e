"""The gateway's I/O loop, two ways: a plain ``zmq.Poller`` loop and asyncio on uvloop;
and a third that never sleeps, for ``[gateway] wait = "spin"``.

Both do the same: turns of ``Gateway.step`` while there is work (the ZAP
socket is looked at after each housekeeping tick, so new clients get in under
load too, within a tick);
when a turn finds nothing, announce a sleep on the event rings' doorbells
(so the shards ring them) and block until the ROUTER, the ZAP socket or a
doorbell is readable, or the next housekeeping tick is due. They differ only
in who blocks: ``zmq_poll`` or uvloop's epoll (with the ZeroMQ sockets' edge-
triggered file descriptors re-armed by reading their EVENTS before sleeping).

``bench.gateway`` measures both, side by side in interleaved rounds. They
came out equal within the noise of a shared 2-core machine, with single-order
and with batch frames (figures in docs/ARCHITECTURE.md): the work between two
waits dominates, not the wait. asyncio on uvloop is the default, as the
design asks where it fits.

``run_spin`` is the spinning wait strategy (``shm.wait``): turns back to back,
whether or not they find work, the ZAP socket looked at after each idle turn
(a turn reads the ROUTER without blocking: a poll with zero timeout). It never
announces a sleep, so the shards never ring the event rings' doorbells, and it
never blocks, so the flag handler ``gateway.server`` installs ends it after the
turn it interrupted. It keeps its core at 100 %: for a gateway pinned to cores
of its own (``cpus``: two, one for ZeroMQ's I/O thread), where it answers sooner
by a scheduler wake-up.

A stop (SIGTERM, SIGINT) ends the loop after its turn, and wakes a loop that
sleeps: a plain ``signal.signal`` handler runs only when the loop next runs
Python (uvloop's epoll and pyzmq's poll go back to sleep after the signal).
asyncio runs the signal's handler inside the loop; the poll loop also polls
the signal wake-up descriptor. An
exception that escapes a turn ends the loop and is raised to its caller: asyncio
would log it and go on with no timer armed, a gateway that serves nobody and
ignores SIGTERM (one was found holding its ports 45 minutes after its
supervisor died).
"""

import asyncio
import signal
import socket

import uvloop
import zmq

from gateway.core import Gateway
from gateway.zap import ZapHandler
from shm.wait import WaitStrategy


def _sleep_rings(gw: Gateway) -> bool:
    """Announce a sleep on every event ring; False (and nothing announced) if one has data."""
    rings = [link.events for link in gw.links]
    if any(ring.prepare_sleep() for ring in rings):
        _wake_rings(gw)
        return False
    return True


def _wake_rings(gw: Gateway) -> None:
    for link in gw.links:
        link.events.finish_sleep()


def _timeout(gw: Gateway) -> float:
    """Seconds until the next tick."""
    return max(0.0, gw.next_tick - gw.clock())


def run_poll(gw: Gateway, zap: ZapHandler) -> None:
    woken, wake = socket.socketpair()
    wake.setblocking(False)
    before = signal.set_wakeup_fd(wake.fileno())
    poller = zmq.Poller()
    poller.register(gw.router, zmq.POLLIN)
    poller.register(zap.socket, zmq.POLLIN)
    poller.register(woken.fileno(), zmq.POLLIN)
    for link in gw.links:
        poller.register(link.events.fileno(), zmq.POLLIN)
    ticks = gw.ticks
    try:
        while not gw.stopping:
            if gw.step():
                if gw.ticks != ticks:  # under load, handshakes wait for the next tick
                    ticks = gw.ticks
                    zap.handle()
                continue
            if _sleep_rings(gw):
                ready = dict(poller.poll(_timeout(gw) * 1000))
                _wake_rings(gw)
                if zap.socket in ready:
                    zap.handle()
                if woken.fileno() in ready:
                    woken.recv(64)  # the signal's handler has run: ``gw.stopping`` says
    finally:
        signal.set_wakeup_fd(before)
        woken.close()
        wake.close()


def run_asyncio(gw: Gateway, zap: ZapHandler) -> None:
    uvloop.run(_serve(gw, zap))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _serve(gw: Gateway, zap: ZapHandler) -> None:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    sockets = (gw.router, zap.socket)
    state = {"sleeping": False, "timer": None, "ticks": gw.ticks}

    def work() -> None:
        if finished.done():  # failed: a reader may still be called before the loop ends
            return
        try:
            turns()
        except Exception as e:
            finished.set_exception(e)

    def turns() -> None:
        if state["sleeping"]:
            state["sleeping"] = False
            state["timer"].cancel()
            _wake_rings(gw)
        while not gw.stopping:
            if gw.step():
                if gw.ticks != state["ticks"]:  # under load, handshakes wait for the next tick
                    state["ticks"] = gw.ticks
                    zap.handle()
                continue
            zap.handle()
            # reading EVENTS re-arms the edge-triggered fd; a message that came in
            # since the turn would otherwise never wake us
            if any(s.getsockopt(zmq.EVENTS) & zmq.POLLIN for s in sockets):
                continue
            if _sleep_rings(gw):
                state["sleeping"] = True
                state["timer"] = loop.call_later(_timeout(gw), work)
                return
        finished.set_result(None)

    def stop() -> None:
        gw.stopping = True
        work()

    fds = [s.getsockopt(zmq.FD) for s in sockets] + [link.events.fileno() for link in gw.links]
    for fd in fds:
        loop.add_reader(fd, work)
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        loop.call_soon(work)
        await finished
    finally:
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)  # for the drain after the loop
        for fd in fds:
            loop.remove_reader(fd)
        if state["sleeping"]:
            state["timer"].cancel()
            _wake_rings(gw)


def run_spin(gw: Gateway, zap: ZapHandler) -> None:
    ticks = gw.ticks
    while not gw.stopping:
        if gw.step():
            if gw.ticks != ticks:  # under load, handshakes wait for the next tick
                ticks = gw.ticks
                zap.handle()
            continue
        zap.handle()


LOOPS = {"poll": run_poll, "asyncio": run_asyncio}  # the sleeping ones, by name


def choose(loop: str, wait: WaitStrategy):
    """The loop to run: ``run_spin`` for a spinning wait, else the sleeping one named."""
    return run_spin if wait.spins else LOOPS[loop]
