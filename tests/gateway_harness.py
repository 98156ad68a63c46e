"""A real exchange for gateway tests: keys, rings, both shard processes and the gateway.

The rig owns everything it makes (the key and socket directories, the rings'
namespace, the processes) and ``close`` removes all of it, whatever state the
test left it in.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.journal import JournalError, JournalReader
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.topology import event_ring, request_ring
from gateway.client import Client
from gateway.keys import create_client, create_server_keys, load_secret_certificate
from gateway.subscriber import Subscriber
from shm.names import unlink_namespace
from shm.ring import create_ring, inspect_ring

REPO = Path(__file__).resolve().parent.parent
CLIENTS = (1, 2, 3, 4, 5, 6, 7, 8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_notices(client, count: int, kind, timeout: float = 10.0) -> list:
    """The first ``count`` messages of type ``kind`` that reach ``client`` (others are dropped)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        msg = client.recv(left) if left > 0 else None
        if msg is None:
            raise AssertionError(f"{len(got)} of {count} {kind.__name__} messages: {got}")
        if isinstance(msg, kind):
            got.append(msg)
    return got


class GatewayRig:
    """Shards s0 (ACME, BOLT) and s1 (BTC-USD, ETH-USD) and a gateway on ipc and tcp."""

    def __init__(
        self,
        tmp: Path,
        *,
        request_ring_capacity: int = 1024,
        event_ring_capacity: int = 4096,
        orders_per_second: int = 1_000_000,
        burst: int = 1_000_000,
        heartbeat_ms: int = 1_000,
        cancel_on_disconnect_ms: int = 5_000,
        durability: str = "os",
        loop: str = "asyncio",
        max_connections_per_client: int = 64,
    ):
        self.tmp = tmp
        self.loop = loop
        self.ns = "g" + uuid.uuid4().hex[:12]
        # ipc paths must fit in a sockaddr_un (108 bytes): not under pytest's tmp_path
        self.sock_dir = Path(tempfile.mkdtemp(prefix="gw-"))
        self.keys_dir = tmp / "keys"
        self.server_key = create_server_keys(self.keys_dir)
        self.secrets = {}
        for c in CLIENTS:
            self.secrets[c] = tmp / f"client-{c}.key_secret"
            create_client(self.keys_dir, c, self.secrets[c])
        self.endpoints = {
            "tcp": (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"),
            "ipc": (f"ipc://{self.sock_dir}/router", f"ipc://{self.sock_dir}/pub"),
        }
        cfg = parse_config(DEFAULT_TOML)
        replace = msgspec.structs.replace
        self.config = replace(
            cfg,
            journal=replace(cfg.journal, dir=str(tmp / "journal"), durability=durability),
            shm=replace(
                cfg.shm,
                namespace=self.ns,
                request_ring=request_ring_capacity,
                event_ring=event_ring_capacity,
            ),
            gateway=replace(
                cfg.gateway,
                router=[self.endpoints["tcp"][0], self.endpoints["ipc"][0]],
                pub=[self.endpoints["tcp"][1], self.endpoints["ipc"][1]],
                keys_dir=str(self.keys_dir),
                max_connections_per_client=max_connections_per_client,
            ),
            rate=replace(cfg.rate, orders_per_second=orders_per_second, burst=burst),
            session=replace(
                cfg.session,
                heartbeat_ms=heartbeat_ms,
                cancel_on_disconnect_ms=cancel_on_disconnect_ms,
            ),
        )
        self.config_path = tmp / "exchange.toml"
        self.config_path.write_text(dump_config(self.config))
        self.shards = [s.name for s in self.config.shards]
        self.procs: dict[str, subprocess.Popen] = {}
        self.unwatched: list[subprocess.Popen] = []  # see ``start_shard_unwatched``
        self.clients: list = []
        for name in self.shards:
            create_ring(self.ns, request_ring(name), COMMAND_DTYPE, request_ring_capacity)
            create_ring(self.ns, event_ring(name), EVENT_DTYPE, event_ring_capacity)

    # ------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.tmp / f"{name}.log", "a") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *args, "--config", str(self.config_path)],
                cwd=REPO,
                stdout=log,
                stderr=log,
            )

    def start(self, timeout: float = 120) -> None:
        """Every shard, then the gateway, until the gateway has synced with every shard
        (before that it answers their instruments `unavailable`)."""
        for name in self.shards:
            self.start_shard(name)
        for name in self.shards:
            self.wait_shard(name, timeout)
        self.start_gateway(timeout, synced=True)

    def start_shard(self, name: str) -> None:
        self._spawn(name, ["exchange.shard", "--name", name])

    def start_shard_unwatched(self, name: str) -> subprocess.Popen:
        """A shard process that is expected to fail (e.g. on a damaged journal): the rig's
        waits do not watch it, so its exit fails none of them; ``close`` still ends it."""
        self._spawn(name, ["exchange.shard", "--name", name])
        proc = self.procs.pop(name)
        self.unwatched.append(proc)
        return proc

    def wait_shard(self, name: str, timeout: float = 120) -> None:
        self._wait(
            lambda: inspect_ring(self.ns, request_ring(name)).consumer_alive,
            timeout,
            f"shard {name} attached",
        )

    def start_gateway(self, timeout: float = 120, synced: bool = False) -> None:
        """The gateway, until it serves; with ``synced``, until it has synced with every
        shard too (the live orders and the tail of history come with the syncs)."""
        log = self.tmp / "gateway.log"
        text = log.read_text() if log.exists() else ""
        marks = ['"serving"']
        if synced:
            marks += [f'"msg": "synced", "shard": "{name}"' for name in self.shards]
        before = [text.count(m) for m in marks]
        self._spawn("gateway", ["gateway.server", "--loop", self.loop])
        self._wait(
            lambda: (
                log.exists()
                and all(log.read_text().count(m) > n for m, n in zip(marks, before, strict=True))
            ),
            timeout,
            "the gateway serving" + (", synced with every shard" if synced else ""),
        )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.02)

    def stop(self, name: str, timeout: float = 60) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(30)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    # ------------------------------------------------------------ clients and state

    def client(self, client_id: int, transport: str = "tcp", **opts) -> Client:
        public, secret = load_secret_certificate(self.secrets[client_id])
        opts.setdefault("timeout", 10.0)
        c = Client(self.endpoints[transport][0], self.server_key, public, secret, **opts)
        self.clients.append(c)
        return c.connect()

    def subscriber(self, client_id: int, symbols, snapshot, transport: str = "tcp", **opts):
        public, secret = load_secret_certificate(self.secrets[client_id])
        sub = Subscriber(
            self.endpoints[transport][1], self.server_key, public, secret, symbols, snapshot, **opts
        )
        self.clients.append(sub)
        return sub

    def last_seqs(self) -> dict[str, int]:
        """Each shard journal's last seq (0 before its first batch)."""
        out = {}
        for name in self.shards:
            try:
                with JournalReader(str(self.tmp / "journal" / name)) as j:
                    out[name] = j.last_seq
            except JournalError:
                out[name] = 0
        return out

    def order(self, shard: str, order_id: int):
        with JournalReader(str(self.tmp / "journal" / shard)) as j:
            return j.order(order_id)

    def close(self) -> None:
        try:
            for c in self.clients:
                c.close()
            stopping = list(self.procs.values())
            self.procs.clear()
            for proc in stopping:  # all at once: each stop takes a few loop turns
                proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                proc.terminate()
            for proc in stopping:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
            for proc in self.unwatched:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
        finally:
            unlink_namespace(self.ns)
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{self.ns}.")]
