"""Halts through the real gateway and shards: an operator's halt request, what the
gateway relays while the instrument is halted, a gateway restart that must learn the
state from its sync, and the reopening auction's fills, prints, state and positions
(PROTOCOL.md 4.1d's example, for real)."""

import json
import time

import pytest
from gateway_harness import GatewayRig, wait_notices

from exchange.halts import request_halt, request_resume
from exchange.topology import halts_dir
from gateway.protocol import Ack, BookSnapshot, Fill, Heartbeat, Reject, Trades, TradingState
from tools import cli

pytestmark = pytest.mark.timeout(300)


def poll_until(sub, want, timeout: float = 15.0) -> list:
    """What ``sub`` gets until a message ``want(msg)`` is among it."""
    got = []
    deadline = time.monotonic() + timeout
    while not any(want(m) for m in got):
        assert time.monotonic() < deadline, got
        got += sub.poll(0.1)
    return got


def test_a_halt_is_relayed_survives_a_gateway_restart_and_the_auction_fills_both_sides(
    tmp_path, capsys
):
    rig = GatewayRig(tmp_path)
    try:
        rig.start()
        halts = halts_dir(rig.config)
        watcher = rig.client(5)
        sub = rig.subscriber(5, ["ACME"], watcher.book)
        sub.poll(0.3)  # the subscription takes effect
        assert sub.books["ACME"].state == "continuous"

        request_halt(halts, "ACME", "a test halts it")
        got = poll_until(sub, lambda m: isinstance(m, TradingState))
        [halt] = [m for m in got if isinstance(m, TradingState)]
        assert (halt.sym, halt.state, halt.px, halt.qty) == ("ACME", "halted", 0, 0)
        assert sub.books["ACME"].state == "halted"

        # the shard refuses what could only trade now; the gateway relays it
        taker = rig.client(4)
        refused = taker.new_order("ACME", "buy", 1, px=10_005, tif="ioc")
        assert isinstance(refused, Reject), refused
        assert (refused.code, refused.field) == ("halted", "$.tif")
        assert refused.reason.startswith("instrument_halted: ")
        # orders that rest are taken and cross without trading
        for client, side, qty, px in ((2, "sell", 3, 10_000), (3, "sell", 2, 10_002)):
            assert isinstance(rig.client(client).new_order("ACME", side, qty, px=px), Ack)
        buy = rig.client(1).new_order("ACME", "buy", 4, px=10_002)
        assert isinstance(buy, Ack)
        book = watcher.book("ACME")
        assert isinstance(book, BookSnapshot) and book.state == "halted"
        assert (book.bids, book.asks) == ([(10_002, 4, 1)], [(10_000, 3, 1), (10_002, 2, 1)])
        # exch book says so
        argv = ["book", "ACME", "--config", str(rig.config_path), "--key", str(rig.secrets[5])]
        assert cli.main([*argv, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["state"], shown["seq"], shown["bids"]) == (
            "halted",
            book.seq,
            [[10_002, 4, 1]],
        )
        assert cli.main(argv) == 0
        text = capsys.readouterr().out
        assert f"ACME at seq {book.seq}, HALTED" in text and "crossed" in text, text

        # a gateway started now learns the state from its sync (no STATE in its history)
        assert rig.stop("gateway") == 0
        rig.start_gateway(synced=True)
        owners = {c: rig.client(c) for c in (1, 2, 3)}
        for c in owners.values():
            assert isinstance(c.heartbeat(), Heartbeat)  # the gateway knows the connection
        viewer = rig.client(6)
        again = viewer.book("ACME")
        assert (again.seq, again.bids, again.asks, again.state) == (
            book.seq,
            book.bids,
            book.asks,
            "halted",
        )
        sub = rig.subscriber(6, ["ACME"], viewer.book)
        sub.poll(0.3)
        assert sub.books["ACME"].state == "halted"
        # the reference data says so too; the other instruments are open
        states = {i.sym: i.state for i in viewer.instruments().instruments}
        assert states["ACME"] == "halted" and set(states.values()) == {"halted", "open"}

        request_resume(halts, "ACME")
        got = poll_until(sub, lambda m: isinstance(m, TradingState))
        [resume] = [m for m in got if isinstance(m, TradingState)]
        assert (resume.state, resume.px, resume.qty) == ("continuous", 10_002, 4)
        [prints] = [m for m in got if isinstance(m, Trades)]
        assert (prints.seq, prints.side, prints.prints) == (
            resume.seq,
            "buy",
            [(10_002, 3), (10_002, 1)],
        )
        assert got.index(prints) < got.index(resume)
        got += sub.poll(0.3)
        assert sub.books["ACME"] == (resume.seq, [], [(10_002, 1, 1)], "continuous")

        # both sides of each auction trade filled, liq auction, at the auction price
        mine = {c: wait_notices(owners[c], n, Fill) for c, n in ((1, 2), (2, 1), (3, 1))}
        assert [(f.oid, f.side, f.px, f.qty, f.leaves, f.liq) for f in mine[1]] == [
            (buy.oid, "buy", 10_002, 3, 1, "auction"),
            (buy.oid, "buy", 10_002, 1, 0, "auction"),
        ]
        assert [(f.side, f.qty, f.leaves, f.liq) for f in mine[2] + mine[3]] == [
            ("sell", 3, 0, "auction"),
            ("sell", 1, 1, "auction"),
        ]
        assert {f.seq for fills in mine.values() for f in fills} == {resume.seq}
        # positions and the collar's reference as after any trade
        for c, pos in ((1, 4), (2, -3), (3, -1)):
            [line] = owners[c].positions("ACME").positions
            assert (line.pos, line.mark) == (pos, 10_002)
        [acme] = viewer.instruments("ACME").instruments
        assert (acme.ref_px, acme.state) == (10_002, "open")
        # continuous again: an ioc trades
        ioc = owners[1].new_order("ACME", "buy", 1, px=10_002, tif="ioc")
        assert isinstance(ioc, Ack)
        [fill] = wait_notices(owners[1], 1, Fill)
        assert (fill.oid, fill.qty, fill.liq) == (ioc.oid, 1, "taker")
    finally:
        rig.close()
