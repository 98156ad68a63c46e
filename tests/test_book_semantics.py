"""Hand-written scenarios for every rule of a book (the spec: exchange/records.py).

Each test runs against every implementation (the ``book_cls`` fixture). Events
are compared in a compact form, one tuple per event:

    ("accepted", order_id, price, qty)        ("rejected", reason, order_id)
    ("trade", taker, maker, price, qty, taker_leaves, maker_leaves)
    ("auction", buy order, sell order, price, qty, buy leaves, sell leaves)
    ("cancelled", reason, order_id, price, qty)
    ("replaced", order_id, price, qty, leaves)
    ("triggered", order_id, trigger price, qty)
    ("expired", orders expired, the book's now)
    ("state", "halted" or "continuous", auction price, auction qty)
    ("depth", side, price, total, count)

and ``Exchange.send`` checks every other field of every event on the way
(copied command fields, idx, flags, owners and sides, unused fields zero).
"""

import numpy as np
import pytest

from exchange.bookconfig import BookConfig
from exchange.records import (
    CANCEL_NAMES,
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    CXL_STP,
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
    REJECT_NAMES,
    SIDE_BUY,
    SIDE_SELL,
    STATE_NAMES,
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
    commands,
)
from exchange.statehash import hash_canonical

B, S = SIDE_BUY, SIDE_SELL
INSTRUMENT = 7
# req ids above 2**63 and idem keys check that uint64 values are copied whole.
REQ_BASE = 1 << 63
IDEM_BASE = 1 << 40


def new(
    oid,
    side,
    price,
    qty,
    client=1,
    *,
    tif=TIF_GTC,
    ord_type=TYPE_LIMIT,
    flags=0,
    stp=0,
    trigger=0,
    display=0,
    expires=0,
):
    return dict(
        kind=CMD_NEW,
        trigger_tick=trigger,
        display=display,
        expires=expires,
        order_id=oid,
        side=side,
        price=price,
        qty=qty,
        client=client,
        tif=tif,
        ord_type=ord_type,
        flags=flags,
        stp=stp,
    )


def cancel(oid, client=1):
    return dict(kind=CMD_CANCEL, order_id=oid, client=client)


def replace(oid, price, qty, client=1, trigger=0, display=0, expires=0):
    return dict(
        kind=CMD_REPLACE,
        expires=expires,
        order_id=oid,
        price=price,
        qty=qty,
        client=client,
        trigger_tick=trigger,
        display=display,
    )


def stop(oid, side, qty, trigger, client=1, *, price=0, tif=TIF_IOC, stp=0, expires=0):
    """A stop (no price: market when triggered) or, with a price, a stop-limit."""
    kind = TYPE_STOP_LIMIT if price else TYPE_STOP
    return new(
        oid,
        side,
        price,
        qty,
        client,
        tif=tif,
        ord_type=kind,
        stp=stp,
        trigger=trigger,
        expires=expires,
    )


def mass_cancel(client=1):
    return dict(kind=CMD_MASS_CANCEL, client=client)


class Exchange:
    """One book, fed commands with consecutive seqs; checks every event's fields."""

    def __init__(self, book_cls, **config):
        self.book = book_cls(BookConfig(**config))
        self.seq = self.book.last_seq
        self.owner: dict[int, tuple[int, int]] = {}

    def batch(self, *specs) -> np.ndarray:
        cmds = commands(len(specs))
        for i, spec in enumerate(specs):
            self.seq += 1
            cmds[i]["seq"] = self.seq
            cmds[i]["req_id"] = REQ_BASE + self.seq
            cmds[i]["idem_key"] = IDEM_BASE + self.seq
            cmds[i]["instrument"] = INSTRUMENT
            for name, value in spec.items():
                cmds[i][name] = value
        return cmds

    def send(self, *specs) -> list[tuple]:
        """Process the commands as one batch; the events of all, in compact form."""
        cmds = self.batch(*specs)
        events = self.book.process(cmds)
        assert events.dtype == EVENT_DTYPE
        assert self.book.last_seq == self.seq
        out = []
        for cmd in cmds:
            mine = events[events["seq"] == cmd["seq"]]
            assert list(mine["idx"]) == list(range(len(mine)))
            for e in mine:
                out.append(self._render(cmd, e))
        assert len(out) == len(events)
        return out

    def _render(self, cmd, e) -> tuple:
        for name in ("seq", "req_id", "idem_key", "instrument"):
            assert e[name] == cmd[name], name
        assert e["flags"] == 0
        kind, oid = int(e["kind"]), int(e["order_id"])
        if kind not in (EV_TRADE, EV_EXPIRED):
            assert (e["other_id"], e["other_client"], e["other_leaves"]) == (0, 0, 0)
        if kind not in (EV_REJECTED, EV_CANCELLED, EV_TRIGGERED, EV_STATE, EV_TRADE):
            assert e["code"] == 0
        if kind == EV_REJECTED:
            for name in ("order_id", "side", "price", "qty", "client"):
                assert e[name] == cmd[name], name
            assert e["leaves"] == 0
            return ("rejected", REJECT_NAMES[int(e["code"])], oid)
        if kind == EV_EXPIRED:
            assert (e["order_id"], e["client"], e["side"], e["price"], e["leaves"]) == (0,) * 5
            return ("expired", int(e["qty"]), int(e["other_id"]))
        if kind == EV_STATE:
            assert (e["order_id"], e["client"], e["side"], e["leaves"]) == (0,) * 4
            return ("state", STATE_NAMES[int(e["code"])], int(e["price"]), int(e["qty"]))
        if kind == EV_MASS_CANCELLED:
            assert e["client"] == cmd["client"]
            assert (e["order_id"], e["side"], e["price"], e["leaves"]) == (0, 0, 0, 0)
            return ("mass_cancelled", int(e["client"]), int(e["qty"]))
        if kind == EV_DEPTH:
            assert (e["order_id"], e["client"]) == (0, 0)
            return ("depth", int(e["side"]), int(e["price"]), int(e["qty"]), int(e["leaves"]))
        if kind == EV_ACCEPTED:
            assert (e["client"], e["side"]) == (cmd["client"], cmd["side"])
            assert e["leaves"] == e["qty"]
            self.owner[oid] = (int(e["client"]), int(e["side"]))
            return ("accepted", oid, int(e["price"]), int(e["qty"]))
        assert (e["client"], e["side"]) == self.owner[oid]
        if kind == EV_TRADE:
            assert e["other_client"] == self.owner[int(e["other_id"])][0]
            # a reopening auction's trade (only a RESUME's) says so: neither is a taker
            auction = e["code"] == TRADE_AUCTION
            assert e["code"] == 0 or (auction and cmd["kind"] == CMD_RESUME)
            return (
                "auction" if auction else "trade",
                oid,
                int(e["other_id"]),
                int(e["price"]),
                int(e["qty"]),
                int(e["leaves"]),
                int(e["other_leaves"]),
            )
        if kind == EV_CANCELLED:
            reason = CANCEL_NAMES[int(e["code"])]
            out = ("cancelled", reason, oid, int(e["price"]), int(e["qty"]))
            if e["leaves"]:  # a partial cancel (STP decrement) says what is left
                assert e["code"] == CXL_STP
                return (*out, int(e["leaves"]))
            return out
        if kind == EV_TRIGGERED:
            assert e["code"] in (TYPE_STOP, TYPE_STOP_LIMIT) and e["leaves"] == e["qty"]
            return ("triggered", oid, int(e["price"]), int(e["qty"]))
        assert kind == EV_REPLACED
        return ("replaced", oid, int(e["price"]), int(e["qty"]), int(e["leaves"]))

    def rows(self) -> list[tuple]:
        """Resting orders in book order as (side, price, order_id, client, qty, leaves)."""
        return [tuple(r[:6]) for r in self.book.canonical_rows().tolist()]

    def ids(self) -> list[int]:
        return [r[2] for r in self.rows()]

    def shown(self) -> list[tuple]:
        """Resting orders in book order as (order_id, leaves, display, shown)."""
        return [(r[2], r[5], r[8], r[9]) for r in self.book.canonical_rows().tolist()]


def rejected(reason, oid):
    return [("rejected", reason, oid)]


# ---------------------------------------------------------------- rejects


def test_event_fields_of_a_trade_are_complete(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=9, stp=STP_CANCEL_OLDEST, flags=FLAG_POST_ONLY))
    events = ex.book.process(ex.batch(new(2, B, 101, 3, client=4)))
    want = np.zeros(3, EVENT_DTYPE)
    for i, fields in enumerate(
        [
            dict(kind=EV_ACCEPTED, order_id=2, client=4, side=B, price=101, qty=3, leaves=3),
            dict(
                kind=EV_TRADE,
                order_id=2,
                client=4,
                side=B,
                other_id=1,
                other_client=9,
                price=100,
                qty=3,
                leaves=0,
                other_leaves=2,
            ),
            dict(kind=EV_DEPTH, side=S, price=100, qty=2, leaves=1),
        ]
    ):
        want[i]["seq"] = 2
        want[i]["req_id"] = REQ_BASE + 2
        want[i]["idem_key"] = IDEM_BASE + 2
        want[i]["instrument"] = INSTRUMENT
        want[i]["idx"] = i
        for name, value in fields.items():
            want[i][name] = value
    assert events.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "fields",
    [
        dict(side=0),
        dict(side=3),
        dict(tif=5),
        dict(ord_type=4),
        dict(stp=5),
        dict(flags=2),
        dict(flags=FLAG_POST_ONLY, ord_type=TYPE_MARKET),
        dict(flags=FLAG_POST_ONLY, ord_type=TYPE_STOP_LIMIT, trigger_tick=100),
        dict(trigger_tick=100),
    ],
)
def test_new_with_a_field_out_of_range_is_a_bad_command(book_cls, fields):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 101, 5, client=2))
    assert ex.send(new(2, B, 101, 5) | fields) == rejected("bad_command", 2)
    assert ex.rows() == [(S, 101, 1, 2, 5, 5)]


@pytest.mark.parametrize("kind", [0, 5, 255])
def test_unknown_command_kind_is_a_bad_command(book_cls, kind):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 101, 5))
    spec = new(1, S, 101, 5) | dict(kind=kind)
    assert ex.send(spec) == rejected("bad_command", 1)
    assert ex.rows() == [(S, 101, 1, 1, 5, 5)]


@pytest.mark.parametrize(
    ("price", "qty", "reason"),
    [
        (100, 0, "qty_not_positive"),
        (100, -10, "qty_not_positive"),
        (100, 110, "qty_above_max"),
        (100, 15, "qty_off_lot"),
        (10, 10, "price_outside_band"),
        (5, 10, "price_outside_band"),
        (1005, 10, "price_outside_band"),
        (102, 10, "price_off_tick"),
    ],
)
def test_new_qty_and_price_rejects(book_cls, price, qty, reason):
    ex = Exchange(book_cls, min_price=20, max_price=1000, tick_size=5, lot_size=10, max_qty=100)
    assert ex.send(new(1, B, price, qty)) == rejected(reason, 1)
    assert ex.rows() == []
    assert ex.book.order(1) is None


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        # each command fails two checks: the first in the spec's order wins
        (new(9, 0, 100, 0), "bad_command"),
        (new(9, B, 7, 0), "qty_not_positive"),
        (new(9, B, 7, 105), "qty_above_max"),
        (new(9, B, 7, 15), "qty_off_lot"),
        (new(9, B, 2001, 10), "price_outside_band"),
        (new(1, B, 101, 10), "price_off_tick"),
        (new(1, B, 110, 10, flags=FLAG_POST_ONLY), "duplicate_order_id"),
        (new(9, B, 110, 10, flags=FLAG_POST_ONLY), "post_only_would_take"),
    ],
)
def test_new_validation_order_first_failure_wins(book_cls, spec, reason):
    ex = Exchange(
        book_cls, min_price=10, max_price=2000, tick_size=5, lot_size=10, max_qty=100, capacity=2
    )
    ex.send(new(1, S, 110, 10, client=2), new(2, S, 115, 10, client=2))  # the book is full
    before = ex.rows()
    assert ex.send(spec) == rejected(reason, spec["order_id"])
    assert ex.rows() == before


