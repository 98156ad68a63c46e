"""What a shard's LMDB environment holds in malloc'd memory as its journal grows.

    python -m bench.journal_memory [--orders N] [--merge-rows R] [--json]

A ``ShardEngine`` on a fresh journal (``os`` durability) in this process takes the
orders of ``bench.shard_memory`` (keyed NEWs on shard s0's instruments, a
MASS_CANCEL per client and instrument every ``CANCEL_EVERY`` orders) in batches of
``BATCH``, snapshots on the default schedule of commands. Every ``--every``
orders it prints glibc's bytes in use (``mallinfo2``) and the brk heap's RSS; at
the end it closes the journal (``mdb_env_close``: the environment frees what it
keeps, among it every page it has dirtied, kept for later transactions) and
prints what that gave back, with the books and the journal object's own state
still alive: the memory the LMDB environment held.
"""

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import emit
from bench.shard_memory import mass_cancels, orders, shard_instruments
from exchange.config import DEFAULT_TOML, parse_config
from exchange.engine import ShardEngine, warm_up
from exchange.journal import MERGE_ROWS, Journal
from exchange.memdebug import mallinfo, smaps_by_kind

BATCH = 64
CANCEL_EVERY = 50_000


def in_use_kb() -> int:
    return mallinfo()["uordblks"] >> 10


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=1_500_000)
    ap.add_argument("--every", type=int, default=250_000, help="orders between samples")
    ap.add_argument("--merge-rows", type=int, default=MERGE_ROWS, help="the journal's")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="var", help="where the journal goes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if mallinfo() is None:
        raise SystemExit("needs glibc's mallinfo2")
    cfg = parse_config(DEFAULT_TOML)
    books = shard_instruments(cfg)
    rng = np.random.default_rng(args.seed)
    warm_up()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-journal-memory-", dir=args.dir))
    samples = []
    t0 = time.perf_counter()
    try:
        journal = Journal(tmp / "journal", durability="os", merge_rows=args.merge_rows)
        engine = ShardEngine(
            0,
            [b.book for b in books],
            journal,
            snapshot_every=cfg.snapshot.every_commands,
        )
        done = 0
        while done < args.orders:
            engine.apply(orders(rng, books, BATCH), consumed={"bench": done})
            done += BATCH
            if done % CANCEL_EVERY < BATCH:
                engine.apply(mass_cancels(books))
            if done % args.every < BATCH:
                gc.collect()
                samples.append([done, in_use_kb(), smaps_by_kind()["heap"]["rss"]])
                if not args.json:
                    print(
                        f"{done:,} orders: malloc in use {samples[-1][1]:,} kB, "
                        f"heap RSS {samples[-1][2]:,} kB",
                        flush=True,
                    )
        gc.collect()
        before = in_use_kb()
        journal.close()
        gc.collect()
        after = in_use_kb()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "bench": "journal_memory",
            "orders": done,
            "merge_rows": args.merge_rows,
            "samples_orders_inuse_kb_heap_kb": samples,
            "env_close_freed_kb": before - after,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
