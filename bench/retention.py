"""Journal retention: does the journal's data file stop growing under steady load?

    python -m bench.retention [--retain N] [--rounds R] [--archive] [--varied] [--json]
        [--dir DIR]

A ``ShardEngine`` on a real ``Journal`` (fsync durability, as a shard runs it) is
fed R x N commands of a steady market (limit orders around a mid, some crossing,
cancels keeping the book near a fixed size, every NEW under a random idempotency
key, as bots choose them: their entries leave with their batches), in batches of
64 (``--varied``: of 1 to 4,096 commands, as a shard takes them when the load
comes and goes: ``VARIED``), with a snapshot every N / 10 commands (the embedded
config's ratio: 100,000 and 1,000,000); after every N / 10 commands (the shard's housekeeping: every
``PRUNE_SECONDS``, a tenth of N a second is N / 10 commands/s) it takes
retention steps until there is nothing to take (at most ``PRUNE_COMMANDS``
commands and ``MERGE_ROWS`` idempotency entries a step). Reported: ``data.mdb``'s
size once N commands went through (1x), halfway and at the end (R x), the end's
ratio to the first and to the halfway size, the archives' bytes (with --archive),
the slowest retention step, and the journal's last seq and pruned seq. LMDB reuses the
pages a prune frees once no read txn pins them: nothing reads here but the
writer, as in a shard.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import emit
from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine
from exchange.journal import Journal
from exchange.records import CMD_CANCEL, CMD_NEW, SIDE_BUY, SIDE_SELL, commands

BOOK = BookConfig(min_price=1, max_price=2_000, capacity=1 << 13)
MID = 1_000
BATCH = 64
# (commands, share of the batches): mostly small, now and then the 4,096 of a backlog
VARIED = ((1, 0.3), (8, 0.3), (64, 0.2), (512, 0.15), (4096, 0.05))
LIVE = 2_000  # the book's size the cancels keep it near


class Market:
    """A seeded steady stream: its NEWs' order ids are their seqs (shard index 0, a
    journal from seq 1), so its cancels name real orders; some were filled already and
    are refused, as a real bot's would be."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.ids: list[int] = []
        self.seq = 0

    def batch(self, n: int) -> np.ndarray:
        rng = self.rng
        cmds = commands(n)
        u = rng.random((n, 3))
        offsets = rng.geometric(0.2, n) - 2  # a few cross the mid: trades
        keys = rng.integers(1, 1 << 63, n, dtype=np.uint64)
        for i in range(n):
            self.seq += 1
            c = cmds[i]
            if self.ids and (len(self.ids) >= LIVE or u[i, 0] < 0.3):
                k = int(u[i, 1] * len(self.ids))
                self.ids[k], self.ids[-1] = self.ids[-1], self.ids[k]
                c["kind"], c["order_id"] = CMD_CANCEL, self.ids.pop()
                c["client"] = 1 + c["order_id"] % 8
                continue
            side = SIDE_BUY if u[i, 2] < 0.5 else SIDE_SELL
            c["kind"], c["side"], c["qty"] = CMD_NEW, side, 1 + self.seq % 50
            c["price"] = MID - offsets[i] if side == SIDE_BUY else MID + offsets[i]
            c["client"] = 1 + self.seq % 8
            c["idem_key"] = keys[i]
            self.ids.append(self.seq)
        return cmds


def _size(path: str) -> int:
    return os.path.getsize(os.path.join(path, "data.mdb"))


def _archived(archive_dir: str | None) -> int:
    if archive_dir is None:
        return 0
    return sum(f.stat().st_size for f in Path(archive_dir).rglob("*.jarc"))


def run(
    directory: str, retain: int, rounds: int, archive: bool, varied: bool = False, seed: int = 1
) -> dict:
    """Push ``rounds`` x ``retain`` commands through a journal in ``directory`` with
    retention; the figures of the module docstring."""
    path = os.path.join(directory, "s0")
    archive_dir = os.path.join(directory, "archive") if archive else None
    market = Market(seed)
    sizes, shares = zip(*(VARIED if varied else ((BATCH, 1.0),)), strict=True)
    draw = np.random.default_rng(seed + 1)
    slowest = 0.0
    size_1x = size_half = 0
    with Journal(path, durability="fsync") as journal:
        engine = ShardEngine(
            0,
            [BOOK],
            journal,
            snapshot_every=max(retain // 10, 1),
            retain_commands=retain,
            archive_dir=archive_dir,
        )
        total = rounds * retain
        every = max(retain // 10, 1)  # commands between housekeeping points
        housekeeping = every
        while engine.last_seq < total:
            n = int(draw.choice(sizes, p=shares))
            engine.apply(market.batch(min(n, total - engine.last_seq)))
            at = engine.last_seq
            if at >= housekeeping or at == total:
                housekeeping = (at // every + 1) * every
                while True:
                    t0 = time.perf_counter()
                    taken = engine.prune()
                    slowest = max(slowest, time.perf_counter() - t0)
                    if taken is None:
                        break
            if not size_1x and at >= retain:
                size_1x = _size(path)
            if not size_half and at >= total // 2:
                size_half = _size(path)
        stats = journal.stats()
    size_end = _size(path)
    return {
        "retain_commands": retain,
        "batches": "varied" if varied else BATCH,
        "commands": total,
        "data_bytes_1x": size_1x,
        "data_bytes_half": size_half,
        f"data_bytes_{rounds}x": size_end,
        "growth": round(size_end / size_1x, 3),
        "growth_second_half": round(size_end / size_half, 3),
        "archive_bytes": _archived(archive_dir),
        "slowest_prune_ms": round(slowest * 1e3, 1),
        "last_seq": stats.last_seq,
        "pruned": stats.pruned,
        "batches_kept": stats.batches,
        "orders_kept": stats.orders_merged,
        "idem_entries_kept": stats.idem_entries,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retain", type=int, default=100_000, help="retain_commands")
    ap.add_argument("--rounds", type=int, default=10, help="how many times retain goes through")
    ap.add_argument("--archive", action="store_true", help="archive what is pruned")
    ap.add_argument("--varied", action="store_true", help="batches of 1 to 4,096 commands")
    ap.add_argument("--dir", help="where the journal goes (default: a temporary directory)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="bench-retention-", dir=args.dir)
    try:
        emit(run(directory, args.retain, args.rounds, args.archive, args.varied), args.json)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
