"""The gateway's end of one shard: its two rings, its books' mirrors, and how far the
gateway has read it.

The gateway produces COMMAND records into ``<shard>-req`` and consumes EVENT
records from ``<shard>-evt``; the rings exist already (the supervisor, or a
test, made them). The gateway never opens a shard's journal: what it needs of
a shard's past, the shard serves (``CMD_SYNC``, see ``exchange.records``).

``last`` is the watermark: the (seq, idx) of the last journaled event folded
into the gateway's derived state (positions, idempotency keys). ``unseen``
lets through each journaled event once, in order, whether it arrives live or
replayed by a SYNC. A sync is sent when the link starts and whenever the
shard process changes; its answer replays the journal after the watermark,
then gives the books' resting orders (the risk state and the mirrors are
seeded from them) and trading states (EV_TRADING: the mirrors'), and ends
with EV_SYNCED.

Until its first sync is answered (``caught_up``), a link takes journaled events
from its shard only from the replay: the event ring may hold events after a
gap (an earlier gateway read and folded some that this one's checkpoint does
not have), and folding them before the replay fills the gap would fold out of
order. After it, the live stream has no gaps: a shard publishes every batch it
journals, and a restarted one publishes its last batch again.
"""

import numpy as np
from numba import njit

from exchange.config import session_end_ns
from exchange.records import (
    CMD_NEW,
    CMD_SYNC,
    COMMAND_DTYPE,
    EV_RESTING,
    EV_SYNCED,
    EV_TRADING,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    EVF_REPLAY,
    EVF_RETRANSMIT,
    STATE_CONTINUOUS,
    SYNC_ANSWERS,
    SYNCF_RETRANSMIT,
    commands,
)
from exchange.topology import event_ring, offsets, request_ring
from gateway.mirror import BookMirror
from shm import ring_ops as ops
from shm.atomics import load_word
from shm.consumer import Consumer
from shm.producer import Producer


@njit(cache=True)
def _unseen(ev, last_seq, last_idx, live_ok, keep):
    kept = served = retransmitted = 0
    newest_seq, newest_idx = last_seq, last_idx
    for i in range(len(ev)):
        e = ev[i]
        answer = e.kind in SYNC_ANSWERS
        replay = (e.flags & EVF_REPLAY) != 0
        journaled = e.seq > 0 and (e.flags & EVF_DUPLICATE) == 0 and not answer
        if e.flags & EVF_RETRANSMIT:
            keep[i] = False
            retransmitted += 1
        elif not journaled:
            keep[i] = True
        elif not replay and not live_ok:
            keep[i] = False
        else:
            keep[i] = e.seq > newest_seq or (e.seq == newest_seq and e.idx > newest_idx)
            if keep[i]:
                newest_seq, newest_idx = e.seq, e.idx
        kept += keep[i]
        served += keep[i] and replay
    return kept, served, retransmitted, newest_seq, newest_idx


def unseen(
    ev: np.ndarray, last: tuple[int, int], live_ok: bool = True
) -> tuple[np.ndarray, tuple[int, int], int, np.ndarray]:
    """``ev`` without the journaled events at or before ``last`` = (seq, idx), the new last,
    how many of the kept records a sync served (EVF_REPLAY), and the records of a
    retransmission's answer (EVF_RETRANSMIT: never history, never kept).

    Journaled events come in strictly increasing (seq, idx) order, live or
    replayed, except what a restarted shard publishes again and what a replay
    repeats. Records that are not history (seq 0 replies, duplicates, a sync's
    resting orders and end) always pass. ``live_ok`` False (a link catching
    up) drops live journaled events: the replay brings them, in order. One
    kernel pass: this runs on every drained batch. (A sync's answer records carry
    the shard's last seq then: taken for history, they would move ``last`` past
    events not folded yet, or be dropped.)
    """
    keep = np.empty(len(ev), np.bool_)
    kept, served, retx, seq, idx = _unseen(ev, last[0], last[1], live_ok, keep)
    retransmitted = ev[(ev["flags"] & EVF_RETRANSMIT) != 0] if retx else ev[:0]
    return (ev if kept == len(ev) else ev[keep]), (seq, idx), served, retransmitted


