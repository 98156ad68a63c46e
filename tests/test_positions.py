"""Positions, average cost, realised P&L, cash and volume from fills (gateway.positions).

Worked examples by hand, the integer rounding of the cost basis, and random
streams through the real book kernel checked against a plain Python ledger:
positions sum to zero per instrument, cash moves sum to zero, realised P&L =
cash moved + cost basis exactly, and a replay of a real journal gives the same
state as the events folded batch by batch.
"""

from fractions import Fraction

import numpy as np
import pytest
from streams import random_batches, random_config, random_stream

from exchange.book import Book
from exchange.engine import ShardEngine
from exchange.journal import Journal, JournalReader
from exchange.records import EV_TRADE, EVF_DUPLICATE, SIDE_BUY, SIDE_SELL, events
from gateway.positions import (
    F_COST,
    F_PEAK_LONG,
    F_PEAK_SHORT,
    F_POS,
    F_REALISED,
    Positions,
    apply_trades,
)
from gateway.slots import Slots


def trade_events(rows) -> np.ndarray:
    """TRADE events from (taker, taker side, maker, px, qty[, instrument]) tuples."""
    ev = events(len(rows))
    for k, (taker, side, maker, px, qty, *inst) in enumerate(rows):
        ev[k]["kind"] = EV_TRADE
        ev[k]["seq"] = k + 1
        ev[k]["client"] = taker
        ev[k]["other_client"] = maker
        ev[k]["side"] = side
        ev[k]["price"] = px
        ev[k]["qty"] = qty
        ev[k]["instrument"] = inst[0] if inst else 0
    return ev


def test_buy_sell_through_flat_and_back_by_hand():
    p = Positions(["ACME"], [10_000])
    # client 1 buys 10 @ 100 from client 2, then sells 4 @ 120 to client 3
    p.apply(trade_events([(1, SIDE_BUY, 2, 100, 10), (3, SIDE_BUY, 1, 120, 4)]))
    s = p.standing(1, 0)
    assert (s.pos, s.cost, s.realised, s.volume) == (6, 600, 80, 14)
    assert p.cash_moved(1) == -1_000 + 480
    assert s.mark == 120 and s.unrealised == 6 * 120 - 600
    # sells 10 @ 90: closes 6 (realised -60), opens a short of 4 at 90
    p.apply(trade_events([(1, SIDE_SELL, 2, 90, 10)]))
    s = p.standing(1, 0)
    assert (s.pos, s.cost, s.realised) == (-4, -360, 20)
    # buys 4 back @ 80: flat, +40; flat, the realised P&L is exactly the cash made
    p.apply(trade_events([(1, SIDE_BUY, 3, 80, 4)]))
    s = p.standing(1, 0)
    assert (s.pos, s.cost, s.realised, s.volume) == (0, 0, 60, 28)
    assert p.cash_moved(1) == 60
    row = p.slots.find(1)
    assert p.acct[row, 0, F_PEAK_LONG] == 10 and p.acct[row, 0, F_PEAK_SHORT] == 4
    assert sum(p.cash_moved(c) for c in (1, 2, 3)) == 0
    assert sum(p.position(c, 0) for c in (1, 2, 3)) == 0


def test_cost_basis_share_rounds_toward_zero_and_a_full_close_takes_the_rest():
    p = Positions(["ACME"], [10])
    p.apply(trade_events([(1, SIDE_BUY, 2, 10, 3), (1, SIDE_BUY, 2, 11, 3)]))
    assert p.standing(1, 0).cost == 63  # average 10.5
    p.apply(trade_events([(1, SIDE_SELL, 2, 12, 1)]))
    assert (p.standing(1, 0).cost, p.standing(1, 0).realised) == (53, 12 - 10)  # 63 // 6
    p.apply(trade_events([(1, SIDE_SELL, 2, 12, 5)]))
    s = p.standing(1, 0)
    assert (s.pos, s.cost, s.realised) == (0, 0, 9) and p.cash_moved(1) == 9
    # the short side mirrors it
    q = Positions(["ACME"], [10])
    q.apply(trade_events([(1, SIDE_SELL, 2, 10, 3), (1, SIDE_SELL, 2, 11, 3)]))
    q.apply(trade_events([(1, SIDE_BUY, 2, 9, 1)]))
    s = q.standing(1, 0)
    assert (s.pos, s.cost, s.realised) == (-5, -53, -9 + 10)


