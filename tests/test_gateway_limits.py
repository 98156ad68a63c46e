"""The gateway under limits and failures, with real processes: rate limits, cancel on
disconnect, a shard that is down or restarts, a gateway that restarts (its books, its
keys, and the gap its subscribers see).

The exchange here has a small rate limit (burst 50, 20 orders/s) and short sessions
(heartbeat 100 ms, cancel on disconnect after 400 ms), and its gateway runs the
poll loop (the other modules run the default, asyncio); each test uses its own clients.
"""

import subprocess
import sys
import time
import uuid

import msgspec
import pytest
from gateway_harness import REPO, GatewayRig, wait_notices

from exchange.config import DEFAULT_TOML, dump_config, parse_config
from exchange.topology import request_ring
from gateway.client import order
from gateway.core import RUN_MIN
from gateway.keys import create_server_keys
from gateway.protocol import (
    Ack,
    BatchAck,
    BookSnapshot,
    Cancelled,
    Fill,
    Heartbeat,
    NewOrder,
    Reject,
)
from shm.ring import inspect_ring

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = GatewayRig(
        tmp_path_factory.mktemp("limits"),
        orders_per_second=20,
        burst=50,
        heartbeat_ms=100,
        cancel_on_disconnect_ms=400,
        loop="poll",
    )
    try:
        r.start()
        yield r
    finally:
        r.close()


def wait_until(pred, timeout=10.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_rate_limit_refuses_what_is_over_the_bucket(rig):
    c = rig.client(1)
    batch = c.new_orders([order("ACME", "buy", 1, px=6_000 + i) for i in range(60)])
    assert isinstance(batch, BatchAck)
    kinds = [type(r) for r in batch.results]
    assert kinds == [Ack] * 50 + [Reject] * 10  # a new client's bucket holds the burst
    assert {(r.code, r.field) for r in batch.results[50:]} == {("rate_limited", "$")}
    assert isinstance(c.heartbeat(), Heartbeat)  # heartbeats cost nothing
    time.sleep(0.2)  # 20/s: 4 tokens
    assert isinstance(c.new_order("ACME", "buy", 1, px=6_100), Ack)
    assert c.mass_cancel().n == 51


def test_silent_client_with_cancel_on_disconnect_loses_its_orders(rig):
    armed, plain = rig.client(2), rig.client(3)
    assert armed.heartbeat(cod=True) == Heartbeat(cid=1, v=1, cod=True, bundle=True)
    mine = {
        armed.new_order("BOLT", "buy", 10, px=1_500).oid,
        armed.new_order("ETH-USD", "sell", 1, px=400_000).oid,
    }
    kept = plain.new_order("BOLT", "buy", 10, px=1_505).oid
    got = wait_notices(armed, 2, Cancelled)
    assert all(m.reason == "user" and m.cid == 0 for m in got)
    assert {m.oid for m in got} == mine
    assert plain.status("BOLT", kept).state == "live"  # never armed: left alone
    # the session is disarmed now: a new order of the same client stays
    oid = armed.new_order("BOLT", "buy", 10, px=1_510).oid
    time.sleep(0.6)
    assert armed.status("BOLT", oid).state == "live"
    armed.mass_cancel()
    plain.mass_cancel()


def test_shard_down_is_unavailable_and_a_restart_repeats_no_fill(rig):
    maker, taker = rig.client(4), rig.client(5)
    rest = maker.new_order("ETH-USD", "sell", 5, px=350_000)
    assert isinstance(taker.new_order("ETH-USD", "buy", 2, px=350_000), Ack)
    wait_notices(maker, 1, Fill)
    rig.kill("s1")
    log = rig.tmp / "gateway.log"
    wait_until(lambda: '"shard down"' in log.read_text(), what="the gateway to see s1 down")
    refused = taker.new_order("ETH-USD", "buy", 1, px=350_000)
    assert isinstance(refused, Reject) and refused.code == "unavailable"
    assert isinstance(taker.new_order("ACME", "buy", 1, px=6_000), Ack)  # s0 is unaffected
    rig.start_shard("s1")
    rig.wait_shard("s1")
    # the restarted shard publishes its last batch again: nobody gets it twice
    ack = None
    while not isinstance(ack, Ack):
        ack = taker.new_order("ETH-USD", "buy", 1, px=350_000, ik=777)
        time.sleep(0.05)
    [fill] = wait_notices(maker, 1, Fill)
    assert (fill.oid, fill.qty, fill.leaves) == (rest.oid, 1, 2)
    assert not maker.notices(0.3)
    maker.mass_cancel()
    taker.mass_cancel()


def test_gateway_restart_keeps_books_and_idempotency_keys(rig):
    c = rig.client(6)
    first = c.new_order("ACME", "sell", 7, px=19_000, ik=31337)
    assert isinstance(first, Ack)
    c.close()
    assert rig.stop("gateway") == 0
    rig.start_gateway()
    c = rig.client(6)
    book = c.book("ACME", depth=100)
    assert isinstance(book, BookSnapshot) and (19_000, 7, 1) in book.asks
    seqs = rig.last_seqs()
    # the new gateway holds no key in memory: s0's journal says where 31337 was used
    conflict = c.new_order("BTC-USD", "sell", 7, px=8_000_000, ik=31337)
    assert (conflict.code, conflict.field) == ("conflict", "$.ik") and "ACME" in conflict.reason
    same_shard = c.new_order("BOLT", "sell", 10, px=4_000, ik=31337)  # s0 refuses it itself
    assert (same_shard.code, same_shard.field) == ("conflict", "$.ik")
    batch = c.new_orders(
        [
            order("ETH-USD", "sell", 1, px=440_000, ik=31337),
            order("ETH-USD", "sell", 1, px=440_000, ik=31338),
        ]
    )
    used, new = batch.results
    assert used.code == "conflict" and isinstance(new, Ack)
    assert rig.last_seqs() == {**seqs, "s1": seqs["s1"] + 1}  # none of the conflicts ran
    retry = c.new_order("ACME", "sell", 7, px=19_000, ik=31337)
    assert retry.dup and (retry.oid, retry.seq) == (first.oid, first.seq)
    assert c.mass_cancel().n == 2


def test_a_key_a_killed_gateway_left_in_a_ring_is_a_conflict_for_the_next(rig):
    c = rig.client(7)
    s0 = rig.last_seqs()["s0"]
    rig.pause("s0")  # the order waits in s0's request ring
    try:
        ring = request_ring("s0")
        # a pause between an answer and its slot's release leaves that slot in the depth
        in_ring = inspect_ring(rig.ns, ring).depth + 1
        c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=2, px=7_000, ik=4242))
        wait_until(lambda: inspect_ring(rig.ns, ring).depth == in_ring, what="the order in a ring")
        rig.kill("gateway")  # with the order in flight, and its key in its memory only
        rig.start_gateway()  # reads s0's journal, which has no 4242 yet
    finally:
        rig.resume("s0")  # s0 journals the old gateway's order and publishes its events
    wait_until(lambda: rig.last_seqs()["s0"] == s0 + 1, what="s0 to journal the order")
    c = rig.client(7)
    conflict = c.new_order("BTC-USD", "buy", 2, px=6_000_000, ik=4242)
    assert (conflict.code, conflict.field) == ("conflict", "$.ik") and "ACME" in conflict.reason
    retry = c.new_order("ACME", "buy", 2, px=7_000, ik=4242)
    assert isinstance(retry, Ack) and retry.dup and retry.seq == s0 + 1
    assert c.mass_cancel().n == 1


