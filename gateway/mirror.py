"""The gateway's copy of each book's price levels, and the market data of a drained batch.

A ``BookMirror`` keeps one instrument's levels as the public feed shows them,
from the shard's DEPTH events: a ladder (total open quantity and order count
per tick inside the price band, one row per side) plus the best tick of each
side. The ladders of the default instruments span up to 60,001 ticks, so the
best levels are found by walking out from the best tick (a few steps on a live
book) instead of scanning the ladder: the kernels below do that, and applying
a batch's DEPTH events is one kernel call whatever the batch's size (a drained
batch at light load holds one command; its market data must not cost more
than the order's own work).

A mirror takes a drained batch's events (``take``): one ``Trades`` per command
that traded and one ``TradingState`` per STATE event (a halt, a resume: the
book's trading state, which the mirror keeps too), made at once, and the
levels the DEPTH events set. What the levels
show is made apart (``shown``): at most one ``Depth`` and one ``TopOfBook`` (the
state then, carrying the seq of the last command taken on this instrument), and
only when what they show changed: a burst of orders is conflated into the
state it leaves. The gateway shows them once per turn (``gateway.marketdata``);
``apply`` and ``market_data`` do both for one batch.

Each feed (Trades, Depth, TopOfBook, TradingState) is a chain: a message's ``prev`` is the
``seq`` of the previous message of the same feed and symbol, so a subscriber
that sees ``prev`` differ from the last ``seq`` it got knows it missed one.
``prev`` 0 means "no previous message from this publisher".
"""

import numpy as np
from numba import njit

from exchange.bookconfig import BookConfig
from exchange.records import (
    EV_DEPTH,
    EV_STATE,
    EV_TRADE,
    EVF_DUPLICATE,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_NAMES,
)
from gateway.protocol import (
    DEFAULT_DEPTH,
    SIDE_NAMES,
    BookSnapshot,
    Depth,
    Level,
    MarketData,
    TopOfBook,
    Trades,
    TradingState,
)

BID, ASK = 0, 1  # ladder rows: SIDE_BUY - 1, SIDE_SELL - 1
# the public event kinds, by kind (one lookup per event instead of a comparison per kind)
_PUBLIC = np.zeros(256, np.bool_)
_PUBLIC[[EV_TRADE, EV_DEPTH, EV_STATE]] = True
NONE = -1  # the best tick of an empty side


@njit(cache=True)
def _next_level(qty, row, tick):
    """The first tick from ``tick`` on (down for bids, up for asks) with open quantity."""
    step = -1 if row == BID else 1
    end = qty.shape[1]
    while 0 <= tick < end:
        if qty[row, tick] > 0:
            return tick
        tick += step
    return NONE


@njit(cache=True)
def apply_depth(qty, orders, best, rows, ticks, totals, counts):
    """Set each event's level (in order: a level's last event holds its final totals)
    and keep ``best`` (the best tick per row) true."""
    for k in range(len(rows)):
        row, tick = rows[k], ticks[k]
        qty[row, tick] = totals[k]
        orders[row, tick] = counts[k]
        b = best[row]
        if totals[k] > 0:
            if b == NONE or (tick > b if row == BID else tick < b):
                best[row] = tick
        elif tick == b:
            best[row] = _next_level(qty, row, tick)


@njit(cache=True)
def best_levels(qty, orders, best, row, out):
    """The best ``len(out)`` levels of a row as (tick, qty, orders), best first; their count."""
    n = 0
    tick = best[row]
    while n < out.shape[0] and tick != NONE:
        out[n, 0] = tick
        out[n, 1] = qty[row, tick]
        out[n, 2] = orders[row, tick]
        n += 1
        tick = _next_level(qty, row, tick + (-1 if row == BID else 1))
    return n


@njit(cache=True)
def find_best(qty, best):
    """``best`` recomputed from the whole ladder (after a load)."""
    best[BID] = _next_level(qty, BID, qty.shape[1] - 1)
    best[ASK] = _next_level(qty, ASK, 0)


