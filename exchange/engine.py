"""The shard's service: its books, its sequence and its journal, one batch at a time.

A shard process is a dumb pipe around a ``ShardEngine``: it drains commands from
its request ring, calls ``apply`` and publishes what comes back. ``apply``:

1. sorts out idempotent retries and conflicts (``exchange.idempotency``) and
   commands for an instrument this shard does not hold, or a CMD_EXPIRE (time is
   the shard's own: REJ_BAD_COMMAND);
2. appends, when the caller passes its wall clock's time (``clock_ns``), one
   CMD_EXPIRE carrying it per book that holds an order whose expiry is at or
   before it (``expiries_due``); then sequences what is left: seq = last seq + 1,
   + 2, ...; a NEW gets the order id
   ``shard_index << ORDER_ID_SHARD_SHIFT | seq`` (unique across shards, and it
   names the shard that owns the order);
3. runs each instrument's commands through its book (the Numba kernel) and
   merges the events back into seq order;
4. journals the batch (commands, events, order states, idempotency entries,
   the request ring's read position and, every ``snapshot_every`` commands, a
   snapshot) in one LMDB transaction and commits it;
5. only then returns the events to publish, and the private replies (conflict
   rejects, duplicate re-sends, unknown-instrument rejects) that are not history.

Control commands (CMD_SYNC, CMD_STATUS: questions about the shard's own state)
are split off before step 1 and go through none of the steps: they are answered
from the state the batch left, after its commit. A STATUS is answered among the
replies; the SYNCs are handed back as commands, and ``sync_answer`` yields the
answer to each in chunks (a whole history does not fit in memory at once).

``recover`` rebuilds the books from the latest snapshot and a replay of the
journal after it, and refuses to go on when the replay does not give the
journaled events byte for byte.
"""

import tempfile
import time
from collections.abc import Collection, Iterator
from typing import NamedTuple, Protocol

import msgspec
import numpy as np
from numba import njit

from exchange import idempotency
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.journal import Journal
from exchange.orderstate import ORDER_ID_SHARD_SHIFT, STATUS_NAMES
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    CMD_STATUS,
    CMD_SYNC,
    COMMAND_DTYPE,
    EV_RESTING,
    EV_STATUS,
    EV_SYNCED,
    EV_TRADING,
    EVENT_DTYPE,
    EVF_REPLAY,
    EVF_RETRANSMIT,
    REJ_BAD_COMMAND,
    SHARD_COMMANDS,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
    SYNCF_RETRANSMIT,
    check_commands,
    commands,
    copy_records,
    join_records,
)
from exchange.statehash import CANONICAL_FIELDS, STOP_FIELDS

SNAPSHOT_FORMAT = 1
# records per chunk of a SYNC's answer (2 MiB), so that answering a long history
# never holds more than a chunk and a batch of it in memory
SYNC_CHUNK = 1 << 14
# what a batch with no events, no replies or no SYNCs returns, shared: read-only
_NO_EVENTS = np.zeros(0, EVENT_DTYPE)
_NO_EVENTS.flags.writeable = False
_NO_SYNCS = np.zeros(0, COMMAND_DTYPE)
_NO_SYNCS.flags.writeable = False
_STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}
# EV_RESTING fields, in the order of the first columns of Book.canonical_rows
_RESTING_COLUMNS = ("side", "price", "order_id", "client", "qty", "leaves")
# a waiting stop's row (STOP_FIELDS) in those columns: its limit price, leaves = qty
_STOP_AS = ("side", "price", "order_id", "client", "qty", "qty")
_SHOWN = CANONICAL_FIELDS.index("shown")  # an EV_RESTING's other_leaves


class RecoveryError(Exception):
    """The journal cannot be replayed into the same state: the shard must not run."""


class Applied(NamedTuple):
    events: np.ndarray  # the batch's history, journaled: publish to everyone concerned
    replies: np.ndarray  # private answers that are not history (never journaled)
    commit_seconds: float
    commands: int  # commands sequenced in this batch
    syncs: np.ndarray  # the batch's CMD_SYNCs: publish ``sync_answer`` of each, after the rest


