"""Gateway start-up benchmark: how long a gateway takes to catch up with shards whose
journals hold long histories, with no state of its own (cold) and from its checkpoint (warm).

    python -m bench.gateway_start [--commands N] [--sizes A,B,...] [--quick] [--json]

For each size, both shards of the default config get a journal of that many
commands, written directly through ``ShardEngine.apply`` in batches of 4096
(no processes, durability ``os``): keyed and unkeyed GTC limit orders around
the reference price (some cross and trade, most rest), IOC orders that take
liquidity, and cancels of every GTC order some batches later, so the books
stay small however long the history. Then the real shard processes start on
fresh rings and recover, and only then is the gateway started, twice:

- cold: no gateway state directory, so each shard replays its whole journal
  to the gateway (CMD_SYNC from seq 0): this grows with history;
- warm: after a SIGTERM (a clean checkpoint), the gateway asks only for the
  events after its watermark: this should not grow with history.

Each start is timed from just before the gateway's process is spawned to its
log lines (their ``ts``, wall clock to the microsecond): ``compiled`` (imports
and kernels loaded), ``state loaded`` (checkpoint read, syncs asked),
``serving`` (sockets bound; orders are still refused ``unavailable`` until a
shard is synced) and the ``synced`` of each shard. The start-up figure is the
last ``synced``. ``--sizes`` defaults to a tenth of ``--commands`` and
``--commands``, so the default run (1,000,000 per shard) also gives the ratio
of the warm start at the largest size to the smallest.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np

from bench.daemon import REPO, free_port
from bench.report import emit
from exchange import topology
from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.engine import ORDER_ID_SHARD_SHIFT, ShardEngine
from exchange.engine import warm_up as warm_up_engine
from exchange.journal import Journal
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    COMMAND_DTYPE,
    EV_TRADE,
    EVENT_DTYPE,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_NEWEST,
    STP_NONE,
    TIF_GTC,
    TIF_IOC,
    TYPE_LIMIT,
    commands,
)
from exchange.topology import event_ring, request_ring
from gateway.keys import create_server_keys
from gateway.warmup import warm_up as warm_up_gateway
from shm.names import unlink_namespace
from shm.ring import create_ring, inspect_ring

BATCH = 4096  # commands per apply: the shard's own largest batch
# per batch: GTC orders, IOC orders and cancels (of the GTC orders of the batch
# CANCEL_AFTER batches before); with as many cancels as GTC orders, at most
# CANCEL_AFTER batches' GTC orders can rest
GTC_PER_BATCH = 1600
CANCELS_PER_BATCH = GTC_PER_BATCH
CANCEL_AFTER = 4
KEYED = 0.7  # share of NEWs with an idempotency key
CLIENTS = 8
REST_TICKS = 30  # GTC orders rest up to this many ticks from the reference ...
CROSS_TICKS = 2  # ... or cross it by up to this many, and trade
IOC_TICKS = 5  # IOC orders take up to this far through the reference
START_SECONDS = 900  # a cold sync of millions of events, on a busy machine
TARGET_SECONDS = 2.0  # the bound for a warm start at 1,000,000 commands per shard
QUICK_SIZES = [20_000, 100_000]


def bench_config(root: Path, ns: str):
    """The default config (two shards, four instruments) with its own journals, rings and
    ports; ``state_dir`` stays "", so the gateway's state is ``<root>/gateway``."""
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    return r(
        cfg,
        journal=r(cfg.journal, dir=str(root / "journal"), durability="os"),
        shm=r(cfg.shm, namespace=ns),
        gateway=r(
            cfg.gateway,
            router=[f"tcp://127.0.0.1:{free_port()}"],
            pub=[f"tcp://127.0.0.1:{free_port()}"],
            keys_dir=str(root / "keys"),
        ),
    )