class BookMirror:
    """One instrument's price levels as the public feed shows them, kept from DEPTH events."""

    def __init__(self, sym: str, book: BookConfig, depth: int = DEFAULT_DEPTH):
        self.sym = sym
        self.depth = depth
        self.seq = 0  # the last command of this instrument applied
        self.state = STATE_CONTINUOUS  # the book's trading state (STATE_*) as of ``seq``
        self._min_price = book.min_price
        self._tick = book.tick_size
        ticks = (book.max_price - book.min_price) // book.tick_size + 1
        self._qty = np.zeros((2, ticks), np.int64)  # [side - 1, tick]: total open qty
        self._orders = np.zeros((2, ticks), np.int64)
        self._best = np.full(2, NONE, np.int64)
        self._prev = {Trades: 0, Depth: 0, TopOfBook: 0, TradingState: 0}
        self._shown_depth = None  # (bids, asks) last published
        self._shown_top = None
        self.dirty = False  # levels moved since they were last ``shown``

    def levels(self, side: int, n: int) -> list[Level]:
        """The best ``n`` levels of a side, best first."""
        out = np.empty((n, 3), np.int64)
        k = best_levels(self._qty, self._orders, self._best, side - 1, out)
        return [(self._min_price + t * self._tick, q, o) for t, q, o in out[:k].tolist()]

    def book(self, cid: int, depth: int) -> BookSnapshot:
        """The reply to a BookRequest: the top ``depth`` levels and the trading state as
        of ``seq``."""
        return BookSnapshot(
            cid=cid,
            sym=self.sym,
            seq=self.seq,
            bids=self.levels(SIDE_BUY, depth),
            asks=self.levels(SIDE_SELL, depth),
            state=STATE_NAMES[self.state],
        )

    def load_resting(
        self, seq: int, sides: np.ndarray, prices: np.ndarray, leaves: np.ndarray
    ) -> None:
        """Start from a book's resting orders (side, price, the qty it shows each: an
        iceberg's shown part, not its reserve) as of ``seq``: what its shard serves a
        gateway that syncs with it."""
        self.seq = seq
        self._qty[:] = 0
        self._orders[:] = 0
        rows = sides.astype(np.int64) - 1
        ticks = (prices.astype(np.int64) - self._min_price) // self._tick
        np.add.at(self._qty, (rows, ticks), leaves.astype(np.int64))
        np.add.at(self._orders, (rows, ticks), 1)
        find_best(self._qty, self._best)

    def load_state(self, state: int) -> None:
        """Start from the book's trading state (STATE_*) as of the ``seq`` of the last
        ``load_resting``: what its shard serves a gateway that syncs with it
        (EV_TRADING)."""
        self.state = state

    def apply(self, events: np.ndarray) -> list[MarketData]:
        """The market data of a drained batch: this instrument's TRADE, STATE and DEPTH
        events, in (seq, idx) order (``take``, then ``shown`` if the batch moved a
        level)."""
        out = self.take(events)
        if self.dirty:
            out += self.shown()
        return out

    def take(self, events: np.ndarray) -> list[Trades | TradingState]:
        """Fold this instrument's TRADE, STATE and DEPTH events in, in (seq, idx) order:
        the ``Trades`` of each command that traded and the ``TradingState`` of each
        STATE, at once, in seq order (a command's Trades before its TradingState: a
        reopening auction's trades come before its STATE); the levels the DEPTH events
        set are shown later (``dirty`` until ``shown``)."""
        events = events[events["seq"] > self.seq]  # a restarted shard repeats its last batch
        if not len(events):
            return []
        kind = events["kind"]
        trades = events[kind == EV_TRADE]
        depth = events[kind == EV_DEPTH]
        out = self._trades(trades) if len(trades) else []
        if len(trades) + len(depth) != len(events):  # a STATE among them: seldom
            out = self._states(out, events[kind == EV_STATE])
        self.seq = int(events["seq"][-1])
        if len(depth):
            rows = depth["side"].astype(np.int64) - 1
            ticks = (depth["price"] - self._min_price) // self._tick
            # contiguous whatever the count (numpy calls a one-element column so, a longer
            # one not): one compiled version of the kernel
            qty, orders = np.ascontiguousarray(depth["qty"]), np.ascontiguousarray(depth["leaves"])
            apply_depth(self._qty, self._orders, self._best, rows, ticks, qty, orders)
            self.dirty = True
        return out

    def shown(self) -> list[MarketData]:
        """A ``Depth`` and a ``TopOfBook`` of the levels now (as of ``seq``), each only if
        it differs from the last one shown."""
        self.dirty = False
        out = []
        bids = self.levels(SIDE_BUY, self.depth)
        asks = self.levels(SIDE_SELL, self.depth)
        if (bids, asks) != self._shown_depth:
            self._shown_depth = (bids, asks)
            out.append(self._chain(Depth, self.seq, bids=bids, asks=asks))
        top = (*(bids[0][:2] if bids else (0, 0)), *(asks[0][:2] if asks else (0, 0)))
        if top != self._shown_top:
            self._shown_top = top
            bid_px, bid_qty, ask_px, ask_qty = top
            out.append(
                self._chain(
                    TopOfBook,
                    self.seq,
                    bid_px=bid_px,
                    bid_qty=bid_qty,
                    ask_px=ask_px,
                    ask_qty=ask_qty,
                )
            )
        return out

    def _trades(self, trades: np.ndarray) -> list[Trades]:
        """One Trades per command, with its prints in execution order."""
        out = trades_messages(self.sym, trades, self._prev[Trades])
        if out:
            self._prev[Trades] = out[-1].seq
        return out

    def _states(self, trades: list[Trades], states: np.ndarray) -> list[Trades | TradingState]:
        """The ``TradingState`` of each STATE event, put among the Trades: after those
        of its seq and before, in seq order; the mirror's ``state`` follows them."""
        out = []
        i = 0
        rows = zip(*(states[f].tolist() for f in ("seq", "code", "price", "qty")), strict=True)
        for seq, code, px, qty in rows:
            while i < len(trades) and trades[i].seq <= seq:
                out.append(trades[i])
                i += 1
            self.state = code
            out.append(self._chain(TradingState, seq, state=STATE_NAMES[code], px=px, qty=qty))
        return out + trades[i:]

    def _chain(self, cls, seq: int, **fields):
        msg = cls(sym=self.sym, seq=seq, prev=self._prev[cls], **fields)
        self._prev[cls] = seq
        return msg


