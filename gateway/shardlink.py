"""The gateway's end of one shard: its two rings, its journal (read-only), its books' mirrors.

The gateway produces COMMAND records into ``<shard>-req`` and consumes EVENT
records from ``<shard>-evt``; the rings exist already (the supervisor, or a
test, made them). At start-up the link attaches to the event ring *before*
reading the journal, so whatever the shard commits after the read is still
waiting in the ring: nothing falls between the two. What the ring still holds
from before the read is skipped (``unseen``): the journal had it, and the
positions rebuilt from the journal must not count a fill twice.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from exchange.engine import ShardEngine
from exchange.idempotency import IdemEntry
from exchange.journal import Journal, JournalError
from exchange.orderstate import OrderState
from exchange.records import CMD_NEW, COMMAND_DTYPE, EVENT_DTYPE, EVF_DUPLICATE
from exchange.shard import event_ring, request_ring
from gateway.mirror import BookMirror
from shm import ring_ops as ops
from shm.atomics import load_word
from shm.consumer import Consumer
from shm.proc import token_alive
from shm.producer import Producer

AFTER_ALL_IDX = 1 << 32  # above any event idx (uint32): "every event of that seq"


@njit(cache=True)
def _unseen(ev, last_seq, last_idx, keep):
    kept = 0
    newest_seq, newest_idx = last_seq, last_idx
    for i in range(len(ev)):
        e = ev[i]
        journaled = e.seq > 0 and (e.flags & EVF_DUPLICATE) == 0
        new = e.seq > last_seq or (e.seq == last_seq and e.idx > last_idx)
        keep[i] = new or not journaled
        kept += keep[i]
        if journaled and (e.seq > newest_seq or (e.seq == newest_seq and e.idx > newest_idx)):
            newest_seq, newest_idx = e.seq, e.idx
    return kept, newest_seq, newest_idx


def unseen(ev: np.ndarray, last: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``ev`` without the journaled events at or before ``last`` = (seq, idx), and the new last.

    A restarted shard publishes its last batch again; journaled events are in
    strictly increasing (seq, idx) order otherwise. Shard replies that are not
    history (seq 0, duplicates) always pass. One kernel pass: this runs on
    every drained batch, a single order's few events at light load.
    """
    keep = np.empty(len(ev), np.bool_)
    kept, seq, idx = _unseen(ev, last[0], last[1], keep)
    return (ev if kept == len(ev) else ev[keep]), (seq, idx)


class FrozenJournal:
    """A read-only journal as of one moment, for ``ShardEngine.recover``.

    The shard keeps committing while the gateway replays; recovering "up to the
    last seq read at the start" gives a consistent book, where following the
    live journal to its end would race the writer.
    """

    def __init__(self, journal: Journal):
        self._journal = journal
        self._snapshot = journal.latest_snapshot()
        # read after the snapshot: a snapshot is committed with its batch
        self.last_seq = journal.last_seq

    def latest_snapshot(self):
        return self._snapshot

    def iter_batches(self, after_seq: int = 0):
        for cmds, events in self._journal.iter_batches(after_seq):
            if cmds["seq"][0] > self.last_seq:
                return
            yield cmds, events


class Loaded(NamedTuple):
    resting: list[np.ndarray]  # per instrument: ``Book.canonical_rows()`` of its book
    journal: FrozenJournal  # its batches, up to the moment of the load


class ShardLink:
    def __init__(self, config, index: int):
        shard = config.shards[index]
        ns = config.shm.namespace
        self.index = index
        self.name = shard.name
        self.syms = list(shard.instruments)
        self.books = [config.instrument(s).book for s in self.syms]
        self.mirrors = [BookMirror(s, b) for s, b in zip(self.syms, self.books, strict=True)]
        self.journal_path = f"{config.journal.dir}/{shard.name}"
        self.journal: Journal | None = None
        self.last = (0, 0)  # (seq, idx) of the last journaled event taken, for ``unseen``
        self.events = Consumer(ns, event_ring(shard.name), EVENT_DTYPE)
        try:
            self.requests = Producer(ns, request_ring(shard.name), COMMAND_DTYPE)
        except BaseException:
            self.events.close()
            raise

    def _open_journal(self) -> Journal | None:
        """The journal, once the shard has made one (a fresh shard may not have yet)."""
        if self.journal is None:
            try:
                self.journal = Journal(self.journal_path, readonly=True)
            except JournalError:
                return None
        return self.journal

    def load(self) -> Loaded | None:
        """Seed the mirrors with the journaled books; return what else the gateway takes
        from the journal (None: the shard has no journal yet). From now on the events
        taken from the ring are only those after it: the journal has the others."""
        journal = self._open_journal()
        if journal is None:
            return None
        frozen = FrozenJournal(journal)
        engine = ShardEngine(self.index, self.books, frozen)
        engine.recover()
        for mirror, book, cfg in zip(self.mirrors, engine.books, self.books, strict=True):
            levels = (cfg.max_price - cfg.min_price) // cfg.tick_size + 1
            mirror.load(frozen.last_seq, *book.depth(levels))
        self.last = (frozen.last_seq, AFTER_ALL_IDX)
        resting = [book.canonical_rows() for book in engine.books]
        return Loaded(resting, frozen)

    def order(self, order_id: int) -> OrderState | None:
        journal = self._open_journal()
        return None if journal is None else journal.order(order_id)

    def idem_lookup_many(self, clients: np.ndarray, keys: np.ndarray) -> list[IdemEntry | None]:
        """The journal's entry of each (client, idempotency key) pair, as of now."""
        journal = self._open_journal()
        if journal is None:
            return [None] * len(keys)
        return journal.idem_lookup_many(clients, keys)

    def queued_news(self) -> np.ndarray:
        """The keyed NEW commands still in the request ring (an earlier gateway's)."""
        cmds = self.requests.unconsumed()
        keyed = (cmds["kind"] == CMD_NEW) & (cmds["idem_key"] != 0)
        # one for an instrument this config no longer has is its shard's to refuse
        return cmds[keyed & (cmds["instrument"] < len(self.syms))]

    def release_pages(self) -> None:
        """Give back the journal pages read so far (``Journal.release_pages``)."""
        if self.journal is not None:
            self.journal.release_pages()

    def alive(self) -> bool:
        """Whether a live shard process is attached to the request ring."""
        return token_alive(int(load_word(self.requests.header, ops.H_CONSUMER)))

    def close(self) -> None:
        self.requests.close()
        self.events.close()
        if self.journal is not None:
            self.journal.close()
