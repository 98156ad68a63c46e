"""One shard process under steady load for minutes: what in its memory grows?

    python -m bench.shard_memory [--minutes 4] [--rate 7000] [--window 20]
        [--warmup-windows 2] [--durability fsync|os] [--tracemalloc FILE] [--json]

Shard s0 of the default config (its two instruments, its snapshot schedule) is
started as the daemon starts it (``python -m exchange.shard``) on a fresh journal,
and fed through its request ring what ``bench.soak``'s bots send through the
gateway: NEW orders on both instruments from 4 clients, each with its own
idempotency key, half of them IOC orders priced through the book, half GTC orders
1-20 ticks from the reference price, at ``--rate`` orders/s. Each window of
``--window`` seconds ends with a MASS_CANCEL per client and instrument (the books
start every window empty, as in the soak); once the shard has answered them, its
memory is sampled from /proc/<pid>/smaps by kind of mapping (``exchange.memdebug``:
the brk heap, other anonymous mappings, the journal's map, the rest) together with
glibc's view of it when ``--tracemalloc`` asks the shard to dump
(``EXCHANGE_MEMDEBUG``: tracemalloc's top growths, mallinfo2, gc; that slows the
shard, so the rate it sustains is lower).

The sample after the first ``--warmup-windows`` windows is the baseline; the
output is each kind's growth from it to the last sample, in kB and in bytes per
order fed after the baseline. No gateway, no sockets: only the shard's memory.
"""

import argparse
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

from bench.report import emit
from bench.shard import start_shard
from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.memdebug import ENV as MEMDEBUG_ENV
from exchange.memdebug import smaps_by_kind
from exchange.records import (
    CMD_MASS_CANCEL,
    CMD_NEW,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_NEWEST,
    TIF_GTC,
    TIF_IOC,
    commands,
)
from shm.consumer import Consumer
from shm.names import unlink_namespace
from shm.producer import Producer

CLIENTS = 4
PASSIVE_TICKS = 20  # as bench.bots
MAX_LOTS = 10
TICK_SECONDS = 0.002  # how often the feeder tops up what is due
DUMP_SECONDS = 120  # a tracemalloc snapshot of a big heap takes a while


def orders(rng: np.random.Generator, books: list, n: int) -> np.ndarray:
    """``n`` keyed NEW commands as bench.bots sends them (``books``: the shard's
    instruments, in its order)."""
    cmds = commands(n)
    inst = rng.integers(0, len(books), n)
    buy = rng.random(n) < 0.5
    ioc = rng.random(n) < 0.5
    ticks = np.where(ioc, -PASSIVE_TICKS, rng.integers(1, PASSIVE_TICKS + 1, n))
    ref = np.array([b.ref_price for b in books])[inst]
    tick = np.array([b.book.tick_size for b in books])[inst]
    lot = np.array([b.book.lot_size for b in books])[inst]
    cmds["kind"] = CMD_NEW
    cmds["instrument"] = inst
    cmds["side"] = np.where(buy, SIDE_BUY, SIDE_SELL)
    cmds["tif"] = np.where(ioc, TIF_IOC, TIF_GTC)
    cmds["price"] = ref + np.where(buy, -ticks, ticks) * tick
    cmds["qty"] = rng.integers(1, MAX_LOTS + 1, n) * lot
    cmds["client"] = rng.integers(1, CLIENTS + 1, n)
    cmds["idem_key"] = rng.integers(1, 1 << 63, n, dtype=np.int64)
    cmds["stp"] = STP_CANCEL_NEWEST
    return cmds


def mass_cancels(books: list) -> np.ndarray:
    """A MASS_CANCEL per client and instrument: the books emptied."""
    cmds = commands(CLIENTS * len(books))
    cmds["kind"] = CMD_MASS_CANCEL
    cmds["client"] = np.repeat(np.arange(1, CLIENTS + 1), len(books))
    cmds["instrument"] = np.tile(np.arange(len(books)), CLIENTS)
    return cmds