def trades_messages(sym: str, trades: np.ndarray, prev: int, retx: bool = False) -> list[Trades]:
    """One instrument's TRADE events as one ``Trades`` per command, its prints in
    execution order, chained from ``prev`` (``retx``: a retransmission's)."""
    out = []
    seqs = trades["seq"].tolist()
    sides = trades["side"].tolist()
    prints = list(zip(trades["price"].tolist(), trades["qty"].tolist(), strict=True))
    start = 0
    for end in range(1, len(seqs) + 1):
        if end == len(seqs) or seqs[end] != seqs[start]:
            side = SIDE_NAMES[sides[start]]
            seq = seqs[start]
            part = prints[start:end]
            out.append(Trades(sym=sym, seq=seq, prev=prev, side=side, prints=part, retx=retx))
            prev = seq
            start = end
    return out


def public(events: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """A batch of one shard's EVENT records as (instrument index, its public events):
    only TRADE, DEPTH and STATE events are public, and never a duplicate (a private
    re-send)."""
    public = events[_PUBLIC[events["kind"]] & (events["flags"] & EVF_DUPLICATE == 0)]
    if not len(public):
        return []
    inst = public["instrument"]
    if (inst == inst[0]).all():
        return [(int(inst[0]), public)]
    return [(i, public[inst == i]) for i in np.unique(inst).tolist()]


def market_data(events: np.ndarray, mirrors: list[BookMirror]) -> list[MarketData]:
    """The public messages of a drained batch of EVENT records from one shard.

    ``mirrors[i]`` is the mirror of the shard's instrument index i. Publish each
    message with its ``sym`` as the topic frame.
    """
    out = []
    for i, mine in public(events):
        out += mirrors[i].apply(mine)
    return out
