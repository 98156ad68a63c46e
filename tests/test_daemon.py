"""The whole daemon as `exchanged run`: supervisor, shards, gateway, a real client over CURVE."""

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
import pytest

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.journal import Journal
from gateway.client import Client
from gateway.keys import create_client, load_secret_certificate, server_public_key
from gateway.protocol import Ack, Fill
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
        self.wait_log('"msg": "serving"')

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


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    try:
        yield d
    finally:
        d.close()


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(240)
def test_trade_kill_a_shard_keep_trading_stop_clean(daemon):
    daemon.start()
    maker, taker = daemon.client(1), daemon.client(2)
    acked = []
    try:
        sell = maker.new_order("ACME", "sell", 10, px=10_000)
        assert isinstance(sell, Ack), sell
        buy = taker.new_order("ACME", "buy", 4, px=10_000)
        assert isinstance(buy, Ack), buy
        acked += [sell.oid, buy.oid]
        fills = [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
        assert [(f.oid, f.qty, f.leaves) for f in fills] == [(sell.oid, 4, 6)]

        # SIGKILL the shard of ACME: the supervisor restarts it, it recovers
        shard = daemon.child_pid("s0")
        os.kill(shard, signal.SIGKILL)
        daemon.wait_log('"msg": "child exited; restarting"')
        daemon.wait_log('"msg": "running", "seq": 2', count=1)
        deadline = time.monotonic() + 60
        while True:  # the first orders after the kill may meet the restart
            again = taker.new_order("ACME", "buy", 6, px=10_000)
            if isinstance(again, Ack) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert isinstance(again, Ack), again
        acked.append(again.oid)
        status = maker.status("ACME", sell.oid)
        assert (status.leaves, status.state) == (0, "filled"), status
    finally:
        maker.close()
        taker.close()
    children = _children_of(daemon.proc.pid)
    assert daemon.stop() == 0, daemon.log()[-3000:]
    # nothing left behind: no process, no shared memory, every ack journaled
    assert not [p for p in children if os.path.exists(f"/proc/{p}")]
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{daemon.ns}.")]
    with Journal(str(Path(daemon.config.journal.dir) / "s0"), readonly=True) as j:
        for oid in acked:
            assert j.order(oid) is not None, oid


@pytest.mark.timeout(60)
def test_bad_config_is_one_clear_error_before_anything_starts(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_TOML.replace('durability = "fsync"', 'durability = "sometimes"'))
    out = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "run", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "journal.durability" in out.stderr
    assert not (tmp_path / "var").exists()