def test_basis_share_does_not_overflow_with_large_values():
    held, basis, closed = 2_000_000_000, 6_000_000_000_000_000_007, 1_999_999_999
    assert basis * closed >= 1 << 63  # the product would not fit in int64
    acct = np.zeros((2, 1, 6), np.int64)
    acct[0, 0, F_POS], acct[0, 0, F_COST] = held, basis
    one = np.ones(1, np.int64)
    # row 0 sells ``closed`` to row 1
    apply_trades(
        acct, np.zeros(2, np.int64), np.zeros(1, np.int64), one, 0 * one, 0 * one, one, closed * one
    )
    assert acct[0, 0, F_COST] == basis - basis * closed // held  # Python's exact integers
    assert acct[0, 0, F_POS] == held - closed


def python_ledger(trades):
    """The obviously-correct model: exact fractions, average cost per unit."""
    pos, avg, realised, cash, volume, peak = {}, {}, {}, {}, {}, {}
    for taker, side, maker, px, qty in trades:
        buyer, seller = (taker, maker) if side == SIDE_BUY else (maker, taker)
        for c, d in ((buyer, qty), (seller, -qty)):
            p, a = pos.get(c, 0), avg.get(c, Fraction(0))
            cash[c] = cash.get(c, 0) - d * px
            volume[c] = volume.get(c, 0) + qty
            if p == 0 or (p > 0) == (d > 0):
                avg[c] = (a * abs(p) + px * qty) / (abs(p) + qty)
                pos[c] = p + d
            else:
                closing = min(qty, abs(p))
                realised[c] = realised.get(c, 0) + closing * (px - a) * (1 if p > 0 else -1)
                left = p + (closing if d > 0 else -closing)
                rest = qty - closing
                pos[c] = left + (rest if d > 0 else -rest)
                avg[c] = Fraction(px) if rest else (a if left else Fraction(0))
            peak[c] = max(peak.get(c, 0), abs(pos[c]))
    return pos, avg, realised, cash, volume, peak


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_through_the_kernel_conserve_positions_and_cash(seed):
    rng = np.random.default_rng(seed)
    configs = [random_config(rng), random_config(rng)]
    books = [Book(c) for c in configs]
    p = Positions(["A", "B"], [c.min_price for c in configs])
    done = [[], []]  # (taker, side, maker, px, qty) per instrument
    for inst, (book, config) in enumerate(zip(books, configs, strict=True)):
        cmds = random_stream(rng, config, 3_000, clients=4)
        cmds["instrument"] = inst
        for cut in random_batches(rng, len(cmds)):
            ev = book.process(cmds[cut])
            p.apply(ev)
            t = ev[ev["kind"] == EV_TRADE]
            fields = ("client", "side", "other_client", "price", "qty")
            done[inst] += list(zip(*(t[f].tolist() for f in fields), strict=True))
    assert sum(len(d) for d in done) > 100  # the streams do trade
    for inst in (0, 1):
        pos, avg, realised, cash, volume, peak = python_ledger(done[inst])
        assert sum(p.position(c, inst) for c in pos) == 0
        for c in pos:
            s = p.standing(c, inst)
            row = p.slots.find(c)
            assert (s.pos, s.volume) == (pos[c], volume[c])
            # the integer basis is within a unit per fill of the exact average cost
            assert abs(Fraction(s.cost) - avg[c] * pos[c]) <= len(done[inst])
            assert abs(s.realised - realised.get(c, 0)) <= len(done[inst])
            # realised = cash moved + basis, exactly
            assert s.realised == cash[c] + s.cost
            assert max(p.acct[row, inst, F_PEAK_LONG], p.acct[row, inst, F_PEAK_SHORT]) == peak[c]
    clients = set().union(*(python_ledger(d)[0] for d in done))
    assert sum(p.cash_moved(c) for c in clients) == 0
    for c in clients:
        per_inst = [python_ledger(d)[3].get(c, 0) for d in done]
        assert p.cash_moved(c) == sum(per_inst)
        row = p.slots.find(c)
        assert p.acct[row, :, F_REALISED].sum() == p.cash_moved(c) + p.acct[row, :, F_COST].sum()


