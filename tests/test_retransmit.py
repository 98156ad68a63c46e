"""Retransmission (TradesRequest) through a real daemon: a symbol's Trades of a seq range
again, from its shard's journal, to the requester only, flagged ``retx``, then TradesEnd;
nothing folded twice into positions."""

import os
import re
import signal
import time
from pathlib import Path

import msgspec
import pytest

from gateway.protocol import (
    MAX_RETRANSMIT_SEQS,
    PositionReport,
    Reject,
    Reply,
    Request,
    Trades,
    TradesEnd,
    TradesRequest,
)

pytestmark = pytest.mark.timeout(240)


def cross(maker, taker, sym, px, n=2):
    """``n`` prints on ``sym`` from one taker order; its ack's seq."""
    for _ in range(n):
        assert maker.new_order(sym, "sell", 1, px=px).oid
    ack = taker.new_order(sym, "buy", n, px=px)
    assert ack.oid, ack
    return ack.seq


def retry_unavailable(call, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        got = call()
        if not (isinstance(got[1], Reject) and got[1].code == "unavailable"):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def test_a_retransmission_is_the_symbols_prints_of_the_range_and_folds_nothing(daemon):
    daemon.start()
    maker, taker = daemon.client(1), daemon.client(2)
    try:
        acme = [cross(maker, taker, "ACME", 10_000 + 10 * i) for i in range(3)]
        btc = [cross(maker, taker, "BTC-USD", 8_000_000) for _ in range(2)]
        acme.append(cross(maker, taker, "ACME", 10_100, n=1))
        before = (maker.positions(), taker.positions())
        assert isinstance(before[0], PositionReport)

        got, end = taker.trades("ACME", 1, acme[-1] + 50)
        assert isinstance(end, TradesEnd), end
        assert [m.seq for m in got] == acme
        assert all(m.retx and m.sym == "ACME" and m.side == "buy" for m in got)
        assert [m.prev for m in got] == [0, *acme[:-1]]
        assert [m.prints for m in got] == [
            [(10_000, 1), (10_000, 1)],
            [(10_010, 1), (10_010, 1)],
            [(10_020, 1), (10_020, 1)],
            [(10_100, 1)],
        ]
        assert end.count == 4 and end.last_seq >= acme[-1]
        assert (end.from_seq, end.to_seq, end.sym) == (1, acme[-1] + 50, "ACME")

        # a part of the range; another symbol's
        got, end = maker.trades("ACME", acme[1], acme[2])
        assert [m.seq for m in got] == acme[1:3] and got[0].prev == 0 and end.count == 2
        got, end = maker.trades("BTC-USD", 1, 10_000)
        assert [m.seq for m in got] == btc and end.count == 2
        # a range with no trades
        got, end = maker.trades("ACME", acme[-1] + 1, acme[-1] + 10)
        assert got == [] and isinstance(end, TradesEnd) and end.count == 0
        # refusals
        _, r = maker.trades("ACME", 1, MAX_RETRANSMIT_SEQS + 1)
        assert (r.code, r.field) == ("invalid", "$.to_seq")
        _, r = maker.trades("ACME", 5, 4)
        assert (r.code, r.field) == ("invalid", "$.to_seq")
        _, r = maker.trades("NOPE", 1, 2)
        assert r.code == "not_found"
        maker.send(TradesRequest(cid=900, sym="ACME", from_seq=0, to_seq=2))
        r = maker.wait_reply(900, 10)
        assert (r.code, r.field) == ("invalid", "$.from_seq")

        # nothing folded twice; no retransmitted Trades left over as notices
        after = (maker.positions(), taker.positions())
        for b, a in zip(before, after, strict=True):
            assert (a.cash, a.positions, a.orders) == (b.cash, b.positions, b.orders)
        assert not [m for m in maker.notices(0.3) if isinstance(m, Trades)]

        # after the shard of ACME restarts (the gateway syncs again): still the same
        os.kill(daemon.child_pid("s0"), signal.SIGKILL)
        daemon.wait_log('"msg": "child exited; restarting"')
        got, end = retry_unavailable(lambda: taker.trades("ACME", 1, acme[-1]))
        assert [m.seq for m in got] == acme and end.count == 4
        # after the gateway restarts
        os.kill(daemon.child_pid("gateway"), signal.SIGKILL)
        daemon.wait_log('"msg": "child exited; restarting"', count=2)
        maker.close()
        taker.close()
        taker = daemon.client(2)
        got, end = retry_unavailable(lambda: taker.trades("ACME", 1, acme[-1]))
        assert [m.seq for m in got] == acme and end.count == 4
        again = taker.positions()
        assert (again.cash, again.positions) == (before[1].cash, before[1].positions)
    finally:
        maker.close()
        taker.close()


def test_the_recovery_example_in_the_doc_is_what_a_gateway_answers(daemon):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md").read_text()
    section = doc.split("## 6. Sequence numbers", 1)[1].split("\n## ", 1)[0]
    request_json, replies_json = re.findall(r"```json\n(.*?)```", section, re.S)
    request = msgspec.json.decode(request_json, type=Request)
    expected = [msgspec.json.decode(line, type=Reply) for line in replies_json.splitlines()]
    daemon.start()
    maker, taker = daemon.client(1), daemon.client(2)
    try:
        for _ in range(2):
            assert maker.new_order("ACME", "sell", 1, px=10_000).seq
            assert taker.new_order("ACME", "buy", 1, px=10_000).seq
        other = daemon.client(3)
        other.send(request)
        got = []
        while not isinstance(got[-1:] and got[-1], TradesEnd):
            msg = other.recv(10)
            assert msg is not None, got
            got.append(msg)
        assert got == expected
        other.close()
    finally:
        maker.close()
        taker.close()
