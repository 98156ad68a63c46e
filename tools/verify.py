"""``exch journal verify``: read a shard's journal and check its invariants.

First every stored value is checked on its own; then one pass over the batches
(up to the last seq when the check starts, so a journal that the shard is
writing can be checked) feeds both the checks below and a full replay through
the real kernel (``ShardEngine.recover`` without snapshot):

sequence     seqs go 1, 2, 3... with no gap and no step back, within and across
             batches; the batches end at the seq the journal says is its last;
             every batch stored is seen in order
events       every event belongs to a command of its batch, in (seq, idx) order
             with idx counting from 0, every command has at least one event,
             none is an EVF_DUPLICATE re-send, no command is for an instrument
             the shard does not have
fills        for every order, sum(fill qty) <= order qty, with each event's
             leaves = qty - filled (``tools.fillcheck``)
idempotency  no two orders under one (client, idempotency key): no two keyed
             NEW commands the book accepted (a keyed NEW it rejected made no
             order and used no key; ``exchange.idempotency``); the journal's
             idempotency entries and its accepted keyed NEWs are the same set,
             each entry naming its command's seq, order id and request. Over
             the history the journal keeps (after ``pruned``): an entry leaves
             with its batch, after which its pair may make an order again
replay       replaying every batch gives the journaled events byte for byte
             (so the trades too), up to the last seq
snapshot     the latest snapshot restores to books with its recorded hashes, and
             snapshot + replay of the rest gives the same state hashes as the
             full replay

and, apart from that pass:

checksums    every value of every table passes its check (its checksum, which
             binds it to its key; a batch record is stored under its last seq)
             and every table's keys come in order (``Journal.damaged``)
tables       the tables folded from the batches hold what the batches say, as of
             one read txn (``Journal.tables``): the orders table is exactly the
             last row of each order in the batches up to ``folded``, the idem
             table exactly their idempotency entries; every input position the
             batches up to ``consumed_at`` carry is in the positions table, at
             that position or past it (a batch of retries alone moves only the
             table's; consumed counts never go back). A value that fails its check
             is reported under checksums only.

Retention (``Journal.prune``): the batches it archived are read from the
archives (``archive_dir``; an archive missing or failing its check fails
``readable``: the history cannot be read) and checked like the others; the
orders table holds no row of an order that finished at or before the journal's
``pruned`` seq, and the idem table no entry of a batch taken out. History it
dropped (no archive) cannot be checked: the pass then starts at the latest
snapshot, as recovery does (sequence, events and replay from there, so
``snapshot`` is that replay), and the fills, idempotency and tables checks,
which need every batch from seq 1, are not made (``history_after`` says from
where the journal was checked).

A problem is reported with the check, the seq and what is wrong; the first
``MAX_LISTED`` of each check are kept, all are counted.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from exchange import idempotency
from exchange.batchcodec import BatchRecord
from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine
from exchange.journal import Journal, JournalDamaged, JournalReader, Tables
from exchange.orderstate import ORDER_DTYPE, ST_LIVE
from tools import batchcheck, fillcheck
from tools.journalview import JournalView

MAX_LISTED = 20
CHECKS = (
    "checksums",
    "readable",
    "sequence",
    "events",
    "fills",
    "idempotency",
    "tables",
    "replay",
    "snapshot",
)
# rows held before the latest row of each order is taken (bounds the tables check's memory)
_COMPACT_ROWS = 1 << 20

# a keyed NEW command the book accepted, as its idempotency entry should record it
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

    def count(self, check: str, n: int) -> None:
        """``n`` more problems of ``check``, not listed."""
        if n:
            self.counts[check] = self.counts.get(check, 0) + n


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
    # > 0: history up to it was dropped by retention; checked from the latest snapshot
    history_after: int = 0
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
        self.fills = True  # False: the orders' history does not start here
        self.pruned = 0  # the batches up to this seq are read from archives ...
        self.archived = 0  # ... this many of them

    def batch(self, cmds: np.ndarray, events: np.ndarray) -> None:
        r = self.report
        r.batches += 1
        self.archived += int(cmds["seq"][-1]) <= self.pruned
        r.commands += len(cmds)
        r.events += len(events)
        self._framing(cmds, events)
        if self.fills:
            self._fills(events)
        idx = idempotency.used_news(cmds, events)
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
    """``keyed``: the keyed NEW commands of the history kept that the book accepted, in
    seq order, against the journal's entries."""
    add = report.add
    try:
        entries = [e for e in journal.idem_entries() if e.seq <= upto]
    except JournalDamaged as e:  # under checksums too; the others cannot be compared
        add("idempotency", 0, f"the entries cannot be read: {e}")
        return
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
    archive_dir: str | None = None,
) -> Verification:
    """Check the journal at ``path`` of a shard holding ``books``; see the module docstring.

    ``progress(seq, last_seq)`` is called after each batch. Raises JournalError
    when there is no journal at ``path``; everything wrong inside it is reported.
    """
    t0 = time.perf_counter()
    symbols = symbols or [str(i) for i in range(len(books))]
    report = Verification(shard=shard, path=path)
    # a copy's directory may be named otherwise: its archives are the shard's
    with JournalReader(path, archive_dir=archive_dir, name=shard or None) as journal:
        for seq, message in journal.damaged():
            report.add("checksums", seq, message)
        try:
            stats = journal.stats()  # one read txn: last_seq and batches agree
        except JournalDamaged:  # a damaged batch of the log, reported above
            stats = None
        upto = report.last_seq = journal.last_seq if stats is None else stats.last_seq
        checks = _Pass(report, len(books), progress and (lambda seq: progress(seq, upto)))
        checks.pruned = stats.pruned if stats else 0
        view = JournalView(journal, upto, on_batch=checks.batch)
        engine = ShardEngine(shard_index, books, journal)
        dropped = report.history_after = journal.history_after()
        start = 0  # the pass reads the batches after it
        if dropped:
            snap = view.latest_snapshot()
            start = snap[0] if snap else 0
            checks.next_seq = start + 1
            checks.fills = False
        try:
            engine.recover(view, use_snapshot=bool(dropped))
            report.hashes = dict(zip(symbols, engine.state_hashes(), strict=True))
        except Exception as e:  # a corrupt journal can break the replay in any way
            report.add("replay", view.reached, f"{type(e).__name__}: {e}")
            try:  # the checks go on to the end without the replay
                for _ in view.iter_batches(view.reached):
                    pass
            except Exception as e:
                report.add("readable", view.reached, f"{type(e).__name__}: {e}")
        if checks.next_seq - 1 != upto:
            report.add(
                "sequence",
                0,
                f"the journal says its last seq is {upto}; "
                f"its batches end at {checks.next_seq - 1}",
            )
        stored = stats.batches if stats else 0
        read = report.batches - checks.archived
        if stats and dropped:  # only what follows the snapshot was read
            stored = sum(1 for _ in journal.iter_records(start))
        if stats and read != stored and "readable" not in report.counts:
            report.add(
                "sequence",
                0,
                f"{stored} batches are stored, {read} were read in seq order: "
                "some are stored out of order",
            )
        if not dropped:
            keyed = np.concatenate(checks.keyed) if checks.keyed else np.zeros(0, _KEYED_DTYPE)
            _idempotency(report, keyed[keyed["seq"] > checks.pruned], journal, upto)
            _tables(report, journal)
            _snapshot(report, shard_index, books, journal, upto)
        else:
            report.snapshot_seq = start
        t = checks.totals.tolist()
        report.trades, report.traded_qty = t[fillcheck.S_TRADES], t[fillcheck.S_TRADED_QTY]
        report.orders, report.live_orders = t[fillcheck.S_ACCEPTED], t[fillcheck.S_LIVE]
    report.seconds = time.perf_counter() - t0
    return report


