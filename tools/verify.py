"""``exch journal verify``: read a shard's journal and check its invariants.

One pass over the batches (up to the last seq when the check starts, so a
journal that the shard is writing can be checked) feeds both the checks below
and a full replay through the real kernel (``ShardEngine.recover`` without
snapshot):

sequence     seqs go 1, 2, 3... with no gap and no step back, within and across
             batches; the batches end at the seq the journal says is its last;
             every batch stored is seen in order
events       every event belongs to a command of its batch, in (seq, idx) order
             with idx counting from 0, every command has at least one event,
             none is an EVF_DUPLICATE re-send, no command is for an instrument
             the shard does not have
fills        for every order, sum(fill qty) <= order qty, with each event's
             leaves = qty - filled (``tools.fillcheck``)
idempotency  no two NEW commands under one (client, idempotency key); the
             journal's idempotency entries and its keyed NEW commands are the
             same set, each entry naming its command's seq, order id and request
replay       replaying every batch gives the journaled events byte for byte
             (so the trades too), up to the last seq
snapshot     the latest snapshot restores to books with its recorded hashes, and
             snapshot + replay of the rest gives the same state hashes as the
             full replay

A problem is reported with the check, the seq and what is wrong; the first
``MAX_LISTED`` of each check are kept, all are counted.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from exchange import idempotency
from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine
from exchange.journal import Journal
from tools import batchcheck, fillcheck
from tools.journalview import JournalView

MAX_LISTED = 20
CHECKS = ("readable", "sequence", "events", "fills", "idempotency", "replay", "snapshot")

# a keyed NEW command, as its idempotency entry should record it
_KEYED_DTYPE = np.dtype(
    [
        ("client", "<u4"),
        ("idem_key", "<u8"),
        ("seq", "<i8"),
        ("order_id", "<i8"),
        ("request", f"V{idempotency.FINGERPRINT_DTYPE.itemsize}"),
    ]
)


class Problem(NamedTuple):
    check: str
    seq: int  # where it is (0: the journal as a whole)
    message: str


@dataclass(kw_only=True)
class Findings:
    """Problems by check: every one counted, the first ``MAX_LISTED`` of each kept."""

    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, check: str, seq: int, message: str) -> None:
        n = self.counts.get(check, 0)
        if n < MAX_LISTED:
            self.problems.append(Problem(check, int(seq), message))
        self.counts[check] = n + 1


@dataclass
class Verification(Findings):
    shard: str
    path: str
    last_seq: int = 0
    batches: int = 0
    commands: int = 0
    events: int = 0
    trades: int = 0
    traded_qty: int = 0
    orders: int = 0  # accepted
    live_orders: int = 0  # at the end
    idem_entries: int = 0
    snapshot_seq: int = 0  # 0: no snapshot
    hashes: dict[str, str] = field(default_factory=dict)  # symbol -> state hash at last_seq
    seconds: float = 0.0


class _Pass:
    """The checks made batch by batch, as the replay reads them."""

    def __init__(self, report: Verification, instruments: int, progress):
        self.report = report
        self.instruments = instruments
        self.progress = progress
        self.next_seq = 1
        self.table = fillcheck.new_table()
        self.totals = np.zeros(fillcheck.S_SIZE, np.int64)
        self.found = np.zeros((MAX_LISTED, 3), np.int64)
        self.framing = batchcheck.new_problems(MAX_LISTED)
        self.keyed = []

    def batch(self, cmds: np.ndarray, events: np.ndarray) -> None:
        r = self.report
        r.batches += 1
        r.commands += len(cmds)
        r.events += len(events)
        self._framing(cmds, events)
        self._fills(events)
        idx = idempotency.keyed_news(cmds)
        keyed = np.zeros(len(idx), _KEYED_DTYPE)
        for f in ("client", "idem_key", "seq", "order_id"):
            keyed[f] = cmds[f][idx]
        keyed["request"] = idempotency.fingerprints(cmds[idx]).view(keyed["request"].dtype)
        self.keyed.append(keyed)
        if self.progress is not None:
            self.progress(int(cmds["seq"][-1]))

    def _framing(self, cmds: np.ndarray, events: np.ndarray) -> None:
        found, self.next_seq = batchcheck.scan(
            cmds, events, self.instruments, self.next_seq, self.framing
        )
        for code, seq, a, b in self.framing[: min(found, MAX_LISTED)].tolist():
            check = "sequence" if code in batchcheck.SEQUENCE else "events"
            self.report.add(check, seq, batchcheck.message(code, seq, a, b))
        if found > MAX_LISTED:  # a batch this broken: the rest are counted, as events
            counts = self.report.counts
            counts["events"] = counts.get("events", 0) + found - MAX_LISTED

    def _fills(self, events: np.ndarray) -> None:
        t = self.totals
        self.table = fillcheck.fit(self.table, int(t[fillcheck.S_LIVE]), events)
        t[fillcheck.S_PROBLEMS] = 0  # per batch: ``found`` holds the batch's first ones
        fillcheck.scan(self.table, events, self.found, t)
        found = int(t[fillcheck.S_PROBLEMS])
        for code, at, oid in self.found[: min(found, MAX_LISTED)].tolist():
            what = fillcheck.PROBLEM_NAMES[code]
            self.report.add("fills", events["seq"][at], f"order {oid}: {what}")
        if found > MAX_LISTED:
            counts = self.report.counts
            counts["fills"] += found - MAX_LISTED


def _idempotency(report: Verification, keyed: np.ndarray, journal: Journal, upto: int) -> None:
    """``keyed``: the journal's keyed NEW commands, in seq order, against its entries."""
    add = report.add
    entries = [e for e in journal.idem_entries() if e.seq <= upto]
    report.idem_entries = len(entries)
    keys = idempotency.entry_keys(keyed["client"], keyed["idem_key"]).view("S12")
    order = np.argsort(keys, kind="stable")  # equal pairs stay in seq order
    repeat = np.zeros(len(keys), bool)
    repeat[1:] = keys[order][1:] == keys[order][:-1]
    for j in np.flatnonzero(repeat)[:MAX_LISTED].tolist():
        a, b = keyed[order[j - 1]], keyed[order[j]]
        add(
            "idempotency",
            b["seq"],
            f"(client {a['client']}, key {a['idem_key']}) made two orders: {a['order_id']} "
            f"at seq {a['seq']} and {b['order_id']} at seq {b['seq']}",
        )
    firsts = keyed[order[~repeat]]
    first_keys = keys[order[~repeat]]
    stored = np.zeros(len(entries), _KEYED_DTYPE)
    for f in ("client", "idem_key", "seq", "order_id"):
        stored[f] = [getattr(e, f) for e in entries]
    stored["request"] = [e.fingerprint for e in entries]
    stored_keys = idempotency.entry_keys(stored["client"], stored["idem_key"]).view("S12")
    for c in firsts[~np.isin(first_keys, stored_keys)][:MAX_LISTED]:
        add(
            "idempotency",
            c["seq"],
            f"the NEW under (client {c['client']}, key {c['idem_key']}) has no idempotency entry",
        )
    for e in stored[~np.isin(stored_keys, first_keys)][:MAX_LISTED]:
        add(
            "idempotency",
            e["seq"],
            f"the entry of (client {e['client']}, key {e['idem_key']}) names seq {e['seq']}, "
            "where the journal has no NEW under that pair",
        )
    at = np.searchsorted(first_keys, stored_keys)
    hit = at < len(first_keys)
    hit[hit] = first_keys[at[hit]] == stored_keys[hit]
    cmd = firsts[at[hit]]
    ent = stored[hit]
    differ = (cmd["seq"] != ent["seq"]) | (cmd["order_id"] != ent["order_id"])
    differ |= cmd["request"] != ent["request"]
    for c, e in zip(cmd[differ][:MAX_LISTED], ent[differ][:MAX_LISTED], strict=True):
        add(
            "idempotency",
            c["seq"],
            f"the entry of (client {c['client']}, key {c['idem_key']}) says order "
            f"{e['order_id']} at seq {e['seq']}"
            + (", another request" if c["request"] != e["request"] else "")
            + f"; the journal's NEW is order {c['order_id']} at seq {c['seq']}",
        )


