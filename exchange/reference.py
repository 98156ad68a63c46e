"""The reference order book: slow, plain Python, obviously correct.

It implements the semantics written in the docstring of ``exchange.records``
with dicts and lists, one command at a time, so that the Numba book
(``exchange.book.Book``) can be checked against it event by event. It has the
same public interface as ``Book``; its snapshots are its own format.

Where the spec leaves a choice, this book reads it as follows (the kernel must
agree; the tests in tests/test_book_semantics.py pin each point):

- A NEW whose ``flags`` has any bit other than FLAG_POST_ONLY set is
  REJ_BAD_COMMAND (an unknown flag is "out of range" like an unknown tif).
- A command whose ``kind`` is not one of CMD_* is REJ_BAD_COMMAND. CANCEL,
  REPLACE and MASS_CANCEL ignore the NEW-only fields (side, tif, ord_type,
  flags, stp); MASS_CANCEL ignores ``order_id``, ``price`` and ``qty``.
- A REJECTED event carries the command's order_id, side, price, qty and client
  as given, whatever the kind.
- Post-only is allowed with any TIF of a limit order: a post-only IOC or FOK
  that does not cross is accepted and then cancelled (CXL_IOC / CXL_FOK).
- An order id is checked only against live orders (REJ_DUPLICATE_ID); ids of
  orders that are gone may be reused, and any int64 value is an id.
- The DEPTH events of a command name every level whose open total was changed
  by some step of the command (a trade, a cancel, a decrement, an order
  arriving, leaving or shrinking in place), in the order those levels were
  first changed. A replace that leaves the order exactly as it was (same price,
  same total qty) changes no level and emits REPLACED only.
- A REPLACE validates in the order: REJ_NOT_FOUND, REJ_QTY, REJ_QTY_MAX,
  REJ_LOT, REJ_PRICE_BAND, REJ_TICK, REJ_POST_ONLY; a replace to zero that
  would also cross as post-only is therefore REJ_POST_ONLY. CANCELLED for a
  replace to zero carries the order's old price.
- A replaced order that loses its place keeps its slot while it matches, so it
  is never REJ_BOOK_FULL; if it is filled or cancelled by STP it is gone.
- The aggressor's CANCELLED events (CXL_IOC, CXL_FOK, CXL_STP) carry its price
  as given in the command (for a market order: the command's price field).
- A waiting stop's CANCELLED and REPLACED carry the price as given (for a
  TYPE_STOP: the command's price field, which nothing else reads); its
  TRIGGERED, TRADE and CANCELLED events after triggering carry that price too,
  as a NEW's aggressor events do.
- An iceberg keeps its reserve as ``hidden`` (0 for every other order): a trade
  or a decrement takes off ``leaves`` alone, so what it shows (``shown``, leaves -
  hidden) is what is left of its displayed part, and it refills when that is 0
  with leaves left.
- A REPLACE of an iceberg that keeps its place and changes nothing it shows (the
  cut taken off the reserve alone) touches no level: REPLACED only, no DEPTH.
- A CMD_EXPIRE reads only ``expires`` (and seq, req_id, idem_key, instrument, which
  its events copy); its REJECTED (ts <= 0) carries the command's fields as given,
  as every reject does. The book's ``now`` is kept whole here, and an EXPIRE looks
  at every live order; the kernel skips the look when its bound on the earliest
  expiry is after now (the same events either way).
- A GTD/DAY order keeps ``tif`` and ``expires`` on its row to its end (the state
  hash and snapshots carry both); a triggered stop-limit rests with its own tif.
- CMD_HALT and CMD_RESUME read nothing but their kind (and seq, req_id, idem_key,
  instrument, which their events copy). The auction looks at every price on the
  tick grid from the best ask to the best bid (the kernel at every level between
  them: the same prices).
- ``process`` refuses (ValueError/TypeError, nothing changed) an array that is
  not a 1-d COMMAND_DTYPE array, or whose seqs are not strictly increasing and
  above ``last_seq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import numpy as np

from exchange.bookconfig import BookConfig
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    CXL_EXPIRED,
    CXL_FOK,
    CXL_IOC,
    CXL_REPLACE,
    CXL_STP,
    CXL_USER,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_EXPIRED,
    EV_MASS_CANCELLED,
    EV_REJECTED,
    EV_REPLACED,
    EV_STATE,
    EV_TRADE,
    EV_TRIGGERED,
    FLAG_POST_ONLY,
    REJ_BAD_COMMAND,
    REJ_BOOK_FULL,
    REJ_DISPLAY,
    REJ_DUPLICATE_ID,
    REJ_EXPIRY,
    REJ_EXPIRY_PASSED,
    REJ_HALTED,
    REJ_LOT,
    REJ_NOT_FOUND,
    REJ_POST_ONLY,
    REJ_PRICE_BAND,
    REJ_QTY,
    REJ_QTY_MAX,
    REJ_TICK,
    REJ_TRIGGER,
    REJ_TRIGGER_REACHED,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST,
    STP_CANCEL_OLDEST,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TRADE_AUCTION,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
    check_commands,
    events,
)
from exchange.statehash import CANONICAL_FIELDS, STOP_FIELDS, hash_canonical

SNAPSHOT_FORMAT = "exchange.reference.ReferenceBook"
SNAPSHOT_VERSION = 5  # 3: icebergs (display and shown in the rows); 4: tif, expires, now;
# 5: halted

SIDES = (SIDE_BUY, SIDE_SELL)
TIFS = (TIF_GTC, TIF_IOC, TIF_FOK, TIF_GTD, TIF_DAY)
RESTING_TIFS = (TIF_GTC, TIF_GTD, TIF_DAY)  # a limit order with one of these rests
DATED_TIFS = (TIF_GTD, TIF_DAY)  # the orders that carry an expiry
ORDER_TYPES = (TYPE_LIMIT, TYPE_MARKET, TYPE_STOP, TYPE_STOP_LIMIT)
STOP_TYPES = (TYPE_STOP, TYPE_STOP_LIMIT)
STP_MODES = (STP_NONE, STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_CANCEL_BOTH, STP_DECREMENT)

# Event fields a book writes; seq/req_id/idem_key/instrument come from the command.
_EVENT_FIELDS = (
    "seq",
    "req_id",
    "idem_key",
    "instrument",
    "idx",
    "kind",
    "code",
    "order_id",
    "client",
    "side",
    "price",
    "qty",
    "leaves",
    "other_id",
    "other_client",
    "other_leaves",
)


class _Command(NamedTuple):
    seq: int
    order_id: int
    price: int
    qty: int
    req_id: int
    idem_key: int
    client: int
    instrument: int
    kind: int
    side: int
    tif: int
    ord_type: int
    flags: int
    stp: int
    trigger_tick: int
    display: int
    expires: int


@dataclass(eq=False)
class _Order:
    order_id: int
    client: int
    side: int
    price: int
    qty: int  # total: filled + open (less what STP_DECREMENT took away)
    leaves: int  # open
    stp: int
    flags: int
    ord_type: int = TYPE_LIMIT  # TYPE_STOP / TYPE_STOP_LIMIT while the order waits
    tif: int = TIF_GTC
    trigger: int = 0  # a waiting stop's trigger price
    display: int = 0  # an iceberg's display quantity, 0 for an ordinary order
    hidden: int = 0  # an iceberg's reserve: the part of leaves not shown
    expires: int = 0  # a GTD/DAY order's expiry, 0 for the others

    @property
    def shown(self) -> int:
        return self.leaves - self.hidden

    def show(self) -> None:
        """An iceberg shows min(display, leaves) of itself, the rest is its reserve."""
        if self.display:
            self.hidden = self.leaves - min(self.display, self.leaves)

    def row(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in CANONICAL_FIELDS)

    def stop_row(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in STOP_FIELDS)

    @property
    def waiting(self) -> bool:
        return self.ord_type in STOP_TYPES


def _from_row(row: dict[str, int]) -> _Order:
    """An order from its canonical row (which says what it shows, not what it hides)."""
    shown = row.pop("shown")
    order = _Order(**row)
    order.hidden = order.leaves - shown
    return order


def _opposite(side: int) -> int:
    return SIDE_SELL if side == SIDE_BUY else SIDE_BUY


class _Events:
    """The events of one command, and the levels it changed, in first-change order."""

    def __init__(self, cmd: _Command, rows: list[tuple[int, ...]]):
        self.cmd = cmd
        self.rows = rows
        self.idx = 0
        self.touched: dict[tuple[int, int], None] = {}

    def emit(
        self,
        kind: int,
        *,
        code: int = 0,
        order_id: int = 0,
        client: int = 0,
        side: int = 0,
        price: int = 0,
        qty: int = 0,
        leaves: int = 0,
        other_id: int = 0,
        other_client: int = 0,
        other_leaves: int = 0,
    ) -> None:
        c = self.cmd
        self.rows.append(
            (
                c.seq,
                c.req_id,
                c.idem_key,
                c.instrument,
                self.idx,
                kind,
                code,
                order_id,
                client,
                side,
                price,
                qty,
                leaves,
                other_id,
                other_client,
                other_leaves,
            )
        )
        self.idx += 1

    def reject(self, code: int) -> None:
        c = self.cmd
        self.emit(
            EV_REJECTED,
            code=code,
            order_id=c.order_id,
            client=c.client,
            side=c.side,
            price=c.price,
            qty=c.qty,
        )

    def cancelled(self, order: _Order, code: int, qty: int, leaves: int = 0) -> None:
        self.emit(
            EV_CANCELLED,
            code=code,
            order_id=order.order_id,
            client=order.client,
            side=order.side,
            price=order.price,
            qty=qty,
            leaves=leaves,
        )

    def touch(self, side: int, price: int) -> None:
        self.touched.setdefault((side, price), None)


class ReferenceBook:
    """One instrument's book; see the module docstring for the semantics."""

    def __init__(self, config: BookConfig):
        if not isinstance(config, BookConfig):
            raise TypeError(f"config must be a BookConfig, got {type(config).__name__}")
        self.config = config
        self.last_seq = 0
        self.last_price = 0  # of the last trade; 0 before the first
        self.now = 0  # the greatest CMD_EXPIRE time processed; 0 before the first
        self.halted = False  # HALTS: while True nothing trades
        self._orders: dict[int, _Order] = {}  # every live order, waiting stops included
        # side -> price -> orders in queue order; a level exists only while not empty
        self._levels: dict[int, dict[int, list[_Order]]] = {SIDE_BUY: {}, SIDE_SELL: {}}
        # side -> trigger price -> waiting stops in arrival order; the same
        self._stops: dict[int, dict[int, list[_Order]]] = {SIDE_BUY: {}, SIDE_SELL: {}}

    # ------------------------------------------------------------------ commands

    def process(self, cmds: np.ndarray) -> np.ndarray:
        check_commands(cmds, self.last_seq)
        rows: list[tuple[int, ...]] = []
        columns = [cmds[name].tolist() for name in _Command._fields]
        for fields in zip(*columns, strict=True):
            cmd = _Command(*fields)
            out = _Events(cmd, rows)
            if cmd.kind == CMD_NEW:
                self._new(cmd, out)
            elif cmd.kind == CMD_CANCEL:
                self._cancel(cmd, out)
            elif cmd.kind == CMD_REPLACE:
                self._replace(cmd, out)
            elif cmd.kind == CMD_MASS_CANCEL:
                self._mass_cancel(cmd, out)
            elif cmd.kind == CMD_EXPIRE:
                self._expire(cmd, out)
            elif cmd.kind == CMD_HALT:
                self.halted = True
                out.emit(EV_STATE, code=STATE_HALTED)
            elif cmd.kind == CMD_RESUME:
                self._resume(out)
            else:
                out.reject(REJ_BAD_COMMAND)
            self._trigger_stops(out)
            self._emit_depth(out)
            self.last_seq = cmd.seq
        result = events(len(rows))
        if rows:
            for name, column in zip(_EVENT_FIELDS, zip(*rows, strict=True), strict=True):
                result[name] = column
        return result

    def _new(self, c: _Command, out: _Events) -> None:
        code = self._new_reject_code(c)
        if code:
            out.reject(code)
            return
        out.emit(
            EV_ACCEPTED,
            order_id=c.order_id,
            client=c.client,
            side=c.side,
            price=c.price,
            qty=c.qty,
            leaves=c.qty,
        )
        order = _Order(c.order_id, c.client, c.side, c.price, c.qty, c.qty, c.stp, c.flags)
        order.tif = c.tif
        order.display = c.display
        order.expires = c.expires
        if c.ord_type in STOP_TYPES:
            order.ord_type = c.ord_type
            order.trigger = self._trigger_price(c)
            self._orders[order.order_id] = order
            self._stops[order.side].setdefault(order.trigger, []).append(order)
            return
        if self.halted:  # it rests without matching
            self._orders[order.order_id] = order
            self._append(order, out)
            return
        self._enter(order, c.ord_type == TYPE_MARKET, out)

    def _enter(self, taker: _Order, market: bool, out: _Events) -> None:
        """Steps 3 to 5 of a NEW: FOK check, matching, the remainder rests or is cancelled."""
        if taker.tif == TIF_FOK and self._fillable(taker, market) < taker.qty:
            self._orders.pop(taker.order_id, None)
            out.cancelled(taker, CXL_FOK, taker.qty)
            return
        self._match(taker, market, out)
        if taker.leaves == 0:
            self._orders.pop(taker.order_id, None)
            return
        if taker.tif in RESTING_TIFS and not market:
            self._orders[taker.order_id] = taker
            self._append(taker, out)
        else:
            self._orders.pop(taker.order_id, None)
            out.cancelled(taker, CXL_IOC, taker.leaves)

    def _trigger_price(self, c: _Command) -> int:
        return c.trigger_tick * self.config.tick_size

    def _trigger_code(self, c: _Command, side: int) -> int:
        trigger = self._trigger_price(c)
        if not self.config.min_price <= trigger <= self.config.max_price:
            return REJ_TRIGGER
        if self._reached(side, trigger):
            return REJ_TRIGGER_REACHED
        return 0

    def _reached(self, side: int, trigger: int) -> bool:
        if not self.last_price:
            return False
        if side == SIDE_BUY:
            return self.last_price >= trigger
        return self.last_price <= trigger

    def _next_triggered(self) -> _Order | None:
        """The first waiting stop the last trade price reaches, in trigger order."""
        for side, pick in ((SIDE_BUY, min), (SIDE_SELL, max)):
            stops = self._stops[side]
            if stops:
                trigger = pick(stops)
                if self._reached(side, trigger):
                    return stops[trigger][0]
        return None

    def _trigger_stops(self, out: _Events) -> None:
        while (order := self._next_triggered()) is not None:
            self._unwait(order)
            out.emit(
                EV_TRIGGERED,
                code=order.ord_type,
                order_id=order.order_id,
                client=order.client,
                side=order.side,
                price=order.trigger,
                qty=order.qty,
                leaves=order.leaves,
            )
            market = order.ord_type == TYPE_STOP
            order.ord_type = TYPE_LIMIT
            order.trigger = 0
            self._enter(order, market, out)

    def _unwait(self, order: _Order) -> None:
        """Take a waiting stop off its trigger (it stays live)."""
        stops = self._stops[order.side]
        stops[order.trigger].remove(order)
        if not stops[order.trigger]:
            del stops[order.trigger]

    def _new_reject_code(self, c: _Command) -> int:
        post_only = c.flags & FLAG_POST_ONLY
        stop = c.ord_type in STOP_TYPES
        if (
            c.side not in SIDES
            or c.tif not in TIFS
            or c.ord_type not in ORDER_TYPES
            or c.stp not in STP_MODES
            or c.flags & ~FLAG_POST_ONLY
            or (post_only and c.ord_type != TYPE_LIMIT)
            or (c.trigger_tick and not stop)
        ):
            return REJ_BAD_COMMAND
        code = self._qty_code(c.qty)
        if code:
            return code
        limit = c.ord_type in (TYPE_LIMIT, TYPE_STOP_LIMIT)
        if limit:
            code = self._price_code(c.price)
            if code:
                return code
        if c.display and (
            self._display_code(c.display, c.qty)
            or c.ord_type != TYPE_LIMIT
            or c.tif not in RESTING_TIFS
        ):
            return REJ_DISPLAY
        trigger = self._trigger_price(c)
        if stop and not self.config.min_price <= trigger <= self.config.max_price:
            return REJ_TRIGGER
        if c.tif in DATED_TIFS:
            if c.expires <= 0 or c.ord_type == TYPE_MARKET:
                return REJ_EXPIRY
        elif c.expires:
            return REJ_EXPIRY
        if c.order_id in self._orders:
            return REJ_DUPLICATE_ID
        if post_only and self._would_take(c.side, c.price):
            return REJ_POST_ONLY
        if stop and self._reached(c.side, trigger):
            return REJ_TRIGGER_REACHED
        if c.tif in DATED_TIFS and c.expires <= self.now:
            return REJ_EXPIRY_PASSED
        rests = c.ord_type == TYPE_LIMIT and c.tif in RESTING_TIFS
        if self.halted and not stop and not rests:
            return REJ_HALTED
        takes_slot = stop or rests
        if takes_slot and len(self._orders) >= self.config.capacity:
            return REJ_BOOK_FULL
        return 0

    def _qty_code(self, qty: int) -> int:
        if qty <= 0:
            return REJ_QTY
        if qty > self.config.max_qty:
            return REJ_QTY_MAX
        if qty % self.config.lot_size:
            return REJ_LOT
        return 0

    def _display_code(self, display: int, qty: int) -> int:
        if display < 0 or display > qty or display % self.config.lot_size:
            return REJ_DISPLAY
        return 0

    def _price_code(self, price: int) -> int:
        if not self.config.min_price <= price <= self.config.max_price:
            return REJ_PRICE_BAND
        if price % self.config.tick_size:
            return REJ_TICK
        return 0

    def _would_take(self, side: int, price: int) -> bool:
        best = self._best(_opposite(side))
        if best is None:
            return False
        return price >= best if side == SIDE_BUY else price <= best

    def _crosses(self, taker: _Order, market: bool, level_price: int) -> bool:
        if market:
            return True
        if taker.side == SIDE_BUY:
            return level_price <= taker.price
        return level_price >= taker.price

    def _fillable(self, taker: _Order, market: bool) -> int:
        side = _opposite(taker.side)
        total = 0
        for price in self._prices(side):
            if not self._crosses(taker, market, price):
                break
            level = self._levels[side][price]
            ahead = 0
            for maker in level:
                if maker.client == taker.client and taker.stp != STP_NONE:
                    # what the aggressor meets before it: shown parts (refills go behind)
                    return total + ahead
                ahead += maker.shown
            total += sum(maker.leaves for maker in level)  # every refill met in turn
        return total

    def _match(self, taker: _Order, market: bool, out: _Events) -> None:
        side = _opposite(taker.side)
        while taker.leaves > 0:
            price = self._best(side)
            if price is None or not self._crosses(taker, market, price):
                return
            maker = self._levels[side][price][0]
            if maker.client != taker.client or taker.stp == STP_NONE:
                qty = min(taker.leaves, maker.shown)
                taker.leaves -= qty
                maker.leaves -= qty
                self.last_price = maker.price
                out.emit(
                    EV_TRADE,
                    order_id=taker.order_id,
                    client=taker.client,
                    side=taker.side,
                    price=maker.price,
                    qty=qty,
                    leaves=taker.leaves,
                    other_id=maker.order_id,
                    other_client=maker.client,
                    other_leaves=maker.leaves,
                )
                out.touch(maker.side, maker.price)
                if maker.leaves == 0:
                    self._remove(maker, out)
                elif maker.shown == 0:
                    self._refill(maker)
            elif taker.stp == STP_CANCEL_NEWEST:
                out.cancelled(taker, CXL_STP, taker.leaves)
                taker.leaves = 0
            elif taker.stp == STP_CANCEL_OLDEST:
                out.cancelled(maker, CXL_STP, maker.leaves)
                self._remove(maker, out)
            elif taker.stp == STP_CANCEL_BOTH:
                out.cancelled(maker, CXL_STP, maker.leaves)
                self._remove(maker, out)
                out.cancelled(taker, CXL_STP, taker.leaves)
                taker.leaves = 0
            else:  # STP_DECREMENT, the last mode validation lets through
                dec = min(taker.leaves, maker.shown)
                maker.qty -= dec
                maker.leaves -= dec
                taker.qty -= dec
                taker.leaves -= dec
                out.touch(maker.side, maker.price)
                out.cancelled(maker, CXL_STP, dec, maker.leaves)
                if maker.leaves == 0:
                    self._remove(maker, out)
                elif maker.shown == 0:
                    self._refill(maker)
                out.cancelled(taker, CXL_STP, dec, taker.leaves)

    def _refill(self, iceberg: _Order) -> None:
        """An iceberg whose shown part is gone, with a reserve left: it shows more of it
        and goes to the back of its level (its level was touched by what took it)."""
        iceberg.show()
        level = self._levels[iceberg.side][iceberg.price]
        level.remove(iceberg)
        level.append(iceberg)

    def _cancel(self, c: _Command, out: _Events) -> None:
        order = self._owned(c)
        if order is None:
            out.reject(REJ_NOT_FOUND)
            return
        out.cancelled(order, CXL_USER, order.leaves)
        self._remove(order, out)

    def _replace(self, c: _Command, out: _Events) -> None:
        order = self._owned(c)
        if order is None:
            out.reject(REJ_NOT_FOUND)
            return
        if c.expires:
            out.reject(REJ_EXPIRY)  # a replace keeps the order's expiry
            return
        if order.waiting:
            self._replace_stop(order, c, out)
            return
        if c.trigger_tick:
            out.reject(REJ_TRIGGER)
            return
        code = self._qty_code(c.qty) or self._price_code(c.price)
        if not code and c.display:
            code = self._display_code(c.display, c.qty)
        if not code and order.flags & FLAG_POST_ONLY and self._would_take(order.side, c.price):
            code = REJ_POST_ONLY
        if code:
            out.reject(code)
            return
        filled = order.qty - order.leaves
        new_leaves = c.qty - filled
        if new_leaves <= 0:
            out.cancelled(order, CXL_REPLACE, order.leaves)
            self._remove(order, out)
            return
        out.emit(
            EV_REPLACED,
            order_id=order.order_id,
            client=order.client,
            side=order.side,
            price=c.price,
            qty=c.qty,
            leaves=new_leaves,
        )
        if (
            c.price == order.price
            and new_leaves <= order.leaves
            and c.display in (0, order.display)
        ):
            shown = min(order.shown, new_leaves)  # the cut comes off the reserve first
            if shown != order.shown:
                out.touch(order.side, order.price)
            order.qty = c.qty
            order.leaves = new_leaves
            order.hidden = new_leaves - shown
            return
        self._unlink(order, out)
        order.display = c.display or order.display
        order.price = c.price
        order.qty = c.qty
        order.leaves = new_leaves
        if not self.halted:  # halted, it rests at its new place without matching
            self._match(order, False, out)
        if order.leaves:
            self._append(order, out)
        else:
            del self._orders[order.order_id]

    def _replace_stop(self, order: _Order, c: _Command, out: _Events) -> None:
        code = self._qty_code(c.qty)
        if not code and order.ord_type == TYPE_STOP_LIMIT:
            code = self._price_code(c.price)
        if not code and c.display:
            code = REJ_DISPLAY  # a stop is never an iceberg
        code = code or self._trigger_code(c, order.side)
        if code:
            out.reject(code)
            return
        out.emit(
            EV_REPLACED,
            order_id=order.order_id,
            client=order.client,
            side=order.side,
            price=c.price,
            qty=c.qty,
            leaves=c.qty,
        )
        trigger = self._trigger_price(c)
        if not (trigger == order.trigger and c.price == order.price and c.qty <= order.qty):
            self._unwait(order)
            self._stops[order.side].setdefault(trigger, []).append(order)
        order.trigger = trigger
        order.price = c.price
        order.qty = order.leaves = c.qty

    def _mass_cancel(self, c: _Command, out: _Events) -> None:
        doomed = [
            order
            for side in SIDES
            for price in self._prices(side)
            for order in self._levels[side][price]
            if order.client == c.client
        ] + [order for order in self._waiting_stops() if order.client == c.client]
        for order in doomed:
            out.cancelled(order, CXL_USER, order.leaves)
            self._remove(order, out)
        out.emit(EV_MASS_CANCELLED, client=c.client, qty=len(doomed))

    def _expire(self, c: _Command, out: _Events) -> None:
        if c.expires <= 0:
            out.reject(REJ_BAD_COMMAND)
            return
        self.now = max(self.now, c.expires)
        doomed = [
            order
            for order in self._book_orders() + self._waiting_stops()
            if 0 < order.expires <= self.now
        ]
        for order in doomed:
            out.cancelled(order, CXL_EXPIRED, order.leaves)
            self._remove(order, out)
        out.emit(EV_EXPIRED, qty=len(doomed), other_id=self.now)

    def _resume(self, out: _Events) -> None:
        price = traded = 0
        if self.halted:
            self.halted = False
            price, traded = self._auction(out)
        out.emit(EV_STATE, code=STATE_CONTINUOUS, price=price, qty=traded)

    def _auction_price(self) -> int | None:
        """The price of the greatest executable quantity from the best ask to the best
        bid (then the least surplus, the nearest the last trade, the lowest); None when
        the book is not crossed."""
        bid, ask = self._best(SIDE_BUY), self._best(SIDE_SELL)
        if bid is None or ask is None or bid < ask:
            return None

        def open_qty(side: int, reaches) -> int:
            levels = self._levels[side].items()
            return sum(order.leaves for p, level in levels if reaches(p) for order in level)

        ranked = []
        for price in range(ask, bid + 1, self.config.tick_size):
            buy = open_qty(SIDE_BUY, lambda p, price=price: p >= price)
            sell = open_qty(SIDE_SELL, lambda p, price=price: p <= price)
            near = abs(price - self.last_price) if self.last_price else 0
            ranked.append((-min(buy, sell), abs(buy - sell), near, price))
        return min(ranked)[3]

    def _auction(self, out: _Events) -> tuple[int, int]:
        """The reopening call auction; returns (its price, the quantity it traded)."""
        price = self._auction_price()
        if price is None:
            return 0, 0
        traded = 0
        while True:
            bid, ask = self._best(SIDE_BUY), self._best(SIDE_SELL)
            if bid is None or ask is None or bid < price or ask > price:
                break
            buyer = self._levels[SIDE_BUY][bid][0]
            seller = self._levels[SIDE_SELL][ask][0]
            qty = min(buyer.shown, seller.shown)
            buyer.leaves -= qty
            seller.leaves -= qty
            out.emit(
                EV_TRADE,
                code=TRADE_AUCTION,
                order_id=buyer.order_id,
                client=buyer.client,
                side=SIDE_BUY,
                price=price,
                qty=qty,
                leaves=buyer.leaves,
                other_id=seller.order_id,
                other_client=seller.client,
                other_leaves=seller.leaves,
            )
            for order in (buyer, seller):
                out.touch(order.side, order.price)
                if order.leaves == 0:
                    self._remove(order, out)
                elif order.shown == 0:
                    self._refill(order)
            traded += qty
        self.last_price = price
        return price, traded

    def _book_orders(self) -> list[_Order]:
        """The orders in the book: bids best level first, then asks, each level in queue order."""
        return [
            order
            for side in SIDES
            for price in self._prices(side)
            for order in self._levels[side][price]
        ]

    def next_expiry(self) -> int | None:
        """The earliest expiry of a live order (None: none has one); exact here."""
        return min((o.expires for o in self._orders.values() if o.expires), default=None)

    def _emit_depth(self, out: _Events) -> None:
        for side, price in out.touched:
            level = self._levels[side].get(price, [])
            out.emit(
                EV_DEPTH,
                side=side,
                price=price,
                qty=sum(order.shown for order in level),
                leaves=len(level),
            )

    def _owned(self, c: _Command) -> _Order | None:
        order = self._orders.get(c.order_id)
        if order is None or order.client != c.client:
            return None
        return order

    # ------------------------------------------------------------------ the ladder

    def _best(self, side: int) -> int | None:
        prices = self._levels[side]
        if not prices:
            return None
        return max(prices) if side == SIDE_BUY else min(prices)

    def _prices(self, side: int) -> list[int]:
        """The side's level prices, best first."""
        return sorted(self._levels[side], reverse=side == SIDE_BUY)

    def _append(self, order: _Order, out: _Events) -> None:
        order.show()
        self._levels[order.side].setdefault(order.price, []).append(order)
        out.touch(order.side, order.price)

    def _unlink(self, order: _Order, out: _Events) -> None:
        """Take the order out of its level (it stays live)."""
        level = self._levels[order.side][order.price]
        level.remove(order)
        if not level:
            del self._levels[order.side][order.price]
        out.touch(order.side, order.price)

    def _remove(self, order: _Order, out: _Events) -> None:
        if order.waiting:
            self._unwait(order)
        else:
            self._unlink(order, out)
        del self._orders[order.order_id]

    def _waiting_stops(self) -> list[_Order]:
        """Waiting stops in trigger order: buy stops lowest trigger first, then sell
        stops highest first, each trigger in arrival order."""
        return [
            order
            for side in SIDES
            for trigger in sorted(self._stops[side], reverse=side == SIDE_SELL)
            for order in self._stops[side][trigger]
        ]

    # ------------------------------------------------------------------ queries

    def canonical_rows(self) -> np.ndarray:
        rows = [
            order.row()
            for side in SIDES
            for price in self._prices(side)
            for order in self._levels[side][price]
        ]
        return np.array(rows, dtype=np.int64).reshape(-1, len(CANONICAL_FIELDS))

    def stop_rows(self) -> np.ndarray:
        rows = [order.stop_row() for order in self._waiting_stops()]
        return np.array(rows, dtype=np.int64).reshape(-1, len(STOP_FIELDS))

    def state_hash(self) -> str:
        return hash_canonical(
            self.last_seq,
            self.last_price,
            self.canonical_rows(),
            self.stop_rows(),
            self.now,
            self.halted,
        )

    def top(self) -> tuple[int, int, int, int]:
        bid = self._best(SIDE_BUY) or 0
        ask = self._best(SIDE_SELL) or 0
        return bid, self._level_qty(SIDE_BUY, bid), ask, self._level_qty(SIDE_SELL, ask)

    def _level_qty(self, side: int, price: int) -> int:
        return sum(order.shown for order in self._levels[side].get(price, []))

    def depth(self, n: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"depth needs a number of levels >= 0, got {n!r}")
        bids, asks = (
            [
                (price, self._level_qty(side, price), len(self._levels[side][price]))
                for price in self._prices(side)[:n]
            ]
            for side in SIDES
        )
        return bids, asks

    def order(self, order_id: int) -> dict | None:
        order = self._orders.get(order_id)
        if order is None:
            return None
        return {
            "order_id": order.order_id,
            "client": order.client,
            "side": order.side,
            "price": order.price,
            "qty": order.qty,
            "leaves": order.leaves,
            "stp": order.stp,
            "flags": order.flags,
            "display": order.display,
            "shown": order.shown,
            "tif": order.tif,
            "expires": order.expires,
        }

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            {
                "format": SNAPSHOT_FORMAT,
                "version": SNAPSHOT_VERSION,
                "config": msgspec.structs.asdict(self.config),
                "last_seq": self.last_seq,
                "last_price": self.last_price,
                "now": self.now,
                "halted": self.halted,
                "rows": self.canonical_rows().tolist(),
                "stops": self.stop_rows().tolist(),
            }
        )

    @classmethod
    def restore(cls, data: bytes) -> ReferenceBook:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a snapshot is bytes, got {type(data).__name__}")
        try:
            doc = msgspec.msgpack.decode(data)
        except msgspec.DecodeError as e:
            raise ValueError(f"not a reference book snapshot: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a reference book snapshot: wrong or missing format tag")
        if doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"reference snapshot version {doc.get('version')!r} is not supported "
                f"(this code reads version {SNAPSHOT_VERSION})"
            )
        try:
            config = BookConfig(**doc["config"])
            last_seq = int(doc["last_seq"])
            last_price = int(doc["last_price"])
            now = int(doc["now"])
            halted = doc["halted"]
            if not isinstance(halted, bool):
                raise TypeError(f"halted is {halted!r}, not a bool")
            rows = [
                _from_row(dict(zip(CANONICAL_FIELDS, map(int, row), strict=True)))
                for row in doc["rows"]
            ]
            stops = [
                _Order(leaves=0, flags=0, **dict(zip(STOP_FIELDS, map(int, row), strict=True)))
                for row in doc["stops"]
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"corrupt reference snapshot: {e}") from None
        book = cls(config)
        book.last_seq = last_seq
        if last_price and book._price_code(last_price):
            raise ValueError(f"corrupt reference snapshot: last price {last_price} off the band")
        book.last_price = last_price
        if now < 0:
            raise ValueError(f"corrupt reference snapshot: now {now} is negative")
        book.now = now
        book.halted = halted
        for order in stops:
            order.leaves = order.qty
            problem = book._restore_stop_problem(order)
            if problem:
                raise ValueError(f"corrupt reference snapshot: stop {order.order_id}: {problem}")
            book._orders[order.order_id] = order
            book._stops[order.side].setdefault(order.trigger, []).append(order)
        if [list(o.stop_row()) for o in stops] != book.stop_rows().tolist():
            raise ValueError("corrupt reference snapshot: stops are not in trigger order")
        for order in rows:
            problem = book._restore_problem(order)
            if problem:
                raise ValueError(f"corrupt reference snapshot: order {order.order_id}: {problem}")
            book._orders[order.order_id] = order
            book._levels[order.side].setdefault(order.price, []).append(order)
        if len(book._orders) > config.capacity:
            raise ValueError(
                f"corrupt reference snapshot: {len(book._orders)} orders exceed capacity "
                f"{config.capacity}"
            )
        if [list(o.row()) for o in rows] != book.canonical_rows().tolist():
            raise ValueError("corrupt reference snapshot: orders are not in book order")
        bid, ask = book._best(SIDE_BUY), book._best(SIDE_SELL)
        if not halted and bid is not None and ask is not None and bid >= ask:
            raise ValueError(f"corrupt reference snapshot: crossed book (bid {bid} >= ask {ask})")
        return book

    def _restore_stop_problem(self, order: _Order) -> str:
        if order.side not in SIDES or order.ord_type not in STOP_TYPES or order.tif not in TIFS:
            return f"side {order.side} / ord_type {order.ord_type} / tif {order.tif} out of range"
        if self._price_code(order.trigger) or self._reached(order.side, order.trigger):
            return f"trigger {order.trigger} is off the band or reached already"
        if order.ord_type == TYPE_STOP_LIMIT and self._price_code(order.price):
            return f"price {order.price} is not a valid price for this book"
        if not 0 < order.qty <= self.config.max_qty or order.stp not in STP_MODES:
            return f"qty {order.qty} / stp {order.stp} out of range"
        return self._expiry_problem(order) or self._twice(order)

    def _twice(self, order: _Order) -> str:
        return "appears twice" if order.order_id in self._orders else ""

    def _expiry_problem(self, order: _Order) -> str:
        if order.tif in DATED_TIFS:
            if order.expires <= self.now:
                return f"expiry {order.expires} is not after now {self.now}"
        elif order.expires:
            return f"an expiry {order.expires} on tif {order.tif}"
        return ""

    def _restore_problem(self, order: _Order) -> str:
        if order.side not in SIDES:
            return f"side {order.side} is not a side"
        if self._price_code(order.price):
            return f"price {order.price} is not a valid price for this book"
        if not 0 < order.leaves <= order.qty <= self.config.max_qty:
            return f"leaves {order.leaves} / qty {order.qty} are inconsistent"
        if order.stp not in STP_MODES or order.flags & ~FLAG_POST_ONLY:
            return f"stp {order.stp} / flags {order.flags} are out of range"
        if order.display:
            if order.display < 0 or order.display % self.config.lot_size:
                return f"display {order.display} is not a display quantity"
            if not 0 < order.shown <= min(order.display, order.leaves):
                return f"shown {order.shown} of display {order.display} is inconsistent"
        elif order.hidden:
            return f"an ordinary order shows {order.shown} of leaves {order.leaves}"
        if order.tif not in RESTING_TIFS:
            return f"tif {order.tif} does not rest"
        return self._expiry_problem(order) or self._twice(order)
