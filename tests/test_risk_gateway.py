"""Pre-trade risk, positions and the kill switch through the real gateway and shards.

One exchange (two shard processes, the gateway process) with tight limits for
the module: 1000 per order, 50 open orders, a position limit of 100 per
instrument, a 10% collar; client 2 is a market maker with wide limits of its
own. Each test uses its own clients.
"""

import json
import time

import msgspec
import numpy as np
import pytest
from gateway_harness import GatewayRig, wait_notices

from exchange.config import ClientLimits, dump_config
from exchange.journal import JournalReader
from exchange.records import EV_TRADE, SIDE_BUY
from gateway import killswitch
from gateway.client import order
from gateway.protocol import (
    Ack,
    BatchAck,
    Cancelled,
    Fill,
    MassCancelled,
    NewOrder,
    PositionReport,
    Reject,
)
from tools import cli

pytestmark = pytest.mark.timeout(180)

MAKER = 2
LIMIT = 100


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = GatewayRig(tmp_path_factory.mktemp("risk"))
    try:
        replace = msgspec.structs.replace
        risk = replace(
            r.config.risk,
            max_order_qty=1_000,
            max_open_orders=50,
            max_position=LIMIT,
            price_collar_bps=1_000,
            starting_cash=1_000_000,
        )
        maker = ClientLimits(client=MAKER, max_open_orders=10_000, max_position=1_000_000)
        r.config = replace(r.config, risk=risk, clients=[maker])
        r.config_path.write_text(dump_config(r.config))
        r.start()
        yield r
    finally:
        r.close()


def exch(rig, *argv) -> int:
    return cli.main([*argv, "--config", str(rig.config_path)])