def test_market_orders_skip_price_checks(book_cls):
    ex = Exchange(book_cls, min_price=10, max_price=1000, tick_size=5)
    ex.send(new(1, S, 100, 4, client=2))
    assert ex.send(new(2, B, 3, 10, ord_type=TYPE_MARKET)) == [
        ("accepted", 2, 3, 10),
        ("trade", 2, 1, 100, 4, 6, 0),
        ("cancelled", "ioc_remainder", 2, 3, 6),
        ("depth", S, 100, 0, 0),
    ]


def test_duplicate_id_only_while_live(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5))
    assert ex.send(new(1, S, 200, 5)) == rejected("duplicate_order_id", 1)
    ex.send(cancel(1))
    assert ex.send(new(1, S, 200, 5)) == [("accepted", 1, 200, 5), ("depth", S, 200, 5, 1)]


def test_rejects_of_cancel_and_replace_echo_the_command(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5))
    cmds = ex.batch(cancel(77) | dict(side=9, price=-3, qty=12), replace(1, 100, 5, client=2))
    events = ex.book.process(cmds)
    assert events["kind"].tolist() == [EV_REJECTED, EV_REJECTED]
    for name in ("order_id", "side", "price", "qty", "client"):
        assert events[name].tolist() == cmds[name].tolist()


# ---------------------------------------------------------------- matching


def test_gtc_rests_and_reports_depth(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(new(1, B, 100, 5)) == [("accepted", 1, 100, 5), ("depth", B, 100, 5, 1)]
    assert ex.send(new(2, B, 100, 3, client=2)) == [
        ("accepted", 2, 100, 3),
        ("depth", B, 100, 8, 2),
    ]
    assert ex.book.order(1) == dict(
        order_id=1,
        client=1,
        side=B,
        price=100,
        qty=5,
        leaves=5,
        stp=0,
        flags=0,
        display=0,
        shown=5,
        tif=0,
        expires=0,
    )
    assert ex.book.order(3) is None


def test_price_time_priority_and_trades_at_the_resting_price(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        new(1, S, 101, 4, client=2),
        new(2, S, 101, 4, client=3),
        new(3, S, 100, 4, client=2),
        new(4, S, 102, 4, client=3),
    )
    assert ex.send(new(5, B, 101, 10)) == [
        ("accepted", 5, 101, 10),
        ("trade", 5, 3, 100, 4, 6, 0),
        ("trade", 5, 1, 101, 4, 2, 0),
        ("trade", 5, 2, 101, 2, 0, 2),
        ("depth", S, 100, 0, 0),
        ("depth", S, 101, 2, 1),
    ]
    assert ex.rows() == [(S, 101, 2, 3, 4, 2), (S, 102, 4, 3, 4, 4)]


def test_sell_aggressor_takes_the_highest_bid_first(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 98, 2, client=2), new(2, B, 99, 2, client=2))
    assert ex.send(new(3, S, 90, 3)) == [
        ("accepted", 3, 90, 3),
        ("trade", 3, 2, 99, 2, 1, 0),
        ("trade", 3, 1, 98, 1, 0, 1),
        ("depth", B, 99, 0, 0),
        ("depth", B, 98, 1, 1),
    ]


def test_partial_fill_rests_the_remainder(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 3, client=2))
    assert ex.send(new(2, B, 100, 10)) == [
        ("accepted", 2, 100, 10),
        ("trade", 2, 1, 100, 3, 7, 0),
        ("depth", S, 100, 0, 0),
        ("depth", B, 100, 7, 1),
    ]
    assert ex.book.order(2)["qty"] == 10
    assert ex.book.order(2)["leaves"] == 7
    assert ex.book.top() == (100, 7, 0, 0)


def test_ioc_never_rests(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 3, client=2))
    assert ex.send(new(2, B, 100, 5, tif=TIF_IOC)) == [
        ("accepted", 2, 100, 5),
        ("trade", 2, 1, 100, 3, 2, 0),
        ("cancelled", "ioc_remainder", 2, 100, 2),
        ("depth", S, 100, 0, 0),
    ]
    assert ex.send(new(3, B, 100, 5, tif=TIF_IOC)) == [
        ("accepted", 3, 100, 5),
        ("cancelled", "ioc_remainder", 3, 100, 5),
    ]
    assert ex.rows() == []


def test_fok_fills_fully_across_levels(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 3, client=2), new(2, S, 101, 3, client=2))
    assert ex.send(new(3, B, 101, 6, tif=TIF_FOK)) == [
        ("accepted", 3, 101, 6),
        ("trade", 3, 1, 100, 3, 3, 0),
        ("trade", 3, 2, 101, 3, 0, 0),
        ("depth", S, 100, 0, 0),
        ("depth", S, 101, 0, 0),
    ]


def test_fok_that_cannot_fill_changes_nothing(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 3, client=2), new(2, S, 102, 30, client=2))
    before = ex.rows()
    # 30 more at 102 do not count: they are beyond the limit
    assert ex.send(new(3, B, 101, 4, tif=TIF_FOK)) == [
        ("accepted", 3, 101, 4),
        ("cancelled", "fok_unfilled", 3, 101, 4),
    ]
    assert ex.rows() == before


@pytest.mark.parametrize(
    ("stp", "fills"),
    [(STP_NONE, True), (STP_CANCEL_OLDEST, False), (STP_DECREMENT, False)],
)
def test_fok_precheck_stops_at_the_first_own_order(book_cls, stp, fills):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 2, client=2), new(2, S, 100, 5, client=1), new(3, S, 100, 5, client=2))
    events = ex.send(new(4, B, 100, 6, tif=TIF_FOK, stp=stp))
    if fills:
        assert events == [
            ("accepted", 4, 100, 6),
            ("trade", 4, 1, 100, 2, 4, 0),
            ("trade", 4, 2, 100, 4, 0, 1),
            ("depth", S, 100, 6, 2),
        ]
    else:
        assert events == [("accepted", 4, 100, 6), ("cancelled", "fok_unfilled", 4, 100, 6)]


def test_fok_stopped_by_own_order_still_fills_what_is_ahead(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 4, client=2), new(2, S, 100, 5, client=1))
    assert ex.send(new(3, B, 100, 4, tif=TIF_FOK, stp=STP_CANCEL_BOTH)) == [
        ("accepted", 3, 100, 4),
        ("trade", 3, 1, 100, 4, 0, 0),
        ("depth", S, 100, 5, 1),
    ]


def test_market_order_sweeps_and_never_rests(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 2, client=2), new(2, S, 150, 2, client=2), new(3, B, 90, 1, client=2))
    assert ex.send(new(4, B, 0, 10, ord_type=TYPE_MARKET)) == [
        ("accepted", 4, 0, 10),
        ("trade", 4, 1, 100, 2, 8, 0),
        ("trade", 4, 2, 150, 2, 6, 0),
        ("cancelled", "ioc_remainder", 4, 0, 6),
        ("depth", S, 100, 0, 0),
        ("depth", S, 150, 0, 0),
    ]
    assert ex.send(new(5, S, 0, 1, ord_type=TYPE_MARKET, tif=TIF_FOK)) == [
        ("accepted", 5, 0, 1),
        ("trade", 5, 3, 90, 1, 0, 0),
        ("depth", B, 90, 0, 0),
    ]
    assert ex.send(new(6, S, 0, 1, ord_type=TYPE_MARKET)) == [
        ("accepted", 6, 0, 1),
        ("cancelled", "ioc_remainder", 6, 0, 1),
    ]


def test_post_only(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 101, 5, client=2), new(2, B, 99, 5, client=2))
    po = dict(flags=FLAG_POST_ONLY)
    assert ex.send(new(3, B, 101, 1) | po) == rejected("post_only_would_take", 3)
    assert ex.send(new(4, S, 99, 1) | po) == rejected("post_only_would_take", 4)
    assert ex.send(new(5, B, 100, 1) | po) == [("accepted", 5, 100, 1), ("depth", B, 100, 1, 1)]
    assert ex.send(new(6, S, 100, 1, tif=TIF_IOC) | po) == rejected("post_only_would_take", 6)
    assert ex.send(new(7, S, 101, 1, tif=TIF_IOC) | po) == [
        ("accepted", 7, 101, 1),
        ("cancelled", "ioc_remainder", 7, 101, 1),
    ]
    assert ex.send(new(8, S, 101, 1, tif=TIF_FOK) | po) == [
        ("accepted", 8, 101, 1),
        ("cancelled", "fok_unfilled", 8, 101, 1),
    ]
    assert ex.book.order(5)["flags"] == FLAG_POST_ONLY


# ---------------------------------------------------------------- cancel


def test_cancel(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, B, 100, 3))
    assert ex.send(cancel(1)) == [
        ("cancelled", "user", 1, 100, 5),
        ("depth", B, 100, 3, 1),
    ]
    assert ex.send(cancel(1)) == rejected("order_not_found", 1)
    assert ex.send(cancel(99)) == rejected("order_not_found", 99)
    assert ex.ids() == [2]


def test_cancel_of_another_clients_order_is_not_found(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5, client=1))
    assert ex.send(cancel(1, client=2)) == rejected("order_not_found", 1)
    assert ex.send(replace(1, 100, 2, client=2)) == rejected("order_not_found", 1)
    assert ex.rows() == [(B, 100, 1, 1, 5, 5)]


def test_cancel_of_a_partly_filled_order_removes_its_open_qty(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, S, 100, 2, client=2))
    assert ex.send(cancel(1)) == [("cancelled", "user", 1, 100, 3), ("depth", B, 100, 0, 0)]


# ---------------------------------------------------------------- replace


def test_replace_down_keeps_priority(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, B, 100, 5, client=2))
    assert ex.send(replace(1, 100, 3)) == [
        ("replaced", 1, 100, 3, 3),
        ("depth", B, 100, 8, 2),
    ]
    assert ex.ids() == [1, 2]
    assert ex.send(new(3, S, 100, 1, client=3))[1] == ("trade", 3, 1, 100, 1, 0, 2)


def test_replace_up_loses_priority(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, B, 100, 5, client=2))
    assert ex.send(replace(1, 100, 6)) == [
        ("replaced", 1, 100, 6, 6),
        ("depth", B, 100, 11, 2),
    ]
    assert ex.ids() == [2, 1]


def test_replace_price_loses_priority(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, B, 99, 5, client=2))
    assert ex.send(replace(1, 99, 5)) == [
        ("replaced", 1, 99, 5, 5),
        ("depth", B, 100, 0, 0),
        ("depth", B, 99, 10, 2),
    ]
    assert ex.ids() == [2, 1]
    assert ex.book.order(1)["price"] == 99


def test_replace_unchanged_keeps_place_and_emits_no_depth(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5), new(2, B, 100, 5, client=2))
    assert ex.send(replace(1, 100, 5)) == [("replaced", 1, 100, 5, 5)]
    assert ex.ids() == [1, 2]


def test_replace_of_a_partly_filled_order_counts_what_traded(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 10), new(2, B, 100, 10, client=2), new(3, S, 100, 4, client=3))
    assert ex.rows()[0] == (B, 100, 1, 1, 10, 6)
    # new total 8, 4 traded: 4 open, fewer than 6: it keeps its place
    assert ex.send(replace(1, 100, 8)) == [("replaced", 1, 100, 8, 4), ("depth", B, 100, 14, 2)]
    assert ex.rows() == [(B, 100, 1, 1, 8, 4), (B, 100, 2, 2, 10, 10)]
    # new total 12: 8 open, more than 4: it goes to the back
    assert ex.send(replace(1, 100, 12)) == [("replaced", 1, 100, 12, 8), ("depth", B, 100, 18, 2)]
    assert ex.ids() == [2, 1]


