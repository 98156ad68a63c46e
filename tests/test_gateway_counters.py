"""The gateway's counter block: tallied per turn, flushed once, read by `exchanged status`
and `exch top` from a real daemon."""

import json
import time

import pytest
import shm_helpers as h

from daemon import cli
from daemon.status import collect
from gateway.counters import BLOCK, COUNTERS, REJECTS, GatewayCounters
from gateway.protocol import ERROR_CODES, Ack, BatchAck, Fill, Order, Reject
from gateway.sessions import Sessions
from shm.counters_reader import list_blocks, read_block
from tools.top import frame

SHARDS = ["s0", "s1"]


@pytest.fixture
def ns():
    with h.namespace() as name:
        yield name


def test_every_reject_code_has_a_counter_from_the_start(ns):
    counters = GatewayCounters(ns, SHARDS)
    try:
        block = read_block(ns, BLOCK)
        assert set(block.counters) == set(COUNTERS)
        assert {REJECTS + code for code in ERROR_CODES} <= set(block.counters)
        assert not any(block.counters.values())
        assert block.gauges == {"clients": 0, "stalled_ms.s0": 0, "stalled_ms.s1": 0}
    finally:
        counters.unlink()
    assert BLOCK not in list_blocks(ns)


def test_a_turn_is_written_once_at_its_flush(ns):
    counters = GatewayCounters(ns, SHARDS)
    try:
        counters.requests += 3
        counters.orders += 1 + 64
        counters.fills += 2
        counters.reject("invalid")
        counters.reject("invalid")
        counters.reject("busy")
        assert not any(read_block(ns, BLOCK).counters.values())  # nothing before the flush
        counters.flush()
        counters.flush()  # a turn with nothing counted adds nothing
        got = read_block(ns, BLOCK).counters
        assert {k: v for k, v in got.items() if v} == {
            "requests": 3,
            "orders": 65,
            "fills": 2,
            "rejects.invalid": 2,
            "rejects.busy": 1,
        }
        counters.reject("invalid")
        counters.flush()
        assert read_block(ns, BLOCK).counters["rejects.invalid"] == 3
    finally:
        counters.unlink()


def test_clients_are_those_seen_with_a_known_connection(ns):
    counters = GatewayCounters(ns, SHARDS)
    try:
        sessions = Sessions()
        for client, conn in ((1, b"a"), (1, b"b"), (2, b"c")):
            sessions.seen(client, conn, 0.0)
            counters.seen.add(client)
        counters.set_clients(sessions)
        assert read_block(ns, BLOCK).gauges["clients"] == 2
        sessions.gone(b"c")  # a send found client 2's only connection closed
        counters.set_clients(sessions)
        assert read_block(ns, BLOCK).gauges["clients"] == 1
        assert counters.seen == {1}
    finally:
        counters.unlink()


def _gateway_block(config, want) -> dict:
    """The gateway's figures once ``want`` holds (a turn is flushed as it ends, the
    clients gauge set every tick)."""
    deadline = time.monotonic() + 10
    while True:
        doc = collect(config)
        gw = doc["processes"].get(BLOCK, {})
        if want(gw) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def _ready(client) -> None:
    """Until the gateway routes to shard s0 (it may answer `unavailable` right after start)."""
    deadline = time.monotonic() + 30
    while not isinstance(client.new_order("ACME", "buy", 1, px=9_000), Ack):
        assert time.monotonic() < deadline, "shard s0 never became available"
        time.sleep(0.2)


def _settled(ns: str) -> dict:
    """The gateway's counters once a look a little later finds them unchanged: a reply
    goes out during a turn, what the turn counted is flushed just after."""
    now = read_block(ns, BLOCK).counters
    while True:
        time.sleep(0.1)
        before, now = now, read_block(ns, BLOCK).counters
        if now == before:
            return now


@pytest.mark.timeout(180)
def test_status_and_top_show_the_gateway_of_a_real_daemon(daemon, capsys):
    daemon.start()
    maker, taker = daemon.client(1), daemon.client(2)
    try:
        _ready(maker)
        before = _settled(daemon.ns)
        maker.retries = taker.retries = 0  # one frame per request from here on
        sell = maker.new_order("ACME", "sell", 5, px=10_000)
        buy = taker.new_order("ACME", "buy", 5, px=10_000)
        assert isinstance(sell, Ack) and isinstance(buy, Ack), (sell, buy)
        assert [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
        bad = taker.new_order("BOLT", "buy", 10, px=2_502)  # BOLT's tick is 5
        assert isinstance(bad, Reject) and bad.code == "invalid", bad
        batch = taker.new_orders(
            [
                Order(sym="ACME", side="buy", qty=1, px=9_000),
                Order(sym="NOPE", side="buy", qty=1, px=9_000),
            ]
        )
        assert isinstance(batch, BatchAck), batch
        assert [type(r) for r in batch.results] == [Ack, Reject]
        doc = _gateway_block(daemon.config, lambda gw: gw.get("clients", 0) >= 2)
    finally:
        maker.close()
        taker.close()
    gw = doc["processes"][BLOCK]
    assert gw["alive"] and gw["pid"] == daemon.child_pid("gateway")
    added = {k: gw[k] - v for k, v in before.items() if gw[k] != v}
    assert added == {
        "requests": 4,
        "orders": 5,  # a NewOrders frame counts its 2 orders
        "fills": 2,  # the maker's and the taker's
        "rejects.invalid": 1,
        "rejects.not_found": 1,
    }
    assert gw["clients"] == 2
    assert doc["mode"] == "supervisor" and doc["running"] and doc["all_up"]
    expected = {p["name"]: p for p in doc["expected"]}
    assert set(expected) == {"s0", "s1", "gateway"}
    assert expected["gateway"]["pid"] == gw["pid"] and expected["gateway"]["state"] == "up"

    screen = frame(doc, now=0).splitlines()
    assert screen[2].split()[-1] == "clients"
    row = next(line for line in screen if line.startswith("gateway")).split()
    assert row[1:3] == [str(gw["pid"]), "up"] and row[-1] == "2"
    assert f"invalid {gw['rejects.invalid']}" in screen[-1]
    assert f"not_found {gw['rejects.not_found']}" in screen[-1]

    assert cli.main(["status", "--json", "--config", str(daemon.path)]) == 0
    assert json.loads(capsys.readouterr().out)["processes"][BLOCK]["orders"] == gw["orders"]