class History(Protocol):
    """What ``ShardEngine.recover`` reads: a ``Journal``, or a journal cut at a seq
    (``tools.journalview.JournalView``, how the tools rebuild a past book)."""

    @property
    def last_seq(self) -> int: ...

    def latest_snapshot(self) -> tuple[int, bytes] | None: ...

    def iter_batches(self, after_seq: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class Recovery(NamedTuple):
    snapshot_seq: int  # 0 when there was no snapshot
    replayed: int  # commands replayed after the snapshot
    last_seq: int
    seconds: float
    tail_events: np.ndarray  # events of the last journaled batch, to publish again


class _Snapshot(msgspec.Struct, frozen=True):
    format: int
    seq: int
    books: list[bytes]
    hashes: list[str]


def order_id_shard(order_id: int) -> int:
    """The index of the shard that owns an order id."""
    return order_id >> ORDER_ID_SHARD_SHIFT


def _answers(n: int, kind: int, seq: int, req_id, flags: int) -> np.ndarray:
    """``n`` answers to control commands, all else zero (``req_id``: one or one each)."""
    ev = np.zeros(n, EVENT_DTYPE)
    ev["kind"] = kind
    ev["seq"] = seq
    ev["req_id"] = req_id
    ev["flags"] = flags
    return ev


def _flagged_replay(parts: list[np.ndarray]) -> np.ndarray:
    """Journaled events joined into one new array (the journal's are read-only), flagged
    as served again."""
    chunk = join_records(parts, EVENT_DTYPE)
    chunk["flags"] |= EVF_REPLAY
    return chunk


@njit(cache=True)
def _unusual(cmds, books):
    """How many commands are control commands, and how many of the others are for
    an instrument index the shard does not have, or one only a shard makes."""
    controls = unknown = 0
    for i in range(cmds.shape[0]):
        c = cmds[i]
        if c.kind == CMD_SYNC or c.kind == CMD_STATUS:
            controls += 1
        elif c.instrument >= books or c.kind in SHARD_COMMANDS:
            unknown += 1
    return controls, unknown


@njit(cache=True)
def _sequence(cmds, first_seq, id_base):
    """Seqs first_seq, first_seq + 1, ...; a NEW's order id is id_base | its seq."""
    for i in range(cmds.shape[0]):
        c = cmds[i]
        c.seq = first_seq + i
        if c.kind == CMD_NEW:
            c.order_id = id_base | c.seq


def _take(records: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``records[idx]`` as whole records (fancy indexing goes field by field: slow)."""
    rows = records.view(np.uint8).reshape(len(records), records.dtype.itemsize)
    return np.take(rows, idx, axis=0).view(records.dtype).reshape(-1)


class ShardEngine:
    def __init__(
        self,
        shard_index: int,
        books: list[BookConfig],
        journal: Journal,
        *,
        snapshot_every: int = 100_000,
        snapshot_seconds: float | None = None,
        retain_commands: int | None = None,
        archive_dir: str | None = None,
    ):
        if not 0 <= shard_index < 1 << 23:
            raise ValueError(f"shard index must be in [0, 2**23), got {shard_index}")
        if not books:
            raise ValueError("a shard needs at least one instrument")
        self.shard_index = shard_index
        self.configs = list(books)
        self.books = [Book(cfg) for cfg in self.configs]
        self.journal = journal
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.retain_commands = retain_commands  # None: the journal keeps everything
        self.archive_dir = archive_dir
        self.last_seq = 0
        self._since_snapshot = 0
        self._snapshot_at = time.monotonic()

    # ------------------------------------------------------------ the batch

    def apply(
        self,
        drained: np.ndarray,
        consumed: dict[str, int] | None = None,
        clock_ns: int | None = None,
        halted: Collection[int] | None = None,
    ) -> Applied:
        """Sequence, match, journal and commit a drained batch; see the module docstring.

        ``consumed`` (input ring name -> read position after this batch) are
        committed with it, so a restarted shard knows which requests it has.
        ``clock_ns`` (the shard's wall clock, ns since the epoch): a CMD_EXPIRE carrying
        it is sequenced after the requests for each book holding an order whose expiry
        is at or before it (``expiries_due``), and journaled like them: time enters a
        book only so, and a replay expires the same orders at the same seqs.
        ``halted`` (the instrument indexes an operator asks to be halted,
        ``exchange.halts``): a CMD_HALT or CMD_RESUME is sequenced after those for each
        book whose trading state is not the one asked (``states_due``).
        """
        if not isinstance(drained, np.ndarray) or drained.dtype != COMMAND_DTYPE:
            got = drained.dtype if isinstance(drained, np.ndarray) else type(drained).__name__
            raise TypeError(f"a drained batch must be a numpy array of COMMAND_DTYPE, got {got}")
        if drained.ndim != 1:
            raise ValueError(f"a drained batch must be a 1-d array, got shape {drained.shape}")
        drained = np.ascontiguousarray(drained)
        replies = []
        asked = None
        controls, unknowns = _unusual(drained, len(self.books))
        # questions about the state are not requests to change it: no plan, seq,
        # book or journal sees them (a SYNC has no instrument to check)
        if controls:
            control = np.isin(drained["kind"], (CMD_SYNC, CMD_STATUS))
            asked = _take(drained, np.flatnonzero(control))
            drained = _take(drained, np.flatnonzero(~control))
        # commands for an instrument this shard does not hold are answered first,
        # so the idempotency plan only ever sees commands that will be sequenced
        if unknowns:
            unknown = (drained["instrument"] >= len(self.books)) | np.isin(
                drained["kind"], SHARD_COMMANDS
            )
            replies.append(idempotency.shard_rejects(drained[unknown], REJ_BAD_COMMAND))
            drained = _take(drained, np.flatnonzero(~unknown))
        plan = idempotency.plan_batch(self.journal, drained)
        if len(plan.conflicts):
            replies.append(plan.conflicts)
        # a copy: the ring's slots are left as they were
        if plan.keep is None:
            batch = copy_records(drained)
        else:
            batch = _take(drained, np.flatnonzero(plan.keep))
        if clock_ns is not None:
            ticks = self.expiries_due(clock_ns)
            if len(ticks):
                batch = join_records([batch, ticks], COMMAND_DTYPE)
        if halted is not None:
            changes = self.states_due(halted)
            if len(changes):
                batch = join_records([batch, changes], COMMAND_DTYPE)
        n = len(batch)
        if n:
            _sequence(batch, self.last_seq + 1, self.shard_index << ORDER_ID_SHARD_SHIFT)
            events = self._run(batch)
            self._since_snapshot += n
            snapshot = self._snapshot(self.last_seq + n) if self._snapshot_due() else None
            dt = self.journal.write_batch(
                batch, events, snapshot=snapshot, consumed=consumed, unused=plan.unused
            )
            if snapshot is not None:
                self._since_snapshot = 0
                self._snapshot_at = time.monotonic()
            self.last_seq += n
        else:
            events = _NO_EVENTS
            # control commands alone need no commit: answering one again after a
            # restart is harmless, and a STATUS poll must not cost an fsync
            dt = self.journal.write_consumed(consumed) if consumed and len(drained) else 0.0
        if len(plan.retries):
            replies.append(idempotency.resend(self.journal, drained, plan, batch))
        syncs = _NO_SYNCS
        if asked is not None:
            status = asked["kind"] == CMD_STATUS
            if status.any():
                replies.append(self._statuses(_take(asked, np.flatnonzero(status))))
            syncs = _take(asked, np.flatnonzero(~status))
        if not replies:
            return Applied(events, _NO_EVENTS, dt, n, syncs)
        return Applied(events, join_records(replies, EVENT_DTYPE), dt, n, syncs)

    def expiries_due(self, clock_ns: int) -> np.ndarray:
        """A CMD_EXPIRE(clock_ns) for each book that may hold an order whose expiry is at
        or before ``clock_ns`` (``Book.next_expiry``, a bound); none for the others, so an
        idle shard, or one whose orders expire later, journals nothing for the time."""
        due = [
            i
            for i, book in enumerate(self.books)
            if (x := book.next_expiry()) is not None and x <= clock_ns
        ]
        ticks = commands(len(due))
        if due:
            ticks["kind"] = CMD_EXPIRE
            ticks["instrument"] = due
            ticks["expires"] = clock_ns
        return ticks

    def halted(self) -> set[int]:
        """The instrument indexes of the books that are halted now."""
        return {i for i, book in enumerate(self.books) if book.halted}

    def states_due(self, halted: Collection[int]) -> np.ndarray:
        """A CMD_HALT for each book in ``halted`` that is not halted, a CMD_RESUME for
        each other book that is: what brings the books to the states asked."""
        want = set(halted)
        changes = [
            (i, CMD_HALT if i in want else CMD_RESUME)
            for i, book in enumerate(self.books)
            if book.halted != (i in want)
        ]
        cmds = commands(len(changes))
        if changes:
            cmds["instrument"], cmds["kind"] = zip(*changes, strict=True)
        return cmds

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Each instrument's commands through its book; events back in seq order."""
        if len(self.books) == 1:
            return self.books[0].process_sequenced(batch)
        inst = batch["instrument"]
        if (inst == inst[0]).all():
            return self.books[int(inst[0])].process_sequenced(batch)
        parts = [
            self.books[i].process_sequenced(_take(batch, np.flatnonzero(inst == i)))
            for i in np.unique(inst).tolist()
        ]
        events = join_records(parts, EVENT_DTYPE)
        # each part is in (seq, idx) order already; a stable sort on seq keeps idx order
        return _take(events, np.argsort(events["seq"], kind="stable"))

    # ------------------------------------------------------------ control commands

    def _statuses(self, asked: np.ndarray) -> np.ndarray:
        """EV_STATUS answers to CMD_STATUS commands, from the journal's order rows."""
        ev = _answers(len(asked), EV_STATUS, 0, asked["req_id"], 0)
        ev["order_id"] = asked["order_id"]
        ev["instrument"] = asked["instrument"]
        for i, (oid, inst) in enumerate(
            zip(asked["order_id"].tolist(), asked["instrument"].tolist(), strict=True)
        ):
            o = self.journal.order(oid)
            # an order of another instrument is one this book never saw
            if o is None or o.instrument != inst:
                continue
            e = ev[i]  # a structured scalar is a view: this writes into ev
            e["client"], e["side"], e["price"] = o.client, o.side, o.price
            e["qty"], e["leaves"], e["code"] = o.qty, o.leaves, _STATUS_CODES[o.status]
            e["other_id"], e["idem_key"] = o.last_seq, o.idem_key
        return ev

    def sync_answer(self, cmd) -> Iterator[np.ndarray]:
        """The answer to a CMD_SYNC (exchange.records): EVENT_DTYPE chunks of the
        journaled events after its after_seq up to min(L, upto_seq), flagged
        EVF_REPLAY, then the EV_RESTING records of every book, then one EV_SYNCED;
        a retransmission (SYNCF_RETRANSMIT) has no EV_RESTING and flags it all
        EVF_RETRANSMIT too.

        L is the last seq when the answer starts; the books are read as they are
        then, so consume it all before the next ``apply``. A chunk holds at most
        ``SYNC_CHUNK`` records plus one journaled batch's events.
        """
        last = self.last_seq
        after, upto, req_id = int(cmd["order_id"]), int(cmd["price"]), int(cmd["req_id"])
        retransmit = bool(cmd["flags"] & SYNCF_RETRANSMIT)
        flags = EVF_REPLAY | (EVF_RETRANSMIT if retransmit else 0)
        replayed = resting = 0
        kept = self.journal.pruned  # read before the replay: it only moves between batches
        # what the journal holds: the shard does not read archives (a SYNC asked from
        # before it is answered from ``kept`` on, and EV_SYNCED says so)
        for chunk in self._replay(max(after, kept), min(last, upto) if upto > 0 else last):
            replayed += len(chunk)
            if retransmit:
                chunk["flags"] |= EVF_RETRANSMIT
            yield chunk
        if not retransmit:
            for chunk in self._resting(last, req_id):
                resting += len(chunk)
                yield chunk
            trading = _answers(len(self.books), EV_TRADING, last, req_id, flags)
            trading["instrument"] = np.arange(len(self.books))
            trading["code"] = [
                STATE_HALTED if book.halted else STATE_CONTINUOUS for book in self.books
            ]
            yield trading
        synced = _answers(1, EV_SYNCED, last, req_id, flags)
        synced["order_id"] = after
        synced["qty"] = replayed
        synced["leaves"] = resting
        synced["other_id"] = kept
        yield synced

    def _replay(self, after: int, end: int) -> Iterator[np.ndarray]:
        """Journaled events with after < seq <= end, copied and flagged EVF_REPLAY."""
        parts, held = [], 0
        for _, ev in self.journal.iter_batches(after):
            if ev["seq"][0] > end:
                break
            if ev["seq"][-1] > end:
                ev = ev[: np.searchsorted(ev["seq"], end, side="right")]
            parts.append(ev)
            held += len(ev)
            if held >= SYNC_CHUNK:
                yield _flagged_replay(parts)
                parts, held = [], 0
        if parts:
            yield _flagged_replay(parts)

    def _resting(self, seq: int, req_id: int) -> Iterator[np.ndarray]:
        """EV_RESTING per resting order of each book, in its canonical order (other_leaves:
        what it shows), then per waiting stop, in trigger order (code: its ord_type;
        other_leaves 0: nothing of it is shown)."""
        for inst, book in enumerate(self.books):
            stops = book.stop_rows()
            as_resting = stops[:, [STOP_FIELDS.index(f) for f in _STOP_AS]]
            codes = stops[:, STOP_FIELDS.index("ord_type")]
            resting = book.canonical_rows()
            rows = np.concatenate([resting[:, : len(_RESTING_COLUMNS)], as_resting])
            codes = np.concatenate([np.zeros(len(resting), np.int64), codes])
            shown = np.concatenate([resting[:, _SHOWN], np.zeros(len(stops), np.int64)])
            for at in range(0, len(rows), SYNC_CHUNK):
                part = rows[at : at + SYNC_CHUNK]
                ev = _answers(len(part), EV_RESTING, seq, req_id, EVF_REPLAY)
                ev["instrument"] = inst
                for col, field in enumerate(_RESTING_COLUMNS):
                    ev[field] = part[:, col]
                ev["other_leaves"] = shown[at : at + SYNC_CHUNK]
                ev["code"] = codes[at : at + SYNC_CHUNK]
                yield ev

    # ------------------------------------------------------------ retention

    def prune(self) -> tuple[int, int] | None:
        """One step of retention (``Journal.prune``: at most ``PRUNE_COMMANDS`` commands,
        archived to ``archive_dir`` or dropped), keeping ``retain_commands``; the seqs
        taken out, None when there was nothing to take (or no retention)."""
        if self.retain_commands is None:
            return None
        return self.journal.prune(self.retain_commands, self.archive_dir)

    # ------------------------------------------------------------ snapshots

    def _snapshot_due(self) -> bool:
        """Every ``snapshot_every`` commands, or ``snapshot_seconds`` after the last
        one. The clock only schedules snapshots (a shorter replay after a quiet
        spell); what a snapshot holds never depends on it."""
        if self._since_snapshot >= self.snapshot_every:
            return True
        if self.snapshot_seconds is None:
            return False
        return time.monotonic() - self._snapshot_at >= self.snapshot_seconds

    def _snapshot(self, seq: int) -> bytes:
        return msgspec.msgpack.encode(
            _Snapshot(
                SNAPSHOT_FORMAT,
                seq,
                [b.snapshot() for b in self.books],
                [b.state_hash() for b in self.books],
            )
        )

    def _restore(self, seq: int, blob: bytes) -> None:
        try:
            snap = msgspec.msgpack.decode(blob, type=_Snapshot)
        except msgspec.DecodeError as e:
            raise RecoveryError(f"snapshot at seq {seq} is unreadable: {e}") from e
        if snap.format != SNAPSHOT_FORMAT or snap.seq != seq:
            raise RecoveryError(f"snapshot at seq {seq} has format {snap.format}, seq {snap.seq}")
        if len(snap.books) != len(self.configs):
            raise RecoveryError(
                f"snapshot at seq {seq} holds {len(snap.books)} books; the shard is "
                f"configured with {len(self.configs)} instruments"
            )
        books = []
        for i, (data, want) in enumerate(zip(snap.books, snap.hashes, strict=True)):
            book = Book.restore(data)
            if book.config != self.configs[i]:
                raise RecoveryError(
                    f"snapshot at seq {seq}: instrument {i} was {book.config}, "
                    f"the config now says {self.configs[i]}"
                )
            if book.state_hash() != want:
                raise RecoveryError(f"snapshot at seq {seq}: book {i} does not hash as recorded")
            books.append(book)
        self.books = books

    # ------------------------------------------------------------ recovery

    def recover(self, history: History | None = None, *, use_snapshot: bool = True) -> Recovery:
        """Latest snapshot + replay of the journal after it; the shard resumes after it.

        ``history``: what to replay, the engine's own journal by default (a tool passes
        a ``JournalView`` to stop at a seq). ``use_snapshot=False`` replays the whole of
        it (how tools check that snapshots and replay agree).
        """
        history = self.journal if history is None else history
        t0 = time.perf_counter()
        self.books = [Book(cfg) for cfg in self.configs]
        snap_seq = 0
        latest = history.latest_snapshot() if use_snapshot else None
        if latest is not None:
            snap_seq, blob = latest
            self._restore(snap_seq, blob)
        self.last_seq = snap_seq
        replayed = 0
        tail = np.zeros(0, EVENT_DTYPE)
        for cmds, journaled in history.iter_batches(after_seq=snap_seq):
            try:
                check_commands(cmds, self.last_seq)
            except ValueError as e:
                raise RecoveryError(f"journal batch at seq {cmds['seq'][0]}: {e}") from e
            events = self._run(cmds)
            if events.tobytes() != journaled.tobytes():
                raise RecoveryError(
                    f"replay of the batch at seq {cmds['seq'][0]} does not give the journaled "
                    "events: the journal and the kernel disagree; the shard will not run on a "
                    "divergent book"
                )
            self.last_seq = int(cmds["seq"][-1])
            replayed += len(cmds)
            tail = journaled
        if self.last_seq != history.last_seq:
            raise RecoveryError(
                f"replay ended at seq {self.last_seq}, the journal says {history.last_seq}"
            )
        self._since_snapshot = replayed
        return Recovery(snap_seq, replayed, self.last_seq, time.perf_counter() - t0, tail)

    def state_hashes(self) -> list[str]:
        return [b.state_hash() for b in self.books]


def warm_up() -> float:
    """Compile (or load from Numba's cache) everything a batch goes through, on a
    throwaway book and journal, so the first real order is not the one that pays
    for it (a cold compile takes tens of seconds). Returns the seconds it took."""
    t0 = time.perf_counter()
    cfg = BookConfig(min_price=1, max_price=16, capacity=8)
    cmds = commands(6)
    cmds["kind"] = [CMD_NEW, CMD_NEW, CMD_REPLACE, CMD_NEW, CMD_CANCEL, CMD_MASS_CANCEL]
    cmds["side"] = [SIDE_SELL, SIDE_BUY, 0, SIDE_SELL, 0, 0]
    cmds["price"] = [8, 8, 9, 10, 0, 0]
    cmds["qty"] = [2, 1, 3, 1, 0, 0]
    cmds["order_id"] = [0, 0, 1, 0, 4, 0]
    cmds["client"] = [1, 2, 1, 1, 1, 1]
    cmds["idem_key"] = [7, 0, 0, 0, 0, 0]
    with (
        tempfile.TemporaryDirectory(prefix="exchange-warm-up-") as tmp,
        Journal(f"{tmp}/journal", durability="os") as journal,
    ):
        engine = ShardEngine(0, [cfg], journal, snapshot_every=1)
        engine.apply(cmds, consumed={"warm-up": len(cmds)})
        asked = commands(3)
        asked["kind"] = [CMD_NEW, CMD_STATUS, CMD_SYNC]
        asked["side"], asked["price"], asked["qty"], asked["client"] = SIDE_BUY, 1, 1, 1
        asked["order_id"] = [0, 1, 0]
        applied = engine.apply(asked)
        for sync in applied.syncs:
            for _ in engine.sync_answer(sync):
                pass
        engine.apply(cmds[:1])  # an idempotent retry
        ShardEngine(0, [cfg], journal).recover()
        engine.books[0].depth(5)
    return time.perf_counter() - t0