def verify_journal(
    path: str,
    books: list[BookConfig],
    *,
    symbols: list[str] | None = None,
    shard: str = "",
    shard_index: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """Check the journal at ``path`` of a shard holding ``books``; see the module docstring.

    ``progress(seq, last_seq)`` is called after each batch. Raises JournalError
    when there is no journal at ``path``; everything wrong inside it is reported.
    """
    t0 = time.perf_counter()
    symbols = symbols or [str(i) for i in range(len(books))]
    report = Verification(shard=shard, path=path)
    with Journal(path, readonly=True) as journal:
        stats = journal.stats()  # one read txn: last_seq and batches agree
        upto = report.last_seq = stats.last_seq
        checks = _Pass(report, len(books), progress and (lambda seq: progress(seq, upto)))
        view = JournalView(journal, upto, on_batch=checks.batch)
        engine = ShardEngine(shard_index, books, view)
        try:
            engine.recover(use_snapshot=False)
            report.hashes = dict(zip(symbols, engine.state_hashes(), strict=True))
        except Exception as e:  # a corrupt journal can break the replay in any way
            report.add("replay", view.position, f"{type(e).__name__}: {e}")
            try:  # the checks go on to the end without the replay
                for _ in view.iter_batches(view.position):
                    pass
            except Exception as e:
                report.add("readable", view.position, f"{type(e).__name__}: {e}")
        if checks.next_seq - 1 != upto:
            report.add(
                "sequence",
                0,
                f"the journal says its last seq is {upto}; "
                f"its batches end at {checks.next_seq - 1}",
            )
        if report.batches != stats.batches and "readable" not in report.counts:
            report.add(
                "sequence",
                0,
                f"{stats.batches} batches are stored, {report.batches} were read in seq order: "
                "some are stored out of order",
            )
        keyed = np.concatenate(checks.keyed) if checks.keyed else np.zeros(0, _KEYED_DTYPE)
        _idempotency(report, keyed, journal, upto)
        _snapshot(report, shard_index, books, journal, upto)
        t = checks.totals.tolist()
        report.trades, report.traded_qty = t[fillcheck.S_TRADES], t[fillcheck.S_TRADED_QTY]
        report.orders, report.live_orders = t[fillcheck.S_ACCEPTED], t[fillcheck.S_LIVE]
    report.seconds = time.perf_counter() - t0
    return report


def _snapshot(report, shard_index, books, journal, upto) -> None:
    view = JournalView(journal, upto)
    snap = view.latest_snapshot()
    if snap is None:
        return
    report.snapshot_seq = snap[0]
    engine = ShardEngine(shard_index, books, view)
    try:
        engine.recover(use_snapshot=True)
    except Exception as e:  # as above: corrupt input may fail anywhere
        report.add("snapshot", snap[0], f"{type(e).__name__}: {e}")
        return
    if report.hashes and engine.state_hashes() != list(report.hashes.values()):
        report.add(
            "snapshot",
            snap[0],
            f"snapshot at seq {snap[0]} + replay gives other books than the full replay",
        )


def render(report: Verification) -> str:
    r = report
    head = f"{r.shard} ({r.path})"
    if r.ok:
        span = f"seqs 1..{r.last_seq} in {r.batches} batches" if r.last_seq else "empty"
        lines = [f"{head}: OK, {span} ({r.seconds:.2f} s)"]
    else:
        total = sum(r.counts.values())
        per = ", ".join(f"{c} {r.counts[c]}" for c in CHECKS if c in r.counts)
        lines = [f"{head}: FAIL, {total} problem(s): {per}"]
        for p in sorted(r.problems, key=lambda p: p.seq):
            lines.append(f"  {p.check:<12} seq {p.seq:<10} {p.message}")
        hidden = total - len(r.problems)
        if hidden:
            lines.append(f"  ... and {hidden} more (the first {MAX_LISTED} per check are listed)")
    lines.append(
        f"  {r.commands} commands, {r.events} events, {r.trades} trades (qty {r.traded_qty}), "
        f"{r.orders} orders accepted ({r.live_orders} live at the end), "
        f"{r.idem_entries} idempotency entries"
    )
    if r.snapshot_seq:
        lines.append(f"  latest snapshot at seq {r.snapshot_seq}")
    if r.hashes:
        lines.append("  state hashes: " + ", ".join(f"{s} {h}" for s, h in r.hashes.items()))
    return "\n".join(lines)
