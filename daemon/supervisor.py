"""The supervisor: creates the rings, starts a process per shard and the gateway,
restarts what dies, and stops everything cleanly.

It owns the rings (their creator: they outlive restarts of the shards and the
gateway, so nothing in them is lost) and nothing else. Children are the same
commands the systemd units run:

    python -m exchange.shard --name <shard> [--config F]
    python -m gateway.server [--config F]

Under systemd there is no supervisor: ``hold_rings`` (``exchanged run --role
rings``, the unit ordered before the shards and the gateway) makes the keys and
the rings, owns the rings while it runs, and removes them when it stops last.

A child that exits while the supervisor is running is restarted after a backoff
that doubles from RESTART_MIN to RESTART_MAX seconds and resets once the child
has stayed up for STABLE_SECONDS, unless its exit code says a restart cannot cure
it (``exchange.exitcodes.NO_RESTART``, as the units' ``RestartPreventExitStatus``):
then it stays down, and the others run on. SIGTERM or SIGINT: the gateway is stopped
first (no more intake), then the shards (each drains its request ring and
commits), then the rings, counter blocks and status file are removed.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon import metrics
from exchange import logs, sdnotify, topology
from exchange.config import Config
from exchange.exitcodes import EXIT_USAGE, NO_RESTART
from exchange.openfiles import raise_open_file_limit
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.topology import event_ring, request_ring
from gateway.keys import SERVER, create_server_keys
from shm.names import unlink_namespace
from shm.ring import adopt_ring, create_ring, inspect_ring, list_rings

RESTART_MIN = 0.5
RESTART_MAX = 30.0
STABLE_SECONDS = 60.0
STOP_TIMEOUT = 30.0
POLL_SECONDS = 0.2


_PR_SET_PDEATHSIG = 1


def _term_when_parent_dies() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str  # "gateway" or the shard's name
    argv: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_MIN
    due: float = 0.0  # when a dead child may be started again
    history: list[int] = field(default_factory=list)  # exit codes seen
    refused: bool = False  # exited with a code a restart cannot cure (``NO_RESTART``)


def ensure_rings(config: Config) -> list[str]:
    """Create each shard's rings, or adopt those a dead supervisor left (with their records)."""
    ns = config.shm.namespace
    existing = set(list_rings(ns))
    made = []
    for shard in config.shards:
        for name, dtype, cap in (
            (request_ring(shard.name), COMMAND_DTYPE, config.shm.request_ring),
            (event_ring(shard.name), EVENT_DTYPE, config.shm.event_ring),
        ):
            if name in existing:
                status = inspect_ring(ns, name)
                if status.owner_alive:
                    raise RuntimeError(
                        f"ring {name} in namespace {ns} belongs to live pid {status.owner_pid}: "
                        "is another supervisor running with this config?"
                    )
                adopt_ring(ns, name, dtype)
                logs.info("adopted ring", ring=name, unread=status.depth)
            else:
                create_ring(ns, name, dtype, cap)
                made.append(name)
    return made


def release_rings(config: Config) -> dict[str, int]:
    """Remove the namespace's segments, unless a ring still holds records: then every
    segment is kept for the next start, and the rings that hold records are returned."""
    ns = config.shm.namespace
    pending = {name: inspect_ring(ns, name).depth for name in list_rings(ns)}
    undelivered = {k: v for k, v in pending.items() if v}
    if undelivered:
        # never silently: these rings keep their records for the next start
        logs.error("rings still hold records; keeping them", rings=undelivered)
    else:
        unlink_namespace(ns)
    return undelivered


def hold_rings(config: Config) -> int:
    """The rings' owner when systemd runs the processes: keys and rings made (or
    adopted), READY=1 to systemd, then asleep until SIGTERM/SIGINT; then the rings
    are released. Exit 0, 1 if rings were kept (they hold records), 2 if another
    owner is alive."""
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # from now on a stop waits for sigwait
    raise_open_file_limit()
    Path(config.journal.dir).mkdir(parents=True, exist_ok=True)
    ensure_server_keys(config)
    try:
        made = ensure_rings(config)
    except RuntimeError as e:
        logs.error("cannot own the rings", error=str(e))
        return 2
    try:
        server = metrics.serve(config)
    except OSError as e:
        logs.error("cannot serve metrics", listen=config.metrics.listen, error=str(e))
        release_rings(config)
        return EXIT_USAGE
    logs.info("holding the rings", namespace=config.shm.namespace, created=made)
    sdnotify.notify("READY=1")
    signum = signal.sigwait(stop)
    sdnotify.notify("STOPPING=1")
    logs.info("stopping", signal=signal.Signals(signum).name)
    metrics.stop(server)
    return 1 if release_rings(config) else 0


def ensure_server_keys(config: Config) -> None:
    """A first start (e.g. ``make run`` on a fresh clone) makes the gateway's key pair."""
    keys_dir = Path(config.gateway.keys_dir)
    if not (keys_dir / f"{SERVER}.key_secret").exists():
        create_server_keys(keys_dir)
        logs.info("created the gateway's CURVE key pair", keys_dir=str(keys_dir))


