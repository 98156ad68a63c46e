"""Invariants of a book, checked after every batch from its events and its state.

``BookChecker`` follows one book through the public interface only (events,
canonical rows, queries), so it checks the reference book and the kernel alike.
From the events it keeps a small model: when each live order (re)entered its
level, its price and how much of it traded, and the last total the DEPTH events
gave for each level. After each batch it checks that the book agrees:

- events: (seq, idx) increasing, idx counting from 0 per command, fields copied
  from their command, flags 0, codes valid for their kind, one REJECTED and
  nothing else for a reject, DEPTH last and once per level;
- no order traded beyond its quantity (TRADE leaves never negative, and for every
  live order traded qty = qty - leaves, which STP decrements do not change);
- the book is never crossed at rest, sides and levels are in price order, every
  order is valid for the config, there are no more orders than capacity;
- every level's total and count equal the last DEPTH event for it (so DEPTH
  named every level that changed, with its final total);
- inside a level, orders are in ascending (seq, idx) of (re)entry: ACCEPTED,
  TRIGGERED, a REPLACED that moved the price, raised the open qty or changed the
  display, or the TRADE or STP decrement that took an iceberg's shown part to 0
  with a reserve left (its refill);
- icebergs: every trade with a resting order takes min(the aggressor's open qty,
  what the maker shows); what each order shows (an iceberg: min(display, leaves)
  when it (re)enters, less what trades and decrements took, a cut of a replace
  off its reserve first) is the canonical rows' ``shown``, and the levels' totals
  are sums of it; cancels take the whole open qty; a FOK aggressor fills whole;
- waiting stops: every TRIGGERED names the first waiting stop the last trade
  price reaches in trigger order (buy stops lowest trigger first, then sell
  stops highest first, each trigger in arrival order), its trades follow as
  its own, and no waiting stop is reached at the end of a command; the book's
  stop rows and last price are the ones the events said;
- expiries: the book's now is the greatest EXPIRE time so far; an EXPIRE cancels
  (CXL_EXPIRED, the whole open qty) exactly the live orders and waiting stops whose
  expiry is at or before it, bids best level first, then asks, each level in queue
  order, then the stops in trigger order, and ends with EXPIRED (their number,
  now); no live order or stop has an expiry at or before now, and each keeps the
  tif and expiry of its NEW (a replace or a trigger changes neither);
- halts: HALT and RESUME answer one STATE with the state they leave; a halted
  book trades nothing, refuses market, IOC and FOK orders (REJ_HALTED, and only
  then) and may cross; a RESUME of a halted book trades at the auction price the
  written rule gives (greatest executable quantity, least surplus, nearest the
  last trade, lowest), each TRADE the head of the best bid level with the head of
  the best ask level for the least of their shown parts, and the STATE says the
  price and the quantity; the book is not crossed once it is continuous;
- top(), depth(), order() and state_hash() agree with the canonical rows.
"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from exchange.records import (
    CANCEL_NAMES,
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    CXL_EXPIRED,
    CXL_IOC,
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
    EVENT_DTYPE,
    FLAG_POST_ONLY,
    REJ_CONFLICT,
    REJ_HALTED,
    REJECT_NAMES,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_GTD,
    TRADE_AUCTION,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
)
from exchange.statehash import CANONICAL_FIELDS, STOP_FIELDS, hash_canonical

_COPIED = ("req_id", "idem_key", "instrument")
_EVENT_COLUMNS = (
    "seq",
    "idx",
    "kind",
    "code",
    "flags",
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
_COMMAND_COLUMNS = (
    "seq",
    "kind",
    "order_id",
    "client",
    "side",
    "price",
    "qty",
    "tif",
    "ord_type",
    "stp",
    "trigger_tick",
    "display",
    "expires",
)
# The bytes of an event that only pad it (no field, or a "_pad" field): they stay zero.
_EVENT_PADDING = np.ones(EVENT_DTYPE.itemsize, dtype=bool)
for _name, (_dtype, _offset, *_) in EVENT_DTYPE.fields.items():
    if not _name.startswith("_"):
        _EVENT_PADDING[_offset : _offset + _dtype.itemsize] = False
# Orders whose query() answer is compared with their row after each batch.
_ORDERS_QUERIED = 8


class BookCheckError(AssertionError):
    pass


def _entry(seq: int, idx: int = 0) -> int:
    """A rank of (seq, idx): a triggered stop enters after its command's own order."""
    return seq << 24 | idx


@dataclass(slots=True)
class _Stop:
    """A waiting stop, as the events told it."""

    arrival: int
    trigger: int
    price: int
    qty: int
    ord_type: int
    tif: int
    stp: int
    client: int
    side: int
    expires: int = 0

    def rank(self) -> tuple[int, int, int]:
        return (self.side, self.trigger if self.side == SIDE_BUY else -self.trigger, self.arrival)


def _fail(msg: str) -> None:
    raise BookCheckError(msg)


