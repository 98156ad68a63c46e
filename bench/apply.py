"""Per-batch cost of ``ShardEngine.apply``, in-process: the shard's fixed cost per batch.

    python -m bench.apply [--json] [--dir DIR] [--seed S]

The flow is the end-to-end bots' (``bench.bots.orders``) as commands for one
instrument: every NEW carries an idempotency key, half are IOC orders through
the resting side, the rest GTC orders resting 1..20 ticks from the reference.
For each durability (``os``, ``fsync``) and batch size (1, 8, 64, 4096) a fresh
engine and journal take warm-up batches, then timed ones, each committed with
a ring position as the shard does: ``apply`` latency per batch (p50, p99, µs),
orders/s at the p50, and the journal commit alone (``commit_p50_us``).

The floors, in the same run and on the same disk (the journals go under ./var,
not /dev/shm, so fsync is real): ``raw_commit_p50_us``, one synced LMDB commit
of one 64-byte put in an environment of its own, timed in turns with the fsync
one-command batches (so that both see the same load); and
``synced_write_commit_p50_us``, ``bench.journal.synced_write`` of one-command
batches (the figure ``bench.e2e`` reports as commit_p50).
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

from bench import journal as bench_journal
from bench.book import CONFIG
from bench.report import emit
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine, warm_up
from exchange.journal import Journal
from exchange.records import CMD_NEW, SIDE_BUY, SIDE_SELL, TIF_GTC, TIF_IOC, commands

REPO = Path(__file__).resolve().parent.parent
REF_PRICE = 100_000
PASSIVE_TICKS = 20
MAX_LOTS = 10
CLIENTS = 8
# (batch size, timed batches) per durability; warm-up: a tenth as many more, at least 2
RUNS = {
    "os": ((1, 3000), (8, 1000), (64, 300), (4096, 20)),
    "fsync": ((1, 400), (8, 200), (64, 100), (4096, 20)),
}


def flow(n: int, seed: int) -> np.ndarray:
    """``n`` keyed NEW commands, unsequenced (as the gateway hands them to a shard)."""
    rng = np.random.default_rng(seed)
    cmds = commands(n)
    buy = rng.random(n) < 0.5
    ioc = rng.random(n) < 0.5
    # a passive buy rests below the reference, an IOC buy goes through the asks
    ticks = np.where(ioc, -PASSIVE_TICKS, rng.integers(1, PASSIVE_TICKS + 1, n))
    cmds["kind"] = CMD_NEW
    cmds["side"] = np.where(buy, SIDE_BUY, SIDE_SELL)
    cmds["price"] = REF_PRICE + np.where(buy, -ticks, ticks)
    cmds["tif"] = np.where(ioc, TIF_IOC, TIF_GTC)
    cmds["qty"] = rng.integers(1, MAX_LOTS + 1, n)
    cmds["client"] = rng.integers(1, CLIENTS + 1, n)
    cmds["req_id"] = np.arange(1, n + 1)
    # distinct keys: every order is new (a retry is answered without sequencing)
    cmds["idem_key"] = rng.permutation(n) + rng.integers(1, 1 << 40)
    return cmds


class RawLog:
    """One 64-byte put per synced commit into a bare LMDB environment: the floor."""

    def __init__(self, path: str):
        self.env = lmdb.open(path, sync=True, metasync=True, map_size=64 << 20)
        self.n = 0

    def commit(self) -> float:
        self.n += 1
        t0 = time.perf_counter()
        with self.env.begin(write=True) as txn:
            txn.put(self.n.to_bytes(8, "big"), bytes(64), append=True)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.env.close()


def run(root: str, durability: str, size: int, batches: int, seed: int, raw=None) -> dict:
    """Timed ``apply`` calls on batches of ``size``; with ``raw``, a floor commit before each."""
    warm = max(2, batches // 10)
    cmds = flow(size * (warm + batches), seed)
    path = tempfile.mkdtemp(prefix=f"apply-{durability}-{size}-", dir=root)
    floor = []
    try:
        with Journal(path, durability=durability, map_size=256 << 20) as j:
            engine = ShardEngine(0, [CONFIG], j)
            engine.recover()
            walls, commits = [], []
            for k in range(warm + batches):
                batch = cmds[k * size : (k + 1) * size]
                if raw is not None and k >= warm:
                    floor.append(raw.commit())
                t0 = time.perf_counter()
                applied = engine.apply(batch, consumed={"bench-req@1": (k + 1) * size})
                wall = time.perf_counter() - t0
                if k >= warm:
                    walls.append(wall)
                    commits.append(applied.commit_seconds)
    finally:
        shutil.rmtree(path)
    us = np.array(walls) * 1e6
    p50, p99 = np.percentile(us, [50, 99])
    out = {
        "p50_us": round(float(p50), 1),
        "p99_us": round(float(p99), 1),
        "commit_p50_us": round(float(np.median(commits)) * 1e6, 1),
        "orders_per_sec_at_p50": round(size / (p50 / 1e6)),
        "batches": batches,
    }
    if floor:
        out["raw_commit_p50_us"] = round(float(np.median(floor)) * 1e6, 1)
    return out


def synced_write_commit_us(root: str) -> float:
    cmds = bench_journal.make_stream(600)
    events = Book(BookConfig(min_price=1, max_price=100_000, capacity=1 << 12)).process(cmds)
    out = bench_journal.synced_write(root, (cmds, events), 1, 300)
    return round(1000 * out["commit_ms_median"], 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    warm_up()
    root = tempfile.mkdtemp(prefix="bench-apply-", dir=args.dir)
    result = {"bench": "apply", "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    raw = RawLog(tempfile.mkdtemp(prefix="raw-", dir=root))
    try:
        result["synced_write_commit_p50_us"] = synced_write_commit_us(root)
        for durability, runs in RUNS.items():
            for size, batches in runs:
                floor = raw if (durability, size) == ("fsync", 1) else None
                r = run(root, durability, size, batches, args.seed, floor)
                if floor is not None:
                    result["raw_commit_p50_us"] = r.pop("raw_commit_p50_us")
                result[f"{durability}_{size}"] = r
    finally:
        raw.close()
        shutil.rmtree(root)
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