@pytest.mark.parametrize("qty", [4, 3])
def test_replace_to_zero_cancels(book_cls, qty):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 10), new(2, S, 100, 4, client=2))
    assert ex.send(replace(1, 101, qty)) == [
        ("cancelled", "replaced_to_zero", 1, 100, 6),
        ("depth", B, 100, 0, 0),
    ]
    assert ex.book.order(1) is None


def test_crossing_replace_trades_as_aggressor_then_rests(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 99, 10), new(2, S, 101, 4, client=2), new(3, S, 102, 4, client=2))
    assert ex.send(replace(1, 101, 10)) == [
        ("replaced", 1, 101, 10, 10),
        ("trade", 1, 2, 101, 4, 6, 0),
        ("depth", B, 99, 0, 0),
        ("depth", S, 101, 0, 0),
        ("depth", B, 101, 6, 1),
    ]
    assert ex.rows() == [(B, 101, 1, 1, 10, 6), (S, 102, 3, 2, 4, 4)]


def test_crossing_replace_filled_completely_is_gone(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 105, 3), new(2, B, 100, 5, client=2))
    assert ex.send(replace(1, 100, 3)) == [
        ("replaced", 1, 100, 3, 3),
        ("trade", 1, 2, 100, 3, 0, 2),
        ("depth", S, 105, 0, 0),
        ("depth", B, 100, 2, 1),
    ]
    assert ex.book.order(1) is None
    assert ex.send(cancel(1)) == rejected("order_not_found", 1)


@pytest.mark.parametrize(
    ("price", "qty", "reason"),
    [
        (100, 0, "qty_not_positive"),
        (100, 110, "qty_above_max"),
        (100, 15, "qty_off_lot"),
        (5, 10, "price_outside_band"),
        (1005, 10, "price_outside_band"),
        (102, 10, "price_off_tick"),
        (110, 30, "post_only_would_take"),
        (110, 10, "post_only_would_take"),  # 10 traded: also a replace to zero
        (115, 0, "qty_not_positive"),
        (102, 110, "qty_above_max"),
    ],
)
def test_replace_rejects_leave_the_order_untouched(book_cls, price, qty, reason):
    ex = Exchange(book_cls, min_price=10, max_price=1000, tick_size=5, lot_size=10, max_qty=100)
    ex.send(new(1, B, 100, 20, flags=FLAG_POST_ONLY), new(2, S, 110, 10, client=2))
    ex.send(new(3, S, 100, 10, client=2))
    before = ex.rows()
    assert ex.send(replace(1, price, qty)) == rejected(reason, 1)
    assert ex.rows() == before


def test_post_only_replace_that_does_not_cross_moves(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 2, flags=FLAG_POST_ONLY), new(2, S, 110, 1, client=2))
    assert ex.send(replace(1, 109, 2)) == [
        ("replaced", 1, 109, 2, 2),
        ("depth", B, 100, 0, 0),
        ("depth", B, 109, 2, 1),
    ]
    assert ex.book.order(1)["flags"] == FLAG_POST_ONLY


# ---------------------------------------------------------------- self-trade prevention


def own_book(book_cls):
    """Asks: at 100 client 1 (5), then client 2 (5); at 101 client 2 (5)."""
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=1), new(2, S, 100, 5, client=2), new(3, S, 101, 5, client=2))
    return ex


def test_stp_none_trades_with_itself(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 100, 7, stp=STP_NONE)) == [
        ("accepted", 9, 100, 7),
        ("trade", 9, 1, 100, 5, 2, 0),
        ("trade", 9, 2, 100, 2, 0, 3),
        ("depth", S, 100, 3, 1),
    ]


def test_stp_is_the_aggressors_mode(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, stp=STP_CANCEL_NEWEST))
    assert ex.send(new(2, B, 100, 5, stp=STP_NONE))[1] == ("trade", 2, 1, 100, 5, 0, 0)


def test_stp_ignores_other_clients(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 100, 3, client=2, stp=STP_CANCEL_BOTH))[1] == (
        "trade",
        9,
        1,
        100,
        3,
        0,
        2,
    )


def test_stp_cancel_newest(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=2), new(2, S, 100, 5, client=1), new(3, S, 101, 5, client=2))
    assert ex.send(new(9, B, 101, 8, stp=STP_CANCEL_NEWEST)) == [
        ("accepted", 9, 101, 8),
        ("trade", 9, 1, 100, 5, 3, 0),
        ("cancelled", "self_trade", 9, 101, 3),
        ("depth", S, 100, 5, 1),
    ]
    assert ex.ids() == [2, 3]


def test_stp_cancel_oldest(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 101, 8, stp=STP_CANCEL_OLDEST)) == [
        ("accepted", 9, 101, 8),
        ("cancelled", "self_trade", 1, 100, 5),
        ("trade", 9, 2, 100, 5, 3, 0),
        ("trade", 9, 3, 101, 3, 0, 2),
        ("depth", S, 100, 0, 0),
        ("depth", S, 101, 2, 1),
    ]


def test_stp_cancel_oldest_rests_the_rest(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5))
    assert ex.send(new(9, B, 100, 8, stp=STP_CANCEL_OLDEST)) == [
        ("accepted", 9, 100, 8),
        ("cancelled", "self_trade", 1, 100, 5),
        ("depth", S, 100, 0, 0),
        ("depth", B, 100, 8, 1),
    ]


def test_stp_cancel_both(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 101, 8, stp=STP_CANCEL_BOTH)) == [
        ("accepted", 9, 101, 8),
        ("cancelled", "self_trade", 1, 100, 5),
        ("cancelled", "self_trade", 9, 101, 8),
        ("depth", S, 100, 5, 1),
    ]
    assert ex.ids() == [2, 3]


def test_stp_decrement_resting_larger(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 101, 3, stp=STP_DECREMENT)) == [
        ("accepted", 9, 101, 3),
        ("cancelled", "self_trade", 1, 100, 3, 2),
        ("cancelled", "self_trade", 9, 101, 3),
        ("depth", S, 100, 7, 2),
    ]
    # decremented, not filled: total and open qty both lose 3; it keeps its place
    assert ex.rows()[0] == (S, 100, 1, 1, 2, 2)


def test_stp_decrement_resting_smaller_goes_on(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 101, 8, stp=STP_DECREMENT)) == [
        ("accepted", 9, 101, 8),
        ("cancelled", "self_trade", 1, 100, 5),
        ("cancelled", "self_trade", 9, 101, 5, 3),
        ("trade", 9, 2, 100, 3, 0, 2),
        ("depth", S, 100, 2, 1),
    ]


def test_stp_decrement_equal_cancels_both(book_cls):
    ex = own_book(book_cls)
    assert ex.send(new(9, B, 101, 5, stp=STP_DECREMENT)) == [
        ("accepted", 9, 101, 5),
        ("cancelled", "self_trade", 1, 100, 5),
        ("cancelled", "self_trade", 9, 101, 5),
        ("depth", S, 100, 5, 1),
    ]


def test_stp_decrement_then_rest_has_a_smaller_total(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 2), new(2, S, 100, 3, client=2))
    assert ex.send(new(9, B, 100, 10, stp=STP_DECREMENT)) == [
        ("accepted", 9, 100, 10),
        ("cancelled", "self_trade", 1, 100, 2),
        ("cancelled", "self_trade", 9, 100, 2, 8),
        ("trade", 9, 2, 100, 3, 5, 0),
        ("depth", S, 100, 0, 0),
        ("depth", B, 100, 5, 1),
    ]
    # 10 ordered, 2 decremented away, 3 traded: total 8, open 5
    assert ex.rows() == [(B, 100, 9, 1, 8, 5)]
    # a replace to total 8 (3 traded) leaves 5 open: nothing changes
    assert ex.send(replace(9, 100, 8)) == [("replaced", 9, 100, 8, 5)]


def test_stp_decrement_partial_keeps_the_resting_place(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 6), new(2, S, 100, 3, client=2))
    assert ex.send(new(9, B, 100, 4, tif=TIF_IOC, stp=STP_DECREMENT)) == [
        ("accepted", 9, 100, 4),
        ("cancelled", "self_trade", 1, 100, 4, 2),
        ("cancelled", "self_trade", 9, 100, 4),
        ("depth", S, 100, 5, 2),
    ]
    assert ex.rows() == [(S, 100, 1, 1, 2, 2), (S, 100, 2, 2, 3, 3)]


def test_crossing_replace_uses_its_own_stp_mode(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5), new(2, B, 90, 5, stp=STP_CANCEL_NEWEST))
    assert ex.send(replace(2, 100, 5)) == [
        ("replaced", 2, 100, 5, 5),
        ("cancelled", "self_trade", 2, 100, 5),
        ("depth", B, 90, 0, 0),
    ]
    assert ex.ids() == [1]


# ---------------------------------------------------------------- capacity


def test_book_full(book_cls):
    ex = Exchange(book_cls, capacity=2)
    ex.send(new(1, B, 99, 5), new(2, S, 101, 5, client=2))
    assert ex.send(new(3, B, 98, 5)) == rejected("book_full", 3)
    # checked before matching: even an order that would fill at once is refused
    assert ex.send(new(4, B, 101, 5)) == rejected("book_full", 4)
    # orders that cannot rest still trade
    assert ex.send(new(5, B, 101, 2, tif=TIF_IOC))[1] == ("trade", 5, 2, 101, 2, 0, 3)
    assert ex.send(new(6, B, 0, 1, ord_type=TYPE_MARKET))[1] == ("trade", 6, 2, 101, 1, 0, 2)
    assert ex.send(new(7, B, 101, 2, tif=TIF_FOK))[1] == ("trade", 7, 2, 101, 2, 0, 0)
    # the maker filled to 0 freed its slot
    assert ex.send(new(8, B, 98, 5)) == [("accepted", 8, 98, 5), ("depth", B, 98, 5, 1)]
    # a replace that moves an order keeps its slot
    assert ex.send(replace(8, 97, 5))[0] == ("replaced", 8, 97, 5, 5)


def test_capacity_is_freed_by_cancels(book_cls):
    ex = Exchange(book_cls, capacity=1)
    ex.send(new(1, B, 99, 5))
    assert ex.send(new(2, B, 99, 5)) == rejected("book_full", 2)
    ex.send(cancel(1))
    assert ex.send(new(2, B, 99, 5))[0] == ("accepted", 2, 99, 5)


# ---------------------------------------------------------------- mass cancel


def test_mass_cancel_order_of_events(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        new(1, B, 99, 1, client=1),
        new(2, B, 100, 2, client=2),
        new(3, B, 100, 3, client=1),
        new(4, B, 100, 4, client=1),
        new(5, S, 102, 5, client=1),
        new(6, S, 101, 6, client=1),
        new(7, S, 101, 7, client=2),
    )
    assert ex.send(mass_cancel(client=1)) == [
        ("cancelled", "user", 3, 100, 3),
        ("cancelled", "user", 4, 100, 4),
        ("cancelled", "user", 1, 99, 1),
        ("cancelled", "user", 6, 101, 6),
        ("cancelled", "user", 5, 102, 5),
        ("mass_cancelled", 1, 5),
        ("depth", B, 100, 2, 1),
        ("depth", B, 99, 0, 0),
        ("depth", S, 101, 7, 1),
        ("depth", S, 102, 0, 0),
    ]
    assert ex.ids() == [2, 7]
    assert ex.send(mass_cancel(client=1)) == [("mass_cancelled", 1, 0)]
    assert ex.send(mass_cancel(client=3)) == [("mass_cancelled", 3, 0)]