def shard_instruments(cfg) -> list:
    return [cfg.instrument(s) for s in cfg.shards[0].instruments]


class Feeder:
    """Commands at a fixed rate into the request ring; events drained from the event ring."""

    def __init__(self, cfg, requests: Producer, events: Consumer, seed: int):
        self.rng = np.random.default_rng(seed)
        self.books = shard_instruments(cfg)
        self.requests = requests
        self.events = events
        self.pending = commands(0)
        self.sent = 0  # commands written; the shard gives the k-th seq k
        self.last_seq = 0
        self.req_id = 0

    def queue(self, cmds: np.ndarray) -> None:
        cmds["req_id"] = np.arange(self.req_id + 1, self.req_id + 1 + len(cmds))
        self.req_id += len(cmds)
        self.pending = np.concatenate([self.pending, cmds])

    def pump(self) -> None:
        if len(self.pending):
            n = self.requests.write(self.pending)
            self.pending = self.pending[n:]
            self.sent += n
        while True:
            got = self.events.read(1 << 16)
            if not len(got):
                return
            self.last_seq = max(self.last_seq, int(got["seq"].max()))

    def run(self, rate: float, seconds: float) -> int:
        """Orders at ``rate`` for ``seconds``; returns how many were fed."""
        t0 = time.monotonic()
        due = fed = 0
        while (now := time.monotonic() - t0) < seconds:
            due = int(rate * now)
            if due > fed:
                self.queue(orders(self.rng, self.books, due - fed))
                fed = due
            self.pump()
            time.sleep(TICK_SECONDS)
        return fed

    def settle(self, proc: subprocess.Popen) -> None:
        """Until the shard has answered everything written."""
        while len(self.pending) or self.last_seq < self.sent:
            if proc.poll() is not None:
                raise SystemExit(f"the shard exited {proc.returncode}")
            self.pump()
            time.sleep(TICK_SECONDS)


def anon_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon")


def dump(proc: subprocess.Popen, path: Path) -> dict:
    """The shard's next memdebug line (SIGUSR2)."""
    before = path.read_text().count("\n") if path.exists() else 0
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + DUMP_SECONDS
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) > before and path.read_text().endswith("\n"):
                return json.loads(lines[before])
        time.sleep(0.05)
    raise SystemExit("the shard did not dump its memory")


def summarize(samples: list[dict], n_orders: int) -> dict:
    """Growth of each kind of mapping from the first sample to the last."""
    base, end = samples[0]["smaps"], samples[-1]["smaps"]
    kinds = sorted(set(base) | set(end))
    zero = {"rss": 0, "anon": 0}
    growth = {
        k: {f: end.get(k, zero)[f] - base.get(k, zero)[f] for f in ("rss", "anon")} for k in kinds
    }
    out = {
        "anon_kb_baseline": samples[0]["anon_kb"],
        "anon_kb_growth": samples[-1]["anon_kb"] - samples[0]["anon_kb"],
        "growth_kb_by_kind": {k: g for k, g in growth.items() if g["rss"] or g["anon"]},
    }
    out["anon_growth_pct"] = round(100 * out["anon_kb_growth"] / out["anon_kb_baseline"], 2)
    per_order = 1024 * out["anon_kb_growth"] / n_orders if n_orders else None
    out["anon_bytes_per_order"] = None if per_order is None else round(per_order, 2)
    if "malloc" in samples[0]:
        m0, m1 = samples[0]["malloc"], samples[-1]["malloc"]
        p0, p1 = samples[0]["python"], samples[-1]["python"]
        out["malloc_growth"] = {k: m1[k] - m0[k] for k in ("arena", "hblkhd", "uordblks")}
        out["python_traced_growth"] = p1["traced"] - p0["traced"]
        out["python_blocks_growth"] = p1["allocated_blocks"] - p0["allocated_blocks"]
        out["top"] = samples[-1]["top"][:10]
    return out


