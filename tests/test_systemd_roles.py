"""The daemon as the systemd units run it: no supervisor, one process per unit.

``exchanged run --role rings`` makes the keys and the rings and tells systemd it
is ready (a real datagram socket stands in for systemd's NOTIFY_SOCKET); the
shards and the gateway are started beside it with ``--role``; a client trades.
The rings' owner is SIGKILLed and restarted (it adopts the rings: a restarted
shard attaches again) and everything is stopped in the units' order.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from daemon_harness import REPO, Daemon

from gateway.protocol import Ack, Fill
from shm.ring import inspect_ring, list_rings


class Units:
    """The processes of the units, each with its log and its own notify socket (as systemd
    gives each unit), and a watchdog period for those that are given one."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.procs: dict[str, subprocess.Popen] = {}
        self.sockets: dict[str, socket.socket] = {}

    def start(self, name: str, *role: str, watchdog_usec: int = 0) -> subprocess.Popen:
        argv = [sys.executable, "-m", "daemon.cli", "run", *role]
        argv += ["--config", str(self.daemon.path)]
        if name not in self.sockets:
            self.sockets[name] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sockets[name].bind(str(self.daemon.tmp / f"notify-{name}"))
        env = {**os.environ, "NOTIFY_SOCKET": str(self.daemon.tmp / f"notify-{name}")}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        with open(self.daemon.tmp / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.daemon.tmp / f"{name}.log").read_text()

    def wait_log(self, name: str, text: str, count: int = 1, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.log(name).count(text) < count:
            assert self.procs[name].poll() is None, self.log(name)[-3000:]
            assert time.monotonic() < deadline, f"{name}: no {text!r}: {self.log(name)[-3000:]}"
            time.sleep(0.05)

    def notified(self, name: str = "rings", timeout: float = 60) -> str:
        """The next datagram ``name`` sent to systemd."""
        self.sockets[name].settimeout(timeout)
        return self.sockets[name].recv(4096).decode()

    def stop(self, name: str) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:  # a stopped one (SIGSTOP) dies of SIGKILL all the same
                proc.kill()
                proc.wait()
        for sock in self.sockets.values():
            sock.close()


@pytest.fixture
def units(tmp_path):
    daemon = Daemon(tmp_path)  # for its config; nothing is started by it
    u = Units(daemon)
    try:
        yield u
    finally:
        u.close()
        daemon.close()


def trade(daemon: Daemon, maker, taker, px: int) -> None:
    sell = maker.new_order("ACME", "sell", 3, px=px)
    assert isinstance(sell, Ack), sell
    buy = taker.new_order("ACME", "buy", 3, px=px)
    assert isinstance(buy, Ack), buy
    fills = [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
    assert [(f.oid, f.qty, f.leaves) for f in fills] == [(sell.oid, 3, 0)]


@pytest.mark.timeout(240)
def test_units_start_trade_survive_a_killed_rings_owner_and_stop_in_order(units):
    d, ns = units.daemon, units.daemon.ns
    rings = units.start("rings", "--role", "rings")
    assert units.notified() == "READY=1"  # only now would systemd start the others
    assert sorted(list_rings(ns)) == ["s0-evt", "s0-req", "s1-evt", "s1-req"]
    assert inspect_ring(ns, "s0-req").owner_pid == rings.pid
    for shard in ("s0", "s1"):
        units.start(shard, "--role", "shard", "--name", shard)
    units.start("gateway", "--role", "gateway")
    units.wait_log("gateway", '"msg": "serving"')
    d.proc = units.procs["gateway"]  # Daemon.client polls nothing else of it
    maker, taker = d.client(1), d.client(2)
    try:
        units.wait_log("s0", '"msg": "running"')
        trade(d, maker, taker, 10_000)

        # the owner dies: systemd restarts it, it adopts the rings with what they hold
        rings.kill()
        rings.wait()
        rings = units.start("rings", "--role", "rings")
        assert units.notified() == "READY=1"
        assert inspect_ring(ns, "s0-req").owner_pid == rings.pid
        assert "adopted ring" in units.log("rings")
        # a shard restarted now attaches to the adopted rings and recovers its book
        units.procs["s0"].kill()
        units.procs["s0"].wait()
        units.start("s0", "--role", "shard", "--name", "s0")
        units.wait_log("s0", '"msg": "running"', count=2)
        deadline = time.monotonic() + 30
        while True:  # the gateway answers `unavailable` until it sees the shard back
            probe = maker.new_order("ACME", "buy", 1, px=9_000)  # rests out of the way
            if isinstance(probe, Ack) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert isinstance(probe, Ack), probe
        trade(d, maker, taker, 10_100)
    finally:
        maker.close()
        taker.close()
    # stop as systemd does: the gateway, then the shards, then the rings' owner
    assert units.stop("gateway") == 0
    assert units.stop("s0") == 0 and units.stop("s1") == 0
    assert units.stop("rings") == 0
    assert units.notified() == "STOPPING=1"
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{ns}.")]


@pytest.mark.timeout(120)
def test_a_second_rings_owner_is_refused(units):
    units.start("rings", "--role", "rings")
    assert units.notified() == "READY=1"
    second = units.start("second", "--role", "rings")
    assert second.wait(timeout=60) == 2  # RestartPreventExitStatus=2: no restart loop
    assert "belongs to live pid" in units.log("second")
    assert units.stop("rings") == 0


def _datagrams(units: Units, name: str, seconds: float) -> list[str]:
    """What ``name`` sent to systemd within ``seconds``."""
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(units.notified(name, timeout=left))
        except TimeoutError:
            break
    return out


@pytest.mark.timeout(240)
def test_shard_and_gateway_say_ready_when_they_serve_and_ping_the_watchdog(units):
    """Type=notify with WatchdogSec: READY=1 once serving, WATCHDOG=1 with a STATUS from
    the loop every half period; a hung loop (SIGSTOP) stops the pings; STOPPING=1."""
    units.start("rings", "--role", "rings")
    assert units.notified() == "READY=1"
    units.start("s0", "--role", "shard", "--name", "s0", watchdog_usec=400_000)
    units.start("s1", "--role", "shard", "--name", "s1")
    units.start("gateway", "--role", "gateway", watchdog_usec=400_000)
    ready = units.notified("s0", timeout=120)
    assert ready.startswith("READY=1\nSTATUS=serving, seq ") and '"msg": "running"' in units.log(
        "s0"
    )
    ready = units.notified("gateway", timeout=120)
    assert ready.startswith("READY=1\nSTATUS=serving, ") and '"msg": "serving"' in units.log(
        "gateway"
    )
    for name in ("s0", "gateway"):
        pings = _datagrams(units, name, 1.5)  # a ping every 0.2 s
        assert len(pings) >= 4, (name, pings)
        assert all(p.startswith("WATCHDOG=1\nSTATUS=serving") for p in pings), pings
    shard = units.procs["s0"]
    os.kill(shard.pid, signal.SIGSTOP)  # hung, as far as systemd can tell
    try:
        _datagrams(units, "s0", 0.3)  # what it sent before it stopped
        assert _datagrams(units, "s0", 1.0) == []  # systemd would restart it now
    finally:
        os.kill(shard.pid, signal.SIGCONT)
    assert _datagrams(units, "s0", 1.0)  # pinging again
    # systemd reads its socket all the time; here, what is queued is read before a stop
    _datagrams(units, "gateway", 0.1)
    assert units.stop("gateway") == 0
    assert any(p.startswith("STOPPING=1") for p in _datagrams(units, "gateway", 0.5))
    _datagrams(units, "s0", 0.1)
    assert units.stop("s0") == 0
    assert any(p.startswith("STOPPING=1") for p in _datagrams(units, "s0", 0.5))
