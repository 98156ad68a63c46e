"""Promises of docs/PROTOCOL.md that a bot written from it relies on, checked against a
real daemon."""

import pytest

from gateway.protocol import Ack, Fill


@pytest.mark.timeout(240)
def test_a_self_trade_is_two_fills_told_apart_by_their_oid(daemon):
    """PROTOCOL.md: a fill is identified by (sym, seq, idx, oid); a trade between two of
    a client's own orders shares (sym, seq, idx)."""
    daemon.start()
    bot = daemon.client(1)
    try:
        sell = bot.new_order("ACME", "sell", 3, px=10_000, stp="none")
        buy = bot.new_order("ACME", "buy", 2, px=10_000, stp="none")
        assert isinstance(sell, Ack) and isinstance(buy, Ack), (sell, buy)
        fills = [n for n in bot.notices(timeout=2.0) if isinstance(n, Fill)]
    finally:
        bot.close()
    assert len(fills) == 2, fills
    trades = {(f.sym, f.seq, f.idx) for f in fills}
    assert len(trades) == 1  # one trade ...
    assert len({(f.sym, f.seq, f.idx, f.oid) for f in fills}) == 2  # ... two fills
    by_oid = {f.oid: f for f in fills}
    assert (by_oid[sell.oid].liq, by_oid[sell.oid].leaves) == ("maker", 1)
    assert (by_oid[buy.oid].liq, by_oid[buy.oid].leaves) == ("taker", 0)