class Supervisor:
    def __init__(self, config: Config, config_path: str | None, *, python: str = sys.executable):
        self.config = config
        extra = ["--config", str(config_path)] if config_path else []
        self.children = [
            Child(s.name, [python, "-m", "exchange.shard", "--name", s.name, *extra])
            for s in config.shards
        ]
        self.children.append(Child("gateway", [python, "-m", "gateway.server", *extra]))
        self.stopping = False

    # ------------------------------------------------------------ children

    def _spawn(self, child: Child) -> None:
        # Own session: a terminal's Ctrl-C reaches the supervisor only, which then
        # stops the children in order. Death signal: if the supervisor itself
        # dies, the children get SIGTERM and stop cleanly instead of lingering.
        child.proc = subprocess.Popen(
            child.argv, start_new_session=True, preexec_fn=_term_when_parent_dies
        )
        child.started = time.monotonic()
        logs.info("started", child=child.name, child_pid=child.proc.pid)

    def _reap(self, child: Child) -> None:
        code = child.proc.returncode
        child.history.append(code)
        up = time.monotonic() - child.started
        child.proc = None
        if code in NO_RESTART:
            child.refused = True
            logs.error(
                "child refused to run; not restarting it (see its last log line)",
                child=child.name,
                code=code,
                up_seconds=round(up, 3),
            )
            return
        child.due = time.monotonic() + child.backoff
        logs.warning(
            "child exited; restarting",
            child=child.name,
            code=code,
            up_seconds=round(up, 3),
            restart_in=child.backoff,
        )
        child.backoff = min(2 * child.backoff, RESTART_MAX)
        child.restarts += 1

    def tick(self) -> None:
        """Reap the dead, start the due; one pass."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._reap(child)
            if child.proc is None and not child.refused and now >= child.due:
                self._spawn(child)
            elif child.proc is not None and now - child.started >= STABLE_SECONDS:
                child.backoff = RESTART_MIN  # up long enough: healthy again
        self.write_status()

    def write_status(self) -> None:
        path = Path(topology.supervisor_status_path(self.config))
        path.parent.mkdir(parents=True, exist_ok=True)
        now = time.monotonic()
        doc = {
            "supervisor_pid": os.getpid(),
            "namespace": self.config.shm.namespace,
            "children": [
                {
                    "name": c.name,
                    "pid": c.proc.pid if c.proc else None,
                    "restarts": c.restarts,
                    "refused_code": c.history[-1] if c.refused else None,
                    # the wait before its next start if it died now, while raised
                    # above the minimum (it doubles while the child keeps dying)
                    "backoff_seconds": c.backoff if c.backoff > RESTART_MIN else None,
                    "restart_in": round(max(0.0, c.due - now), 1)
                    if c.proc is None and not c.refused
                    else None,
                    "up_seconds": round(time.monotonic() - c.started, 1) if c.proc else 0,
                }
                for c in self.children
            ],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    def restarts(self) -> dict[str, int]:
        """Per child, the restarts so far (read by the metrics server's thread)."""
        return {c.name: c.restarts for c in self.children}

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        raise_open_file_limit()  # the children inherit it
        Path(self.config.journal.dir).mkdir(parents=True, exist_ok=True)
        ensure_server_keys(self.config)
        ensure_rings(self.config)
        try:
            server = metrics.serve(self.config, self.restarts)
        except OSError as e:
            logs.error("cannot serve metrics", listen=self.config.metrics.listen, error=str(e))
            release_rings(self.config)
            return EXIT_USAGE

        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not self.stopping:
                self.tick()
                time.sleep(POLL_SECONDS)
        finally:
            metrics.stop(server)
            code = self.shutdown()
        return code

    def _wait_child(self, child: Child) -> int | None:
        """Wait for a child that was sent SIGTERM; kill it if it ignores that."""
        if child.proc is None:
            return None
        try:
            code = child.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logs.error("child ignored SIGTERM; killing it", child=child.name)
            child.proc.kill()
            code = child.proc.wait()
        logs.info("stopped", child=child.name, code=code)
        child.proc = None
        return code

    def shutdown(self) -> int:
        """Gateway first (no more intake), then the shards (they drain), then the rings."""
        gateway = [c for c in self.children if c.name == "gateway"]
        shards = [c for c in self.children if c.name != "gateway"]
        codes = []
        for group in (gateway, shards):  # the shards all at once: each drains its own ring
            for c in group:
                if c.proc is not None:
                    c.proc.send_signal(signal.SIGTERM)
            codes += [self._wait_child(c) for c in group]
        undelivered = release_rings(self.config)
        Path(topology.supervisor_status_path(self.config)).unlink(missing_ok=True)
        bad = [c for c in codes if c not in (None, 0)]
        return 1 if bad or undelivered else 0
