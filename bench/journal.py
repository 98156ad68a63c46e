"""Journal throughput: synced commit latency, batches/s and commands/s per batch size, replay.

The command stream is random but realistic (limit orders around a drifting mid,
some crossing, cancels of live orders, a few IOC and market orders, every NEW
with an idempotency key) and its events are the real ones, produced up front by
the book kernel so that only the journal is timed. Journals live in a temporary
directory on the repository's disk (not /dev/shm), so fsync is real.

    python -m bench.journal [--json] [--seconds S] [--dir DIR]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import emit
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.idempotency import plan_batch
from exchange.journal import Journal, JournalReader
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    SIDE_BUY,
    SIDE_SELL,
    TIF_GTC,
    TIF_IOC,
    TYPE_LIMIT,
    TYPE_MARKET,
    commands,
)

BATCH_SIZES = (1, 64, 256, 1024, 4096)
REPLAY_BATCH = 1024
STREAM_COMMANDS = 400_000
CLIENTS = 64
REPO = Path(__file__).resolve().parent.parent


def make_stream(n: int, seed: int = 1) -> np.ndarray:
    """``n`` sequenced commands with order ids, as the shard would hand them over."""
    rng = np.random.default_rng(seed)
    cmds = commands(n)
    cmds["seq"] = cmds["req_id"] = np.arange(1, n + 1)
    r = rng.random(n)
    new = (r >= 0.25) | (np.arange(n) < 100)
    ids = np.cumsum(new)  # the id of the latest NEW so far
    side = np.where(rng.random(n) < 0.5, SIDE_BUY, SIDE_SELL)
    mid = 50_000 + np.cumsum(rng.integers(-2, 3, n))
    offset = rng.integers(-3, 30, n)  # mostly passive, some crossing
    cmds["kind"] = np.where(new, CMD_NEW, CMD_CANCEL)
    cmds["client"] = rng.integers(1, CLIENTS + 1, n)
    cmds["side"] = np.where(new, side, 0)
    cmds["qty"] = np.where(new, rng.integers(1, 20, n), 0)
    cmds["price"] = np.where(new, np.where(side == SIDE_BUY, mid - offset, mid + offset), 0)
    cmds["tif"] = np.where(new & (r > 0.97), TIF_IOC, TIF_GTC)
    cmds["ord_type"] = np.where(new & (r > 0.995), TYPE_MARKET, TYPE_LIMIT)
    cmds["order_id"] = ids
    cmds["idem_key"] = np.where(new, ids, 0)
    # a cancel names one of the last few thousand orders, as its owner
    cxl = np.flatnonzero(~new)
    target = np.maximum(1, ids[cxl] - rng.integers(0, 5000, len(cxl)))
    client_of = np.zeros(n + 1, np.uint32)
    client_of[ids[new]] = cmds["client"][new]
    cmds["order_id"][cxl] = target
    cmds["client"][cxl] = client_of[target]
    return cmds


def batches(cmds: np.ndarray, events: np.ndarray, size: int):
    """(commands, events) slices of ``size`` commands each."""
    bounds = np.searchsorted(events["seq"], cmds["seq"][::size])
    bounds = np.append(bounds, len(events))
    for k in range(len(bounds) - 1):
        yield cmds[k * size : (k + 1) * size], events[bounds[k] : bounds[k + 1]]


def run_mode(root: str, mode: str, size: int, stream, seconds: float) -> dict:
    cmds, events = stream
    path = tempfile.mkdtemp(prefix=f"journal-{mode}-{size}-", dir=root)
    try:
        with Journal(path, durability=mode, map_size=256 << 20) as j:
            commit_s = []
            n_cmds = 0
            t0 = time.perf_counter()
            for bc, be in batches(cmds, events, size):
                commit_s.append(j.write_batch(bc, be))
                n_cmds += len(bc)
                if time.perf_counter() - t0 > seconds:
                    break
            wall = time.perf_counter() - t0
            grows = j.stats().map_grows
        result = {
            "batches_per_s": round(len(commit_s) / wall, 1),
            "commands_per_s": round(n_cmds / wall),
            "commit_ms_median": round(1e3 * statistics.median(commit_s), 3),
            "commit_ms_p99": round(1e3 * float(np.percentile(commit_s, 99)), 3),
            "batches": len(commit_s),
            "map_grows": grows,
        }
        if size == REPLAY_BATCH:
            result["replay_commands_per_s"] = replay_speed(path)
        return result
    finally:
        shutil.rmtree(path)


def replay_speed(path: str) -> int:
    with JournalReader(path) as j:
        t0 = time.perf_counter()
        n = sum(len(c) for c, _ in j.iter_batches())
        return round(n / (time.perf_counter() - t0))


def synced_write(root: str, stream, size: int, repeats: int) -> dict:
    """Whole ``write_batch`` and its commit alone, fsync mode, batches of ``size`` commands."""
    cmds, events = stream
    path = tempfile.mkdtemp(prefix=f"journal-sync-{size}-", dir=root)
    try:
        with Journal(path, durability="fsync", map_size=256 << 20) as j:
            walls, commits = [], []
            n_events = 0
            for k, (bc, be) in enumerate(batches(cmds, events, size)):
                if k == repeats:
                    break
                t0 = time.perf_counter()
                commits.append(j.write_batch(bc, be))
                walls.append(time.perf_counter() - t0)
                n_events += len(be)
        return {
            "write_ms_median": round(1e3 * statistics.median(walls), 3),
            "commit_ms_median": round(1e3 * statistics.median(commits), 3),
            "events_per_batch": round(n_events / len(walls), 1),
        }
    finally:
        shutil.rmtree(path)


def plan_speed(root: str, stream, repeats: int = 50) -> float:
    """Microseconds of ``plan_batch`` for a drained batch of 1024 keyed NEWs, none seen before,
    against a journal already holding the idempotency entries of half the stream."""
    cmds, events = stream
    half = len(cmds) // 2
    path = tempfile.mkdtemp(prefix="journal-plan-", dir=root)
    try:
        with Journal(path, durability="os", map_size=256 << 20) as j:
            for bc, be in batches(
                cmds[:half], events[events["seq"] <= cmds["seq"][half - 1]], 1024
            ):
                j.write_batch(bc, be)
            drained = cmds[half:][cmds["kind"][half:] == CMD_NEW][:1024]
            t0 = time.perf_counter()
            for _ in range(repeats):
                plan_batch(j, drained)
            return round(1e6 * (time.perf_counter() - t0) / repeats, 1)
    finally:
        shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per batch size and mode")
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    cmds = make_stream(STREAM_COMMANDS)
    book = Book(BookConfig(min_price=1, max_price=100_000, capacity=1 << 17))
    events = book.process(cmds)
    stream = (cmds, events)
    root = tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir)
    try:
        result = {
            "bench": "journal",
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "events_per_command": round(len(events) / len(cmds), 2),
            "fsync_1": synced_write(root, stream, 1, 300),
            "fsync_1000": synced_write(root, stream, 1000, 100),
            "plan_batch_1024_us": plan_speed(root, stream),
        }
        for mode in ("fsync", "os"):
            for size in BATCH_SIZES:
                result[f"{mode}_batch_{size}"] = run_mode(root, mode, size, stream, args.seconds)
    finally:
        shutil.rmtree(root)
    emit(result, args.json)


if __name__ == "__main__":
    main()