def run(args, tmp: Path) -> dict:
    ns = "m" + uuid.uuid4().hex[:12]
    base = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    cfg = r(
        base,
        journal=r(base.journal, dir=str(tmp / "journal"), durability=args.durability),
        shm=r(base.shm, namespace=ns),
    )
    cfg_path = tmp / "exchange.toml"
    cfg_path.write_text(dump_config(cfg))
    env = dict(os.environ)
    env.pop(MEMDEBUG_ENV, None)
    dump_path = Path(args.tracemalloc).resolve() if args.tracemalloc else None
    if dump_path is not None:
        dump_path.unlink(missing_ok=True)
        env[MEMDEBUG_ENV] = str(dump_path)
    proc = None
    try:
        capacities = (cfg.shm.request_ring, cfg.shm.event_ring)
        proc, requests, events = start_shard(ns, tmp, cfg_path, capacities, env)
        feeder = Feeder(cfg, requests, events, args.seed)
        n = max(args.warmup_windows + 1, round(60 * args.minutes / args.window))
        samples, fed_after = [], 0
        t0 = time.monotonic()
        for k in range(n):
            t_window = time.monotonic()
            fed = feeder.run(args.rate, args.window)
            feeder.queue(mass_cancels(feeder.books))
            feeder.settle(proc)
            seconds = time.monotonic() - t_window
            sample = {"smaps": smaps_by_kind(proc.pid), "anon_kb": anon_kb(proc.pid)}
            if dump_path is not None:
                line = dump(proc, dump_path)
                sample.update(malloc=line["malloc"], python=line["python"], top=line["top"])
            warm = k >= args.warmup_windows
            if warm:
                if samples:
                    fed_after += fed
                samples.append(sample)
            sm = sample["smaps"]
            journal = next((v for p, v in sm.items() if p.endswith("data.mdb")), {"rss": 0})
            text = (
                f"{time.monotonic() - t0:6.0f} s {'' if warm else '(warm-up) '}"
                f"{fed / seconds:,.0f} orders/s; anon {sample['anon_kb']:,} kB "
                f"(heap {sm.get('heap', {}).get('rss', 0):,}, "
                f"other anon {sm.get('anon', {}).get('rss', 0):,}); "
                f"journal map {journal['rss']:,} kB"
            )
            if "malloc" in sample:
                m, p = sample["malloc"], sample["python"]
                text += (
                    f"; malloc in use {m['uordblks'] >> 10:,} kB, free {m['fordblks'] >> 10:,} kB, "
                    f"mmapped {m['hblkhd'] >> 10:,} kB; python traced {p['traced'] >> 10:,} kB"
                )
            if not args.json:
                print(text, flush=True)
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=120) != 0:
            log = (tmp / "shard.log").read_text()
            raise SystemExit(f"shard exit {proc.returncode}: {log[-2000:]}")
        proc = None
        requests.close()
        events.close()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        unlink_namespace(ns)
    return {
        "bench": "shard_memory",
        "rate": args.rate,
        "window": args.window,
        "windows": len(samples),
        "durability": args.durability,
        "orders_after_baseline": fed_after,
        "commands": feeder.sent,
        **summarize(samples, fed_after),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--rate", type=float, default=7000.0, help="orders/s offered")
    ap.add_argument("--window", type=float, default=20.0, help="seconds between mass cancels")
    ap.add_argument("--warmup-windows", type=int, default=2)
    ap.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    ap.add_argument("--tracemalloc", metavar="FILE", help="have the shard dump to FILE")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="var", help="where the journal goes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.window <= 0 or args.warmup_windows < 0:
        ap.error("need --minutes, --rate, --window > 0 and --warmup-windows >= 0")
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-memory-", dir=args.dir))
    try:
        result = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