def test_duplicate_resends_are_not_fills():
    p = Positions(["ACME"], [100])
    ev = trade_events([(1, SIDE_BUY, 2, 100, 5)])
    ev["flags"] = EVF_DUPLICATE
    assert p.apply(ev) == 0
    assert p.position(1, 0) == 0 and p.cash_moved(1) == 0 and p.last_px[0] == 0


def test_replay_of_a_real_journal_equals_folding_its_batches(tmp_path):
    rng = np.random.default_rng(7)
    configs = [random_config(rng), random_config(rng)]
    live = Positions(["A", "B"], [1, 1])
    with Journal(tmp_path / "s0", durability="os") as journal:
        engine = ShardEngine(0, configs, journal)
        streams = [random_stream(rng, c, 2_000, clients=3) for c in configs]
        for inst, cmds in enumerate(streams):
            cmds["instrument"] = inst
        cmds = np.concatenate(streams)[rng.permutation(4_000)]
        for cut in random_batches(rng, len(cmds)):
            applied = engine.apply(cmds[cut])
            live.apply(applied.events, offset=0)
    # seq-ordered across both instruments, with an offset: the shard's first is number 1
    again = Positions(["X", "A", "B"], [1, 1, 1])
    with JournalReader(tmp_path / "s0") as journal:
        n = again.replay(journal.iter_batches(), offset=1)
    assert n > 50
    assert sorted(again.slots.ids) == sorted(live.slots.ids)
    for client in live.slots.ids:  # rows are given in order of sight: compare by client
        mine, theirs = again.slots.find(client), live.slots.find(client)
        assert np.array_equal(again.acct[mine, 1:], live.acct[theirs])
        assert again.cash[mine] == live.cash[theirs]
    assert not again.acct[:, 0].any()
    assert np.array_equal(again.last_px[1:], live.last_px)


def test_bad_input_is_refused_and_changes_nothing():
    with pytest.raises(ValueError, match="2 symbols but 1 reference prices"):
        Positions(["A", "B"], [1])
    p = Positions(["A", "B"], [1, 1])
    p.apply(trade_events([(1, SIDE_BUY, 2, 10, 1, 1)]))
    before = (p.acct.copy(), p.cash.copy(), p.last_px.copy())
    with pytest.raises(ValueError, match="instrument number 2"):
        p.apply(trade_events([(1, SIDE_BUY, 2, 10, 1, 1)]), offset=1)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, (p.acct, p.cash, p.last_px), strict=True)
    )
    assert p.standing(1, 1).volume == 1 and p.standing(9, 0).pos == 0


def test_client_rows_are_the_same_whichever_way_they_are_asked():
    slots = Slots()
    few = np.array([9, 4, 9], np.uint32)
    many = np.arange(100, 0, -1, dtype=np.uint32)  # past the dict path: numpy's
    assert slots.rows(few).tolist() == [0, 1, 0]
    rows = slots.rows(many)
    assert [slots.ids[r] for r in rows.tolist()] == many.tolist()
    assert slots.rows(many).tolist() == rows.tolist()  # known now: no new rows
    assert [slots.find(c) for c in (9, 4, 100, 1)] == [0, 1, rows[0], rows[-1]]
    assert len(slots) == 100
    with pytest.raises(ValueError, match="client id"):
        slots.rows(np.zeros(40, np.uint32))
    assert len(slots) == 100
