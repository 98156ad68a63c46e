"""Book kernel benchmark: the Numba ``Book`` against the ``ReferenceBook`` on one workload.

    python -m bench.book [--ops N] [--seed S] [--batch B] [--workload W] [--json]

The seeded workload is about 60% GTC adds around a drifting mid, 25% cancels of
orders added earlier, 10% aggressive IOC orders and 5% replaces. ``--workload
mixed`` is the same stream with the newer order types in it: a tenth of the GTC
adds are icebergs (three to five times their size, showing a quarter of it) and
one add in twenty is a GTC stop-limit whose trigger is a few ticks beyond the
mid (the trades' drift reaches some), another tenth are GTD orders good for 1 to
10 s of the stream's clock (10 us a command: a busy shard's 100,000 commands a
second), every 100,000th command is the EXPIRE of that clock, a second
apart as a shard sends them (``[expiry] every_ms``), and the book is halted for
5,000 commands in the middle of every 250,000 (the IOC orders meanwhile are
refused, the adds rest without matching, the RESUME runs the auction); the
default,
``plain``, is the stream the figures of bench/RESULTS.md have always been
measured on. The kernel is
timed alone first (batches of ``--batch`` commands into a reused events
buffer), then both books run the same batches and every event is compared; the
output is one JSON line (``--json``) or a short table.
"""

import argparse
import sys
import time

import numpy as np

from bench.report import emit
from exchange import kernel
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    EV_REJECTED,
    EV_TRADE,
    EVENT_DTYPE,
    REJ_NOT_FOUND,
    SIDE_BUY,
    SIDE_SELL,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TYPE_STOP_LIMIT,
    commands,
)
from exchange.reference import ReferenceBook

CONFIG = BookConfig(min_price=1, max_price=200_000, capacity=1 << 20, max_qty=1_000_000)
MID0 = 100_000
CLIENTS = 16
CLOCK_NS = 10_000  # the mixed stream's clock: 10 us a command
EXPIRE_EVERY = 100_000  # the mixed stream's EXPIRE: every this many commands (1 s)
HALT_EVERY = 250_000  # the mixed stream's HALT: one in the middle of every this many commands
HALT_COMMANDS = 5_000  # and the RESUME this many commands after it