def resting_rows(resting: np.ndarray) -> np.ndarray:
    """EV_RESTING records as ``Book.canonical_rows()`` columns (side, price, order id,
    client, qty, leaves), int64."""
    cols = ("side", "price", "order_id", "client", "qty", "leaves")
    return np.column_stack([resting[c].astype(np.int64) for c in cols]).reshape(-1, len(cols))


class ShardLink:
    def __init__(self, config, index: int):
        shard = config.shards[index]
        ns = config.shm.namespace
        self.index = index
        self.name = shard.name
        self.syms = list(shard.instruments)
        self.offset = offsets(config)[index]  # the number of its first instrument
        self.books = [config.instrument(s).book for s in self.syms]
        # each instrument's session end, ns after midnight UTC (None: none): a DAY order's
        self.session_ends = [session_end_ns(config.instrument(s).session_end) for s in self.syms]
        self.mirrors = [BookMirror(s, b) for s, b in zip(self.syms, self.books, strict=True)]
        self.last = (0, 0)  # watermark: (seq, idx) of the last journaled event folded in
        self.caught_up = False  # a sync answered since this process started
        # what the gateway derived from the shard cannot be trusted: its history ends
        # before the watermark (its journal was replaced by an older one), or it no longer
        # holds the history after it (retention). ``held``: the watermark then, which the
        # checkpoint keeps (the next gateway finds the same gap); ``why``: for the Rejects
        self.diverged = False
        self.held = (0, 0)
        self.why = ""
        self.asked_from = (0, 0)  # the watermark when the last sync was asked
        self.sync_req = 0  # req_id of the sync in flight (0: none)
        self.synced_to = None  # the shard process (its ring token) the last sync went to
        self._resting: list[np.ndarray] = []  # the sync's EV_RESTING, EV_TRADING so far
        # seconds the shard has made no progress with requests waiting for it (``look``)
        self.idle = 0.0
        self._progress = (-1, -1)  # ``progress()`` at the last look that saw it move
        self._moved_at = 0.0  # when that look was
        self.events = Consumer(ns, event_ring(shard.name), EVENT_DTYPE)
        try:
            self.requests = Producer(ns, request_ring(shard.name), COMMAND_DTYPE)
        except BaseException:
            self.events.close()
            raise

    # ------------------------------------------------------------ the shard process

    def token(self) -> int:
        """The shard process attached to the request ring (0: none)."""
        return int(load_word(self.requests.header, ops.H_CONSUMER))

    def alive(self) -> bool:
        """Whether a live shard process is attached to the request ring."""
        return self.requests.peer_alive()

    def ready(self) -> bool:
        """Whether orders for its instruments can be taken: the shard is up and the
        gateway has caught up with it."""
        return self.caught_up and not self.diverged and self.alive()

    def progress(self) -> tuple[int, int]:
        """What moves while the shard works: the requests it has taken from the request
        ring (its consumer cursor) and the events it has published. The events count
        too because the shard takes a SYNC only once it has published the whole answer,
        which can be a long replay."""
        return (
            int(load_word(self.requests.header, ops.H_RELEASED)),
            int(load_word(self.events.header, ops.H_PUBLISHED)),
        )

    def look(self, now: float, watched: bool) -> float:
        """Update and return ``idle``: the seconds since the shard last moved (or its
        request ring was last seen empty, or it was last not ``watched``), ``now`` being
        the caller's clock. It is read from the rings' cursors alone: a stopped shard
        moves neither."""
        progress = self.progress()
        waiting = self.requests.cursor != progress[0]
        if progress != self._progress or not waiting or not watched:
            self._progress, self._moved_at = progress, now
        self.idle = now - self._moved_at
        return self.idle

    # ------------------------------------------------------------ syncs

    def sync(self, req_id: int) -> bool:
        """Ask the shard for its history after the watermark and its resting orders;
        False if the request ring is full (ask again later)."""
        cmd = commands(1)
        cmd["kind"] = CMD_SYNC
        cmd["req_id"] = req_id
        cmd["order_id"] = self.sync_after()
        if self.requests.write(cmd) != 1:
            return False
        self.sync_req = req_id
        self.synced_to = self.token()
        self.asked_from = self.last
        self._resting = []
        return True

    def diverge(self, why: str) -> None:
        """Take no more requests for the shard's instruments (``ready``), for ``why``; the
        watermark the diverging sync was asked from is what checkpoints keep."""
        if not self.diverged:
            self.diverged, self.held, self.why = True, self.asked_from, why

    def sync_after(self) -> int:
        """The seq a sync asks the history after: the watermark's seq and on, since events
        of it not folded yet come again."""
        return max(self.last[0] - 1, 0)

    def retransmit(self, req_id: int, after: int, upto: int) -> bool:
        """Ask the shard for its journaled events with after < seq <= upto, flagged
        EVF_RETRANSMIT (a retransmission: not a sync, nothing of the link's changes);
        False if the request ring is full."""
        cmd = commands(1)
        cmd["kind"] = CMD_SYNC
        cmd["flags"] = SYNCF_RETRANSMIT
        cmd["req_id"] = req_id
        cmd["order_id"] = after
        cmd["price"] = upto
        return self.requests.write(cmd) == 1

    def answered(self, served: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, int] | None:
        """Take a sync's answer records (EV_RESTING, EV_TRADING, EV_SYNCED) of
        ``served``; when the current sync's EV_SYNCED is among them, return the shard's
        seq then, its resting orders (EV_RESTING records), its books' trading states
        (EV_TRADING records) and the seq its journal was pruned up to (the replay
        started after it), else None. Answers to an earlier sync (the shard restarted
        meanwhile) are passed over."""
        mine = served[served["req_id"] == self.sync_req] if self.sync_req else served[:0]
        if not len(mine):
            return None
        kind = mine["kind"]
        self._resting.append(mine[(kind == EV_RESTING) | (kind == EV_TRADING)])
        end = mine[kind == EV_SYNCED]
        if not len(end):
            return None
        got = np.concatenate(self._resting) if self._resting else mine[:0]
        self._resting = []
        self.sync_req = 0
        self.caught_up = True
        resting, trading = got[got["kind"] == EV_RESTING], got[got["kind"] == EV_TRADING]
        return int(end["seq"][0]), resting, trading, int(end["other_id"][0])

    def seed_mirrors(self, seq: int, resting: np.ndarray, trading: np.ndarray) -> None:
        """The mirrors as the shard's books were at ``seq``, from their resting orders:
        what each shows (other_leaves: an iceberg's shown part; a waiting stop's record,
        code != 0, is not in the book), and their trading states (an EV_TRADING record's
        code; a book without one is continuous: a shard that sends none has no halts)."""
        states = dict(zip(trading["instrument"].tolist(), trading["code"].tolist(), strict=True))
        for inst, mirror in enumerate(self.mirrors):
            mine = resting[(resting["instrument"] == inst) & (resting["code"] == 0)]
            mirror.load_resting(seq, mine["side"], mine["price"], mine["other_leaves"])
            mirror.load_state(states.get(inst, STATE_CONTINUOUS))

    # ------------------------------------------------------------ the rings

    def queued_news(self) -> np.ndarray:
        """The keyed NEW commands still in the request ring (an earlier gateway's)."""
        cmds = self.requests.unconsumed()
        keyed = (cmds["kind"] == CMD_NEW) & (cmds["idem_key"] != 0)
        # one for an instrument this config no longer has is its shard's to refuse
        return cmds[keyed & (cmds["instrument"] < len(self.syms))]

    def witness(self) -> tuple[int, int]:
        """The request ring's incarnation and the records written to it so far."""
        hdr = self.requests.header
        return int(load_word(hdr, ops.H_INCARNATION)), int(load_word(hdr, ops.H_PUBLISHED))

    def close(self) -> None:
        self.requests.close()
        self.events.close()