def test_a_large_batch_has_event_dtype_and_zero_padding(book_cls):
    ex = Exchange(book_cls)
    n = 1500
    ex.send(*(new(i, B, 100 + i % 50, 1) for i in range(1, n + 1)))
    events = ex.book.process(ex.batch(mass_cancel()))
    assert events.dtype == EVENT_DTYPE
    assert len(events) == n + 51
    assert events["idx"].tolist() == list(range(n + 51))
    covered = np.zeros(EVENT_DTYPE.itemsize, bool)
    for name, (dtype, offset, *_) in EVENT_DTYPE.fields.items():
        if not name.startswith("_"):
            covered[offset : offset + dtype.itemsize] = True
    raw = events.view(np.uint8).reshape(len(events), EVENT_DTYPE.itemsize)
    assert not raw[:, ~covered].any()


# ---------------------------------------------------------------- queries


def test_top_and_depth(book_cls):
    ex = Exchange(book_cls)
    assert ex.book.top() == (0, 0, 0, 0)
    assert ex.book.depth(5) == ([], [])
    ex.send(
        new(1, B, 98, 1),
        new(2, B, 99, 2),
        new(3, B, 99, 3),
        new(4, S, 101, 4),
        new(5, S, 103, 5),
        new(6, S, 102, 6),
    )
    assert ex.book.top() == (99, 5, 101, 4)
    assert ex.book.depth(2) == ([(99, 5, 2), (98, 1, 1)], [(101, 4, 1), (102, 6, 1)])
    assert ex.book.depth(10) == ([(99, 5, 2), (98, 1, 1)], [(101, 4, 1), (102, 6, 1), (103, 5, 1)])
    assert ex.book.depth(0) == ([], [])
    with pytest.raises(ValueError):
        ex.book.depth(-1)


def test_depth_events_in_first_touched_order_with_final_totals(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 101, 2, client=2), new(2, S, 100, 2, client=2), new(3, S, 100, 2))
    # level 100 is touched twice (a trade, then an STP decrement) and reported once
    assert ex.send(new(4, B, 101, 5, stp=STP_DECREMENT)) == [
        ("accepted", 4, 101, 5),
        ("trade", 4, 2, 100, 2, 3, 0),
        ("cancelled", "self_trade", 3, 100, 2),
        ("cancelled", "self_trade", 4, 101, 2, 1),
        ("trade", 4, 1, 101, 1, 0, 1),
        ("depth", S, 100, 0, 0),
        ("depth", S, 101, 1, 1),
    ]


def test_order_query_forgets_gone_orders(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5, stp=STP_DECREMENT), new(2, S, 100, 5, client=2, tif=TIF_IOC))
    assert ex.book.order(1) is None
    assert ex.book.order(2) is None


# ---------------------------------------------------------------- the batch interface


def test_empty_batch(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5))
    events = ex.book.process(ex.batch()[:0])
    assert events.dtype == EVENT_DTYPE
    assert len(events) == 0
    assert ex.book.last_seq == 1


def test_batches_equal_single_commands(book_cls):
    specs = [
        new(1, B, 100, 5),
        new(2, S, 99, 3, client=2),
        replace(1, 101, 9),
        new(3, S, 0, 20, client=2, ord_type=TYPE_MARKET),
        mass_cancel(client=2),
        cancel(1),
    ]
    one, many = Exchange(book_cls), Exchange(book_cls)
    assert one.send(*specs) == [e for spec in specs for e in many.send(spec)]
    assert one.book.state_hash() == many.book.state_hash()


def test_wrong_dtype_is_refused(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5))
    before = ex.book.state_hash()
    with pytest.raises((TypeError, ValueError), match="COMMAND_DTYPE"):
        ex.book.process(np.zeros(3, np.int64))
    assert ex.book.state_hash() == before


@pytest.mark.parametrize("seqs", [[1, 3], [5, 5], [6, 4]])
def test_seq_that_does_not_increase_is_refused(book_cls, seqs):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 5))
    ex.send(new(2, B, 100, 5))  # last_seq is now 2
    cmds = commands(len(seqs))
    cmds["seq"] = seqs
    cmds["kind"] = CMD_MASS_CANCEL
    cmds["client"] = 1
    before = ex.book.state_hash()
    with pytest.raises(ValueError, match="seq"):
        ex.book.process(cmds)
    assert ex.book.state_hash() == before
    assert ex.book.last_seq == 2


# ---------------------------------------------------------------- hash and snapshots


def test_state_hash_covers_queue_order_and_last_seq(book_cls):
    a, b = Exchange(book_cls), Exchange(book_cls)
    a.send(new(1, B, 100, 5), new(2, B, 100, 5))
    b.send(new(2, B, 100, 5), new(1, B, 100, 5))
    assert sorted(a.rows()) == sorted(b.rows())
    assert a.book.state_hash() != b.book.state_hash()
    c = Exchange(book_cls)
    c.send(new(1, B, 100, 5), new(2, B, 100, 5))
    assert c.book.state_hash() == a.book.state_hash()
    assert a.book.state_hash() == hash_canonical(2, 0, a.book.canonical_rows(), a.book.stop_rows())
    a.send(mass_cancel(client=9))
    assert a.book.state_hash() != c.book.state_hash()


def test_snapshot_restore_continues_identically(book_cls):
    ex = Exchange(book_cls, capacity=8, tick_size=5, lot_size=2, min_price=5, max_price=500)
    ex.send(
        new(1, B, 100, 10, stp=STP_DECREMENT),
        new(2, B, 100, 4, client=2),
        new(3, S, 110, 6, flags=FLAG_POST_ONLY, stp=STP_CANCEL_BOTH),
        new(4, S, 100, 4, client=2),
        new(5, S, 100, 2),
    )
    data = ex.book.snapshot()
    assert isinstance(data, bytes)
    twin = Exchange(book_cls)
    twin.book = type(ex.book).restore(data)
    twin.seq = ex.seq
    twin.owner = dict(ex.owner)
    assert twin.book.config == ex.book.config
    assert twin.book.last_seq == ex.book.last_seq
    assert twin.book.state_hash() == ex.book.state_hash()
    assert twin.book.order(1) == ex.book.order(1)
    rest = [
        replace(1, 105, 6),
        new(6, S, 0, 20, client=2, ord_type=TYPE_MARKET),
        replace(3, 110, 2),
        new(7, B, 105, 100, client=3),
        *(new(8 + i, B, 50 + 5 * i, 2, client=3) for i in range(8)),
        mass_cancel(client=3),
    ]
    assert twin.send(*rest) == ex.send(*rest)
    assert twin.book.state_hash() == ex.book.state_hash()


def test_restore_refuses_garbage(book_cls):
    for data in (b"", b"not a snapshot", b"\x00" * 64):
        with pytest.raises(ValueError):
            book_cls.restore(data)


# ---------------------------------------------------------------- stops


def stops_book(book_cls):
    """Asks at 101 (5) and 102 (5) of client 9, bids at 99 (5) and 98 (5); last trade none."""
    ex = Exchange(book_cls)
    ex.send(
        new(1, S, 101, 5, client=9),
        new(2, S, 102, 5, client=9),
        new(3, B, 99, 5, client=9),
        new(4, B, 98, 5, client=9),
    )
    return ex


def test_a_stop_waits_off_the_book(book_cls):
    ex = stops_book(book_cls)
    rows = ex.rows()
    assert ex.send(stop(10, B, 3, 101), stop(11, S, 3, 99, price=98, tif=TIF_GTC)) == [
        ("accepted", 10, 0, 3),
        ("accepted", 11, 98, 3),
    ]
    assert ex.rows() == rows  # no DEPTH, not in the book
    assert ex.book.depth(5) == ([(99, 5, 1), (98, 5, 1)], [(101, 5, 1), (102, 5, 1)])
    assert ex.book.stop_rows().tolist() == [
        [B, 101, 10, 1, 3, 0, 0, TYPE_STOP, TIF_IOC, 0],
        [S, 99, 11, 1, 3, 98, 0, TYPE_STOP_LIMIT, TIF_GTC, 0],
    ]


def test_buy_stop_triggers_when_the_last_trade_reaches_it(book_cls):
    ex = stops_book(book_cls)
    ex.send(stop(10, B, 3, 102))
    # a trade at 101 does not reach 102
    assert ex.send(new(20, B, 101, 1, client=2)) == [
        ("accepted", 20, 101, 1),
        ("trade", 20, 1, 101, 1, 0, 4),
        ("depth", S, 101, 4, 1),
    ]
    assert ex.send(new(21, B, 102, 5, client=2)) == [
        ("accepted", 21, 102, 5),
        ("trade", 21, 1, 101, 4, 1, 0),
        ("trade", 21, 2, 102, 1, 0, 4),
        ("triggered", 10, 102, 3),
        ("trade", 10, 2, 102, 3, 0, 1),
        ("depth", S, 101, 0, 0),
        ("depth", S, 102, 1, 1),
    ]
    assert ex.book.stop_rows().tolist() == []
    assert ex.book.last_price == 102


def test_sell_stop_limit_triggers_and_rests_with_the_triggers_time(book_cls):
    ex = stops_book(book_cls)
    ex.send(stop(10, S, 8, 98, price=97, tif=TIF_GTC))
    assert ex.send(new(21, S, 98, 6, client=2)) == [
        ("accepted", 21, 98, 6),
        ("trade", 21, 3, 99, 5, 1, 0),
        ("trade", 21, 4, 98, 1, 0, 4),
        ("triggered", 10, 98, 8),
        ("trade", 10, 4, 98, 4, 4, 0),
        ("depth", B, 99, 0, 0),
        ("depth", B, 98, 0, 0),
        ("depth", S, 97, 4, 1),
    ]
    assert ex.rows() == [(S, 97, 10, 1, 8, 4), (S, 101, 1, 9, 5, 5), (S, 102, 2, 9, 5, 5)]
    # at the back of its level: an ask at 97 placed before the trigger stays ahead
    ex.send(new(22, B, 101, 9, client=2))  # clears 97 and 101, last 101
    ex.send(new(30, S, 97, 1, client=3), stop(11, S, 1, 98, price=97, tif=TIF_GTC))
    ex.send(new(31, B, 96, 1, client=4), new(32, S, 96, 1, client=5))  # last 96: 11 rests
    assert [r[2] for r in ex.rows() if r[1] == 97] == [30, 11]


def test_stop_reached_on_arrival_is_rejected(book_cls):
    ex = stops_book(book_cls)
    assert ex.send(stop(10, B, 1, 90)) == [("accepted", 10, 0, 1)]  # no trade yet: waits
    ex.send(cancel(10))
    ex.send(new(20, B, 101, 1, client=2))  # last trade 101
    assert ex.send(stop(11, B, 1, 101)) == rejected("trigger_already_reached", 11)
    assert ex.send(stop(12, S, 1, 101)) == rejected("trigger_already_reached", 12)
    assert ex.send(stop(13, B, 1, 200_000)) == rejected("trigger_invalid", 13)
    assert ex.send(stop(14, B, 1, 0)) == rejected("trigger_invalid", 14)
    assert ex.send(new(15, B, 90, 1, trigger=95)) == rejected("bad_command", 15)
    assert ex.send(stop(16, B, 1, 102) | dict(flags=FLAG_POST_ONLY)) == rejected("bad_command", 16)


def test_one_trade_triggers_several_stops_in_trigger_then_arrival_order(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 1, client=9), new(2, S, 105, 50, client=9))
    # arrival: 10 (trigger 100), 11 (99), 12 (100), 13 (99)
    ex.send(stop(10, B, 1, 100), stop(11, B, 1, 99), stop(12, B, 1, 100), stop(13, B, 1, 99))
    events = ex.send(new(20, B, 100, 1, client=2))
    assert [e for e in events if e[0] == "triggered"] == [
        ("triggered", 11, 99, 1),
        ("triggered", 13, 99, 1),
        ("triggered", 10, 100, 1),
        ("triggered", 12, 100, 1),
    ]
    assert [e[1] for e in events if e[0] == "trade"] == [20, 11, 13, 10, 12]


