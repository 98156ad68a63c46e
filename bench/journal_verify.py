"""What the journal's checksums cost: checked reads against floors measured in the same
run, and a fold with and without its row checksums.

One journal is written from ``bench.journal``'s stream in batches of ``--batch``
commands (durability ``os``: the commits are not what is measured), folding
every ``--merge-rows`` order rows and idempotency entries as the shard does.
Then, each the median of ``--repeats``:

scan      every batch record read in chunks of short read txns: ``iter_records``
          (copied out, checksum, decode), against the same records read by a bare
          LMDB cursor, their pieces joined (``batch_items``: the floor, the copy
          alone), and the checksums alone (zlib's
          crc32 over the same bytes). This is what start-up reads after the snapshot
          and what a SYNC replay reads.
lookups   ``idem_values`` of ``--lookups`` keys that are in the idem table (each value
          checked, as a batch of retries is), against a bare ``getmulti`` of them.
fold      the batches that folded the log into the tables (whole ``write_batch``);
          and a fold's table writes alone: ``--merge-rows`` order rows and idem
          entries (half each, the journal's own) put into fresh tables in one
          committed txn, sealed (``_seal_rows``, as a fold does) against the same
          puts of the bare values (the floor), and the sealing alone.

    python -m bench.journal_verify [--json] [--commands N] [--dir DIR]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import lmdb
import numpy as np

from bench.journal import batches, make_stream
from bench.report import emit
from exchange import journal as journal_module
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.journal import MERGE_ROWS, Journal, JournalReader, batch_items

REPO = Path(__file__).resolve().parent.parent
STREAM_COMMANDS = 400_000
BATCH = 1024
LOOKUPS = 4096


def write(path: str, stream, batch: int, merge_rows: int) -> list[float]:
    """Journal the stream; returns the seconds of each ``write_batch`` that folded."""
    cmds, events = stream
    folds = []
    with Journal(path, durability="os", map_size=256 << 20, merge_rows=merge_rows) as j:
        for bc, be in batches(cmds, events, batch):
            t0 = time.perf_counter()
            j.write_batch(bc, be)
            dt = time.perf_counter() - t0
            if j._pending.batches == 0:  # the log started anew: this batch folded
                folds.append(dt)
    return folds


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(out)


def measure_reads(path: str, repeats: int, lookups: int) -> dict:
    # one environment per path per process: the bare reads first, then the journal's
    env = lmdb.open(path, readonly=True, max_dbs=8, map_size=0)
    try:

        def bare_records():
            with env.begin() as txn:  # the batches are the main database's records
                return [v for _, v in batch_items(env, txn)]

        values = bare_records()
        floor = timed(bare_records, repeats)
    finally:
        env.close()
    crc = timed(lambda: [zlib.crc32(v) for v in values], repeats)
    with Journal(path) as j:
        checked = timed(lambda: sum(1 for _ in j.iter_records()), repeats)
        keys = []
        with j._read() as txn:
            for k, _ in txn.cursor(db=j._db["idem"]):
                keys.append(k)
                if len(keys) == lookups:
                    break
        found = j.idem_values(keys)
        assert all(v is not None for v in found)
        lookup = timed(lambda: j.idem_values(keys), repeats)
        with j._read() as txn:
            cur = txn.cursor(db=j._db["idem"])
            lookup_floor = timed(lambda: cur.getmulti(keys), repeats)
    mb = sum(map(len, values)) / 1e6
    return {
        "records": len(values),
        "record_mb": round(mb, 1),
        "scan_floor_ms": round(floor, 2),
        "scan_crc_ms": round(crc, 2),
        "scan_checked_ms": round(checked, 2),
        "scan_checked_over_floor": round(checked / floor, 2),
        "scan_crc_share": round(crc / checked, 3),
        "lookups": len(keys),
        "lookup_floor_us": round(1e3 * lookup_floor / len(keys), 3),
        "lookup_checked_us": round(1e3 * lookup / len(keys), 3),
    }


def measure_fold_writes(path: str, root: str, work: int, repeats: int) -> dict:
    """A fold's table writes of ``work`` rows and entries (half each, from the journal at
    ``path``), sealed and bare, each into fresh tables."""
    with JournalReader(path) as j:
        tables = j.tables()
    n = min(work // 2, len(tables.orders), len(tables.idem_keys))
    ids = tables.order_ids[:n].astype(">i8")
    parts = (
        (b"orders", _bytes(ids), _bytes(tables.orders[:n])),
        (b"idem", _bytes(tables.idem_keys[:n]), _bytes(tables.idem_values[:n])),
    )
    seal = journal_module._seal_rows

    def sealed():
        return [(name, keys, seal(keys, values)) for name, keys, values in parts]

    def bare():
        return [
            (name, keys, values.view(f"V{values.shape[1]}").reshape(-1).tolist())
            for name, keys, values in parts
        ]

    def put(items):
        dest = tempfile.mkdtemp(dir=root)
        env = lmdb.open(dest, max_dbs=4, map_size=256 << 20, sync=False)
        try:
            dbs = {name: env.open_db(name) for name, _, _ in parts}
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                for name, keys, values in items():
                    rows = zip(
                        keys.view(f"V{keys.shape[1]}").reshape(-1).tolist(), values, strict=True
                    )
                    txn.cursor(db=dbs[name]).putmulti(rows)
            return time.perf_counter() - t0
        finally:
            env.close()
            shutil.rmtree(dest)

    sealed()  # compiled (or loaded from the cache) before it is timed
    return {
        "fold_rows": 2 * n,
        "fold_puts_sealed_ms": round(
            1e3 * statistics.median(put(sealed) for _ in range(repeats)), 2
        ),
        "fold_puts_bare_ms": round(1e3 * statistics.median(put(bare) for _ in range(repeats)), 2),
        "fold_sums_ms": round(timed(sealed, repeats), 2),
    }


def _bytes(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    return arr.view(np.uint8).reshape(len(arr), arr.dtype.itemsize)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--commands", type=int, default=STREAM_COMMANDS)
    ap.add_argument("--batch", type=int, default=BATCH, help="commands per batch")
    ap.add_argument("--merge-rows", type=int, default=MERGE_ROWS, help="the journal's")
    ap.add_argument("--lookups", type=int, default=LOOKUPS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    cmds = make_stream(args.commands)
    events = Book(BookConfig(min_price=1, max_price=100_000, capacity=1 << 17)).process(cmds)
    root = tempfile.mkdtemp(prefix="bench-journal-verify-", dir=args.dir)
    try:
        path = f"{root}/journal"
        folds = write(path, (cmds, events), args.batch, args.merge_rows)
        result = {
            "bench": "journal_verify",
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "commands": len(cmds),
            "batch": args.batch,
            **measure_reads(path, args.repeats, args.lookups),
            "folds": len(folds),
            "fold_write_batch_ms_median": round(1e3 * statistics.median(folds), 2),
            **measure_fold_writes(path, root, args.merge_rows, args.repeats),
        }
    finally:
        shutil.rmtree(root)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
