"""Gateway throughput: orders/s through the gateway and a real shard, against a bare echo.

One pipelined client (a DEALER with ``--window`` requests in flight, CURVE
keys, frames encoded up front) drives, for ``--seconds`` each:

- a bare pyzmq ROUTER echo (CURVE too, in its own process): the message rate
  the client and ZeroMQ allow on this machine (``echo_orders_per_sec``);
- the gateway process in front of real shard processes on real rings, with
  single-order frames (``NewOrder``): the shard journal with durability
  ``os`` (``orders_per_sec``) and ``fsync``; the gateway's default asyncio
  loop, and its poll loop beside it (``poll_``);
- the same with ``NewOrders`` frames of ``--batch`` orders (``batch_``).

Each phase starts its exchanges (side by side when two loops are compared)
and measures in rounds that cycle through the echo and each exchange, so a
change in the machine's load hits all of them alike; the figures are medians
over the rounds, and each ``*ratio`` is the median of the rounds' ratios to
the echo of the same round. Beside each rate, the CPU time the process spent
per order (``*gateway_cpu_us_per_order``: every thread of the gateway process,
ZeroMQ's I/O thread too) and per echoed message (``echo_cpu_us_per_msg``): on a
shared machine the rates move with the load, the CPU per order much less.

Every order is a resting limit order on one of shard s0's two instruments
(bids below, asks above a fixed mid: nothing trades), with its own
idempotency key, as a bot would send them; each reply is checked to be an
Ack (BatchAck of Acks), and each echo to be the frame sent. The books are
made big enough to hold every order of a run, and snapshots are left out of
the measurement (a snapshot of such books is a separate cost, bench.shard's).

    python -m bench.gateway [--json] [--seconds S] [--window W] [--batch B]
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import psutil
import zmq

from bench.report import emit
from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.topology import event_ring, request_ring
from gateway.client import connect_curve
from gateway.codec import decode_reply, encode
from gateway.keys import create_client, create_server_keys, load_secret_certificate
from gateway.protocol import Ack, BatchAck, NewOrder, NewOrders, Order
from gateway.server import HWM
from shm.names import unlink_namespace
from shm.ring import create_ring, inspect_ring

REPO = Path(__file__).resolve().parent.parent
CLIENT = 1
RING = 1 << 16
STREAM_ORDERS = 1_000_000  # more than a run sends; every order rests, so the books hold them all
BOOK_CAPACITY = 1 << 19
# mid, tick, how many ticks away from the mid an order may rest: inside the price bands
SYMS = {"ACME": (10_000, 1, 4_000), "BOLT": (2_500, 5, 290)}


def order_stream(n: int, seed: int = 7) -> list[Order]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sym = "ACME" if i % 2 else "BOLT"
        mid, tick, ticks = SYMS[sym]
        side = "buy" if rng.random() < 0.5 else "sell"
        away = rng.randrange(1, ticks) * tick
        px = mid - away if side == "buy" else mid + away
        qty = rng.randrange(1, 20) * (10 if sym == "BOLT" else 1)
        out.append(Order(sym=sym, side=side, qty=qty, px=px, ik=i + 1))
    return out


def frames(orders: list[Order], batch: int) -> list[bytes]:
    if batch == 1:
        return [
            encode(NewOrder(cid=i + 1, **msgspec.structs.asdict(o))) for i, o in enumerate(orders)
        ]
    return [
        encode(NewOrders(cid=i // batch + 1, orders=orders[i : i + batch]))
        for i in range(0, len(orders) - batch + 1, batch)
    ]


def drive(sock: zmq.Socket, out: list[bytes], window: int, seconds: float) -> tuple:
    """Send ``out`` with ``window`` frames in flight until time is up.

    Returns (frames answered, seconds, the replies).
    """
    replies = []
    sent = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    while True:
        while sent < len(out) and sent - len(replies) < window and time.perf_counter() < stop:
            sock.send(out[sent], copy=True)
            sent += 1
        if len(replies) == sent:
            break
        if not sock.poll(30_000):
            raise RuntimeError(f"no reply after {len(replies)} of {sent} frames")
        while len(replies) < sent:
            try:
                replies.append(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
    return len(replies), time.perf_counter() - t0, replies


class Exchange:
    """Keys, rings, shard processes and a gateway, in a scratch directory; ``close`` removes all."""

    def __init__(self, root: Path, durability: str, loop: str):
        self.root = root
        self.procs = []
        self.ns = f"bgw{uuid.uuid4().hex[:12]}"
        keys = root / "keys"
        self.server_key = create_server_keys(keys)
        create_client(keys, CLIENT, root / "client.key_secret")
        self.client_keys = load_secret_certificate(root / "client.key_secret")
        cfg = parse_config(DEFAULT_TOML)
        r = msgspec.structs.replace
        self.endpoint = f"ipc://{root}/router"
        cfg = r(
            cfg,
            journal=r(cfg.journal, dir=str(root / "journal"), durability=durability),
            shm=r(cfg.shm, namespace=self.ns, request_ring=RING, event_ring=RING),
            gateway=r(
                cfg.gateway, router=[self.endpoint], pub=[f"ipc://{root}/pub"], keys_dir=str(keys)
            ),
            rate=r(cfg.rate, orders_per_second=10**9, burst=10**9),
            # no snapshot of these big books inside a measurement
            snapshot=r(cfg.snapshot, every_commands=10**12),
            instruments=[
                r(i, book=r(i.book, capacity=BOOK_CAPACITY)) if i.symbol in SYMS else i
                for i in cfg.instruments
            ],
        )
        (root / "exchange.toml").write_text(dump_config(cfg))
        try:
            for s in cfg.shards:
                create_ring(self.ns, request_ring(s.name), COMMAND_DTYPE, RING)
                create_ring(self.ns, event_ring(s.name), EVENT_DTYPE, RING)
                self._spawn(s.name, ["exchange.shard", "--name", s.name])
            for s in cfg.shards:
                self._wait(lambda s=s: inspect_ring(self.ns, request_ring(s.name)).consumer_alive)
            self._spawn("gateway", ["gateway.server", "--loop", loop])
            log = root / "gateway.log"
            # serving, and synced with every shard (until then its orders are unavailable)
            synced = [f'"msg": "synced", "shard": "{s.name}"' for s in cfg.shards]
            self._wait(lambda: log.exists() and all(m in log.read_text() for m in synced))
        except BaseException:
            self.close()
            raise

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            cmd = [sys.executable, "-m", *args, "--config", str(self.root / "exchange.toml")]
            self.procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log))

    def _wait(self, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                logs = "".join(p.read_text() for p in self.root.glob("*.log"))
                raise RuntimeError(f"the exchange did not start:\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        unlink_namespace(self.ns)


def cpu_seconds(proc: subprocess.Popen) -> float:
    """The process's CPU time so far, every thread (ZeroMQ's I/O thread too)."""
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def check_replies(replies: list[bytes]) -> None:
    for raw in replies:
        reply = decode_reply(raw)
        ok = isinstance(reply, Ack) or (
            isinstance(reply, BatchAck) and all(isinstance(r, Ack) for r in reply.results)
        )
        if not ok:
            raise RuntimeError(f"the gateway answered {reply}")


class Echo:
    """The bare ROUTER echo in its own process, and a client connection to it."""

    def __init__(self, root: Path):
        keys = Path(tempfile.mkdtemp(prefix="echo-", dir=root))
        server_key = create_server_keys(keys)
        create_client(keys, CLIENT, keys / "client.key_secret")
        endpoint = f"ipc://{keys}/echo"
        cmd = [sys.executable, "-m", "bench.gateway", "--serve-echo", endpoint, "--keys", str(keys)]
        self.proc = subprocess.Popen(cmd, cwd=REPO)
        self.rates, self.cpu = [], []  # messages/s; CPU µs per message
        try:
            client_keys = load_secret_certificate(keys / "client.key_secret")
            self.sock = connect_curve(
                zmq.Context.instance(), zmq.DEALER, endpoint, (server_key, *client_keys), 30
            )
        except BaseException:
            self.close()
            raise

    def rate(self, out: list[bytes], window: int, seconds: float) -> float:
        cpu = cpu_seconds(self.proc)
        n, dt, replies = drive(self.sock, out, window, seconds)
        self.cpu.append((cpu_seconds(self.proc) - cpu) * 1e6 / n)
        if replies != out[:n]:
            raise RuntimeError("the echo did not send back what it got")
        return n / dt

    def close(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close(0)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Run:
    """One exchange and the client connection that drives it with frames of ``batch`` orders."""

    def __init__(self, root: Path, durability: str, loop: str, batch: int, frames: list):
        self.batch = batch
        self.frames = frames
        self.pos = 0
        self.rates, self.ratios = [], []
        self.cpu = []  # the gateway process's CPU µs per order
        work = Path(tempfile.mkdtemp(prefix=f"{durability}-{loop}-{batch}-", dir=root))
        self.exchange = Exchange(work, durability, loop)
        try:
            keys = (self.exchange.server_key, *self.exchange.client_keys)
            ctx = zmq.Context.instance()
            self.sock = connect_curve(ctx, zmq.DEALER, self.exchange.endpoint, keys, 10)
        except BaseException:
            self.exchange.close()
            raise

    def rate(self, window: int, seconds: float) -> float:
        if len(self.frames) - self.pos < 2 * window:
            raise RuntimeError("the order stream ran out: make STREAM_ORDERS larger")
        gateway = self.exchange.procs[-1]
        cpu = cpu_seconds(gateway)
        n, dt, replies = drive(self.sock, self.frames[self.pos :], window, seconds)
        self.cpu.append((cpu_seconds(gateway) - cpu) * 1e6 / (n * self.batch))
        check_replies(replies)
        self.pos += n
        return n * self.batch / dt

    def close(self) -> None:
        self.sock.close(0)
        self.exchange.close()


def measure(root, echo: Echo, out: dict, setups: list, args) -> list[Run]:
    """Exchanges side by side, measured in rounds that cycle through the echo and each
    of them: the machine's load drifts, the ratios of one round much less."""
    runs = []
    try:
        for durability, loop, batch in setups:
            runs.append(Run(root, durability, loop, batch, out[batch]))
        for run in runs:
            run.rate(max(1, args.window // run.batch), 0.3)  # warm up
        for _ in range(args.rounds):
            echo_rate = echo.rate(out[1], args.window, args.seconds)
            echo.rates.append(echo_rate)
            for run in runs:
                run.rates.append(run.rate(max(1, args.window // run.batch), args.seconds))
                run.ratios.append(run.rates[-1] / echo_rate)
    finally:
        for run in runs:
            run.close()
    return runs


def serve_echo(endpoint: str, keys_dir: str) -> None:
    """The bare ROUTER: what comes in goes back, nothing else (CURVE, no ZAP)."""
    from gateway.keys import load_server_keys

    public, secret = load_server_keys(keys_dir)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.sndhwm = sock.rcvhwm = HWM  # as the gateway: a ROUTER drops what is over it
    sock.linger = 0  # exit at once on SIGTERM, whatever is queued
    sock.bind(endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        sock.send_multipart(sock.recv_multipart())


# measured together: (result key prefix, journal durability, gateway loop, batch frames?)
PHASES = (
    (("", "os", "asyncio", False), ("poll_", "os", "poll", False)),
    (("fsync_", "fsync", "asyncio", False),),
    (("batch_", "os", "asyncio", True), ("poll_batch_", "os", "poll", True)),
    (("fsync_batch_", "fsync", "asyncio", True),),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per run (median)")
    ap.add_argument("--window", type=int, default=1000, help="orders in flight")
    ap.add_argument("--batch", type=int, default=64, help="orders per NewOrders frame")
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    ap.add_argument("--serve-echo", help=argparse.SUPPRESS)
    ap.add_argument("--keys", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo, args.keys)
        return
    os.makedirs(args.dir, exist_ok=True)
    orders = order_stream(STREAM_ORDERS)
    out = {1: frames(orders, 1), args.batch: frames(orders, args.batch)}
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-", dir=args.dir))
    result = {
        "bench": "gateway",
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "window": args.window,
        "batch": args.batch,
    }
    try:
        echo = Echo(root)
        try:
            for phase in PHASES:
                setups = [(d, loop, args.batch if batched else 1) for _, d, loop, batched in phase]
                for (prefix, *_), run in zip(
                    phase, measure(root, echo, out, setups, args), strict=True
                ):
                    result[f"{prefix}orders_per_sec"] = round(statistics.median(run.rates))
                    result[f"{prefix}ratio"] = round(statistics.median(run.ratios), 3)
                    cpu = statistics.median(run.cpu)
                    result[f"{prefix}gateway_cpu_us_per_order"] = round(cpu, 2)
        finally:
            echo.close()
    finally:
        shutil.rmtree(root)
    result["echo_orders_per_sec"] = round(statistics.median(echo.rates))
    result["echo_cpu_us_per_msg"] = round(statistics.median(echo.cpu), 2)
    emit(result, args.json)


if __name__ == "__main__":
    main()