def test_sell_stops_trigger_highest_first(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, B, 100, 1, client=9), new(2, B, 95, 50, client=9))
    ex.send(stop(10, S, 1, 98), stop(11, S, 1, 100), stop(12, S, 1, 99))
    events = ex.send(new(20, S, 100, 1, client=2))
    assert [e[1] for e in events if e[0] == "triggered"] == [11, 12, 10]


def test_a_stop_triggers_another_through_its_trades(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 1, client=9), new(2, S, 103, 2, client=9), new(3, S, 106, 5, client=9))
    ex.send(stop(10, B, 2, 101), stop(11, B, 1, 103))
    assert ex.send(new(20, B, 100, 1, client=2)) == [
        ("accepted", 20, 100, 1),
        ("trade", 20, 1, 100, 1, 0, 0),
        # 100 reaches neither; nothing waits for 100 ... so nothing triggers
        ("depth", S, 100, 0, 0),
    ]
    ex.send(stop(12, B, 2, 100))  # rejected: reached (last 100)
    ex.send(new(4, S, 101, 1, client=9), new(21, B, 101, 1, client=2))  # last 101: 10 goes
    assert ex.book.stop_rows().tolist() == []
    assert ex.rows() == [(S, 106, 3, 9, 5, 4)]


def test_cascade_in_one_command(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 1, client=9), new(2, S, 102, 1, client=9), new(3, S, 104, 5, client=9))
    ex.send(stop(10, B, 1, 100), stop(11, B, 1, 102))
    assert ex.send(new(20, B, 100, 1, client=2)) == [
        ("accepted", 20, 100, 1),
        ("trade", 20, 1, 100, 1, 0, 0),
        ("triggered", 10, 100, 1),
        ("trade", 10, 2, 102, 1, 0, 0),  # last 102: reaches stop 11
        ("triggered", 11, 102, 1),
        ("trade", 11, 3, 104, 1, 0, 4),
        ("depth", S, 100, 0, 0),
        ("depth", S, 102, 0, 0),
        ("depth", S, 104, 4, 1),
    ]


def test_cancel_and_replace_of_a_waiting_stop(book_cls):
    ex = stops_book(book_cls)
    ex.send(new(20, B, 101, 1, client=2))  # last 101
    ex.send(stop(10, B, 2, 103), stop(11, B, 2, 103), stop(12, S, 2, 99, price=98, tif=TIF_GTC))
    # the same trigger and price, less qty: keeps its rank; a new trigger: to the back
    assert ex.send(replace(10, 0, 1, trigger=103)) == [("replaced", 10, 0, 1, 1)]
    assert ex.book.stop_rows()[:, 2].tolist() == [10, 11, 12]
    assert ex.send(replace(10, 0, 2, trigger=103)) == [("replaced", 10, 0, 2, 2)]
    assert ex.book.stop_rows()[:, 2].tolist() == [11, 10, 12]
    assert ex.send(replace(12, 97, 3, trigger=100)) == [("replaced", 12, 97, 3, 3)]
    assert ex.book.stop_rows()[:, 1].tolist() == [103, 103, 100]
    # rejects leave it untouched
    assert ex.send(replace(12, 97, 3, trigger=101)) == rejected("trigger_already_reached", 12)
    assert ex.send(replace(12, 97, 3)) == rejected("trigger_invalid", 12)
    assert ex.send(replace(12, 200_000, 3, trigger=100)) == rejected("price_outside_band", 12)
    assert ex.send(replace(12, 97, 3, trigger=100, client=2)) == rejected("order_not_found", 12)
    assert ex.send(replace(2, 102, 5, client=9, trigger=100)) == rejected("trigger_invalid", 2)
    assert ex.send(cancel(11)) == [("cancelled", "user", 11, 0, 2)]
    assert ex.send(mass_cancel()) == [
        ("cancelled", "user", 10, 0, 2),
        ("cancelled", "user", 12, 97, 3),
        ("mass_cancelled", 1, 2),
    ]
    assert ex.book.stop_rows().tolist() == []
    assert ex.send(cancel(12)) == rejected("order_not_found", 12)


def test_stp_applies_when_a_stop_triggers(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 1, client=9), new(2, S, 101, 3, client=1))
    ex.send(stop(10, B, 2, 100, stp=STP_CANCEL_NEWEST))
    assert ex.send(new(20, B, 100, 1, client=2)) == [
        ("accepted", 20, 100, 1),
        ("trade", 20, 1, 100, 1, 0, 0),
        ("triggered", 10, 100, 2),
        ("cancelled", "self_trade", 10, 0, 2),
        ("depth", S, 100, 0, 0),
    ]
    assert ex.rows() == [(S, 101, 2, 1, 3, 3)]


def test_market_stop_with_no_liquidity_is_cancelled(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 1, client=9), stop(10, B, 4, 100))
    assert ex.send(new(20, B, 100, 1, client=2)) == [
        ("accepted", 20, 100, 1),
        ("trade", 20, 1, 100, 1, 0, 0),
        ("triggered", 10, 100, 4),
        ("cancelled", "ioc_remainder", 10, 0, 4),
        ("depth", S, 100, 0, 0),
    ]


def test_a_stop_takes_a_slot_while_it_waits(book_cls):
    ex = Exchange(book_cls, capacity=2)
    ex.send(new(1, S, 100, 1, client=9), stop(10, B, 1, 100))
    assert ex.send(stop(11, B, 1, 101)) == rejected("book_full", 11)
    assert ex.send(new(12, B, 90, 1)) == rejected("book_full", 12)


def test_stops_survive_snapshot_and_restore(book_cls):
    ex = stops_book(book_cls)
    ex.send(new(20, B, 101, 1, client=2))
    ex.send(stop(10, B, 2, 102), stop(11, S, 2, 98, price=97, tif=TIF_GTC))
    again = type(ex.book).restore(ex.book.snapshot())
    assert again.state_hash() == ex.book.state_hash()
    assert again.stop_rows().tolist() == ex.book.stop_rows().tolist()
    assert again.last_price == ex.book.last_price == 101
    ex.book = again
    assert [e[1] for e in ex.send(new(21, B, 102, 5, client=2)) if e[0] == "triggered"] == [10]


# ---------------------------------------------------------------- icebergs


def iceberg(oid, side, price, qty, display, client=1, **fields):
    return new(oid, side, price, qty, client, display=display, **fields)


def test_an_iceberg_shows_only_its_display(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(iceberg(1, S, 101, 20, 5, client=9)) == [
        ("accepted", 1, 101, 20),
        ("depth", S, 101, 5, 1),
    ]
    assert ex.send(new(2, S, 101, 3, client=8)) == [
        ("accepted", 2, 101, 3),
        ("depth", S, 101, 8, 2),
    ]
    assert ex.book.top() == (0, 0, 101, 8)
    assert ex.book.depth(5) == ([], [(101, 8, 2)])
    assert ex.rows() == [(S, 101, 1, 9, 20, 20), (S, 101, 2, 8, 3, 3)]
    assert ex.shown() == [(1, 20, 5, 5), (2, 3, 0, 3)]
    assert ex.book.order(1) == dict(
        order_id=1,
        client=9,
        side=S,
        price=101,
        qty=20,
        leaves=20,
        stp=0,
        flags=0,
        display=5,
        shown=5,
        tif=TIF_GTC,
        expires=0,
    )


@pytest.mark.parametrize(
    "fields, reason",
    [
        (dict(display=-1), "display_invalid"),
        (dict(display=11), "display_invalid"),  # above qty
        (dict(display=3), "display_invalid"),  # off the lot of 2
        (dict(display=2, tif=TIF_IOC), "display_invalid"),
        (dict(display=2, tif=TIF_FOK), "display_invalid"),
        (dict(display=2, ord_type=TYPE_MARKET, tif=TIF_IOC), "display_invalid"),
        (dict(display=2, ord_type=TYPE_STOP_LIMIT, trigger_tick=50), "display_invalid"),
        (dict(display=2, ord_type=TYPE_STOP, tif=TIF_IOC, trigger_tick=100_000), "display_invalid"),
        # what is checked before the display
        (dict(display=3, qty=0), "qty_not_positive"),
        (dict(display=3, qty=9), "qty_off_lot"),
        (dict(display=3, price=101), "price_off_tick"),
        (dict(display=3, price=1000), "price_outside_band"),
        (dict(display=3, side=5), "bad_command"),
    ],
)
def test_an_invalid_display_is_rejected(book_cls, fields, reason):
    ex = Exchange(book_cls, lot_size=2, tick_size=2, min_price=2, max_price=400)
    assert ex.send(new(1, B, 100, 10) | fields) == rejected(reason, 1)
    assert ex.rows() == []


def test_a_display_of_the_whole_qty_is_an_iceberg_that_shows_all_of_itself(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(iceberg(1, S, 101, 4, 4, client=9), new(2, S, 101, 1, client=9)) == [
        ("accepted", 1, 101, 4),
        ("depth", S, 101, 4, 1),
        ("accepted", 2, 101, 1),
        ("depth", S, 101, 5, 2),
    ]
    assert ex.send(new(3, B, 101, 3)) == [
        ("accepted", 3, 101, 3),
        ("trade", 3, 1, 101, 3, 0, 1),
        ("depth", S, 101, 2, 2),
    ]
    assert ex.shown() == [(1, 1, 4, 1), (2, 1, 0, 1)]  # no reserve: no refill, keeps its place


def test_an_arriving_iceberg_takes_with_its_whole_qty_then_shows_its_display(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=9), new(2, S, 101, 5, client=9))
    assert ex.send(iceberg(3, B, 100, 12, 2)) == [
        ("accepted", 3, 100, 12),
        ("trade", 3, 1, 100, 5, 7, 0),
        ("depth", S, 100, 0, 0),
        ("depth", B, 100, 2, 1),
    ]
    assert ex.shown() == [(3, 7, 2, 2), (2, 5, 0, 5)]


def test_the_shown_part_filled_refills_to_the_back_of_its_level(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 4, client=9), new(2, S, 101, 3, client=8))
    # the refill is no event of its own: the level's DEPTH (total 3 + 4 again) says it
    assert ex.send(new(3, B, 101, 4)) == [
        ("accepted", 3, 101, 4),
        ("trade", 3, 1, 101, 4, 0, 6),
        ("depth", S, 101, 7, 2),
    ]
    assert ex.shown() == [(2, 3, 0, 3), (1, 6, 4, 4)]  # behind order 2 now
    assert ex.send(new(4, B, 101, 3)) == [
        ("accepted", 4, 101, 3),
        ("trade", 4, 2, 101, 3, 0, 0),
        ("depth", S, 101, 4, 1),
    ]


def test_a_refill_that_puts_the_total_back_still_reports_the_level(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 8, 4, client=9))
    assert ex.send(new(2, B, 101, 4)) == [
        ("accepted", 2, 101, 4),
        ("trade", 2, 1, 101, 4, 0, 4),
        ("depth", S, 101, 4, 1),
    ]
    assert ex.shown() == [(1, 4, 4, 4)]


def test_an_aggressor_meets_the_refilled_part_again_after_the_others(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        iceberg(1, S, 101, 10, 4, client=9),
        new(2, S, 101, 3, client=8),
        iceberg(3, S, 101, 5, 2, client=7),
        new(4, S, 102, 5, client=9),
    )
    assert ex.send(new(5, B, 101, 14)) == [
        ("accepted", 5, 101, 14),
        ("trade", 5, 1, 101, 4, 10, 6),  # 1 refills 4, to the back: 2, 3, 1
        ("trade", 5, 2, 101, 3, 7, 0),
        ("trade", 5, 3, 101, 2, 5, 3),  # 3 refills 2: 1, 3
        ("trade", 5, 1, 101, 4, 1, 2),  # 1 refills its last 2: 3, 1
        ("trade", 5, 3, 101, 1, 0, 2),  # 3 still shows 1 of its 2 and keeps its place
        ("depth", S, 101, 3, 2),
    ]
    assert ex.shown() == [(3, 2, 2, 1), (1, 2, 4, 2), (4, 5, 0, 5)]


