"""Promises of docs/PROTOCOL.md that a bot written from it relies on, checked against a
real daemon."""

import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest
import zmq
import zmq.auth
from daemon_harness import REPO, raw_dealer

from gateway.protocol import Ack, Fill, Triggered


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


@pytest.mark.timeout(240)
def test_a_stop_waits_off_the_book_then_a_trade_at_its_trigger_enters_it(daemon):
    """PROTOCOL.md 4.1a through the daemon: a stop-limit is acknowledged and not shown in
    the book; the first trade at its trigger sends its owner a `Triggered` notice, then
    it trades as the limit order it became (its fill follows)."""
    daemon.start()
    owner, maker, taker = daemon.client(1), daemon.client(2), daemon.client(3)
    try:
        stop = owner.new_order("ACME", "buy", 2, px=10_300, type="stop_limit", trigger=10_200)
        assert isinstance(stop, Ack), stop
        book = owner.book("ACME")
        assert book.bids == [] and book.asks == [], book  # it waits off the book
        assert isinstance(maker.new_order("ACME", "sell", 3, px=10_200), Ack)
        assert isinstance(taker.new_order("ACME", "buy", 1, px=10_200, tif="ioc"), Ack)
        notices = []
        deadline = time.monotonic() + 10
        while not any(isinstance(n, Fill) for n in notices) and time.monotonic() < deadline:
            notices += owner.notices(timeout=0.5)
        after = owner.book("ACME")
    finally:
        for c in (owner, maker, taker):
            c.close()
    mine = [n for n in notices if isinstance(n, Triggered | Fill)]
    assert [type(n) for n in mine] == [Triggered, Fill], notices
    triggered, fill = mine
    assert (triggered.oid, triggered.trigger, triggered.qty, triggered.type) == (
        stop.oid,
        10_200,
        2,
        "stop_limit",
    )
    assert (fill.oid, fill.qty, fill.px, fill.liq, fill.leaves) == (stop.oid, 2, 10_200, "taker", 0)
    assert triggered.seq == fill.seq  # the same command's trade triggered it
    assert after.asks == [] and after.bids == [], after  # the maker's rest went to the stop


@pytest.mark.timeout(240)
def test_a_bot_that_makes_its_own_keys_with_plain_pyzmq(daemon, tmp_path):
    """PROTOCOL.md's Keys paragraph: a pair from zmq.curve_keypair, its public key
    registered with `exch keys register`, a certificate file in the documented format
    read back by zmq.auth.load_certificate, and a plain DEALER trades with it."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    example = text.split("**Keys.**", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    public, secret = zmq.curve_keypair()
    while not public.startswith(b"-"):  # the case the doc's `--` is for
        public, secret = zmq.curve_keypair()
    cert = tmp_path / "bot.key_secret"
    cert.write_text(
        example.replace("CU7EM54nam@zM<318eb)2ztJVI/TIi>N@)ie^u]w", public.decode()).replace(
            "jGEgB<e[hWt)UAr>eePaNZ:BgbM@<ev6F}zE#3W8", secret.decode()
        )
    )
    assert zmq.auth.load_certificate(cert) == (public, secret)
    daemon.start()
    keys = daemon.config.gateway.keys_dir
    exch = [sys.executable, "-m", "tools.cli", "keys"]
    done = subprocess.run(
        [*exch, "register", "42", "--keys-dir", keys, "--", public.decode()],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    server = subprocess.run(
        [*exch, "server", "--keys-dir", keys], cwd=REPO, capture_output=True, text=True
    )
    server_key = next(w for w in server.stdout.split() if len(w) == 40).encode()
    time.sleep(1.5)  # the gateway reloads its key table every second
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.curve_serverkey = server_key
    dealer.curve_publickey, dealer.curve_secretkey = zmq.auth.load_certificate(cert)
    try:
        dealer.connect(daemon.router)
        dealer.send(msgspec.msgpack.encode({"t": "H", "cid": 1, "v": 1}))
        assert dealer.poll(10_000)
        assert msgspec.msgpack.decode(dealer.recv()) == {"t": "H", "cid": 1, "v": 1}
    finally:
        dealer.close()


def _answer(dealer: zmq.Socket, frames: list[bytes]) -> dict:
    dealer.send_multipart(frames)
    assert dealer.poll(10_000)
    return msgspec.msgpack.decode(dealer.recv())


@pytest.mark.timeout(240)
def test_a_refused_request_whose_cid_can_be_read_is_answered_with_it(daemon):
    """PROTOCOL.md: a Reject carries the request's cid whenever it can be read."""
    daemon.start()
    dealer = raw_dealer(daemon, 3)
    try:
        int_key = msgspec.msgpack.encode({1: 2, "t": "H", "cid": 11, "v": 1})
        got = _answer(dealer, [int_key])
        assert (got["t"], got["code"], got["cid"]) == ("J", "invalid", 11), got
        big = msgspec.msgpack.encode({"t": "H", "cid": 12, "v": 1, "pad": "x" * 70_000})
        got = _answer(dealer, [big])
        assert (got["t"], got["code"], got["cid"]) == ("J", "invalid", 12), got
        assert "larger than" in got["reason"]
        two = [msgspec.msgpack.encode({"t": "H", "cid": 14, "v": 1}), b"more"]
        got = _answer(dealer, two)
        assert (got["t"], got["code"], got["cid"]) == ("J", "invalid", 14), got
        assert "got 2" in got["reason"]
        assert _answer(dealer, [msgspec.msgpack.encode({"t": "H", "cid": 13, "v": 1})])["cid"] == 13
    finally:
        dealer.close()


