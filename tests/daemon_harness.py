"""A real daemon (`exchanged run`) on a tmp config: unique namespace and ports, its own
journal and keys directories, a log file; registered clients on demand.

Used by the whole-daemon tests and the tools' tests. ``close()`` kills whatever
is left of the process group and removes the namespace's shared memory.
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

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from gateway.client import Client
from gateway.keys import create_client, load_secret_certificate, server_public_key
from shm.names import unlink_namespace

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.ns = "d" + uuid.uuid4().hex[:12]
        cfg = parse_config(DEFAULT_TOML)
        r = msgspec.structs.replace
        self.router = f"tcp://127.0.0.1:{_free_port()}"
        cfg = r(
            cfg,
            journal=r(cfg.journal, dir=str(tmp / "var" / "journal"), durability="os"),
            gateway=r(
                cfg.gateway,
                router=[self.router],
                pub=[f"tcp://127.0.0.1:{_free_port()}"],
                keys_dir=str(tmp / "var" / "keys"),
            ),
            shm=r(cfg.shm, namespace=self.ns),
        )
        self.config = cfg
        self.path = tmp / "exchange.toml"
        self.path.write_text(dump_config(cfg))
        self.log_path = tmp / "daemon.log"
        self.proc = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exchange.cli", "run", "--config", str(self.path)],
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        # until every shard runs: on a cold Numba cache they compile for a while,
        # and the gateway answers "unavailable" meanwhile
        self.wait_log('"msg": "serving"')
        self.wait_log('"msg": "running"', count=len(self.config.shards), timeout=240)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, count: int = 1, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"waiting for {text!r}: {self.log()[-3000:]}")
            time.sleep(0.05)

    def status(self) -> dict:
        run = Path(self.config.journal.dir).parent / "run" / f"{self.ns}.json"
        return json.loads(run.read_text())

    def child_pid(self, name: str) -> int:
        return next(c["pid"] for c in self.status()["children"] if c["name"] == name)

    def client(self, client_id: int) -> Client:
        keys = self.config.gateway.keys_dir
        secret = self.tmp / f"bot{client_id}.key_secret"
        if not secret.exists():
            create_client(keys, client_id, secret)
            time.sleep(0.5)  # the gateway reloads its key table
        public, private = load_secret_certificate(secret)
        return Client(self.router, server_public_key(keys), public, private, timeout=5.0).connect()

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
