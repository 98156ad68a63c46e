"""The book mirror's best-level walk against a scan of the whole ladder."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.bookconfig import BookConfig
from exchange.records import EV_DEPTH, EVENT_DTYPE, SIDE_BUY, SIDE_SELL
from gateway.mirror import BookMirror

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