def test_an_aggressor_that_crosses_a_level_takes_all_of_it_reserves_included(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 7, 3, client=9), new(2, S, 102, 5, client=9))
    assert ex.send(new(3, B, 102, 9, tif=TIF_IOC)) == [
        ("accepted", 3, 102, 9),
        ("trade", 3, 1, 101, 3, 6, 4),
        ("trade", 3, 1, 101, 3, 3, 1),
        ("trade", 3, 1, 101, 1, 2, 0),
        ("trade", 3, 2, 102, 2, 0, 3),
        ("depth", S, 101, 0, 0),
        ("depth", S, 102, 3, 1),
    ]


def test_a_market_order_takes_reserves_and_an_ioc_remainder_is_cancelled(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, B, 99, 5, 2, client=9))
    assert ex.send(new(2, S, 0, 6, ord_type=TYPE_MARKET, tif=TIF_IOC)) == [
        ("accepted", 2, 0, 6),
        ("trade", 2, 1, 99, 2, 4, 3),
        ("trade", 2, 1, 99, 2, 2, 1),
        ("trade", 2, 1, 99, 1, 1, 0),
        ("cancelled", "ioc_remainder", 2, 0, 1),
        ("depth", B, 99, 0, 0),
    ]


def test_fok_counts_the_reserves_of_the_levels_it_would_take_whole(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 20, 2, client=9), new(2, S, 102, 1, client=9))
    assert ex.send(new(3, B, 102, 22, tif=TIF_FOK)) == [
        ("accepted", 3, 102, 22),
        ("cancelled", "fok_unfilled", 3, 102, 22),
    ]
    events = ex.send(new(4, B, 102, 21, tif=TIF_FOK))
    assert [e for e in events if e[0] == "trade"][-2:] == [
        ("trade", 4, 1, 101, 2, 1, 0),
        ("trade", 4, 2, 102, 1, 0, 0),
    ]
    assert len(events) == 1 + 11 + 2 and ex.rows() == []


def test_fok_stops_at_an_own_order_with_the_shown_parts_ahead_of_it(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        iceberg(1, S, 101, 20, 2, client=9),
        new(2, S, 101, 1, client=8),
        new(3, S, 101, 5, client=1),  # the aggressor's own
        new(4, S, 101, 5, client=8),
    )
    # ahead of order 3: 1 shows 2, 2 shows 1; a refill of 1 goes behind 3
    fok = dict(tif=TIF_FOK, stp=STP_CANCEL_NEWEST)
    assert ex.send(new(5, B, 101, 4, **fok)) == [
        ("accepted", 5, 101, 4),
        ("cancelled", "fok_unfilled", 5, 101, 4),
    ]
    assert ex.send(new(6, B, 101, 3, **fok)) == [
        ("accepted", 6, 101, 3),
        ("trade", 6, 1, 101, 2, 1, 18),
        ("trade", 6, 2, 101, 1, 0, 0),
        ("depth", S, 101, 12, 3),
    ]
    # with STP_NONE the level is taken whole: 18 + 5 + 5
    assert ex.send(new(7, B, 101, 29, tif=TIF_FOK, stp=STP_NONE))[1] == (
        "cancelled",
        "fok_unfilled",
        7,
        101,
        29,
    )
    events = ex.send(new(8, B, 101, 28, tif=TIF_FOK, stp=STP_NONE))
    assert events[-1] == ("depth", S, 101, 0, 0) and ex.rows() == []


def test_stp_cancel_oldest_cancels_an_iceberg_whole(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 2), new(2, S, 101, 3, client=9))
    assert ex.send(new(3, B, 101, 3, stp=STP_CANCEL_OLDEST)) == [
        ("accepted", 3, 101, 3),
        ("cancelled", "self_trade", 1, 101, 10),
        ("trade", 3, 2, 101, 3, 0, 0),
        ("depth", S, 101, 0, 0),
    ]


def test_stp_cancel_both_and_newest_against_an_iceberg(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 2))
    assert ex.send(new(2, B, 101, 3, stp=STP_CANCEL_NEWEST)) == [
        ("accepted", 2, 101, 3),
        ("cancelled", "self_trade", 2, 101, 3),
    ]
    assert ex.shown() == [(1, 10, 2, 2)]
    assert ex.send(new(3, B, 101, 3, stp=STP_CANCEL_BOTH)) == [
        ("accepted", 3, 101, 3),
        ("cancelled", "self_trade", 1, 101, 10),
        ("cancelled", "self_trade", 3, 101, 3),
        ("depth", S, 101, 0, 0),
    ]


def test_stp_decrement_takes_the_shown_part_and_an_emptied_iceberg_refills(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 3), new(2, S, 101, 4, client=9))
    assert ex.send(new(3, B, 101, 5, stp=STP_DECREMENT)) == [
        ("accepted", 3, 101, 5),
        ("cancelled", "self_trade", 1, 101, 3, 7),  # its shown 3: refills 3, to the back
        ("cancelled", "self_trade", 3, 101, 3, 2),
        ("trade", 3, 2, 101, 2, 0, 2),
        ("depth", S, 101, 5, 2),
    ]
    assert ex.shown() == [(2, 2, 0, 2), (1, 7, 3, 3)]
    assert [r[4] for r in ex.rows()] == [4, 7]  # its qty is 7 now: a decrement is no fill
    assert ex.send(new(4, B, 101, 1, stp=STP_DECREMENT, client=9)) == [
        ("accepted", 4, 101, 1),
        ("cancelled", "self_trade", 2, 101, 1, 1),
        ("cancelled", "self_trade", 4, 101, 1),
        ("depth", S, 101, 4, 2),
    ]


def test_cancel_and_mass_cancel_take_an_iceberg_whole(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 2), iceberg(2, B, 99, 8, 4), new(3, S, 101, 1, client=9))
    assert ex.send(cancel(1)) == [("cancelled", "user", 1, 101, 10), ("depth", S, 101, 1, 1)]
    ex.send(iceberg(4, S, 102, 6, 2))
    assert ex.send(mass_cancel()) == [
        ("cancelled", "user", 2, 99, 8),
        ("cancelled", "user", 4, 102, 6),
        ("mass_cancelled", 1, 2),
        ("depth", B, 99, 0, 0),
        ("depth", S, 102, 0, 0),
    ]
    assert ex.shown() == [(3, 1, 0, 1)]


def test_replace_of_an_iceberg_cuts_its_reserve_first_and_keeps_its_place(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 4), new(2, S, 101, 1, client=9))
    # 10 -> 6: the reserve (6) gives 4; nothing shown changes: no DEPTH
    assert ex.send(replace(1, 101, 6)) == [("replaced", 1, 101, 6, 6)]
    assert ex.shown() == [(1, 6, 4, 4), (2, 1, 0, 1)]
    # the same display, restated: unchanged
    assert ex.send(replace(1, 101, 5, display=4)) == [("replaced", 1, 101, 5, 5)]
    # 5 -> 3: below what it shows
    assert ex.send(replace(1, 101, 3)) == [("replaced", 1, 101, 3, 3), ("depth", S, 101, 4, 2)]
    assert ex.shown() == [(1, 3, 4, 3), (2, 1, 0, 1)]


def test_replace_that_grows_an_iceberg_or_changes_its_display_loses_its_place(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 10, 4), new(2, S, 101, 1, client=9))
    ex.send(new(3, B, 101, 1, client=9))  # 1 shows 3 of 9
    assert ex.send(replace(1, 101, 12)) == [("replaced", 1, 101, 12, 11), ("depth", S, 101, 5, 2)]
    assert ex.shown() == [(2, 1, 0, 1), (1, 11, 4, 4)]  # shows its display again, behind 2
    ex.send(cancel(2, client=9), new(4, S, 101, 1, client=9))
    assert ex.send(replace(1, 101, 12, display=2)) == [
        ("replaced", 1, 101, 12, 11),
        ("depth", S, 101, 3, 2),
    ]
    assert ex.shown() == [(4, 1, 0, 1), (1, 11, 2, 2)]
    # an ordinary order becomes an iceberg, at the back too
    ex.send(new(5, S, 101, 6, client=9))
    assert ex.send(replace(4, 101, 1, client=9, display=1)) == [
        ("replaced", 4, 101, 1, 1),
        ("depth", S, 101, 9, 3),
    ]
    assert [r[0] for r in ex.shown()] == [1, 5, 4]
    assert ex.send(replace(5, 101, 6, client=9, display=2)) == [
        ("replaced", 5, 101, 6, 6),
        ("depth", S, 101, 5, 3),
    ]
    assert ex.shown() == [(1, 11, 2, 2), (4, 1, 1, 1), (5, 6, 2, 2)]


def test_replace_of_an_iceberg_to_a_new_price_aggresses_whole_then_shows_its_display(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 103, 10, 2), new(2, B, 101, 3, client=9))
    assert ex.send(replace(1, 101, 10)) == [
        ("replaced", 1, 101, 10, 10),
        ("trade", 1, 2, 101, 3, 7, 0),
        ("depth", S, 103, 0, 0),
        ("depth", B, 101, 0, 0),
        ("depth", S, 101, 2, 1),
    ]
    assert ex.shown() == [(1, 7, 2, 2)]


def test_replace_with_an_invalid_display_is_rejected(book_cls):
    ex = Exchange(book_cls, lot_size=2)
    ex.send(iceberg(1, S, 101, 10, 4), stop(2, B, 2, 105))
    for display, qty in ((-2, 10), (3, 10), (12, 10)):
        assert ex.send(replace(1, 101, qty, display=display)) == rejected("display_invalid", 1)
    assert ex.send(replace(2, 0, 2, display=2, trigger=105)) == rejected("display_invalid", 2)
    assert ex.send(replace(1, 101, 0, display=2)) == rejected("qty_not_positive", 1)
    assert ex.shown() == [(1, 10, 4, 4)]
    # a replace below what has traded still cancels it, whatever its display
    ex.send(new(3, B, 101, 4, client=9))
    assert ex.send(replace(1, 101, 4, display=2)) == [
        ("cancelled", "replaced_to_zero", 1, 101, 6),
        ("depth", S, 101, 0, 0),
    ]


def test_icebergs_in_the_state_hash_and_snapshots(book_cls):
    a, b = Exchange(book_cls), Exchange(book_cls)
    a.send(iceberg(1, S, 101, 10, 4))
    b.send(iceberg(1, S, 101, 10, 5))
    assert a.rows() == b.rows() and a.book.state_hash() != b.book.state_hash()
    a.send(new(2, S, 101, 3, client=9), new(3, B, 101, 2, client=8))  # 1 shows 2 of 8
    again = type(a.book).restore(a.book.snapshot())
    assert again.state_hash() == a.book.state_hash()
    assert again.canonical_rows().tolist() == a.book.canonical_rows().tolist()
    b.book, b.seq, b.owner = again, a.seq, dict(a.owner)
    rest = [new(4, B, 101, 12, client=8), replace(1, 101, 4), new(5, B, 101, 1, client=8)]
    assert b.send(*rest) == a.send(*rest)
    assert b.book.state_hash() == a.book.state_hash()


def test_a_small_display_makes_many_trades_in_one_command(book_cls):
    ex = Exchange(book_cls, max_qty=10_000)
    ex.send(iceberg(1, S, 101, 3000, 1, client=9), iceberg(2, S, 101, 3000, 1, client=8))
    events = ex.send(new(3, B, 101, 5000))
    trades = [e for e in events if e[0] == "trade"]
    assert len(trades) == 5000
    assert [t[2] for t in trades[:4]] == [1, 2, 1, 2]  # they take turns
    assert events[-1] == ("depth", S, 101, 2, 2)
    assert ex.shown() == [(1, 500, 1, 1), (2, 500, 1, 1)]