def workload(n: int, seed: int, mixed: bool = False) -> np.ndarray:
    """A seeded command stream for one book (order ids and seqs already assigned);
    ``mixed``: some adds are icebergs, stop-limits or GTD orders, and every
    ``EXPIRE_EVERY``-th command is an EXPIRE (drawn apart: the plain stream's draws
    are the same either way)."""
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 17]).random((n, 2)) if mixed else None
    cmds = commands(n)
    op = rng.random(n)
    u = rng.random((n, 4))
    offsets = rng.geometric(0.15, n)
    sizes = rng.integers(1, 100, n)
    clients = rng.integers(1, CLIENTS + 1, n)
    live: list[int] = []  # ids of GTC adds the stream has not cancelled yet
    owner: dict[int, int] = {}
    mid = MID0
    cmds["seq"] = np.arange(1, n + 1)
    cmds["req_id"] = np.arange(1, n + 1)
    for i in range(n):
        if u[i, 0] < 0.01:
            mid += 1 if u[i, 1] < 0.5 else -1
        c = cmds[i]
        p = op[i]
        if extra is not None and i % EXPIRE_EVERY == EXPIRE_EVERY - 1:
            c["kind"] = CMD_EXPIRE
            c["expires"] = (i + 1) * CLOCK_NS
        elif extra is not None and i % HALT_EVERY == HALT_EVERY // 2:
            c["kind"] = CMD_HALT
        elif extra is not None and i % HALT_EVERY == HALT_EVERY // 2 + HALT_COMMANDS:
            c["kind"] = CMD_RESUME
        elif p < 0.60 or not live:
            side = SIDE_BUY if u[i, 2] < 0.5 else SIDE_SELL
            c["kind"] = CMD_NEW
            c["order_id"] = i + 1
            c["side"] = side
            c["tif"] = TIF_GTC
            c["price"] = mid - offsets[i] if side == SIDE_BUY else mid + offsets[i]
            c["qty"] = sizes[i]
            c["client"] = clients[i]
            if extra is not None and extra[i, 0] < 0.1:
                c["qty"] = sizes[i] * (3 + int(extra[i, 1] * 3))
                c["display"] = max(1, c["qty"] // 4)
            elif extra is not None and extra[i, 0] > 0.95:
                c["ord_type"] = TYPE_STOP_LIMIT
                beyond = 2 + int(extra[i, 1] * 6)
                c["trigger_tick"] = mid + beyond if side == SIDE_BUY else mid - beyond
            elif extra is not None and extra[i, 0] > 0.85:
                c["tif"] = TIF_GTD
                c["expires"] = (i + 1 + int((1 + extra[i, 1] * 9) * EXPIRE_EVERY)) * CLOCK_NS
            live.append(i + 1)
            owner[i + 1] = clients[i]
        elif p < 0.85 or p >= 0.95:
            # cancel (or replace) an order the stream added, recent ones more
            # likely; some were filled meanwhile and get a not-found reject
            k = len(live) - 1 - int(len(live) * u[i, 3] ** 3)
            oid = live[k]
            c["order_id"] = oid
            c["client"] = owner[oid]
            if p < 0.85:
                c["kind"] = CMD_CANCEL
                live[k] = live[-1]
                live.pop()
            else:
                c["kind"] = CMD_REPLACE
                c["qty"] = sizes[i]
                c["price"] = mid - offsets[i] if u[i, 2] < 0.5 else mid + offsets[i]
        else:
            side = SIDE_BUY if u[i, 2] < 0.5 else SIDE_SELL
            c["kind"] = CMD_NEW
            c["order_id"] = i + 1
            c["side"] = side
            c["tif"] = TIF_IOC
            c["price"] = mid + 3 if side == SIDE_BUY else mid - 3
            c["qty"] = sizes[i] * 3
            c["client"] = clients[i]
    return cmds


def time_kernel(cmds: np.ndarray, batch: int) -> tuple[float, int]:
    book = Book(CONFIG)
    events = np.zeros(1 << 16, EVENT_DTYPE)
    n_events = 0
    t0 = time.perf_counter()
    for lo in range(0, len(cmds), batch):
        chunk = cmds[lo : lo + batch]
        pos = 0
        while pos < len(chunk):
            done, n, need = kernel.process(book.state, chunk, pos, events)
            if need:  # with stops waiting, a command's bound is the book's size
                events = np.zeros(2 * need, EVENT_DTYPE)  # as Book.process_sequenced
            pos += done
            n_events += n
    return time.perf_counter() - t0, n_events


def compare(cmds: np.ndarray, batch: int) -> dict:
    """Both books on the same batches; every event and the final hashes must agree."""
    fast, ref = Book(CONFIG), ReferenceBook(CONFIG)
    ref_seconds = 0.0
    trades = rejects = not_found = 0
    for lo in range(0, len(cmds), batch):
        chunk = cmds[lo : lo + batch]
        a = fast.process(chunk)
        t0 = time.perf_counter()
        b = ref.process(chunk)
        ref_seconds += time.perf_counter() - t0
        if len(a) != len(b) or a.tobytes() != b.tobytes():
            bad = next(
                (i for i in range(min(len(a), len(b))) if a[i].tobytes() != b[i].tobytes()),
                min(len(a), len(b)),
            )
            raise SystemExit(f"books disagree in the batch at command {lo}, event {bad}")
        trades += int(np.count_nonzero(a["kind"] == EV_TRADE))
        rejects += int(np.count_nonzero(a["kind"] == EV_REJECTED))
        not_found += int(
            np.count_nonzero((a["kind"] == EV_REJECTED) & (a["code"] == REJ_NOT_FOUND))
        )
    if fast.state_hash() != ref.state_hash():
        raise SystemExit("books disagree on the final state hash")
    return {
        "reference_seconds": ref_seconds,
        "trades": trades,
        "rejects": rejects,
        "not_found": not_found,
        "resting_orders": len(fast.canonical_rows()),
        "state_hash": fast.state_hash(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4096, help="commands per kernel call")
    ap.add_argument(
        "--workload",
        choices=["plain", "mixed"],
        default="plain",
        help="mixed: icebergs, stop-limits and GTD orders among the adds, EXPIREs and halts",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed kernel runs (best is kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    warm = commands(1)
    warm["seq"] = 1
    Book(CONFIG).process(warm)  # compile or cache load of the kernel
    first_call = time.perf_counter() - t0
    cmds = workload(args.ops, args.seed, mixed=args.workload == "mixed")
    time_kernel(cmds[: min(len(cmds), 10_000)], args.batch)  # warm caches
    runs = [time_kernel(cmds, args.batch) for _ in range(args.repeat)]
    kernel_seconds = min(r[0] for r in runs)
    n_events = runs[0][1]
    check = compare(cmds, args.batch)
    result = {
        "bench": "book",
        "workload": args.workload,
        "ops": args.ops,
        "seed": args.seed,
        "batch": args.batch,
        "events": n_events,
        "kernel_seconds": round(kernel_seconds, 4),
        "ops_per_sec": round(args.ops / kernel_seconds),
        "reference_seconds": round(check["reference_seconds"], 3),
        "reference_ops_per_sec": round(args.ops / check["reference_seconds"]),
        "speedup": round(check["reference_seconds"] / kernel_seconds, 1),
        "first_call_seconds": round(first_call, 3),
        "trades": check["trades"],
        "rejects": check["rejects"],
        "rejects_not_found": check["not_found"],
        "resting_orders": check["resting_orders"],
        "events_agree": True,
        "state_hash": check["state_hash"],
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
