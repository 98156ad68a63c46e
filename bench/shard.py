"""Shard benchmark: a real shard process fed through its request ring, journaling with fsync.

    python -m bench.shard [--ops N] [--durability fsync|os] [--json]

The book benchmark's seeded workload (one instrument) is written into the
request ring as fast as it takes it while the events are drained from the event
ring; every event arrives only after the batch that made it was committed.
Throughput is commands from the first write to the last event. Commit latency
and commands per commit come from the shard's own counters. Then the shard is
stopped and its journal (no snapshot) is recovered from scratch: replay of every
batch through the kernel with every event compared, timed per million commands.
"""

import argparse
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

from bench.book import CONFIG, workload
from bench.report import emit
from exchange.config import DEFAULT_TOML, InstrumentSection, ShardSection, dump_config, parse_config
from exchange.engine import ShardEngine, warm_up
from exchange.journal import JournalReader
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.topology import counters_name, event_ring, request_ring
from shm.consumer import Consumer
from shm.counters_reader import read_block
from shm.names import unlink_namespace
from shm.producer import Producer
from shm.ring import create_ring

SHARD = "s0"
REQUEST_RING = 1 << 16
EVENT_RING = 1 << 18


def bench_config(tmp: Path, ns: str, durability: str, snapshot_every: int):
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    return r(
        cfg,
        instruments=[InstrumentSection(symbol="BENCH", ref_price=100_000, book=CONFIG)],
        shards=[ShardSection(name=SHARD, instruments=["BENCH"])],
        journal=r(cfg.journal, dir=str(tmp / "journal"), durability=durability),
        snapshot=r(cfg.snapshot, every_commands=snapshot_every),
        shm=r(cfg.shm, namespace=ns, request_ring=REQUEST_RING, event_ring=EVENT_RING),
    )


def wait_running(log: Path, proc: subprocess.Popen) -> None:
    while '"msg": "running"' not in log.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"shard exited: {log.read_text()}")
        time.sleep(0.01)


def start_shard(ns: str, tmp: Path, cfg_path: Path, capacities: tuple[int, int], env=None):
    """Shard SHARD's rings created (request, event ``capacities``) and its process started
    (``env``: its environment, default this one's) and running, its log in ``tmp``:
    (the process, a producer of its requests, a consumer of its events)."""
    create_ring(ns, request_ring(SHARD), COMMAND_DTYPE, capacities[0])
    create_ring(ns, event_ring(SHARD), EVENT_DTYPE, capacities[1])
    requests = Producer(ns, request_ring(SHARD), COMMAND_DTYPE)
    events = Consumer(ns, event_ring(SHARD), EVENT_DTYPE)
    log = tmp / "shard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange.shard", "--name", SHARD, "--config", cfg_path],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        wait_running(log, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, requests, events


def feed(cmds: np.ndarray, requests: Producer, events: Consumer) -> tuple[float, int]:
    """Write everything, drain until the last command's events are in; (seconds, events).

    The shard sequences a fresh journal from 1, so the last command gets seq len(cmds).
    """
    last_seq = len(cmds)
    n_events = 0
    pos = 0
    seen_last = False
    t0 = time.perf_counter()
    while not seen_last:
        if pos < len(cmds):
            pos += requests.write(cmds[pos : pos + 8192])
        got = events.read(1 << 16)
        if len(got):
            n_events += len(got)
            seen_last = got["seq"][-1] == last_seq
        elif pos == len(cmds):
            events.wait(timeout=1.0)
    # the last command's events may span two reads: take what is left of its batch
    while events.readable():
        n_events += len(events.read(1 << 16))
    return time.perf_counter() - t0, n_events


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    ap.add_argument("--dir", help="where the journal goes (default: a tmp dir under ./var)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    base = Path(args.dir or "var")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-", dir=base))
    ns = "b" + uuid.uuid4().hex[:12]
    # no snapshot during the run: recovery below replays the whole journal
    cfg = bench_config(tmp, ns, args.durability, snapshot_every=10 * args.ops)
    cfg_path = tmp / "bench.toml"
    cfg_path.write_text(dump_config(cfg))
    cmds = workload(args.ops, args.seed)
    cmds["seq"] = 0  # the shard assigns seq k+1 and order id k+1 to the k-th command
    proc = None
    try:
        proc, requests, events = start_shard(ns, tmp, cfg_path, (REQUEST_RING, EVENT_RING))
        seconds, n_events = feed(cmds, requests, events)
        block = read_block(ns, counters_name(SHARD))
        commit, batch = block.histograms["commit_us"], block.histograms["batch_size"]
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=120) != 0:
            raise SystemExit(f"shard exit {proc.returncode}: {(tmp / 'shard.log').read_text()}")
        proc = None
        requests.close()
        events.close()

        warm_up()  # recovery is timed without this process's cache load of the kernel
        with JournalReader(str(tmp / "journal" / SHARD)) as j:
            engine = ShardEngine(0, [CONFIG], j)
            rec = engine.recover(use_snapshot=False)
        result = {
            "bench": "shard",
            "durability": args.durability,
            "ops": args.ops,
            "events": n_events,
            "seconds": round(seconds, 3),
            "journaled_orders_per_sec": round(args.ops / seconds),
            "commit_p50_us": commit.p50,
            "commit_p99_us": commit.p99,
            "commit_mean_us": round(commit.mean),
            "batches": commit.count,
            "batch_p50": batch.p50,
            "batch_mean": round(batch.mean),
            "recovered_commands": rec.replayed,
            "recovery_seconds": round(rec.seconds, 3),
            "recovery_seconds_per_million": round(rec.seconds / (rec.replayed / 1e6), 3),
        }
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        unlink_namespace(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