def shard_stream(cfg, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` commands for shard ``index``, in batches of ``BATCH``.

    The order ids are the ones the shard will give: every command is sequenced
    (the keys are unique, the instruments the shard's), so the k-th gets seq
    k + 1 and a NEW the id ``index << ORDER_ID_SHARD_SHIFT | seq``.
    """
    insts = [cfg.instrument(s) for s in cfg.shards[index].instruments]
    tick = np.array([i.book.tick_size for i in insts])
    lot = np.array([i.book.lot_size for i in insts])
    ref = np.array(
        [i.ref_price - (i.ref_price - i.book.min_price) % i.book.tick_size for i in insts]
    )
    batches = -(-n // BATCH)
    cmds = commands(batches * BATCH)
    gtc_of = []  # per batch: the stream positions of its GTC orders
    for b in range(batches):
        at = b * BATCH
        cancels = CANCELS_PER_BATCH if b >= CANCEL_AFTER else 0
        kind = np.full(BATCH, TIF_IOC, np.int64)  # slot role: IOC, GTC or cancel
        kind[:GTC_PER_BATCH] = TIF_GTC
        kind[GTC_PER_BATCH : GTC_PER_BATCH + cancels] = -1
        kind = rng.permutation(kind)
        c = cmds[at : at + BATCH]
        new = kind >= 0
        gtc = kind == TIF_GTC
        inst = rng.integers(0, len(insts), BATCH)
        side = rng.choice(np.array([SIDE_BUY, SIDE_SELL]), BATCH)
        # ticks away from the reference on the order's passive side; negative crosses it
        away = np.where(gtc, rng.integers(-CROSS_TICKS, REST_TICKS + 1, BATCH), -IOC_TICKS)
        price = ref[inst] + np.where(side == SIDE_BUY, -away, away) * tick[inst]
        keyed = new & (rng.random(BATCH) < KEYED)
        c["kind"] = np.where(new, CMD_NEW, CMD_CANCEL)
        c["instrument"] = inst
        c["side"] = side
        c["price"] = price
        c["qty"] = lot[inst] * rng.integers(1, 21, BATCH)
        c["tif"] = np.where(gtc, TIF_GTC, TIF_IOC)
        c["ord_type"] = TYPE_LIMIT
        c["stp"] = np.where(rng.random(BATCH) < 0.5, STP_NONE, STP_CANCEL_NEWEST)
        c["client"] = rng.integers(1, CLIENTS + 1, BATCH)
        # unique across shards too: the gateway's key view holds both shards' pairs
        pos = np.arange(at, at + BATCH, dtype=np.uint64)
        c["idem_key"] = np.where(
            keyed, (np.uint64(index) << np.uint64(40)) | (pos + 1), np.uint64(0)
        )
        c["req_id"] = pos + 1
        gtc_of.append(at + np.flatnonzero(gtc))
        if cancels:
            slots = np.flatnonzero(kind < 0)
            target = rng.permutation(gtc_of[b - CANCEL_AFTER])
            c["order_id"][slots] = (index << ORDER_ID_SHARD_SHIFT) | (target + 1)
            for f in ("instrument", "client", "side", "price"):
                c[f][slots] = cmds[f][target]
            c["qty"][slots] = 0
            c["tif"][slots] = 0
            c["stp"][slots] = 0
    return cmds[:n]


def build_journal(cfg, index: int, cmds: np.ndarray) -> dict:
    """Journal ``cmds`` for shard ``index`` as its process would, without the process."""
    shard = cfg.shards[index]
    books = [cfg.instrument(s).book for s in shard.instruments]
    t0 = time.perf_counter()
    n_events = n_trades = 0
    with Journal(topology.journal_path(cfg, shard.name), durability="os") as journal:
        engine = ShardEngine(index, books, journal, snapshot_every=cfg.snapshot.every_commands)
        for at in range(0, len(cmds), BATCH):
            ev = engine.apply(cmds[at : at + BATCH]).events
            n_events += len(ev)
            n_trades += int(np.count_nonzero(ev["kind"] == EV_TRADE))
        if engine.last_seq != len(cmds):
            raise RuntimeError(
                f"shard {shard.name}: {engine.last_seq} of {len(cmds)} commands sequenced"
            )
        resting = sum(len(b.canonical_rows()) for b in engine.books)
    return {
        "seconds": time.perf_counter() - t0,
        "events": n_events,
        "trades": n_trades,
        "resting": resting,
    }


def log_lines(path: Path) -> list[dict]:
    """The JSON lines of a log (a line being written is left for the next look)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


class Exchange:
    """Rings, shard processes and gateway starts over one set of journals; ``close``
    removes every process and ring it made (the directory is the caller's)."""

    def __init__(self, root: Path, cfg):
        self.root = root
        self.cfg = cfg
        self.ns = cfg.shm.namespace
        self.path = root / "exchange.toml"
        self.path.write_text(dump_config(cfg))
        self.names = [s.name for s in cfg.shards]
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = 0
        for name in self.names:
            create_ring(self.ns, request_ring(name), COMMAND_DTYPE, cfg.shm.request_ring)
            create_ring(self.ns, event_ring(name), EVENT_DTYPE, cfg.shm.event_ring)

    def _spawn(self, name: str, log: Path, args: list[str]) -> None:
        with open(log, "w") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *args, "--config", str(self.path)],
                cwd=REPO,
                stdout=out,
                stderr=out,
            )

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.01)

    def start_shards(self) -> None:
        """Every shard recovered, its tail republished, its request ring attached."""
        for name in self.names:
            self._spawn(name, self.root / f"{name}.log", ["exchange.shard", "--name", name])
        for name in self.names:
            self._wait(lambda name=name: self._running(name), f"shard {name} running")

    def _running(self, name: str) -> bool:
        log = self.root / f"{name}.log"
        return inspect_ring(self.ns, request_ring(name)).consumer_alive and any(
            x.get("msg") == "running" for x in log_lines(log)
        )

    def start_gateway(self) -> dict:
        """Start the gateway and wait for every shard's ``synced``; seconds from the spawn
        to each milestone of its log."""
        self.starts += 1
        log = self.root / f"gateway-{self.starts}.log"

        def synced() -> set:
            return {x["shard"] for x in log_lines(log) if x.get("msg") == "synced"}

        t0 = time.time()
        self._spawn("gateway", log, ["gateway.server"])
        self._wait(lambda: synced() >= set(self.names), "every shard synced")
        lines = log_lines(log)
        first = {}
        for x in lines:
            first.setdefault(x["msg"], x)
        out = {
            "compiled": first["compiled"]["ts"] - t0,
            "state_loaded": first["state loaded"]["ts"] - t0,
            "serving": first["serving"]["ts"] - t0,
            "checkpoint": first["state loaded"]["checkpoint"],
            "watermarks": first["state loaded"]["watermarks"],
            "synced": {},
            "seq": {},
            "resting": {},
            "errors": [x for x in lines if x.get("level") == "error"],
        }
        for x in lines:
            if x.get("msg") == "synced" and x["shard"] not in out["synced"]:
                out["synced"][x["shard"]] = x["ts"] - t0
                out["seq"][x["shard"]] = x["seq"]
                out["resting"][x["shard"]] = x["resting"]
        out["synced_all"] = max(out["synced"].values())
        out["sync"] = out["synced_all"] - out["state_loaded"]
        return out

    def stop(self, name: str) -> float:
        """SIGTERM and wait for a clean exit; the seconds it took."""
        proc = self.procs.pop(name)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(START_SECONDS)
        if code != 0:
            raise RuntimeError(f"{name} exited with {code} after SIGTERM:\n{self.logs()}")
        return time.perf_counter() - t0

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log"))
        )

    def close(self) -> None:
        try:
            for name in list(self.procs):
                proc = self.procs.pop(name)
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
        finally:
            unlink_namespace(self.ns)


def measure(n: int, streams: list[np.ndarray], base: Path) -> dict:
    """Journals of ``n`` commands per shard, then a cold and a warm gateway start."""
    root = Path(tempfile.mkdtemp(prefix=f"{n}-", dir=base))
    cfg = bench_config(root, "b" + uuid.uuid4().hex[:12])
    create_server_keys(root / "keys")
    try:
        built = [build_journal(cfg, i, s[:n]) for i, s in enumerate(streams)]
        ex = Exchange(root, cfg)
        try:
            ex.start_shards()
            cold = ex.start_gateway()
            stop = ex.stop("gateway")
            warm = ex.start_gateway()
            ex.stop("gateway")
            for name in ex.names:
                ex.stop(name)
        finally:
            ex.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    names = [s.name for s in cfg.shards]
    return {
        "commands": n,
        "build_seconds": sum(b["seconds"] for b in built),
        "events": {name: b["events"] for name, b in zip(names, built, strict=True)},
        "trades": {name: b["trades"] for name, b in zip(names, built, strict=True)},
        "resting": {name: b["resting"] for name, b in zip(names, built, strict=True)},
        "cold": cold,
        "warm": warm,
        "stop_seconds": stop,
    }


def _rounded(x):
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def summary(runs: list[dict]) -> dict:
    first, last = runs[0], runs[-1]
    synced_ok = all(
        start["seq"] == {name: run["commands"] for name in run["events"]}
        and start["resting"] == run["resting"]
        for run in runs
        for start in (run["cold"], run["warm"])
    )
    return {
        "bench": "gateway_start",
        "batch": BATCH,
        "sizes": [r["commands"] for r in runs],
        "cold_seconds": [r["cold"]["synced_all"] for r in runs],
        "warm_seconds": [r["warm"]["synced_all"] for r in runs],
        "warm_ratio": last["warm"]["synced_all"] / first["warm"]["synced_all"],
        "cold_ratio": last["cold"]["synced_all"] / first["cold"]["synced_all"],
        "target_seconds": TARGET_SECONDS,
        "warm_under_target": last["warm"]["synced_all"] < TARGET_SECONDS,
        # every start synced each shard at its journal's end with its books' resting orders
        "synced_ok": synced_ok,
        "errors": sum(len(r[k]["errors"]) for r in runs for k in ("cold", "warm")),
        "runs": runs,
    }


def table(out: dict) -> str:
    cols = (
        "commands/shard",
        "events/shard",
        "build s",
        "cold serving",
        "cold synced",
        "warm loaded",
        "warm serving",
        "warm synced",
    )
    rows = ["  ".join(f"{c:>14}" for c in cols)]
    for r in out["runs"]:
        cold, warm = r["cold"], r["warm"]
        cells = [f"{r['commands']:,}", f"{max(r['events'].values()):,}"]
        cells += [f"{x:.3f}" for x in (r["build_seconds"], cold["serving"], cold["synced_all"])]
        cells += [f"{warm[k]:.3f}" for k in ("state_loaded", "serving", "synced_all")]
        rows.append("  ".join(f"{c:>14}" for c in cells))
    return "\n".join(rows)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise ValueError(text)
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=1_000_000, help="commands per shard")
    ap.add_argument("--sizes", help="comma-separated commands per shard (default: N/10,N)")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    if args.quick:
        sizes = QUICK_SIZES
    elif args.sizes:
        try:
            sizes = parse_sizes(args.sizes)
        except ValueError:
            ap.error("--sizes must be positive integers separated by commas")
    else:
        if args.commands < 1:
            ap.error("--commands must be >= 1")
        sizes = sorted({max(args.commands // 10, 1), args.commands})
    load = os.getloadavg()[0]
    # the kernels the processes load from Numba's cache are compiled now, not in a
    # timed start (a cold compile takes tens of seconds)
    cfg = parse_config(DEFAULT_TOML)
    warm_up_engine()
    warm_up_gateway(cfg)
    rng = np.random.default_rng(args.seed)
    # one stream per shard, each size its prefix: a larger size adds history
    streams = [shard_stream(cfg, i, sizes[-1], rng) for i in range(len(cfg.shards))]
    os.makedirs(args.dir, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-gateway-start-", dir=args.dir))
    try:
        runs = []
        for n in sizes:
            runs.append(measure(n, streams, base))
            if not args.json:
                print(
                    f"  {n:,} commands/shard: cold {runs[-1]['cold']['synced_all']:.3f} s, "
                    f"warm {runs[-1]['warm']['synced_all']:.3f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = summary(runs)
    out.update(loadavg_1m_start=load, loadavg_1m_end=os.getloadavg()[0])
    out = _rounded(out)
    if args.json:
        emit(out, True)
    else:
        print(table(out))
        emit({k: v for k, v in out.items() if k != "runs"}, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