def wait_until(pred, timeout=10.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def journal_fills(rig, client: int) -> int:
    """Net quantity ``client`` bought, from every shard's journal (the source of truth)."""
    net = 0
    for name in rig.shards:
        with JournalReader(str(rig.tmp / "journal" / name)) as j:
            for _, ev in j.iter_batches():
                for e in ev[ev["kind"] == EV_TRADE].tolist():
                    taker, maker, side, qty = e[9], e[10], e[14], e[5]
                    buys = 1 if side == SIDE_BUY else -1
                    net += buys * qty * ((taker == client) - (maker == client))
    return net


def test_each_limit_is_a_reject_with_its_code_and_nothing_reaches_a_shard(rig):
    c = rig.client(1)
    before = rig.last_seqs()
    cases = [
        (dict(qty=1_001, px=10_000), "max_order_qty", "$.qty", "limit of 1000"),
        (dict(qty=1, px=11_001), "price_collar", "$.px", "1001 away from 10000"),
        (dict(qty=101, px=10_000), "max_position", "$.qty", "long limit of 100"),
    ]
    for fields, code, field, words in cases:
        reply = c.new_order("ACME", "buy", **fields, coid="x")
        assert isinstance(reply, Reject), reply
        assert (reply.code, reply.field, reply.coid) == (code, field, "x")
        assert reply.reason.startswith(code) and words in reply.reason
    # at the limits, just inside
    assert isinstance(c.new_order("ACME", "buy", LIMIT, px=9_000), Ack)
    assert isinstance(c.new_order("ACME", "sell", LIMIT, px=11_000), Ack)
    refused = c.new_order("ACME", "sell", 1, px=11_000)
    assert refused.code == "max_position" and "short limit of -100" in refused.reason
    # a batch: each order on its own
    batch = c.new_orders(
        [order("BTC-USD", "buy", 60, px=6_000_000), order("BTC-USD", "buy", 41, px=6_000_000)]
    )
    assert isinstance(batch, BatchAck)
    ok, over = batch.results
    assert isinstance(ok, Ack) and (over.code, over.field) == ("max_position", "$.qty")
    seqs = rig.last_seqs()
    assert seqs["s0"] == before["s0"] + 2 and seqs["s1"] == before["s1"] + 1
    assert c.mass_cancel().n == 3


def replies_to(client, cids: set[int], timeout: float = 20.0) -> list:
    """The replies to ``cids`` (notices, cid 0, are skipped)."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < len(cids):
        msg = client.recv(max(0.0, deadline - time.monotonic()))
        assert msg is not None, f"{len(got)} of {len(cids)} replies"
        if getattr(msg, "cid", 0) in cids:
            got.append(msg)
    return got


def test_a_burst_from_several_connections_cannot_breach_the_position_limit(rig):
    maker = rig.client(MAKER)
    for _ in range(6):  # 600 to sell, far more than the limit lets anyone buy
        assert isinstance(maker.new_order("ETH-USD", "sell", 100, px=300_000), Ack)
    conns = [rig.client(3) for _ in range(4)]
    cids = [set() for _ in conns]
    for k in range(25):  # every connection fires all of its orders before reading any answer
        for i, c in enumerate(conns):
            tif = "ioc" if (k + i) % 3 else "gtc"
            msg = NewOrder(cid=c.next_cid(), sym="ETH-USD", side="buy", qty=7, px=300_000, tif=tif)
            cids[i].add(c.send(msg))
    replies = [r for c, mine in zip(conns, cids, strict=True) for r in replies_to(c, mine)]
    acks = [r for r in replies if isinstance(r, Ack)]
    refused = [r for r in replies if isinstance(r, Reject)]
    assert len(acks) + len(refused) == 100
    assert {r.code for r in refused} == {"max_position"}
    assert len(acks) == LIMIT // 7  # each ack is a buy of 7 that fills: 14 fit under 100
    report = conns[0].positions("ETH-USD")
    assert isinstance(report, PositionReport)
    [line] = report.positions
    assert (line.pos, line.open_buy, line.volume) == (98, 0, 98)
    assert report.cash == 1_000_000 - 98 * 300_000
    assert journal_fills(rig, 3) == 98
    maker.mass_cancel()


def test_kill_switch_cancels_everything_and_blocks_until_lifted(rig):
    c = rig.client(4)
    oids = {
        c.new_order("ACME", "buy", 5, px=9_500).oid,
        c.new_order("BOLT", "sell", 10, px=2_600).oid,
        c.new_order("BTC-USD", "buy", 1, px=5_900_000).oid,
    }
    assert exch(rig, "kill", "4", "--reason", "the test") == 0
    cancelled = wait_notices(c, 3, Cancelled)  # within the gateway's second
    assert {m.oid for m in cancelled} == oids and {m.reason for m in cancelled} == {"user"}
    refused = c.new_order("ACME", "buy", 1, px=9_500)
    assert refused.code == "kill_switch" and "exch unkill 4" in refused.reason
    assert c.replace("ACME", min(oids), px=9_500, qty=1).code == "not_found"  # gone
    report = c.positions()
    assert report.killed and report.orders == 0
    assert isinstance(c.mass_cancel(), MassCancelled)  # what reduces risk still works
    assert exch(rig, "unkill", "4") == 0
    wait_until(
        lambda: isinstance(c.new_order("ACME", "buy", 1, px=9_500), Ack), what="the block lifted"
    )
    assert not c.positions().killed
    c.mass_cancel()


def test_a_client_kills_itself_and_only_an_operator_lifts_it(rig):
    c, other = rig.client(5), rig.client(5)
    for px in (9_600, 9_700):
        assert isinstance(c.new_order("ACME", "buy", 1, px=px), Ack)
    first = other.new_order("ETH-USD", "sell", 1, px=310_000, ik=5_001)
    assert isinstance(first, Ack)
    reply = c.kill()
    assert isinstance(reply, MassCancelled) and (reply.n, reply.sym) == (3, None)
    assert killswitch.killed(rig.keys_dir).keys() >= {5}
    refused = other.new_order("ACME", "buy", 1, px=9_600)  # every connection of the client
    assert refused.code == "kill_switch"
    # a retry is answered as the original was, whatever the limits say now
    retry = c.new_order("ETH-USD", "sell", 1, px=310_000, ik=5_001)
    assert retry.dup and (retry.oid, retry.seq) == (first.oid, first.seq)
    assert c.new_order("BTC-USD", "sell", 1, px=6_000_000, ik=5_001).code == "conflict"
    assert c.kill().n == 0  # pressing it again is harmless
    killswitch.unkill(rig.keys_dir, 5)
    wait_until(
        lambda: isinstance(c.new_order("ACME", "buy", 1, px=9_500), Ack), what="the block lifted"
    )
    c.mass_cancel()


def reports(rig, clients) -> dict:
    out = {}
    for client in clients:
        c = rig.client(client)
        out[client] = c.positions()
        c.close()
    return out


def test_positions_after_a_gateway_restart_equal_positions_before(rig, capsys):
    a, b = rig.client(6), rig.client(7)
    trades = [("ACME", 10_000, 8), ("ACME", 10_050, 5), ("BTC-USD", 6_000_000, 3)]
    for sym, px, qty in trades:
        assert isinstance(a.new_order(sym, "sell", qty, px=px), Ack)
        assert isinstance(b.new_order(sym, "buy", qty + 2, px=px, tif="ioc"), Ack)
    assert isinstance(b.new_order("ACME", "sell", 4, px=10_100), Ack)
    assert isinstance(a.new_order("ACME", "buy", 3, px=10_100), Ack)  # b sells 3 back
    assert isinstance(a.new_order("ETH-USD", "buy", 2, px=290_000), Ack)  # rests
    wait_notices(b, 4, Fill)
    before = reports(rig, (6, 7))
    acme = next(p for p in before[7].positions if p.sym == "ACME")
    assert (acme.pos, acme.cost, acme.volume, acme.open_sell, acme.orders) == (
        10,
        8 * 10_000 + 5 * 10_050 - 3 * (8 * 10_000 + 5 * 10_050) // 13,
        16,
        1,
        1,
    )
    assert acme.realised == 3 * 10_100 - 3 * (8 * 10_000 + 5 * 10_050) // 13
    eth = next(p for p in before[6].positions if p.sym == "ETH-USD")
    assert (eth.pos, eth.open_buy, eth.orders) == (0, 2, 1)
    a.close()
    b.close()
    killswitch.kill(rig.keys_dir, 8, "the test")
    assert rig.stop("gateway") == 0
    rig.start_gateway(synced=True)  # the resting orders come with the syncs
    after = reports(rig, (6, 7))
    assert after == before
    # and `exch positions`, from the journals, says the same
    for client in (6, 7):
        code = cli.main(["positions", str(client), "--config", str(rig.config_path), "--json"])
        assert code == 0
        [doc] = json.loads(capsys.readouterr().out)["clients"]
        report = msgspec.to_builtins(before[client])
        del report["t"], report["cid"]
        assert doc == {"client": client, **report}
    assert rig.client(8).positions().killed  # a block outlives the restart
    killswitch.unkill(rig.keys_dir, 8)
    for client in (6, 7):
        rig.client(client).mass_cancel()


def test_journal_verify_finds_the_invariants_held(rig, capsys):
    """After everything above: positions sum to zero, cash moves too, no client's position
    ever went past its limit (the burst included)."""
    maker, taker = rig.client(MAKER), rig.client(1)
    assert isinstance(maker.new_order("BOLT", "sell", 20, px=2_500), Ack)
    assert isinstance(taker.new_order("BOLT", "buy", 20, px=2_500), Ack)
    code = cli.main(["journal", "verify", "--config", str(rig.config_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"], doc
    assert doc["accounts"]["ok"] and doc["accounts"]["trades"] >= 1


# symbol -> (a price near where it trades here, tick, lot)
GRID = {
    "ACME": (10_000, 1, 1),
    "BOLT": (2_500, 5, 10),
    "BTC-USD": (6_000_000, 100, 1),
    "ETH-USD": (300_000, 10, 1),
}


def random_requests(rig, rng, clients, count: int) -> dict:
    """``count`` random orders, cancels, replaces and mass cancels from ``clients``
    (each on its own connection); returns the reject codes seen, counted."""
    conns = {c: rig.client(c) for c in clients}
    live = {c: [] for c in clients}  # (sym, oid)
    codes = {}
    for _ in range(count):
        client = int(rng.choice(clients))
        c = conns[client]
        roll = rng.random()
        if roll < 0.7 or not live[client]:
            sym = str(rng.choice(list(GRID)))
            mid, tick, lot = GRID[sym]
            side = str(rng.choice(["buy", "sell"]))
            qty = lot * int(rng.integers(1, 30))
            px = mid + tick * int(rng.integers(-8, 9))
            tif = "ioc" if rng.random() < 0.3 else "gtc"
            reply = c.new_order(sym, side, qty, px=px, tif=tif)
            if isinstance(reply, Ack) and tif == "gtc":
                live[client].append((sym, reply.oid))
        elif roll < 0.85:
            sym, oid = live[client].pop(int(rng.integers(len(live[client]))))
            reply = c.cancel(sym, oid)
        elif roll < 0.97:
            sym, oid = live[client][int(rng.integers(len(live[client])))]
            mid, tick, lot = GRID[sym]
            px = mid + tick * int(rng.integers(-8, 9))
            reply = c.replace(sym, oid, px=px, qty=lot * int(rng.integers(1, 40)))
        else:
            reply = c.mass_cancel()
            live[client].clear()
        if isinstance(reply, Reject):
            codes[reply.code] = codes.get(reply.code, 0) + 1
    for c in conns.values():
        c.close()
    return codes


def check_books_balanced(rig, capsys, clients) -> int:
    """Every client's PositionReport is what the journals say, within its limits, and
    ``exch journal verify`` finds the accounts sound; returns the trades journaled."""
    got = reports(rig, clients)
    code = cli.main(["positions", "--config", str(rig.config_path), "--json"])
    assert code == 0
    docs = {d["client"]: d for d in json.loads(capsys.readouterr().out)["clients"]}
    for client, report in got.items():
        doc = msgspec.to_builtins(report)
        del doc["t"], doc["cid"]
        # a client that never traded and has no orders is not listed
        assert docs.get(client, {"client": client, **doc}) == {"client": client, **doc}
        assert client in docs or not (report.positions or report.orders)
        if client != MAKER:
            for p in report.positions:
                assert p.pos - p.open_sell >= -LIMIT and p.pos + p.open_buy <= LIMIT
    code = cli.main(["journal", "verify", "--config", str(rig.config_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["accounts"]["ok"], doc["accounts"]
    return doc["accounts"]["trades"]


@pytest.mark.parametrize(
    "count, restarts",
    [
        (600, 0),
        pytest.param(6_000, 3, marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
def test_a_random_run_keeps_positions_conserved_and_within_limits(rig, capsys, count, restarts):
    """Random orders, cancels and replaces of several clients with the gateway restarted
    in between: the positions the gateway reports are the journals', sum to zero with
    the cash, and no position ever went past its limit."""
    rng = np.random.default_rng(count)
    clients = [1, MAKER, 3, 5, 6, 7]
    codes = {}
    trades = check_books_balanced(rig, capsys, clients)
    for part in range(restarts + 1):
        for code, n in random_requests(rig, rng, clients, count // (restarts + 1)).items():
            codes[code] = codes.get(code, 0) + n
        now = check_books_balanced(rig, capsys, clients)
        assert now > trades + count // (restarts + 1) // 10  # the run does trade
        trades = now
        if part < restarts:
            assert rig.stop("gateway") == 0
            rig.start_gateway(synced=True)
    assert set(codes) <= {"max_position", "not_found"} and codes.get("max_position")
    for client in clients:
        rig.client(client).mass_cancel()
