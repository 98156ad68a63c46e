"""A real daemon (`exchanged run`) on a tmp config: unique namespace and ports, its own
journal and keys directories, a log file; registered clients on demand.

Used by the whole-daemon tests and the tools' tests. ``close()`` kills whatever
is left of the process group and removes the namespace's shared memory.
Runs that kill the supervisor itself (the chaos suite) ``launch()`` a new one on
the same config, and end with ``close_all()``: the children of every supervisor
they saw are killed too (each runs in its own session, outside the group).
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
import zmq
import zmq.auth

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from gateway.client import Client
from gateway.keys import create_client, load_secret_certificate, server_public_key
from shm.names import unlink_namespace
from shm.warmup import sweep

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
            metrics=r(cfg.metrics, listen=f"127.0.0.1:{_free_port()}"),
        )
        self.config = cfg
        self.path = tmp / "exchange.toml"
        self.path.write_text(dump_config(cfg))
        self.log_path = tmp / "daemon.log"
        self.proc = None
        self._seen: set[int] = set()  # children seen by ``children``, for ``close_all``

    def start(self) -> None:
        self.launch()
        # until every shard runs and the gateway has synced with it: on a cold Numba
        # cache the shards compile for a while, and the gateway answers "unavailable"
        # meanwhile
        self.wait_log('"msg": "serving"')
        shards = len(self.config.shards)
        self.wait_log('"msg": "running"', count=shards, timeout=240)
        self.wait_log('"msg": "synced"', count=shards, timeout=240)

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

    # ------------------------------------------------------------ the supervisor's death
    # For runs that kill the supervisor itself and start another on the same config.

    def launch(self) -> None:
        """Start ``exchanged run`` again on this config, without waiting for anything (after
        the last supervisor died: the new one adopts the rings it left)."""
        assert self.proc is None or self.proc.poll() is not None, "a supervisor still runs"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.path)],
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def children(self) -> list[int]:
        """The running supervisor's children, from /proc (a child it just started counts
        before the status file names it); each is remembered for ``close_all``."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found = [pid for pid in _pids() if _parent(pid) == self.proc.pid and self.ours(pid)]
        self._seen.update(found)
        return found

    def ours(self, pid: int) -> bool:
        """``pid`` runs (not a zombie) and its command line names this daemon's config: a
        pid reused by some other process since is not ours."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.path).encode() in argv

    def _freeze(self) -> list[int]:
        """SIGSTOP the supervisor and wait until it is stopped: it starts no child from
        then on, so its children are all known. Returns them."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(self.proc.pid) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.children()

    def kill_supervisor(self) -> list[int]:
        """SIGKILL the supervisor alone; returns its children, which the parent-death
        signal (SIGTERM) now stops."""
        kids = self._freeze()
        self.proc.kill()
        self.proc.wait(timeout=30)
        return kids

    def kill_everything(self) -> list[int]:
        """SIGKILL the supervisor and every child at once (the supervisor stopped first, so
        that it neither restarts a child nor outlives one); returns the children."""
        kids = self._freeze()
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=30)
        return kids

    def wait_gone(self, pids, timeout: float = 60) -> list[int]:
        """Wait until none of ``pids`` is ours any more; returns those still running then."""
        deadline = time.monotonic() + timeout
        while True:
            left = [pid for pid in pids if self.ours(pid)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def started(self) -> set[int]:
        """Every child a supervisor of this daemon logged starting."""
        out = set()
        for line in self.log().splitlines():
            if line.startswith("{") and '"msg": "started"' in line:
                doc = json.loads(line)
                if doc.get("role") == "supervisor" and "child_pid" in doc:
                    out.add(doc["child_pid"])
        return out

    def close_all(self) -> None:
        """``close``, and before it SIGKILL every process of this daemon (the children of
        earlier supervisors too) that still runs, and remove the throwaway warm-up rings
        (``shm.warmup``) of those killed while warming up."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill_everything()
        pids = self._seen | self.started()
        left = [pid for pid in pids if self.ours(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        self.wait_gone(left, 30)
        sweep()
        self.close()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name: state, ppid, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else int(stat[1])


def _state(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[0]


def reconfigured(daemon: "Daemon", change) -> "Daemon":
    """``daemon`` with its config changed by ``change(config) -> config``, before it starts."""
    daemon.config = change(daemon.config)
    daemon.path.write_text(dump_config(daemon.config))
    return daemon


def curve_socket(daemon: "Daemon", client_id: int, kind: int) -> zmq.Socket:
    """A plain socket of ``kind`` with a registered client key, not connected yet:
    what a bot written from PROTOCOL.md alone has (no client library)."""
    daemon.client(client_id).close()  # registers the key, writes the certificate
    s = zmq.Context.instance().socket(kind)
    s.linger = 0
    s.curve_serverkey = server_public_key(daemon.config.gateway.keys_dir)
    cert = daemon.tmp / f"bot{client_id}.key_secret"
    s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(cert)
    return s


def raw_dealer(daemon: "Daemon", client_id: int) -> zmq.Socket:
    """A plain DEALER with a registered key, connected to the orders endpoint."""
    s = curve_socket(daemon, client_id, zmq.DEALER)
    s.connect(daemon.router)
    return s


def ask(s: zmq.Socket, msg: dict) -> dict:
    """Send one request map; its reply (other messages passed over)."""
    s.send(msgspec.msgpack.encode(msg))
    while True:
        assert s.poll(10_000)
        reply = msgspec.msgpack.decode(s.recv())
        if reply.get("cid") == msg["cid"]:
            return reply