def test_a_subscriber_sees_the_gap_a_gateway_restart_makes_and_refreshes(rig):
    trader = [rig.client(7)]
    sub = rig.subscriber(7, ["BOLT"], lambda sym, depth: trader[0].book(sym, depth))
    sub.poll(0.3)  # the first snapshot; the subscription takes effect
    assert trader[0].new_order("BOLT", "sell", 10, px=4_000).seq > 0
    wait_until(lambda: sub.poll(0.05) is not None and sub.books["BOLT"].asks, what="the ask")
    trader[0].close()
    assert rig.stop("gateway") == 0
    rig.start_gateway()
    trader[0] = rig.client(7)
    # the new gateway's feeds start over (prev 0): the next message breaks the chain
    px = 4_005
    while not sub.gaps:
        trader[0].new_order("BOLT", "sell", 10, px=px)
        px += 5
        sub.poll(0.1)
    sub.poll(0.3)
    book = trader[0].book("BOLT")
    assert sub.refreshes >= 2 and sub.books["BOLT"] == (book.seq, book.bids, book.asks, book.state)
    assert trader[0].mass_cancel().n >= 2


def _start_alone(tmp_path, cfg) -> subprocess.CompletedProcess:
    path = tmp_path / "exchange.toml"
    path.write_text(dump_config(cfg))
    return subprocess.run(
        [sys.executable, "-m", "gateway.server", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_gateway_refuses_to_start_without_keys_or_rings(tmp_path):
    base = parse_config(DEFAULT_TOML)
    replace = msgspec.structs.replace
    ns = "gwbad" + uuid.uuid4().hex[:8]
    cfg = replace(
        base,
        gateway=replace(base.gateway, keys_dir=str(tmp_path / "nokeys")),
        shm=replace(base.shm, namespace=ns),
    )
    no_keys = _start_alone(tmp_path, cfg)
    assert no_keys.returncode == 2 and "server.key_secret" in no_keys.stderr
    create_server_keys(tmp_path / "keys")
    cfg = replace(cfg, gateway=replace(cfg.gateway, keys_dir=str(tmp_path / "keys")))
    no_rings = _start_alone(tmp_path, cfg)
    assert no_rings.returncode == 2 and "cannot start" in no_rings.stderr
    assert "s0-" in no_rings.stderr  # the ring it could not attach to


def test_a_key_a_risk_check_refused_is_free_for_the_next_order_of_the_frame(rig):
    """The orders of a frame go through the checks together (a run: as many as
    ``gateway.core.RUN_MIN`` at least), yet each sees the key as one order at a time
    would: an order refused by max_notional (a risk check: after the key check) holds
    no key, so the next, on another instrument, takes it."""
    c = rig.client(8)
    rest = [order("ACME", "buy", 1, px=5_000 + i) for i in range(RUN_MIN)]
    batch = c.new_orders(
        [
            *rest,
            order("BTC-USD", "buy", 2_000, px=6_000_000, ik=9191),  # 1.2e10 > 1e10
            order("ACME", "buy", 1, px=5_100, ik=9191),
        ]
    )
    *acks, refused, taken = batch.results
    assert all(isinstance(a, Ack) for a in acks), batch
    assert refused.code == "max_notional" and isinstance(taken, Ack), batch
    assert c.mass_cancel().n == RUN_MIN + 1