def test_a_stop_triggered_by_a_trade_with_an_iceberg_meets_its_refill(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 9, 3, client=9), stop(2, B, 4, 101))
    assert ex.send(new(3, B, 101, 2, client=8)) == [
        ("accepted", 3, 101, 2),
        ("trade", 3, 1, 101, 2, 0, 7),
        ("triggered", 2, 101, 4),
        ("trade", 2, 1, 101, 1, 3, 6),  # 1 showed 1 more; refills 3
        ("trade", 2, 1, 101, 3, 0, 3),
        ("depth", S, 101, 3, 1),
    ]


# ---------------------------------------------------------------- expiries (GTD, DAY)

T = 1_800_000_000 * 10**9  # a time, ns since the epoch
SEC = 10**9


def gtd(oid, side, price, qty, expires, client=1, **fields):
    return new(
        oid, side, price, qty, client, tif=fields.pop("tif", TIF_GTD), expires=expires, **fields
    )


def expire(ts):
    return dict(kind=CMD_EXPIRE, expires=ts)


def expiries(ex) -> list[tuple]:
    """Resting orders in book order as (order_id, tif, expires)."""
    return [(r[2], r[10], r[11]) for r in ex.book.canonical_rows().tolist()]


def test_a_gtd_order_rests_with_its_expiry_and_a_day_order_is_one_with_its_tif(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(gtd(1, B, 99, 5, T + SEC), gtd(2, S, 101, 5, T + 2 * SEC, tif=TIF_DAY)) == [
        ("accepted", 1, 99, 5),
        ("depth", B, 99, 5, 1),
        ("accepted", 2, 101, 5),
        ("depth", S, 101, 5, 1),
    ]
    assert expiries(ex) == [(1, TIF_GTD, T + SEC), (2, TIF_DAY, T + 2 * SEC)]
    assert ex.book.order(2)["tif"] == TIF_DAY and ex.book.order(2)["expires"] == T + 2 * SEC
    assert ex.book.now == 0
    # an expiry trades like any order
    assert ex.send(new(3, B, 101, 2, client=9))[1] == ("trade", 3, 2, 101, 2, 0, 3)


@pytest.mark.parametrize(
    "spec",
    [
        gtd(9, B, 100, 5, 0),  # GTD without an expiry
        gtd(9, B, 100, 5, 0, tif=TIF_DAY),
        gtd(9, B, 100, 5, -1),
        new(9, B, 100, 5, expires=T),  # GTC with one
        new(9, B, 100, 5, tif=TIF_IOC, expires=T),
        new(9, B, 100, 5, tif=TIF_FOK, expires=T),
        new(9, B, 0, 5, ord_type=TYPE_MARKET, tif=TIF_IOC, expires=T),
        gtd(9, B, 0, 5, T, ord_type=TYPE_MARKET),  # a market order never rests
        stop(9, B, 5, 101, expires=T),  # an IOC stop with one
    ],
)
def test_an_expiry_that_does_not_fit_the_order_is_rejected(book_cls, spec):
    ex = Exchange(book_cls)
    assert ex.send(spec) == rejected("expiry_invalid", 9)
    assert ex.rows() == [] and ex.book.stop_rows().tolist() == []


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        # each command fails two checks: the first in the spec's order wins
        (gtd(9, B, 100, 5, 0, display=7), "display_invalid"),
        (stop(9, B, 5, 2001, tif=TIF_GTD), "trigger_invalid"),
        (gtd(1, B, 100, 5, 0), "expiry_invalid"),
        (gtd(1, B, 100, 5, T - SEC), "duplicate_order_id"),
        (gtd(9, B, 110, 5, T - SEC, flags=FLAG_POST_ONLY), "post_only_would_take"),
        (stop(9, B, 5, 100, tif=TIF_GTD, expires=T - SEC), "trigger_already_reached"),
        (gtd(9, B, 90, 5, T), "expiry_passed"),
        (gtd(9, B, 90, 5, T + SEC), "book_full"),
    ],
)
def test_expiry_validation_order(book_cls, spec, reason):
    ex = Exchange(book_cls, min_price=10, max_price=2000, capacity=3)
    ex.send(new(1, S, 110, 5, client=2), new(2, B, 100, 1, client=3), new(3, S, 100, 1, client=2))
    ex.send(new(4, S, 120, 5, client=2), new(5, S, 130, 5, client=2), expire(T))
    assert len(ex.rows()) == 3 and ex.book.now == T and ex.book.last_price == 100
    before = ex.rows()
    assert ex.send(spec) == rejected(reason, spec["order_id"])
    assert ex.rows() == before


def test_expire_moves_now_and_an_expiry_at_or_before_it_is_refused(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(expire(T)) == [("expired", 0, T)]
    assert ex.book.now == T
    assert ex.send(gtd(1, B, 99, 5, T)) == rejected("expiry_passed", 1)
    assert ex.send(gtd(2, B, 99, 5, T - 1, tif=TIF_DAY)) == rejected("expiry_passed", 2)
    assert ex.send(gtd(3, B, 99, 5, T + 1))[0] == ("accepted", 3, 99, 5)
    # a late EXPIRE does not move now back
    assert ex.send(expire(T - SEC)) == [("expired", 0, T)]
    assert ex.book.now == T
    assert ex.send(gtd(4, B, 99, 5, T)) == rejected("expiry_passed", 4)


def test_an_expire_with_no_time_is_a_bad_command(book_cls):
    ex = Exchange(book_cls)
    ex.send(gtd(1, B, 99, 5, T))
    for ts in (0, -5):
        assert ex.send(expire(ts)) == [("rejected", "bad_command", 0)]
    assert ex.book.now == 0 and ex.ids() == [1]


def test_expire_cancels_the_orders_due_in_the_written_order(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(30, S, 100, 1, client=9), new(31, B, 100, 1, client=8))  # last price 100
    ex.send(
        gtd(1, B, 98, 1, T + 3),
        gtd(2, B, 99, 2, T + 1, client=2),
        new(3, B, 99, 3),  # GTC: stays
        gtd(4, B, 99, 4, T + 2),
        gtd(5, S, 102, 5, T + 1),
        gtd(6, S, 101, 6, T + 9, client=2),  # not due
        gtd(7, S, 101, 7, T + 2, tif=TIF_DAY),
        stop(8, S, 1, 97, price=96, tif=TIF_GTD, expires=T + 1),
        stop(9, B, 1, 103, tif=TIF_GTD, expires=T + 1),
        stop(10, S, 1, 98, tif=TIF_GTD, expires=T + 3, client=2),
        stop(11, B, 1, 102, price=104, tif=TIF_GTD, expires=T + 3),
    )
    # bids best level first, each in queue order, then asks, then stops in trigger order
    assert ex.send(expire(T + 3)) == [
        ("cancelled", "expired", 2, 99, 2),
        ("cancelled", "expired", 4, 99, 4),
        ("cancelled", "expired", 1, 98, 1),
        ("cancelled", "expired", 7, 101, 7),
        ("cancelled", "expired", 5, 102, 5),
        ("cancelled", "expired", 11, 104, 1),
        ("cancelled", "expired", 9, 0, 1),
        ("cancelled", "expired", 10, 0, 1),
        ("cancelled", "expired", 8, 96, 1),
        ("expired", 9, T + 3),
        ("depth", B, 99, 3, 1),
        ("depth", B, 98, 0, 0),
        ("depth", S, 101, 6, 1),
        ("depth", S, 102, 0, 0),
    ]
    assert ex.ids() == [3, 6] and ex.book.stop_rows().tolist() == []
    assert ex.send(expire(T + 9)) == [
        ("cancelled", "expired", 6, 101, 6),
        ("expired", 1, T + 9),
        ("depth", S, 101, 0, 0),
    ]


def test_an_iceberg_expires_whole(book_cls):
    ex = Exchange(book_cls)
    ex.send(iceberg(1, S, 101, 20, 5, tif=TIF_GTD, expires=T), new(2, B, 101, 3, client=9))
    assert ex.send(expire(T)) == [
        ("cancelled", "expired", 1, 101, 17),
        ("expired", 1, T),
        ("depth", S, 101, 0, 0),
    ]


def test_a_replace_keeps_the_expiry_and_cannot_set_one(book_cls):
    ex = Exchange(book_cls)
    ex.send(gtd(1, B, 99, 5, T + 1), gtd(2, B, 99, 5, T + 2, client=2))
    ex.send(stop(3, B, 2, 105, price=106, tif=TIF_GTD, expires=T + 1))
    assert ex.send(replace(1, 99, 4, expires=T + 5)) == rejected("expiry_invalid", 1)
    assert ex.send(replace(3, 106, 2, trigger=105, expires=T + 5)) == rejected("expiry_invalid", 3)
    ex.send(replace(1, 99, 3))  # keeps its place
    ex.send(replace(2, 98, 6, client=2))  # loses it
    ex.send(replace(3, 107, 2, trigger=104))
    assert expiries(ex) == [(1, TIF_GTD, T + 1), (2, TIF_GTD, T + 2)]
    assert ex.send(expire(T + 1))[:3] == [
        ("cancelled", "expired", 1, 99, 3),
        ("cancelled", "expired", 3, 107, 2),
        ("expired", 2, T + 1),
    ]
    assert ex.ids() == [2]


def test_a_gtd_stop_limit_keeps_its_expiry_when_it_triggers_and_rests(book_cls):
    ex = Exchange(book_cls)
    ex.send(stop(1, B, 4, 101, price=101, tif=TIF_GTD, expires=T + 5))
    ex.send(new(2, S, 101, 1, client=9), new(3, B, 101, 1, client=8))  # trade at 101
    assert expiries(ex) == [(1, TIF_GTD, T + 5)]
    assert ex.send(expire(T + 4)) == [("expired", 0, T + 4)]
    assert ex.send(expire(T + 5)) == [
        ("cancelled", "expired", 1, 101, 4),
        ("expired", 1, T + 5),
        ("depth", B, 101, 0, 0),
    ]


def test_an_expire_trades_nothing_and_triggers_no_stop(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 101, 1, client=9), new(2, B, 101, 1, client=8))  # last price 101
    ex.send(stop(3, B, 1, 102), new(4, S, 103, 1, client=9))
    ex.send(gtd(5, S, 102, 1, T, client=9))
    assert ex.send(expire(T)) == [
        ("cancelled", "expired", 5, 102, 1),
        ("expired", 1, T),
        ("depth", S, 102, 0, 0),
    ]
    assert [r[2] for r in ex.book.stop_rows().tolist()] == [3]


def test_now_and_expiries_are_in_the_state_hash_and_snapshots(book_cls):
    a, b = Exchange(book_cls), Exchange(book_cls)
    a.send(gtd(1, B, 99, 5, T + 2))
    b.send(gtd(1, B, 99, 5, T + 3))
    assert a.rows() == b.rows() and a.book.state_hash() != b.book.state_hash()
    c, d = Exchange(book_cls), Exchange(book_cls)
    c.send(expire(T))
    d.send(expire(T + 1))
    assert c.book.state_hash() != d.book.state_hash()
    a.send(expire(T + 1), stop(2, S, 1, 90, tif=TIF_DAY, expires=T + 2))
    again = type(a.book).restore(a.book.snapshot())
    assert again.state_hash() == a.book.state_hash() and again.now == T + 1
    b.book, b.seq, b.owner = again, a.seq, dict(a.owner)
    rest = [gtd(3, B, 98, 1, T + 1), expire(T + 2)]
    assert (
        b.send(*rest)
        == a.send(*rest)
        == [
            ("rejected", "expiry_passed", 3),
            ("cancelled", "expired", 1, 99, 5),
            ("cancelled", "expired", 2, 0, 1),
            ("expired", 2, T + 2),
            ("depth", B, 99, 0, 0),
        ]
    )
    assert b.book.state_hash() == a.book.state_hash()