@dataclass(slots=True)
class _Tracked:
    """What the events told about one live order."""

    entry: int  # _entry(seq, idx) of its (re)entry into its level (a stop: its arrival)
    price: int
    filled: int  # traded qty
    stp: int
    client: int
    side: int
    leaves: int = 0  # open qty
    display: int = 0  # an iceberg's display qty
    shown: int = 0  # what it shows (set when it rests)
    resting: bool = False  # in the book (not an aggressor still at work)
    tif: int = TIF_GTC
    expires: int = 0  # a GTD/DAY order's expiry

    def show(self) -> None:
        """It (re)enters its level: it shows min(display, leaves)."""
        self.shown = min(self.display, self.leaves) if self.display else self.leaves
        self.resting = True


class BookChecker:
    def __init__(self, book):
        self.book = book
        self.last_seq = book.last_seq
        rows = book.canonical_rows()
        # Orders already resting get entry ranks below any seq, in book order.
        self.orders: dict[int, _Tracked] = {}
        for rank, row in enumerate(rows.tolist()):
            r = dict(zip(CANONICAL_FIELDS, row, strict=True))
            self.orders[r["order_id"]] = _Tracked(
                entry=rank - len(rows),
                price=r["price"],
                filled=r["qty"] - r["leaves"],
                stp=r["stp"],
                client=r["client"],
                side=r["side"],
                leaves=r["leaves"],
                display=r["display"],
                shown=r["shown"],
                resting=True,
                tif=r["tif"],
                expires=r["expires"],
            )
        self.levels = _levels_of(rows)
        self.last_price = book.last_price
        self.stops: dict[int, _Stop] = {}
        for rank, row in enumerate(book.stop_rows().tolist()):
            r = dict(zip(STOP_FIELDS, row, strict=True))
            self.stops[r["order_id"]] = _Stop(
                arrival=rank - len(self.stops) - 1_000_000,
                trigger=r["trigger"],
                price=r["price"],
                qty=r["qty"],
                ord_type=r["ord_type"],
                tif=r["tif"],
                stp=r["stp"],
                client=r["client"],
                side=r["side"],
                expires=r["expires"],
            )
        self.now = book.now
        self.halted = book.halted

    def check(self, cmds: np.ndarray, events: np.ndarray) -> None:
        """Check the events one batch produced, then the book's state after it."""
        self._check_event_frame(cmds, events)
        ev = {name: events[name].tolist() for name in _EVENT_COLUMNS}
        by_seq = defaultdict(list)
        for i, seq in enumerate(ev["seq"]):
            by_seq[seq].append(i)
        columns = [cmds[name].tolist() for name in _COMMAND_COLUMNS]
        for values in zip(*columns, strict=True):
            cmd = dict(zip(_COMMAND_COLUMNS, values, strict=True))
            rows = [{k: ev[k][i] for k in _EVENT_COLUMNS} for i in by_seq.get(cmd["seq"], [])]
            self._apply_command(cmd, rows)
        if len(cmds):
            self.last_seq = int(cmds["seq"][-1])
        self._check_state()

    # ------------------------------------------------------------------ events

    def _check_event_frame(self, cmds: np.ndarray, events: np.ndarray) -> None:
        if not len(events):
            return
        if np.any(events["flags"] != 0):
            _fail("an event has flags != 0")
        if events["_pad"].any():
            _fail("an event has non-zero padding")
        seq, idx = events["seq"], events["idx"]
        later = (seq[1:] > seq[:-1]) | ((seq[1:] == seq[:-1]) & (idx[1:] > idx[:-1]))
        if not later.all():
            i = int(np.flatnonzero(~later)[0]) + 1
            _fail(f"event {i} (seq {seq[i]}, idx {idx[i]}) does not follow its predecessor")
        if seq[0] <= self.last_seq:
            _fail(f"event seq {seq[0]} is not above the previous batch's last seq {self.last_seq}")
        pos = np.minimum(np.searchsorted(cmds["seq"], seq), len(cmds) - 1)
        if np.any(cmds["seq"][pos] != seq):
            _fail("an event's seq belongs to no command of the batch")
        for name in _COPIED:
            wrong = np.flatnonzero(events[name] != cmds[name][pos])
            if len(wrong):
                _fail(f"event {wrong[0]} (seq {seq[wrong[0]]}): {name} is not its command's")

    def _apply_command(self, cmd: dict, rows: list[dict]) -> None:
        where = f"seq {cmd['seq']}"
        for i, e in enumerate(rows):
            if e["idx"] != i:
                _fail(f"{where}: event idx {e['idx']} where {i} was due")
        if not rows:
            _fail(f"{where}: command kind {cmd['kind']} produced no event")
        if rows[0]["kind"] == EV_REJECTED:
            self._check_reject(cmd, rows, where)
            return
        known = (
            CMD_NEW,
            CMD_CANCEL,
            CMD_REPLACE,
            CMD_MASS_CANCEL,
            CMD_EXPIRE,
            CMD_HALT,
            CMD_RESUME,
        )
        if cmd["kind"] not in known:
            _fail(f"{where}: command kind {cmd['kind']} was not rejected")
        if self.halted and cmd["kind"] == CMD_NEW and not self._rests_halted(cmd):
            _fail(f"{where}: a halted book accepted an order that could only trade now")
        depth = [e for e in rows if e["kind"] == EV_DEPTH]
        if rows[len(rows) - len(depth) :] != depth:
            _fail(f"{where}: DEPTH events are not all at the end")
        after = {}
        for e in depth:
            level = (e["side"], e["price"])
            if level in after:
                _fail(f"{where}: level {level} has two DEPTH events")
            if e["order_id"] or e["client"] or e["code"] or e["other_id"] or e["other_client"]:
                _fail(f"{where}: DEPTH has unused fields set")
            total, count = e["qty"], e["leaves"]
            if total < 0 or count < 0 or (total == 0) != (count == 0):
                _fail(f"{where}: DEPTH {level} says total {total} with {count} orders")
            after[level] = (total, count)
        body = rows[: len(rows) - len(depth)]
        if cmd["kind"] == CMD_MASS_CANCEL:
            self._check_mass_cancelled(cmd, body, where)
            body = body[:-1]
        if cmd["kind"] == CMD_EXPIRE:
            self._apply_expire(cmd, body, where)
            body = []
        if cmd["kind"] == CMD_HALT:
            if body != [self._state_event(cmd, body, STATE_HALTED, 0, 0)]:
                _fail(f"{where}: a HALT answers {body}, not one STATE(halted)")
            self.halted = True
            body = []
        if cmd["kind"] == CMD_RESUME:
            body = self._apply_resume(cmd, body, where)
        if self.halted and any(e["kind"] == EV_TRADE for e in body):
            _fail(f"{where}: a halted book traded")
        taker_leaves = None
        agg = cmd  # the aggressor: the command's order, then each stop it triggers
        for e in body:
            if e["kind"] == EV_TRIGGERED:
                self._settle_taker(agg, taker_leaves, where)
                agg = self._apply_triggered(cmd, e, where)
                taker_leaves = e["leaves"]
                continue
            taker_leaves = self._apply_event(cmd, agg, e, after, taker_leaves, where)
        self._settle_taker(agg, taker_leaves, where)
        if self._first_reached() is not None:
            _fail(f"{where}: stop {self._first_reached()} is reached and still waits")
        for level, (total, count) in after.items():
            if total:
                self.levels[level] = (total, count)
            else:
                self.levels.pop(level, None)

    @staticmethod
    def _rests_halted(cmd: dict) -> bool:
        """Whether a NEW may be accepted while halted: a limit order that rests, or a stop."""
        if cmd["ord_type"] in (TYPE_STOP, TYPE_STOP_LIMIT):
            return True
        return cmd["ord_type"] == TYPE_LIMIT and cmd["tif"] in (TIF_GTC, TIF_GTD, TIF_DAY)

    @staticmethod
    def _state_event(cmd: dict, body: list[dict], state: int, price: int, qty: int) -> dict:
        """The STATE a HALT or RESUME must end with (its idx: after ``body``'s others)."""
        e = dict.fromkeys(_EVENT_COLUMNS, 0)
        e.update(seq=cmd["seq"], kind=EV_STATE, code=state, price=price, qty=qty)
        e["idx"] = next((x["idx"] for x in body if x["kind"] == EV_STATE), len(body))
        return e

    def _auction_price(self) -> int | None:
        """The written auction price of the orders resting now, None: not crossed."""
        bids = [o for o in self.orders.values() if o.side == SIDE_BUY]
        asks = [o for o in self.orders.values() if o.side == SIDE_SELL]
        if not bids or not asks:
            return None
        high, low = max(o.price for o in bids), min(o.price for o in asks)
        ranked = []
        for p in range(low, high + 1, self.book.config.tick_size):
            buy = sum(o.leaves for o in bids if o.price >= p)
            sell = sum(o.leaves for o in asks if o.price <= p)
            near = abs(p - self.last_price) if self.last_price else 0
            ranked.append((-min(buy, sell), abs(buy - sell), near, p))
        return min(ranked)[3] if ranked else None

    def _head(self, side: int) -> int:
        """The order at the head of the best level of a side."""
        sign = -1 if side == SIDE_BUY else 1
        return min(
            ((sign * o.price, o.entry), oid) for oid, o in self.orders.items() if o.side == side
        )[1]

    def _apply_resume(self, cmd: dict, body: list[dict], where: str) -> list[dict]:
        """A RESUME: the auction's trades (a halted book's), its STATE; returns what follows
        (the stops its trades reached)."""
        at = [i for i, e in enumerate(body) if e["kind"] == EV_STATE]
        if len(at) != 1:
            _fail(f"{where}: a RESUME answers {len(at)} STATE events")
        trades, rest = body[: at[0]], body[at[0] + 1 :]
        price = self._auction_price() if self.halted else None
        if trades and price is None:
            _fail(f"{where}: a RESUME traded where no auction was due")
        self.halted = False
        for e in trades:
            want = (EV_TRADE, price, SIDE_BUY, TRADE_AUCTION)
            if (e["kind"], e["price"], e["side"], e["code"]) != want:
                _fail(f"{where}: auction event {e} is not a TRADE at the auction price {price}")
            bid, ask = self._head(SIDE_BUY), self._head(SIDE_SELL)
            if (e["order_id"], e["other_id"]) != (bid, ask):
                _fail(
                    f"{where}: auction TRADE of {e['order_id']} with {e['other_id']}, "
                    f"the heads are {bid} and {ask}"
                )
            b, a = self.orders[bid], self.orders[ask]
            if not b.price >= price >= a.price:
                _fail(
                    f"{where}: auction TRADE at {price} of a bid at {b.price} "
                    f"with an ask at {a.price}"
                )
            qty = min(b.shown, a.shown)
            want = (qty, b.leaves - qty, a.leaves - qty, b.client, a.client)
            got = (e["qty"], e["leaves"], e["other_leaves"], e["client"], e["other_client"])
            if got != want:
                _fail(f"{where}: auction TRADE says {got}, the heads give {want}")
            for oid, order in ((bid, b), (ask, a)):
                order.leaves -= qty
                order.shown -= qty
                order.filled += qty
                if not order.leaves:
                    del self.orders[oid]
                elif not order.shown:
                    order.show()
                    order.entry = _entry(e["seq"], e["idx"])
            self.last_price = price
        if not trades and self._auction_price() is not None:
            _fail(f"{where}: a crossed book resumed without an auction")
        traded = sum(e["qty"] for e in trades)
        if body[at[0]] != self._state_event(cmd, body, STATE_CONTINUOUS, price or 0, traded):
            _fail(f"{where}: RESUME's STATE is {body[at[0]]}")
        return rest

    def _check_mass_cancelled(self, cmd: dict, body: list[dict], where: str) -> None:
        if not body or body[-1]["kind"] != EV_MASS_CANCELLED:
            _fail(f"{where}: a mass cancel does not end with MASS_CANCELLED")
        e = body[-1]
        if e["client"] != cmd["client"] or e["qty"] != len(body) - 1:
            _fail(
                f"{where}: MASS_CANCELLED says client {e['client']}, {e['qty']} orders; "
                f"the command's client is {cmd['client']} and {len(body) - 1} were cancelled"
            )
        if e["order_id"] or e["side"] or e["price"] or e["leaves"] or e["code"]:
            _fail(f"{where}: MASS_CANCELLED has unused fields set")

    def _apply_expire(self, cmd: dict, body: list[dict], where: str) -> None:
        """An EXPIRE: now moves up to its time, the orders and stops due are cancelled in
        the written order (book orders as MASS_CANCEL takes them, then stops), EXPIRED."""
        self.now = max(self.now, cmd["expires"])
        if not body or body[-1]["kind"] != EV_EXPIRED:
            _fail(f"{where}: an EXPIRE does not end with EXPIRED")
        e = body[-1]
        if (e["qty"], e["other_id"]) != (len(body) - 1, self.now):
            _fail(
                f"{where}: EXPIRED says {e['qty']} orders, now {e['other_id']}; "
                f"{len(body) - 1} were cancelled, now is {self.now}"
            )
        if e["order_id"] or e["client"] or e["side"] or e["price"] or e["leaves"] or e["code"]:
            _fail(f"{where}: EXPIRED has unused fields set")
        due = sorted(
            (o.side, -o.price if o.side == SIDE_BUY else o.price, o.entry, oid)
            for oid, o in self.orders.items()
            if 0 < o.expires <= self.now
        )
        want = [k[-1] for k in due] + [
            oid
            for oid, stop in sorted(self.stops.items(), key=lambda kv: kv[1].rank())
            if 0 < stop.expires <= self.now
        ]
        got = [x["order_id"] for x in body[:-1]]
        if got != want:
            _fail(f"{where}: EXPIRE cancelled {got[:5]}, the orders due are {want[:5]}")
        for x in body[:-1]:
            oid = x["order_id"]
            order = self.orders.pop(oid, None) or self.stops.pop(oid)
            leaves = order.leaves if isinstance(order, _Tracked) else order.qty
            if (
                (x["kind"], x["code"], x["qty"], x["leaves"], x["price"], x["client"])
                != (
                    EV_CANCELLED,
                    CXL_EXPIRED,
                    leaves,
                    0,
                    order.price,
                    order.client,
                )
                or x["side"] != order.side
                or x["other_id"]
                or x["other_client"]
            ):
                _fail(f"{where}: {x} is not the expiry of order {oid}")

    def _check_reject(self, cmd: dict, rows: list[dict], where: str) -> None:
        e = rows[0]
        if len(rows) != 1:
            _fail(f"{where}: a REJECTED is followed by {len(rows) - 1} more events")
        if e["code"] not in REJECT_NAMES or e["code"] == REJ_CONFLICT:
            _fail(f"{where}: reject code {e['code']} is not a book's")
        halted_new = cmd["kind"] == CMD_NEW and self.halted and not self._rests_halted(cmd)
        if e["code"] == REJ_HALTED and not halted_new:
            _fail(f"{where}: REJ_HALTED is the answer to a market/IOC/FOK order when halted")
        for k in ("order_id", "client", "side", "price", "qty"):
            if e[k] != cmd[k]:
                _fail(f"{where}: REJECTED {k} {e[k]} is not the command's {cmd[k]}")
        if e["leaves"] or e["other_id"] or e["other_client"] or e["other_leaves"]:
            _fail(f"{where}: REJECTED has unused fields set")

    def _first_reached(self) -> int | None:
        """The waiting stop that must trigger next, by the written order, or None."""
        if not self.last_price:
            return None
        last = self.last_price
        reached = [
            (stop.rank(), oid)
            for oid, stop in self.stops.items()
            if (last >= stop.trigger if stop.side == SIDE_BUY else last <= stop.trigger)
        ]
        return min(reached)[1] if reached else None

    def _apply_triggered(self, cmd, e, where) -> dict:
        oid = e["order_id"]
        if oid != self._first_reached():
            _fail(f"{where}: TRIGGERED {oid}, the first reached stop is {self._first_reached()}")
        stop = self.stops.pop(oid)
        if (e["client"], e["side"], e["price"], e["code"]) != (
            stop.client,
            stop.side,
            stop.trigger,
            stop.ord_type,
        ):
            _fail(f"{where}: TRIGGERED {oid} does not describe the stop {stop}")
        if not e["qty"] == e["leaves"] == stop.qty or e["other_id"] or e["other_client"]:
            _fail(f"{where}: TRIGGERED {oid} qty/leaves/other fields are wrong")
        self.orders[oid] = _Tracked(
            entry=_entry(cmd["seq"], e["idx"]),
            price=stop.price,
            filled=0,
            stp=stop.stp,
            client=stop.client,
            side=stop.side,
            leaves=stop.qty,
            tif=stop.tif,
            expires=stop.expires,
        )
        market = stop.ord_type == TYPE_STOP
        return {
            "kind": CMD_NEW,
            "order_id": oid,
            "ord_type": TYPE_MARKET if market else TYPE_LIMIT,
            "tif": stop.tif,
        }

    def _apply_stop_event(self, cmd, e, stop, where):
        """CANCELLED or REPLACED of a waiting stop."""
        oid, kind = e["order_id"], e["kind"]
        if (e["client"], e["side"]) != (stop.client, stop.side) or e["client"] != cmd["client"]:
            _fail(f"{where}: event kind {kind} has client/side of another order than {oid}")
        if kind == EV_CANCELLED:
            if e["code"] != CXL_USER or (e["qty"], e["leaves"], e["price"]) != (
                stop.qty,
                0,
                stop.price,
            ):
                _fail(f"{where}: CANCELLED of waiting stop {oid} is not a user cancel of it")
            del self.stops[oid]
            return None
        if kind != EV_REPLACED or cmd["kind"] != CMD_REPLACE or oid != cmd["order_id"]:
            _fail(f"{where}: event kind {kind} for waiting stop {oid}")
        if (e["price"], e["qty"], e["leaves"]) != (cmd["price"], cmd["qty"], cmd["qty"]):
            _fail(f"{where}: REPLACED of waiting stop {oid} is not the command's")
        trigger = cmd["trigger_tick"] * self.book.config.tick_size
        if (trigger, e["price"]) != (stop.trigger, stop.price) or e["qty"] > stop.qty:
            stop.arrival = _entry(cmd["seq"])
        stop.trigger, stop.price, stop.qty = trigger, e["price"], e["qty"]
        return None

    def _apply_event(self, cmd, agg, e, after, taker_leaves, where):
        kind, oid = e["kind"], e["order_id"]
        if oid in self.stops and kind in (EV_CANCELLED, EV_REPLACED):
            return self._apply_stop_event(cmd, e, self.stops[oid], where)
        if kind not in (EV_ACCEPTED, EV_REPLACED, EV_TRADE, EV_CANCELLED):
            _fail(f"{where}: event kind {kind} where ACCEPTED/REPLACED/TRADE/CANCELLED belong")
        if kind != EV_CANCELLED and e["code"]:
            _fail(f"{where}: event kind {kind} has code {e['code']}")
        if kind != EV_TRADE and (e["other_id"] or e["other_client"] or e["other_leaves"]):
            _fail(f"{where}: event kind {kind} has other_* fields set")
        if kind == EV_ACCEPTED:
            if cmd["kind"] != CMD_NEW or oid != cmd["order_id"] or e["idx"] != 0:
                _fail(f"{where}: ACCEPTED does not open a NEW of its order")
            if not (e["qty"] == e["leaves"] == cmd["qty"] > 0) or e["price"] != cmd["price"]:
                _fail(f"{where}: ACCEPTED price/qty/leaves are not the command's")
            if e["client"] != cmd["client"] or e["side"] != cmd["side"]:
                _fail(f"{where}: ACCEPTED client/side are not the command's")
            if oid in self.orders or oid in self.stops:
                _fail(f"{where}: order {oid} accepted while live")
            if cmd["ord_type"] in (TYPE_STOP, TYPE_STOP_LIMIT):
                self.stops[oid] = _Stop(
                    arrival=_entry(cmd["seq"]),
                    trigger=cmd["trigger_tick"] * self.book.config.tick_size,
                    price=e["price"],
                    qty=e["qty"],
                    ord_type=cmd["ord_type"],
                    tif=cmd["tif"],
                    stp=cmd["stp"],
                    client=e["client"],
                    side=e["side"],
                    expires=cmd["expires"],
                )
                return None
            self.orders[oid] = _Tracked(
                entry=_entry(cmd["seq"]),
                price=e["price"],
                filled=0,
                stp=cmd["stp"],
                client=e["client"],
                side=e["side"],
                leaves=e["leaves"],
                display=cmd["display"],
                tif=cmd["tif"],
                expires=cmd["expires"],
            )
            return e["leaves"]
        order = self.orders.get(oid)
        if order is None:
            _fail(f"{where}: event kind {kind} for order {oid}, which is not live")
        if (e["client"], e["side"]) != (order.client, order.side):
            _fail(f"{where}: event kind {kind} has client/side of another order than {oid}")
        if kind == EV_REPLACED:
            if cmd["kind"] != CMD_REPLACE or oid != cmd["order_id"] or e["idx"] != 0:
                _fail(f"{where}: REPLACED does not open a REPLACE of its order")
            if (e["price"], e["qty"]) != (cmd["price"], cmd["qty"]):
                _fail(f"{where}: REPLACED price/qty are not the command's")
            if e["qty"] - e["leaves"] != order.filled or e["leaves"] <= 0:
                _fail(
                    f"{where}: REPLACED leaves {e['leaves']} of qty {e['qty']} but "
                    f"{order.filled} had traded"
                )
            # It keeps its place at an unchanged price if its open qty did not grow and
            # its display did not change (the cut off an iceberg's reserve first); else
            # it re-enters as an aggressor, and shows what it shows once it rests.
            keeps = e["price"] == order.price and e["leaves"] <= order.leaves
            if cmd["display"] not in (0, order.display):
                order.display, keeps = cmd["display"], False
            if keeps:
                order.shown = min(order.shown, e["leaves"])
            else:
                order.entry = _entry(cmd["seq"])
                order.resting = False
            order.price, order.leaves = e["price"], e["leaves"]
            return e["leaves"]
        if kind == EV_TRADE:
            return self._apply_trade(agg, e, order, taker_leaves, where)
        if e["code"] not in CANCEL_NAMES or e["qty"] <= 0 or e["leaves"] < 0:
            _fail(f"{where}: CANCELLED code {e['code']} qty {e['qty']} leaves {e['leaves']}")
        if e["leaves"]:
            return self._apply_partial_cancel(agg, e, taker_leaves, where)
        if e["price"] != order.price:
            _fail(f"{where}: CANCELLED price {e['price']} is not order {oid}'s {order.price}")
        if cmd["kind"] in (CMD_CANCEL, CMD_MASS_CANCEL) and e["client"] != cmd["client"]:
            _fail(f"{where}: client {cmd['client']} cancelled order {oid} of another client")
        aggressor = oid == agg["order_id"] and not order.resting
        if e["qty"] != (taker_leaves if aggressor else order.leaves):
            _fail(f"{where}: CANCELLED {oid} of {e['qty']}, it had {order.leaves} open")
        if aggressor and e["code"] == CXL_IOC and agg["kind"] == CMD_NEW and agg["tif"] == TIF_FOK:
            _fail(f"{where}: FOK order {oid} filled in part ({e['qty']} cancelled)")
        del self.orders[oid]
        return 0 if oid == agg["order_id"] else taker_leaves

    def _apply_partial_cancel(self, cmd, e, taker_leaves, where):
        """An STP decrement: the order lives on with ``leaves`` open."""
        oid = e["order_id"]
        aggressor = self.orders.get(cmd["order_id"])
        if e["code"] != CXL_STP or aggressor is None or aggressor.stp != STP_DECREMENT:
            _fail(f"{where}: a partial cancel of order {oid} outside an STP decrement")
        if oid != cmd["order_id"]:
            if e["client"] != aggressor.client:
                _fail(f"{where}: STP decrement of order {oid} of another client")
            self._took(self.orders[oid], e, taker_leaves, where)
            return taker_leaves
        if taker_leaves is None or e["leaves"] != taker_leaves - e["qty"]:
            _fail(f"{where}: decrement leaves the aggressor {e['leaves']} after {taker_leaves}")
        return e["leaves"]

    def _apply_trade(self, cmd, e, taker, taker_leaves, where):
        oid, maker_id = e["order_id"], e["other_id"]
        if oid != cmd["order_id"] or cmd["kind"] not in (CMD_NEW, CMD_REPLACE):
            _fail(f"{where}: TRADE taker {oid} is not the command's order")
        maker = self.orders.get(maker_id)
        if maker is None or maker.price != e["price"] or maker.client != e["other_client"]:
            _fail(f"{where}: TRADE at {e['price']} is not with resting order {maker_id}")
        if maker.side == taker.side:
            _fail(f"{where}: TRADE between two orders of side {maker.side}")
        if e["qty"] <= 0 or e["leaves"] < 0 or e["other_leaves"] < 0:
            _fail(f"{where}: TRADE qty {e['qty']} leaves {e['leaves']}/{e['other_leaves']}")
        if e["client"] == e["other_client"] and taker.stp != STP_NONE:
            _fail(f"{where}: self-trade of client {e['client']} with STP mode {taker.stp}")
        if taker_leaves is None or e["leaves"] != taker_leaves - e["qty"]:
            _fail(f"{where}: TRADE leaves taker {e['leaves']} after {taker_leaves}")
        if cmd["ord_type"] == TYPE_LIMIT or cmd["kind"] == CMD_REPLACE:
            buy = taker.side == SIDE_BUY
            if e["price"] > taker.price if buy else e["price"] < taker.price:
                _fail(f"{where}: order at {taker.price} traded through at {e['price']}")
        taker.filled += e["qty"]
        maker.filled += e["qty"]
        self.last_price = e["price"]
        if self._took(maker, {**e, "leaves": e["other_leaves"]}, taker_leaves, where) == 0:
            del self.orders[maker_id]
        return e["leaves"]

    def _took(self, maker: _Tracked, e: dict, taker_leaves: int, where: str) -> int:
        """A trade or an STP decrement took e["qty"] off resting ``maker``'s shown part,
        leaving it e["leaves"] open: an iceberg with nothing shown refills (to the back)."""
        if not maker.resting:
            _fail(f"{where}: an aggressor still at work was met as a resting order")
        if e["qty"] != min(taker_leaves, maker.shown):
            _fail(
                f"{where}: {e['qty']} taken off a resting order showing {maker.shown}, the "
                f"aggressor having {taker_leaves} open"
            )
        if e["leaves"] != maker.leaves - e["qty"]:
            _fail(f"{where}: a resting order with {maker.leaves} open has {e['leaves']} after")
        maker.leaves -= e["qty"]
        maker.shown -= e["qty"]
        if maker.shown == 0 and maker.leaves:
            maker.show()
            maker.entry = _entry(e["seq"], e["idx"])
        return maker.leaves

    def _settle_taker(self, cmd: dict, taker_leaves, where: str) -> None:
        """After a NEW or REPLACE, its order rests, or is gone (filled or cancelled)."""
        oid = cmd["order_id"]
        if cmd["kind"] not in (CMD_NEW, CMD_REPLACE) or oid not in self.orders:
            return
        if taker_leaves == 0:
            del self.orders[oid]
            return
        rests = cmd["kind"] == CMD_REPLACE or (
            cmd["tif"] in (TIF_GTC, TIF_GTD, TIF_DAY) and cmd["ord_type"] == TYPE_LIMIT
        )
        if not rests:
            _fail(f"{where}: the remainder of order {oid} neither rests nor was cancelled")
        order = self.orders[oid]
        if not order.resting:
            order.leaves = taker_leaves
            order.show()

    # ------------------------------------------------------------------ state

    def _check_state(self) -> None:
        book, cfg = self.book, self.book.config
        if book.last_seq != self.last_seq:
            _fail(f"last_seq is {book.last_seq}, the last command was {self.last_seq}")
        rows = book.canonical_rows()
        if rows.dtype != np.int64 or rows.ndim != 2 or rows.shape[1] != len(CANONICAL_FIELDS):
            _fail(f"canonical rows are {rows.dtype} {rows.shape}")
        if book.now != self.now:
            _fail(f"the book's now is {book.now}, the EXPIREs said {self.now}")
        if book.halted != self.halted:
            _fail(f"the book says halted={book.halted}, the events said {self.halted}")
        if book.state_hash() != hash_canonical(
            book.last_seq, book.last_price, rows, book.stop_rows(), book.now, book.halted
        ):
            _fail("state_hash() is not the hash of canonical_rows()")
        if len(rows) > cfg.capacity:
            _fail(f"{len(rows)} orders rest in a book of capacity {cfg.capacity}")
        r = {name: rows[:, i] for i, name in enumerate(CANONICAL_FIELDS)}
        side, price = r["side"], r["price"]
        if np.any((side != SIDE_BUY) & (side != SIDE_SELL)) or np.any(np.diff(side) < 0):
            _fail("rows are not bids then asks")
        bids, asks = price[side == SIDE_BUY], price[side == SIDE_SELL]
        if np.any(np.diff(bids) > 0) or np.any(np.diff(asks) < 0):
            _fail("levels are not best first")
        if not self.halted and len(bids) and len(asks) and bids[0] >= asks[0]:
            _fail(f"crossed book at rest: bid {bids[0]} >= ask {asks[0]}")
        if np.any((price < cfg.min_price) | (price > cfg.max_price) | (price % cfg.tick_size != 0)):
            _fail("a resting price is outside the band or off tick")
        qty, leaves, stp, flags = r["qty"], r["leaves"], r["stp"], r["flags"]
        if np.any((leaves <= 0) | (leaves > qty) | (qty > cfg.max_qty) | (qty % cfg.lot_size != 0)):
            _fail("a resting order has bad qty/leaves")
        if np.any((stp < 0) | (stp > STP_DECREMENT) | (flags & ~FLAG_POST_ONLY != 0)):
            _fail("a resting order has bad stp/flags")
        display, shown = r["display"], r["shown"]
        ice = display > 0
        if np.any((shown <= 0) | (shown > leaves) | (~ice & (shown != leaves)) | (display < 0)):
            _fail("a resting order shows none of itself, more than it has, or hides some")
        if np.any(ice & ((shown > display) | (display % cfg.lot_size != 0))):
            _fail("an iceberg shows more than its display, or its display is off the lot")
        ids = r["order_id"].tolist()
        if len(set(ids)) != len(ids):
            _fail("an order id rests twice")
        if set(ids) != set(self.orders):
            _fail(
                f"resting orders {sorted(set(ids) - set(self.orders))[:5]} were never accepted, "
                f"{sorted(set(self.orders) - set(ids))[:5]} should rest"
            )
        entries = []
        for row in rows.tolist():
            o = dict(zip(CANONICAL_FIELDS, row, strict=True))
            order = self.orders[o["order_id"]]
            if order.filled != o["qty"] - o["leaves"]:
                _fail(f"order {o['order_id']} rests as {o}, but {order.filled} of it traded")
            if (order.price, order.client, order.side, order.stp, order.leaves) != (
                o["price"],
                o["client"],
                o["side"],
                o["stp"],
                o["leaves"],
            ) or (order.display, order.shown, order.tif, order.expires) != (
                o["display"],
                o["shown"],
                o["tif"],
                o["expires"],
            ):
                _fail(f"order {o['order_id']} rests as {o}, the events said {order}")
            entries.append(order.entry)
        late = [oid for oid, o in self.orders.items() if 0 < o.expires <= self.now]
        late += [oid for oid, o in self.stops.items() if 0 < o.expires <= self.now]
        if late:
            _fail(f"orders {late[:5]} are live past their expiry (now {self.now})")
        entries = np.array(entries, dtype=np.int64)
        same_level = (side[1:] == side[:-1]) & (price[1:] == price[:-1])
        if np.any(same_level & (entries[1:] <= entries[:-1])):
            i = int(np.flatnonzero(same_level & (entries[1:] <= entries[:-1]))[0]) + 1
            _fail(f"order {ids[i]} (entered seq {entries[i]}) queues behind a later order")
        self._check_stops()
        levels = _levels_of(rows)
        if levels != self.levels:
            diff = sorted(set(levels.items()) ^ set(self.levels.items()))
            _fail(f"level totals disagree with the DEPTH events: {diff[:4]}")
        self._check_queries(rows, levels)

    def _check_stops(self) -> None:
        book = self.book
        if book.last_price != self.last_price:
            _fail(f"last_price is {book.last_price}, the trades said {self.last_price}")
        want = [
            (
                stop.side,
                stop.trigger,
                oid,
                stop.client,
                stop.qty,
                stop.price,
                stop.stp,
                stop.ord_type,
                stop.tif,
                stop.expires,
            )
            for oid, stop in sorted(self.stops.items(), key=lambda kv: kv[1].rank())
        ]
        got = [tuple(r) for r in book.stop_rows().tolist()]
        if got != want:
            _fail(f"stop rows {got[:3]}... are not the waiting stops the events said {want[:3]}")
        if len(self.orders) + len(self.stops) > book.config.capacity:
            _fail("more live orders and stops than capacity")

    def _check_queries(self, rows: np.ndarray, levels: dict) -> None:
        book = self.book
        bids = sorted(((p, *v) for (s, p), v in levels.items() if s == SIDE_BUY), reverse=True)
        asks = sorted((p, *v) for (s, p), v in levels.items() if s == SIDE_SELL)
        bids_seen, asks_seen = book.depth(len(levels))
        if (list(map(tuple, bids_seen)), list(map(tuple, asks_seen))) != (bids, asks):
            _fail("depth() disagrees with the rows")
        best_bid = bids[0][:2] if bids else (0, 0)
        best_ask = asks[0][:2] if asks else (0, 0)
        if tuple(book.top()) != (*best_bid, *best_ask):
            _fail(f"top() is {book.top()}, rows say {(*best_bid, *best_ask)}")
        step = max(1, len(rows) // _ORDERS_QUERIED)
        for row in rows[::step].tolist():
            expected = dict(zip(CANONICAL_FIELDS, row, strict=True))
            if book.order(expected["order_id"]) != expected:
                _fail(f"order({expected['order_id']}) is {book.order(expected['order_id'])}")


def _levels_of(rows: np.ndarray) -> dict[tuple[int, int], tuple[int, int]]:
    """(side, price) -> (open total, order count) of canonical rows."""
    levels: dict[tuple[int, int], tuple[int, int]] = {}
    side_i, price_i, leaves_i = (CANONICAL_FIELDS.index(f) for f in ("side", "price", "shown"))
    for row in rows.tolist():
        key = (row[side_i], row[price_i])
        total, count = levels.get(key, (0, 0))
        levels[key] = (total + row[leaves_i], count + 1)
    return levels
