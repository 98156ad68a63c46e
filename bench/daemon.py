"""The real daemon (``exchanged run``) on a scratch config, for the benchmarks.

    d = BenchDaemon(root, durability="fsync", clients=[1, 2, 3, 4])
    d.start()        # supervisor, shards and gateway; returns once all serve
    ...              # bots connect to d.endpoint with d.server_key and d.secret(c)
    d.stop()         # SIGTERM: the supervisor stops everything cleanly
    d.close()        # whatever is left: killed, shared memory removed

Everything lives under ``root``: journals (on the disk ``root`` is on, so that
``fsync`` is real), keys, the log. The namespace and the tcp ports are unique,
so a benchmark can run beside a deployment or the tests. The clients are
registered before the start and the rate limit is lifted, so that a bot is
never refused for being fast. ``wait`` sets every process's wait strategy
(``shm.wait``) and ``cpus`` pins processes by name ("gateway", a shard's name);
``retain_commands`` sets the journals' retention (``[journal]``) and
``snapshot_every`` the commands between a shard's snapshots (``[snapshot]``).
The rest is the embedded default config.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec

from exchange import topology
from exchange.config import DEFAULT_TOML, dump_config, parse_config
from gateway.keys import create_client, create_server_keys
from shm.names import unlink_namespace

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 240  # a cold Numba cache compiles for a while


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchDaemon:
    def __init__(
        self,
        root: Path,
        *,
        durability: str,
        clients: list[int],
        wait: str = "sleep",
        cpus: dict[str, list[int]] | None = None,
        retain_commands: int | None = None,
        snapshot_every: int | None = None,
    ):
        self.root = root
        self.ns = "b" + uuid.uuid4().hex[:12]
        keys = root / "keys"
        self.server_key = create_server_keys(keys)
        self.secrets = {c: root / f"client-{c}.key_secret" for c in clients}
        for c, path in self.secrets.items():
            create_client(keys, c, path)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        cfg = parse_config(DEFAULT_TOML)
        r = msgspec.structs.replace
        cpus = cpus or {}
        self.config = r(
            cfg,
            shards=[r(s, wait=wait, cpus=cpus.get(s.name, [])) for s in cfg.shards],
            journal=r(
                cfg.journal,
                dir=str(root / "journal"),
                durability=durability,
                retain_commands=cfg.journal.retain_commands
                if retain_commands is None
                else retain_commands,
            ),
            gateway=r(
                cfg.gateway,
                router=[self.endpoint],
                pub=[f"tcp://127.0.0.1:{free_port()}"],
                keys_dir=str(keys),
                wait=wait,
                cpus=cpus.get("gateway", []),
            ),
            snapshot=r(cfg.snapshot, every_commands=snapshot_every or cfg.snapshot.every_commands),
            rate=r(cfg.rate, orders_per_second=10**9, burst=10**9),
            shm=r(cfg.shm, namespace=self.ns),
            metrics=r(cfg.metrics, listen=f"127.0.0.1:{free_port()}"),
        )
        self.path = root / "exchange.toml"
        self.path.write_text(dump_config(self.config))
        self.log_path = root / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.path)],
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while not self._serving():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        text = self.log()
        return '"msg": "serving"' in text and text.count('"msg": "running"') >= len(
            self.config.shards
        )

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def pids(self) -> dict[str, int]:
        """name -> pid of the supervisor and each of its children."""
        path = Path(topology.supervisor_status_path(self.config))
        status = json.loads(path.read_text())
        out = {"supervisor": status["supervisor_pid"]}
        out.update({c["name"]: c["pid"] for c in status["children"]})
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self.proc = None
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        unlink_namespace(self.ns)
