"""The book mirror's best-level walk against a scan of the whole ladder; the trading
state it keeps and publishes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.bookconfig import BookConfig
from exchange.records import (
    EV_DEPTH,
    EV_STATE,
    EV_TRADE,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
)
from gateway.mirror import BookMirror, public
from gateway.protocol import Depth, TopOfBook, Trades, TradingState

BOOK = BookConfig(tick_size=5, lot_size=1, min_price=100, max_price=100 + 5 * 63)
TICKS = 64

level_sets = st.lists(
    st.tuples(
        st.sampled_from([SIDE_BUY, SIDE_SELL]),
        st.integers(0, TICKS - 1),
        st.sampled_from([0, 0, 1, 7, 30]),  # zeros often: levels emptying, best walking on
    ),
    min_size=1,
    max_size=20,
)


def depth_events(seq: int, changes) -> np.ndarray:
    ev = np.zeros(len(changes), EVENT_DTYPE)
    ev["seq"] = seq
    ev["idx"] = np.arange(len(changes))
    ev["kind"] = EV_DEPTH
    for k, (side, tick, qty) in enumerate(changes):
        ev[k]["side"], ev[k]["price"] = side, BOOK.min_price + tick * BOOK.tick_size
        ev[k]["qty"], ev[k]["leaves"] = qty, (qty + 6) // 7
    return ev


def scanned(ladder: dict, side: int, n: int) -> list:
    """The best n levels by sorting every level with quantity."""
    ticks = sorted((t for (s, t), q in ladder.items() if s == side and q), reverse=side == SIDE_BUY)
    return [
        (BOOK.min_price + t * BOOK.tick_size, ladder[side, t], (ladder[side, t] + 6) // 7)
        for t in ticks[:n]
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(level_sets, min_size=1, max_size=12), st.integers(1, 8))
def test_levels_equal_a_full_scan(batches, depth):
    mirror = BookMirror("X", BOOK, depth)
    ladder = {}
    for seq, changes in enumerate(batches, start=1):
        mirror.apply(depth_events(seq, changes))
        for side, tick, qty in changes:
            ladder[side, tick] = qty
        for side in (SIDE_BUY, SIDE_SELL):
            assert mirror.levels(side, depth) == scanned(ladder, side, depth)
            assert mirror.levels(side, TICKS) == scanned(ladder, side, TICKS)
    # a mirror loaded from resting orders making those levels walks the same way
    loaded = BookMirror("X", BOOK, depth)
    orders = [
        (side, px, part)
        for side in (SIDE_BUY, SIDE_SELL)
        for px, qty, n in scanned(ladder, side, TICKS)
        for part in [qty // n + (k < qty % n) for k in range(n)]
    ]
    rows = np.array(orders, np.int64).reshape(-1, 3)
    loaded.load_resting(len(batches), rows[:, 0], rows[:, 1], rows[:, 2])
    for side in (SIDE_BUY, SIDE_SELL):
        assert loaded.levels(side, TICKS) == scanned(ladder, side, TICKS)


def test_the_ends_of_the_band():
    mirror = BookMirror("X", BOOK)
    mirror.apply(depth_events(1, [(SIDE_BUY, 0, 3), (SIDE_SELL, TICKS - 1, 4)]))
    assert mirror.levels(SIDE_BUY, 5) == [(100, 3, 1)]
    assert mirror.levels(SIDE_SELL, 5) == [(100 + 5 * 63, 4, 1)]
    mirror.apply(depth_events(2, [(SIDE_BUY, 0, 0), (SIDE_SELL, TICKS - 1, 0)]))
    assert mirror.levels(SIDE_BUY, 5) == mirror.levels(SIDE_SELL, 5) == []


def state_event(seq: int, code: int, px: int = 0, qty: int = 0, idx: int = 0) -> np.ndarray:
    ev = np.zeros(1, EVENT_DTYPE)
    ev["seq"], ev["idx"], ev["kind"], ev["code"] = seq, idx, EV_STATE, code
    ev["price"], ev["qty"] = px, qty
    return ev


def auction_trade(seq: int, idx: int, px: int, qty: int) -> np.ndarray:
    """A reopening auction's trade: the bid in order_id, the ask in other_id, side buy."""
    ev = np.zeros(1, EVENT_DTYPE)
    ev["seq"], ev["idx"], ev["kind"], ev["side"] = seq, idx, EV_TRADE, SIDE_BUY
    ev["order_id"], ev["other_id"], ev["client"], ev["other_client"] = 7, 8, 1, 2
    ev["price"], ev["qty"] = px, qty
    return ev


def test_the_trading_state_is_published_at_once_kept_and_in_the_snapshot():
    """A halt's STATE is a TradingState at once (no Depth: no level moved); a resume's
    auction prints come first, then its TradingState, then the levels it left."""
    mirror = BookMirror("X", BOOK)
    assert mirror.state == STATE_CONTINUOUS and mirror.book(1, 5).state == "continuous"
    # crossed while halted: a bid above an ask, nothing trades
    mirror.apply(depth_events(3, [(SIDE_BUY, 10, 5), (SIDE_SELL, 8, 3)]))
    out = mirror.apply(state_event(4, STATE_HALTED))
    assert out == [TradingState(sym="X", seq=4, prev=0, state="halted", px=0, qty=0)]
    assert mirror.state == STATE_HALTED and mirror.seq == 4
    snap = mirror.book(2, 5)
    assert (snap.seq, snap.state, snap.bids[0][0], snap.asks[0][0]) == (4, "halted", 150, 140)
    px = BOOK.min_price + 9 * BOOK.tick_size
    resume = np.concatenate(
        [
            auction_trade(9, 0, px, 3),
            state_event(9, STATE_CONTINUOUS, px, 3, idx=1),
            depth_events(9, [(SIDE_BUY, 10, 2), (SIDE_SELL, 8, 0)]),
        ]
    )
    resume["idx"] = np.arange(len(resume))
    out = mirror.apply(resume)
    assert [type(m) for m in out] == [Trades, TradingState, Depth, TopOfBook]
    assert out[0] == Trades(sym="X", seq=9, prev=0, side="buy", prints=[(px, 3)])
    assert out[1] == TradingState(sym="X", seq=9, prev=4, state="continuous", px=px, qty=3)
    assert mirror.book(3, 5).state == "continuous"
    # a restarted shard publishes its last batch again: nothing new
    assert mirror.apply(resume) == []


def test_public_events_take_the_state_and_leave_duplicates_out():
    ev = np.concatenate([state_event(4, STATE_HALTED), state_event(5, STATE_CONTINUOUS)])
    ev["instrument"] = [1, 0]
    ev["flags"][1] = EVF_DUPLICATE
    [(inst, mine)] = public(ev)
    assert inst == 1 and mine["seq"].tolist() == [4]


def test_a_synced_mirror_takes_the_state_it_is_given():
    mirror = BookMirror("X", BOOK)
    mirror.load_resting(12, np.array([SIDE_BUY, SIDE_SELL]), np.array([150, 140]), np.array([4, 2]))
    mirror.load_state(STATE_HALTED)
    snap = mirror.book(1, 5)
    assert (snap.seq, snap.state, snap.bids, snap.asks) == (
        12,
        "halted",
        [(150, 4, 1)],
        [(140, 2, 1)],
    )