def _snapshot(report, shard_index, books, journal, upto) -> None:
    view = JournalView(journal, upto)
    try:
        snap = view.latest_snapshot()
    except JournalDamaged as e:
        report.add("snapshot", 0, f"the latest snapshot cannot be read: {e}")
        return
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


class _Folded:
    """What the tables should hold, from the batches: the last row of each order and the
    idempotency entries up to ``folded``, the input consumed up to ``consumed_at``."""

    def __init__(self, tables: Tables):
        self.folded = tables.folded
        self.pruned = tables.pruned  # the entries of the batches up to it are taken out
        self.consumed_at = tables.consumed_at  # never before folded: a fold sets both
        self.rows: list[np.ndarray] = []
        self.held = 0
        self.idem_keys: list[np.ndarray] = []
        self.idem_values: list[np.ndarray] = []
        self.consumed: dict[str, tuple[int, int]] = {}  # name -> (position, seq)

    def add(self, rec: BatchRecord) -> bool:
        """Take in a batch record, in seq order; False once past what the tables hold."""
        seq = int(rec.commands["seq"][-1])
        if seq > self.consumed_at:
            return False
        self.consumed.update((name, (p, seq)) for name, p in rec.consumed.items())
        if seq <= self.folded:
            # copies: a record's arrays are views of all its bytes
            self.rows.append(rec.rows.copy())
            if seq > self.pruned:
                self.idem_keys.append(rec.idem_keys.copy())
                self.idem_values.append(rec.idem_values.copy())
            self.held += len(rec.rows)
            if self.held >= _COMPACT_ROWS:
                self.rows = [self.latest_rows()]
                self.held = len(self.rows[0])
        return True

    def latest_rows(self) -> np.ndarray:
        """The last row of each order, by order id."""
        rows = np.concatenate([np.zeros(0, ORDER_DTYPE), *self.rows])
        rows = rows[np.argsort(rows["order_id"], kind="stable")]
        ids = rows["order_id"]
        last = np.ones(len(ids), bool)
        last[:-1] = ids[1:] != ids[:-1]
        return rows[last]

    def idem(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys as S12, values) of the entries, by key (of a key twice, the first: the
        idempotency check reports the second)."""
        keys = np.concatenate([np.zeros(0, idempotency.KEY_BYTES), *self.idem_keys])
        values = np.concatenate([np.zeros(0, idempotency.IDEM_DTYPE), *self.idem_values])
        keys, first = np.unique(keys.view("S12"), return_index=True)
        return keys, values[first]


def _tables(report: Verification, journal: Journal) -> None:
    """The folded tables against the batches (see the module docstring)."""
    try:
        tables = journal.tables()
        folded = _Folded(tables)
        for rec in journal.iter_records():
            if not folded.add(rec):
                break
    except JournalDamaged as e:  # reported under checksums; nothing left to compare with
        report.add("tables", 0, f"not compared: {e}")
        return
    orders = tables.orders
    skip = [int.from_bytes(k, "big", signed=True) for k in tables.damaged["orders"]]
    want = folded.latest_rows()
    # retention took out the rows of the orders finished by the seq it pruned up to
    gone = (want["status"] != ST_LIVE) & (want["last_seq"] <= tables.pruned)
    want = want[~gone]
    want = want[~np.isin(want["order_id"], skip)]
    _compare(
        report,
        "orders",
        (want["order_id"], want),
        (tables.order_ids, orders),
        lambda oid: f"order {oid}",
        f"up to seq {folded.folded}",
    )
    keys, values = folded.idem()
    keep = ~np.isin(keys, np.array(tables.damaged["idem"], "S12"))
    _compare(
        report,
        "idem",
        (keys[keep], values[keep]),
        (tables.idem_keys.view("S12"), tables.idem_values),
        _pair,
        f"up to seq {folded.folded}",
    )
    damaged = {k.decode(errors="replace") for k in tables.damaged["positions"]}
    for name, (pos, seq) in folded.consumed.items():
        have = tables.consumed.get(name)
        if name in damaged or (have is not None and have >= pos):
            continue
        where = "is missing" if have is None else f"is at {have}"
        report.add(
            "tables",
            seq,
            f"positions table: {name!r} {where}; the batch ending at seq {seq} has it at {pos}",
        )


def _pair(key: bytes) -> str:
    e = np.frombuffer(key.ljust(12, b"\0"), idempotency.IDEM_KEY_DTYPE)[0]
    return f"(client {e['client']}, idem key {e['idem_key']})"


def _compare(report, table: str, want, have, name, span: str) -> None:
    """Table records ``have`` against ``want`` (each (keys, records), by key): every one
    missing, extra or different counted, the first ones named by table and key."""
    (want_keys, want_recs), (have_keys, have_recs) = want, have
    seq = "last_seq" if table == "orders" else "seq"
    missing = ~np.isin(want_keys, have_keys)
    extra = ~np.isin(have_keys, want_keys)
    keys, got = have_keys[~extra], have_recs[~extra]
    exp = want_recs[np.searchsorted(want_keys, keys)]
    differ = _raw(got) != _raw(exp)
    found = (
        ("is missing (the batches {span} have it)", want_recs[missing], want_keys[missing]),
        ("is in no batch {span}", have_recs[extra], have_keys[extra]),
    )
    for what, recs, ks in found:
        for r, k in zip(recs[:MAX_LISTED], ks[:MAX_LISTED], strict=True):
            report.add("tables", int(r[seq]), f"{table} table: {name(k)} " + what.format(span=span))
        report.count("tables", len(recs) - min(len(recs), MAX_LISTED))
    got, exp, keys = got[differ], exp[differ], keys[differ]
    for g, w, k in zip(got[:MAX_LISTED], exp[:MAX_LISTED], keys[:MAX_LISTED], strict=True):
        fields = [f"{f} {g[f]} (the batches: {w[f]})" for f in g.dtype.names if g[f] != w[f]]
        report.add("tables", int(w[seq]), f"{table} table, {name(k)}: {', '.join(fields)}")
    report.count("tables", len(got) - min(len(got), MAX_LISTED))


def _raw(recs: np.ndarray) -> np.ndarray:
    """Each record's bytes as one string, so that records compare whole."""
    return np.ascontiguousarray(recs).view(f"S{recs.dtype.itemsize}")


def render(report: Verification) -> str:
    r = report
    head = f"{r.shard} ({r.path})"
    if r.ok:
        first = r.snapshot_seq + 1 if r.history_after else 1
        span = f"seqs {first}..{r.last_seq} in {r.batches} batches" if r.last_seq else "empty"
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
    if r.history_after:
        lines.append(
            f"  history up to seq {r.history_after} was dropped (retention, no archive): "
            f"checked from the latest snapshot on; fills, idempotency and tables not checked"
        )
    if r.hashes:
        lines.append("  state hashes: " + ", ".join(f"{s} {h}" for s, h in r.hashes.items()))
    return "\n".join(lines)
