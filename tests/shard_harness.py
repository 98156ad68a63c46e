"""A real shard process on real rings, driven from a test (the test owns the rings)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE, EVF_DUPLICATE, EVF_REPLAY
from exchange.topology import event_ring, request_ring
from shm.consumer import Consumer
from shm.names import unlink_namespace
from shm.producer import Producer
from shm.ring import create_ring

REPO = Path(__file__).resolve().parent.parent
SHARD = "s0"


def write_config(tmp: Path, namespace: str, **journal_and_snapshot) -> tuple[Path, object]:
    """The embedded default, with its journal, namespace and snapshots moved for a test
    (and the shards' wait strategy, ``wait``)."""
    cfg = parse_config(DEFAULT_TOML)
    replace = msgspec.structs.replace
    cfg = replace(
        cfg,
        journal=replace(
            cfg.journal,
            dir=str(tmp / "journal"),
            durability=journal_and_snapshot.get("durability", "os"),
        ),
        snapshot=replace(
            cfg.snapshot,
            every_commands=journal_and_snapshot.get("snapshot_every", cfg.snapshot.every_commands),
        ),
        shm=replace(cfg.shm, namespace=namespace),
        shards=[replace(s, wait=journal_and_snapshot.get("wait", s.wait)) for s in cfg.shards],
    )
    path = tmp / "exchange.toml"
    path.write_text(dump_config(cfg))
    return path, cfg


class ShardRig:
    """Rings created here; the shard attaches, is killed, restarted, stopped."""

    def __init__(self, tmp: Path, *, request_capacity=1024, event_capacity=4096, **opts):
        self.tmp = tmp
        self.ns = "t" + uuid.uuid4().hex[:12]
        self.config_path, self.config = write_config(tmp, self.ns, **opts)
        self.journal_dir = tmp / "journal" / SHARD
        self.proc: subprocess.Popen | None = None
        self.received: list[np.ndarray] = []
        self.starts = 0
        create_ring(self.ns, request_ring(SHARD), COMMAND_DTYPE, request_capacity)
        create_ring(self.ns, event_ring(SHARD), EVENT_DTYPE, event_capacity)
        self.requests = Producer(self.ns, request_ring(SHARD), COMMAND_DTYPE)
        self.events = Consumer(self.ns, event_ring(SHARD), EVENT_DTYPE)

    # ------------------------------------------------------------ the process

    def start(self, env: dict[str, str] | None = None) -> None:
        """The shard process, with ``env`` added to this one's environment."""
        assert self.proc is None
        self.starts += 1
        with open(self.tmp / f"shard-{self.starts}.log", "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exchange.shard",
                    "--name",
                    SHARD,
                    "--config",
                    self.config_path,
                ],
                cwd=REPO,
                stderr=log,
                stdout=log,
                env={**os.environ, **(env or {})},
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def wait_running(self, timeout=60) -> None:
        """Until the current process has recovered and entered its loop."""
        log = self.tmp / f"shard-{self.starts}.log"
        deadline = time.monotonic() + timeout
        while '"msg": "running"' not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"shard did not come up: {self.log()}")
            self.drain()
            time.sleep(0.01)

    def stop(self, timeout=60) -> int:
        """SIGTERM once it runs, then collect every event it publishes on its way out."""
        self.wait_running()
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.drain()
            if time.monotonic() > deadline:
                raise AssertionError(f"shard did not stop within {timeout} s: {self.log()}")
            time.sleep(0.01)
        self.drain()
        code = self.proc.returncode
        self.proc = None
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("shard-*.log")))

    # ------------------------------------------------------------ the rings

    def send(self, cmds: np.ndarray, timeout=60) -> None:
        """Write all of ``cmds``, draining events meanwhile (the ring may be full)."""
        pos = 0
        deadline = time.monotonic() + timeout
        while pos < len(cmds):
            pos += self.requests.write(cmds[pos:])
            if pos < len(cmds):
                self.drain()
                if time.monotonic() > deadline:
                    raise AssertionError(f"request ring stayed full: {self.log()}")
                time.sleep(0.001)

    def drain(self) -> np.ndarray:
        got = self.events.read(1 << 16)
        if len(got):
            self.received.append(got)
        return got

    def wait_for(self, pred, timeout=60, what="events"):
        deadline = time.monotonic() + timeout
        while not pred():
            self.drain()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.log()}")
            time.sleep(0.002)

    def all_received(self) -> np.ndarray:
        return np.concatenate(self.received) if self.received else np.zeros(0, EVENT_DTYPE)

    def history(self) -> np.ndarray:
        """Received journaled events, each (seq, idx) once (restarts republish a tail),
        without the history served again to answer a SYNC."""
        ev = self.all_received()
        ev = ev[(ev["seq"] > 0) & (ev["flags"] & (EVF_DUPLICATE | EVF_REPLAY) == 0)]
        key = ev["seq"].astype(np.int64) * (1 << 32) + ev["idx"]
        _, first = np.unique(key, return_index=True)
        return ev[np.sort(first)]

    def close(self) -> None:
        try:
            if self.alive():
                self.proc.kill()
                self.proc.wait(timeout=30)
        finally:
            self.requests.close()
            self.events.close()
            unlink_namespace(self.ns)
            assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{self.ns}.")]