def test_next_expiry_is_a_bound_the_books_keep(book_cls):
    ex = Exchange(book_cls)
    assert ex.book.next_expiry() is None
    ex.send(gtd(1, B, 99, 5, T + 5), gtd(2, B, 98, 5, T + 2))
    assert ex.book.next_expiry() == T + 2
    ex.send(expire(T + 3))
    assert ex.book.next_expiry() == T + 5
    ex.send(expire(T + 5))
    assert ex.book.next_expiry() is None


# ---------------------------------------------------------------- halts and the auction

HALT = dict(kind=CMD_HALT)
RESUME = dict(kind=CMD_RESUME)


def test_a_halt_and_a_resume_answer_their_state(book_cls):
    ex = Exchange(book_cls)
    assert ex.send(HALT) == [("state", "halted", 0, 0)]
    assert ex.book.halted
    assert ex.send(HALT) == [("state", "halted", 0, 0)]  # a halted book stays so
    assert ex.send(RESUME) == [("state", "continuous", 0, 0)]
    assert not ex.book.halted
    assert ex.send(RESUME) == [("state", "continuous", 0, 0)]


def test_a_halted_book_refuses_what_could_only_trade_now(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=2), HALT)
    for oid, spec in enumerate(
        [
            dict(ord_type=TYPE_MARKET, tif=TIF_IOC),
            dict(tif=TIF_IOC),
            dict(tif=TIF_FOK),
        ],
        start=10,
    ):
        assert ex.send(new(oid, B, 100, 5, **spec)) == rejected("instrument_halted", oid)
    # the checks before it still come first
    assert ex.send(new(20, B, 100, 0, tif=TIF_IOC)) == rejected("qty_not_positive", 20)
    assert ex.send(new(1, B, 100, 5, tif=TIF_IOC)) == rejected("duplicate_order_id", 1)
    assert ex.ids() == [1]


def test_a_halted_book_collects_resting_orders_without_matching(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=2), HALT)
    assert ex.send(new(2, B, 101, 3)) == [("accepted", 2, 101, 3), ("depth", B, 101, 3, 1)]
    assert ex.send(iceberg(3, B, 102, 10, 2, tif=TIF_GTD, expires=T)) == [
        ("accepted", 3, 102, 10),
        ("depth", B, 102, 2, 1),
    ]
    assert ex.rows() == [(B, 102, 3, 1, 10, 10), (B, 101, 2, 1, 3, 3), (S, 100, 1, 2, 5, 5)]
    assert ex.book.top() == (102, 2, 100, 5)  # crossed while halted
    # post-only is checked as usual: it would cross
    assert ex.send(new(4, B, 100, 1, flags=FLAG_POST_ONLY)) == rejected("post_only_would_take", 4)


def test_while_halted_cancels_mass_cancels_expiries_and_stops_work(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=2), new(2, B, 100, 1, client=3))  # last price 100
    ex.send(HALT)
    assert ex.send(stop(3, B, 2, 105)) == [("accepted", 3, 0, 2)]
    assert ex.send(stop(4, B, 2, 100)) == rejected("trigger_already_reached", 4)
    ex.send(new(5, B, 101, 2), gtd(6, B, 99, 1, T + 1, client=3))
    assert ex.send(cancel(5)) == [("cancelled", "user", 5, 101, 2), ("depth", B, 101, 0, 0)]
    assert ex.send(expire(T + 1)) == [
        ("cancelled", "expired", 6, 99, 1),
        ("expired", 1, T + 1),
        ("depth", B, 99, 0, 0),
    ]
    assert ex.send(mass_cancel(1)) == [("cancelled", "user", 3, 0, 2), ("mass_cancelled", 1, 1)]
    assert ex.ids() == [1] and ex.book.halted


def test_a_replace_while_halted_rests_at_its_new_price_without_matching(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(1, S, 100, 5, client=2), new(2, B, 98, 4), new(3, B, 98, 4, client=3), HALT)
    assert ex.send(replace(2, 101, 6)) == [
        ("replaced", 2, 101, 6, 6),
        ("depth", B, 98, 4, 1),
        ("depth", B, 101, 6, 1),
    ]
    assert ex.send(replace(3, 98, 2, client=3)) == [
        ("replaced", 3, 98, 2, 2),
        ("depth", B, 98, 2, 1),
    ]
    assert ex.rows() == [(B, 101, 2, 1, 6, 6), (B, 98, 3, 3, 2, 2), (S, 100, 1, 2, 5, 5)]


def _crossed(ex):
    """Bids 10@103, 5@102, 10@100 and asks 5@99, 10@101, 10@104, gathered while halted."""
    ex.send(HALT)
    ex.send(
        new(1, B, 103, 10),
        new(2, B, 102, 5, client=2),
        new(3, B, 100, 10, client=3),
        new(4, S, 99, 5, client=4),
        new(5, S, 101, 10, client=5),
        new(6, S, 104, 10, client=6),
    )


def test_the_auction_uncrosses_at_the_price_of_greatest_quantity(book_cls):
    # executable: 5 at 99 and 100, 15 at 101 and 102 (no surplus), 10 at 103: the lowest
    # of 101 and 102 (no trade before it); the heads meet best first, all at 101
    ex = Exchange(book_cls)
    _crossed(ex)
    assert ex.send(RESUME) == [
        ("auction", 1, 4, 101, 5, 5, 0),
        ("auction", 1, 5, 101, 5, 0, 5),
        ("auction", 2, 5, 101, 5, 0, 0),
        ("state", "continuous", 101, 15),
        ("depth", B, 103, 0, 0),
        ("depth", S, 99, 0, 0),
        ("depth", S, 101, 0, 0),
        ("depth", B, 102, 0, 0),
    ]
    assert ex.rows() == [(B, 100, 3, 3, 10, 10), (S, 104, 6, 6, 10, 10)]
    assert ex.book.last_price == 101 and not ex.book.halted


def test_the_auction_tie_goes_to_the_price_nearest_the_last_trade(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(90, S, 110, 1, client=9), new(91, B, 110, 1, client=8))  # last price 110
    _crossed(ex)
    assert [e for e in ex.send(RESUME) if e[0] != "depth"] == [
        ("auction", 1, 4, 102, 5, 5, 0),
        ("auction", 1, 5, 102, 5, 0, 5),
        ("auction", 2, 5, 102, 5, 0, 0),
        ("state", "continuous", 102, 15),
    ]


def test_the_auction_tie_goes_to_the_least_surplus_before_the_lowest_price(book_cls):
    # 5 executable at 100 (8 bid against 5 asked) and at 101 (5 against 5): 101
    ex = Exchange(book_cls)
    ex.send(HALT, new(1, B, 101, 5), new(2, B, 100, 3, client=2), new(3, S, 100, 5, client=3))
    assert ex.send(RESUME)[:2] == [
        ("auction", 1, 3, 101, 5, 0, 0),
        ("state", "continuous", 101, 5),
    ]
    assert ex.rows() == [(B, 100, 2, 2, 3, 3)]


def test_the_auction_counts_reserves_and_meets_refills_at_the_back(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        HALT,
        iceberg(1, S, 100, 20, 5, client=2),
        new(2, S, 100, 5, client=3),
        new(3, B, 101, 20),
    )
    # 20 executable at 100 and 101 (surplus 5 both): 100; the iceberg's refill queues
    # behind order 2
    assert ex.send(RESUME) == [
        ("auction", 3, 1, 100, 5, 15, 15),
        ("auction", 3, 2, 100, 5, 10, 0),
        ("auction", 3, 1, 100, 5, 5, 10),
        ("auction", 3, 1, 100, 5, 0, 5),
        ("state", "continuous", 100, 20),
        ("depth", B, 101, 0, 0),
        ("depth", S, 100, 5, 1),
    ]
    assert ex.shown() == [(1, 5, 5, 5)]


def test_the_auction_applies_no_self_trade_prevention(book_cls):
    ex = Exchange(book_cls)
    ex.send(
        HALT,
        new(1, S, 100, 5, stp=STP_CANCEL_BOTH),
        new(2, B, 100, 5, stp=STP_CANCEL_NEWEST),
    )
    assert ex.send(RESUME)[:2] == [
        ("auction", 2, 1, 100, 5, 0, 0),
        ("state", "continuous", 100, 5),
    ]


def test_a_resume_of_a_book_that_is_not_crossed_trades_nothing(book_cls):
    ex = Exchange(book_cls)
    ex.send(HALT, new(1, S, 101, 5, client=2), new(2, B, 100, 5))
    assert ex.send(RESUME) == [("state", "continuous", 0, 0)]
    assert ex.ids() == [2, 1]


def test_stops_the_auction_reaches_trigger_after_it_in_continuous_trading(book_cls):
    ex = Exchange(book_cls)
    ex.send(new(90, S, 95, 1, client=9), new(91, B, 95, 1, client=8))  # last price 95
    ex.send(stop(1, B, 2, 100, client=7), HALT)
    ex.send(new(2, S, 100, 3, client=2), new(3, B, 100, 1, client=3), new(4, S, 102, 5, client=4))
    assert ex.send(RESUME) == [
        ("auction", 3, 2, 100, 1, 0, 2),
        ("state", "continuous", 100, 1),
        ("triggered", 1, 100, 2),
        ("trade", 1, 2, 100, 2, 0, 0),
        ("depth", B, 100, 0, 0),
        ("depth", S, 100, 0, 0),
    ]
    assert ex.ids() == [4]


def test_the_state_is_in_the_state_hash_and_snapshots(book_cls):
    a, b = Exchange(book_cls), Exchange(book_cls)
    a.send(new(1, S, 100, 5, client=2), HALT)
    b.send(new(1, S, 100, 5, client=2), dict(kind=0))  # the same seq, a bad command
    assert a.rows() == b.rows() and a.book.state_hash() != b.book.state_hash()
    a.send(new(2, B, 101, 3))
    again = type(a.book).restore(a.book.snapshot())
    assert again.halted and again.state_hash() == a.book.state_hash()
    assert again.top() == (101, 3, 100, 5)
    b.book, b.seq, b.owner = again, a.seq, dict(a.owner)
    assert (
        b.send(RESUME)
        == a.send(RESUME)
        == [
            ("auction", 2, 1, 100, 3, 0, 2),
            ("state", "continuous", 100, 3),
            ("depth", B, 101, 0, 0),
            ("depth", S, 100, 2, 1),
        ]
    )
    assert b.book.state_hash() == a.book.state_hash()


def test_a_kernel_snapshot_from_before_halts_restores_as_continuous():
    """Format 5 (before halts) had one meta word less: such a book was never halted, and
    its recorded state hash (a continuous book's hashes as it did) still verifies."""
    import io
    import zipfile

    import msgspec

    from exchange import kernel
    from exchange.book import Book

    book = Book(BookConfig())
    book.process(Exchange(Book).batch(new(1, S, 100, 5), new(2, B, 99, 5, client=2)))
    old = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(book.snapshot())) as src,
        zipfile.ZipFile(old, "w") as dst,
    ):
        for name in src.namelist():
            data = src.read(name)
            if name == "header.npy":
                header = {"format": 5, "config": book.config}
                array = np.frombuffer(msgspec.json.encode(header), np.uint8)
            elif name == "meta.npy":
                array = book.state.meta[: kernel.META_SIZE - 1]
            else:
                dst.writestr(name, data)
                continue
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array, allow_pickle=False)
            dst.writestr(name, npy.getvalue())
    again = Book.restore(old.getvalue())
    assert not again.halted and again.state_hash() == book.state_hash()