@pytest.mark.timeout(240)
def test_the_small_print_of_protocol_md(daemon):
    """Section 2's nil for PositionsRequest.sym, section 5's refusals of an unknown `t`
    and of a market order resting, a Cancelled's `leaves: 0` always sent, and a
    retry's Ack carrying the retry's cid and coid."""
    daemon.start()
    dealer = raw_dealer(daemon, 4)
    pack = msgspec.msgpack.encode
    try:
        got = _answer(dealer, [pack({"t": "PQ", "cid": 1, "sym": None})])
        assert got["t"] == "PR", got
        got = _answer(dealer, [pack({"t": "ZZ", "cid": 2})])
        assert (got["t"], got["code"], got["field"], got["cid"]) == ("J", "invalid", "$.t", 2)
        market_gtc = {"t": "N", "cid": 3, "sym": "ACME", "side": "buy", "qty": 1}
        got = _answer(dealer, [pack({**market_gtc, "type": "market", "tif": "gtc"})])
        assert (got["t"], got["code"], got["field"]) == ("J", "invalid", "$.tif"), got
        order = {"t": "N", "sym": "ACME", "side": "buy", "qty": 5, "px": 9_000, "ik": 77}
        ack = _answer(dealer, [pack({**order, "cid": 4, "coid": "first"})])
        again = _answer(dealer, [pack({**order, "cid": 5, "coid": "retry"})])
        assert (again["oid"], again["dup"]) == (ack["oid"], True)
        assert (again["cid"], again["coid"]) == (5, "retry")
        cancelled = _answer(dealer, [pack({"t": "C", "cid": 6, "sym": "ACME", "oid": ack["oid"]})])
        assert cancelled["t"] == "X" and cancelled["leaves"] == 0, cancelled
    finally:
        dealer.close()


@pytest.mark.timeout(240)
def test_reference_data_over_the_wire_as_documented(daemon):
    """PROTOCOL.md's InstrumentsRequest example, byte for byte against a real gateway;
    the client library and `exch instruments` show the same."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    section = text.split('**`Instruments`** `t = "IR"`', 1)[1]
    request = json.loads(section.split("Example (`", 1)[1].split("`", 1)[0])
    documented = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    daemon.start()
    dealer = raw_dealer(daemon, 6)
    try:
        assert _answer(dealer, [msgspec.msgpack.encode(request)]) == documented
        nope = _answer(dealer, [msgspec.msgpack.encode({"t": "IQ", "cid": 6, "sym": "NOPE"})])
        assert (nope["code"], nope["field"]) == ("not_found", "$.sym")
    finally:
        dealer.close()
    bot = daemon.client(7)
    try:
        every = bot.instruments()
    finally:
        bot.close()
    syms = [s for shard in daemon.config.shards for s in shard.instruments]
    assert [i.sym for i in every.instruments] == syms
    assert every.version == documented["version"]
    assert {i.state for i in every.instruments} == {"open"}
    btc = daemon.config.instrument("BTC-USD")
    line = every.instruments[syms.index("BTC-USD")]
    assert (line.tick, line.lot, line.min_px, line.max_px, line.max_qty, line.ref_px) == (
        btc.book.tick_size,
        btc.book.lot_size,
        btc.book.min_price,
        btc.book.max_price,
        btc.book.max_qty,
        btc.ref_price,
    )
    shown = subprocess.run(
        [sys.executable, "-m", "tools.cli", "instruments", "--json", "--config", str(daemon.path)]
        + ["--key", str(daemon.tmp / "bot7.key_secret")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["instruments"] == [
        msgspec.to_builtins(i) for i in every.instruments
    ]


@pytest.mark.timeout(240)
def test_an_instrument_whose_shard_is_down_says_so(daemon):
    daemon.start()
    bot = daemon.client(8)
    try:
        os.kill(daemon.child_pid("s1"), signal.SIGSTOP)  # stopped: "unavailable" after stall_ms
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = {i.sym: i.state for i in bot.instruments().instruments}
                if states["BTC-USD"] == "unavailable":
                    break
                bot.new_order("BTC-USD", "buy", 1, px=daemon.config.instrument("BTC-USD").ref_price)
                time.sleep(0.2)
        finally:
            os.kill(daemon.child_pid("s1"), signal.SIGCONT)
    finally:
        bot.close()
    assert states["BTC-USD"] == states["ETH-USD"] == "unavailable"
    assert states["ACME"] == states["BOLT"] == "open"
