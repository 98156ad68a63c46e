"""The gateway process with real shards, real rings and real sockets (tcp and ipc).

One exchange (two shards, one gateway) serves the whole module; after each test
every client's orders are mass-cancelled, so no test trades with another's
leftovers.
"""

import asyncio
import threading
import time

import msgspec
import pytest
import uvloop
import zmq
from gateway_harness import CLIENTS, GatewayRig, wait_notices

from exchange.engine import order_id_shard
from exchange.topology import request_ring
from gateway.client import AsyncClient, AuthError, Client, order
from gateway.codec import decode_reply, encode
from gateway.keys import load_secret_certificate, new_key_pair, revoke_client
from gateway.protocol import (
    Ack,
    BatchAck,
    BookSnapshot,
    Cancelled,
    Depth,
    Fill,
    Heartbeat,
    MassCancelled,
    NewOrder,
    OrderStatus,
    Reject,
    Replaced,
    TopOfBook,
    Trades,
)
from shm.ring import inspect_ring

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    rig = GatewayRig(tmp_path_factory.mktemp("gateway"))
    try:
        rig.start()
        yield rig
        assert rig.stop("gateway") == 0  # SIGTERM: a clean exit
    finally:
        rig.close()


@pytest.fixture
def rig(exchange):
    yield exchange
    for c in CLIENTS[:7]:  # client 8's key is revoked by a test
        with exchange.client(c) as cleaner:
            assert isinstance(cleaner.mass_cancel(), MassCancelled)


def fills(msgs) -> list[Fill]:
    return [m for m in msgs if isinstance(m, Fill)]


def test_order_is_acked_and_a_trade_fills_both_sides(rig):
    maker, taker = rig.client(1, "tcp"), rig.client(2, "ipc")
    ack = maker.new_order("ACME", "sell", 10, px=10_000, coid="m-1")
    assert isinstance(ack, Ack) and ack.coid == "m-1" and not ack.dup
    assert order_id_shard(ack.oid) == 0
    hit = taker.new_order("ACME", "buy", 4, px=10_000, tif="ioc")
    assert isinstance(hit, Ack) and hit.seq > ack.seq
    [m] = wait_notices(maker, 1, Fill)
    [t] = wait_notices(taker, 1, Fill)
    assert (m.oid, m.side, m.px, m.qty, m.leaves, m.liq) == (ack.oid, "sell", 10_000, 4, 6, "maker")
    assert (t.oid, t.side, t.px, t.qty, t.leaves, t.liq) == (hit.oid, "buy", 10_000, 4, 0, "taker")
    assert (m.seq, m.idx) == (t.seq, t.idx)
    # the owner is the authenticated client, as journaled by the shard
    assert rig.order("s0", ack.oid).client == 1 and rig.order("s0", hit.oid).client == 2
    status = maker.status("ACME", ack.oid)
    assert isinstance(status, OrderStatus) and (status.state, status.leaves) == ("live", 6)


def test_cancel_and_replace(rig):
    c = rig.client(3)
    ack = c.new_order("BTC-USD", "buy", 5, px=6_000_000)
    assert order_id_shard(ack.oid) == 1
    rep = c.replace("BTC-USD", ack.oid, px=6_000_100, qty=3)
    assert isinstance(rep, Replaced) and (rep.px, rep.qty, rep.leaves) == (6_000_100, 3, 3)
    gone = c.cancel("BTC-USD", ack.oid)
    assert isinstance(gone, Cancelled) and gone.cid > 0 and (gone.qty, gone.reason) == (3, "user")
    again = c.cancel("BTC-USD", ack.oid)
    assert isinstance(again, Reject) and (again.code, again.field) == ("not_found", "$.oid")
    # replace down to what has filled: the order is cancelled
    resting = c.new_order("ETH-USD", "sell", 4, px=300_000)
    other = rig.client(4)
    assert isinstance(other.new_order("ETH-USD", "buy", 2, px=300_000), Ack)
    zero = c.replace("ETH-USD", resting.oid, px=300_000, qty=2)
    assert isinstance(zero, Cancelled) and zero.reason == "replaced_to_zero" and zero.qty == 2


def test_batch_orders_are_answered_each_in_one_reply(rig):
    c = rig.client(1)
    reply = c.new_orders(
        [
            order("ACME", "buy", 1, px=9_000, coid="a"),
            order("BTC-USD", "sell", 1, px=7_000_000, coid="b"),
            order("BOLT", "buy", 10, px=2_501, coid="c"),  # BOLT's tick is 5
            order("NOPE", "buy", 1, px=1, coid="d"),
            order("ETH-USD", "buy", 1, px=200_000, coid="e", tif="ioc"),
        ]
    )
    assert isinstance(reply, BatchAck) and len(reply.results) == 5
    a, b, off_tick, unknown, e = reply.results
    assert isinstance(a, Ack) and isinstance(b, Ack) and isinstance(e, Ack)
    assert [r.coid for r in reply.results] == ["a", "b", "c", "d", "e"]
    assert {r.cid for r in reply.results} == {reply.cid}
    assert (off_tick.code, off_tick.field) == ("invalid", "$.px")
    assert "tick size 5" in off_tick.reason
    assert (unknown.code, unknown.field) == ("not_found", "$.sym")
    # a schema error anywhere refuses the whole frame, naming the order
    before = rig.last_seqs()
    frame = {"t": "B", "cid": 77, "orders": [{"sym": "ACME", "side": "buy", "qty": 1, "px": 9000}]}
    frame["orders"].append({"sym": "ACME", "side": "buy", "qty": "1", "px": 9000})
    c.send_raw(msgspec.msgpack.encode(frame))
    bad = c.wait_reply(77, 5.0)
    assert isinstance(bad, Reject) and (bad.code, bad.field) == ("invalid", "$.orders[1].qty")
    assert rig.last_seqs() == before


def test_keys_that_are_not_registered_cannot_connect(rig):
    public, secret = new_key_pair()
    with pytest.raises(AuthError, match="refused"):
        Client(rig.endpoints["tcp"][0], rig.server_key, public, secret, timeout=5).connect()
    with pytest.raises(AuthError, match="refused"):
        Client(rig.endpoints["ipc"][0], rig.server_key, public, secret, timeout=5).connect()
    # no CURVE at all: the handshake never completes, nothing is answered
    ctx = zmq.Context.instance()
    plain = ctx.socket(zmq.DEALER)
    plain.linger = 0
    try:
        plain.connect(rig.endpoints["tcp"][0])
        plain.send(encode(Heartbeat(cid=1, v=1)))
        assert not plain.poll(1000)
    finally:
        plain.close()
    assert '"connection refused"' in (rig.tmp / "gateway.log").read_text()


def test_a_revoked_key_is_refused_on_its_open_connection_and_at_connect(rig):
    c = rig.client(8)
    assert isinstance(c.heartbeat(), Heartbeat)
    revoke_client(rig.keys_dir, 8)
    deadline = time.monotonic() + 10
    while True:  # the gateway looks at the keys directory every second
        reply = c.heartbeat()
        if isinstance(reply, Reject):
            break
        assert time.monotonic() < deadline, "the revoked key kept working"
        time.sleep(0.1)
    assert reply.code == "unauthenticated" and reply.cid > 0
    with pytest.raises(AuthError):
        rig.client(8)


def test_a_client_cannot_see_cancel_or_replace_another_clients_order(rig):
    owner, other = rig.client(5), rig.client(6)
    ack = owner.new_order("BOLT", "sell", 10, px=3_000)
    for reply in (
        other.cancel("BOLT", ack.oid),
        other.replace("BOLT", ack.oid, px=3_005, qty=10),
        other.status("BOLT", ack.oid),
        owner.status("ACME", ack.oid),  # the wrong instrument is no better
        owner.cancel("BTC-USD", ack.oid),  # an id of another shard
    ):
        assert isinstance(reply, Reject) and (reply.code, reply.field) == ("not_found", "$.oid")
    assert owner.status("BOLT", ack.oid).state == "live"
    assert not fills(owner.notices(0.2))


def test_a_client_id_in_the_body_is_refused_and_never_used(rig):
    c = rig.client(1)
    before = rig.last_seqs()
    frame = {"t": "N", "cid": 5, "client": 2, "sym": "ACME", "side": "buy", "qty": 1, "px": 9000}
    c.send_raw(msgspec.msgpack.encode(frame))
    reply = c.wait_reply(5, 5.0)
    assert isinstance(reply, Reject) and (reply.code, reply.field) == ("invalid", "$.client")
    assert rig.last_seqs() == before
    # and the cid (a correlation id) is no client id either: the order is client 1's
    ack = c.request(NewOrder(cid=2, sym="ACME", side="buy", qty=1, px=9_000))
    assert rig.order("s0", ack.oid).client == 1


def test_an_idempotent_retry_gets_the_original_ack_and_fills_again(rig):
    maker, taker = rig.client(1), rig.client(2)
    maker.new_order("ETH-USD", "sell", 3, px=310_000)
    first = taker.new_order("ETH-USD", "buy", 2, px=310_000, ik=424242)
    [fill] = wait_notices(taker, 1, Fill)
    wait_notices(maker, 1, Fill)
    seqs = rig.last_seqs()
    retry = taker.new_order("ETH-USD", "buy", 2, px=310_000, ik=424242, coid="retry")
    assert isinstance(retry, Ack) and retry.dup
    assert (retry.oid, retry.seq) == (first.oid, first.seq)
    [again] = wait_notices(taker, 1, Fill)
    assert again.dup and (again.seq, again.idx, again.qty) == (fill.seq, fill.idx, fill.qty)
    assert not maker.notices(0.3)  # a re-send goes to the retry's owner only
    assert rig.last_seqs() == seqs


def test_a_used_key_for_another_request_is_a_conflict(rig):
    c = rig.client(3)
    assert isinstance(c.new_order("ACME", "buy", 1, px=8_000, ik=99), Ack)
    same_shard = c.new_order("ACME", "buy", 2, px=8_000, ik=99)
    assert (same_shard.code, same_shard.field) == ("conflict", "$.ik")
    s1 = rig.last_seqs()["s1"]
    other_shard = c.new_order("BTC-USD", "buy", 1, px=6_000_000, ik=99)
    assert (other_shard.code, other_shard.field) == ("conflict", "$.ik")
    assert "ACME" in other_shard.reason
    assert rig.last_seqs()["s1"] == s1  # refused by the gateway: never reached s1
    # another client's key space is its own
    assert isinstance(rig.client(4).new_order("BTC-USD", "buy", 1, px=6_000_000, ik=99), Ack)


def test_a_key_in_flight_on_one_shard_is_a_conflict_on_another(rig):
    c = rig.client(5)
    s1 = rig.last_seqs()["s1"]
    rig.pause("s0")  # the ACME orders stay in flight: no journal has their key yet
    try:
        first = c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=1, px=8_100, ik=555))
        retry = c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=1, px=8_100, ik=555))
        other = c.new_order("BTC-USD", "buy", 1, px=6_000_000, ik=555)
        assert (other.code, other.field) == ("conflict", "$.ik") and "ACME" in other.reason
        batch = c.new_orders(
            [
                order("ETH-USD", "buy", 1, px=290_000, ik=555, coid="a"),
                order("ETH-USD", "buy", 1, px=290_000, ik=556, coid="b"),
                order("BTC-USD", "buy", 1, px=5_900_000, ik=556, coid="c"),  # in the batch
            ]
        )
        used, ok, again = batch.results
        assert (used.code, used.coid) == ("conflict", "a") and "ACME" in used.reason
        assert isinstance(ok, Ack) and (again.code, again.coid) == ("conflict", "c")
        assert "ETH-USD" in again.reason
    finally:
        rig.resume("s0")
    ack, dup = c.wait_reply(first, 10), c.wait_reply(retry, 10)
    assert isinstance(ack, Ack) and not ack.dup
    assert dup.dup and (dup.oid, dup.seq) == (ack.oid, ack.seq)
    # answered: out of the gateway's memory, in s0's journal
    later = c.new_order("BTC-USD", "buy", 1, px=6_000_000, ik=555)
    assert later.code == "conflict" and "ACME" in later.reason
    assert rig.last_seqs()["s1"] == s1 + 1  # only the ETH-USD order reached s1


def test_mass_cancel_without_symbol_reaches_every_instrument(rig):
    c = rig.client(7)
    oids = {
        c.new_order("ACME", "buy", 1, px=8_500).oid,
        c.new_order("BOLT", "buy", 10, px=2_000).oid,
        c.new_order("BTC-USD", "sell", 1, px=8_000_000).oid,
    }
    done = c.mass_cancel()
    assert done == MassCancelled(cid=done.cid, sym=None, n=3)
    notices = wait_notices(c, 3, Cancelled)
    assert {m.oid for m in notices} == oids and {m.cid for m in notices} == {0}
    assert c.mass_cancel("ACME") == MassCancelled(cid=done.cid + 1, sym="ACME", n=0)


def test_market_data_chains_by_seq_and_matches_the_book(rig):
    c = rig.client(1)
    sub = rig.subscriber(2, ["BOLT"], c.book, transport="ipc")
    sub.poll(0.2)  # the subscription takes effect
    for i in range(5):
        c.new_order("BOLT", "buy", 10, px=2_000 + 5 * i)
        c.new_order("BOLT", "sell", 10, px=2_100 + 5 * i)
    rig.client(2).new_order("BOLT", "sell", 30, px=2_000, tif="ioc")
    got = []
    deadline = time.monotonic() + 10
    while not any(isinstance(m, Trades) for m in got):
        got += sub.poll(0.1)
        assert time.monotonic() < deadline, got
    got += sub.poll(0.3)
    assert len(got) == 19  # 10 orders: 10 Depth, 6 TopOfBook; the IOC: one of each
    for feed in (Trades, Depth, TopOfBook):
        chain = [m for m in got if isinstance(m, feed)]
        seqs = [m.seq for m in chain]
        assert seqs == sorted(set(seqs))
        assert [m.prev for m in chain[1:]] == seqs[:-1]
    [trades] = [m for m in got if isinstance(m, Trades)]
    assert trades.side == "sell" and trades.prints == [(2_020, 10), (2_015, 10), (2_010, 10)]
    book = c.book("BOLT")
    assert isinstance(book, BookSnapshot) and sub.gaps == 0
    assert sub.books["BOLT"] == (book.seq, book.bids, book.asks, book.state)


def test_heartbeat_speaks_version_1_only(rig):
    c = rig.client(1)
    assert c.heartbeat() == Heartbeat(cid=1, v=1, bundle=True)
    c.send_raw(msgspec.msgpack.encode({"t": "H", "cid": 9, "v": 2}))
    reply = c.wait_reply(9, 5.0)
    assert (reply.code, reply.field) == ("invalid", "$.v")


def test_async_client_has_many_requests_in_flight(rig):
    async def run():
        public, secret = load_secret_certificate(rig.secrets[4])
        async with AsyncClient(rig.endpoints["tcp"][0], rig.server_key, public, secret) as c:
            acks = await asyncio.gather(
                *(c.new_order("ACME", "sell", 1, px=15_000 + i) for i in range(50))
            )
            assert all(isinstance(a, Ack) for a in acks)
            assert len({a.oid for a in acks}) == 50
            gone = await asyncio.gather(*(c.cancel("ACME", a.oid) for a in acks))
            assert all(isinstance(g, Cancelled) for g in gone)
            assert isinstance(await c.heartbeat(), Heartbeat)
            assert (await c.book("NOPE")).code == "not_found"

    uvloop.run(run())


def test_replies_decode_with_plain_msgpack(rig):
    """What a bot in another language sees: plain maps with the documented keys."""
    c = rig.client(3)
    c.send_raw(msgspec.msgpack.encode({"t": "K", "cid": 31, "sym": "ACME", "depth": 2}))
    assert c.socket.poll(5000)
    raw = msgspec.msgpack.decode(c.socket.recv())
    assert raw["t"] == "K" and raw["cid"] == 31 and set(raw) >= {"sym", "seq", "bids", "asks"}
    assert isinstance(decode_reply(msgspec.msgpack.encode(raw)), BookSnapshot)


def test_a_connection_that_asks_for_bundles_gets_an_order_and_its_fill_in_one_frame(rig):
    maker, bundled, single = rig.client(1), rig.client(2), rig.client(3, "ipc")
    assert bundled.heartbeat(bundle=True).bundle
    assert not single.heartbeat(bundle=False).bundle
    frames = {}
    for name, c in (("bundled", bundled), ("single", single)):
        assert isinstance(maker.new_order("ACME", "sell", 4, px=10_000), Ack)
        c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=4, px=10_000, tif="ioc"))
        frames[name] = []
        while c.socket.poll(1000):
            frames[name].append(msgspec.msgpack.decode(c.socket.recv()))
    # a bundle is an array of the messages, in order; without bundles, a frame each
    [bundle] = frames["bundled"]
    assert [m["t"] for m in bundle] == ["A", "F"] and bundle[1]["oid"] == bundle[0]["oid"]
    assert [m["t"] for m in frames["single"]] == ["A", "F"]
    # the client library reads either, a message at a time
    bundled.send(NewOrder(cid=bundled.next_cid(), sym="ACME", side="buy", qty=1, px=10_000))
    assert isinstance(maker.new_order("ACME", "sell", 1, px=10_000), Ack)
    assert isinstance(bundled.recv(5.0), Ack) and isinstance(bundled.recv(5.0), Fill)


def test_a_full_request_ring_is_answered_busy_and_nothing_is_lost(rig):
    c = rig.client(6)
    before = rig.last_seqs()["s1"]
    n = rig.config.shm.request_ring + 100
    rig.pause("s1")  # the ring (1024 slots) fills up and stays full
    # a pause between an answer and its slot's release leaves that slot taken
    room = rig.config.shm.request_ring - inspect_ring(rig.ns, request_ring("s1")).depth
    try:
        for i in range(n):
            px = 7_000_000 + 100 * i
            c.send(NewOrder(cid=i + 1, sym="BTC-USD", side="sell", qty=1, px=px, ik=70_000 + i))
        busy = wait_notices(c, n - room, Reject)  # answered at once, while the shard is stopped
        assert {(r.code, r.field) for r in busy} == {("busy", "$")}
        assert "full" in busy[0].reason
    finally:
        rig.resume("s1")
    acks = wait_notices(c, room, Ack)
    assert {a.cid for a in acks} | {r.cid for r in busy} == set(range(1, n + 1))
    assert rig.last_seqs()["s1"] - before == room  # the refused ones never reached it
    # a busy order's key was never used; an accepted one's was
    free, used = 70_000 + busy[0].cid - 1, 70_000 + acks[0].cid - 1
    assert isinstance(c.new_order("ACME", "sell", 1, px=19_000, ik=free), Ack)
    assert c.new_order("ACME", "sell", 1, px=19_000, ik=used).code == "conflict"


def test_a_client_retry_after_a_timeout_reconnects_and_places_the_order_once(rig):
    c = rig.client(4, timeout=0.4, retries=6)
    rig.pause("s0")  # the first attempt times out: no reply while the shard is stopped
    timer = threading.Timer(1.0, rig.resume, ["s0"])
    timer.start()
    try:
        ack = c.new_order("ACME", "sell", 3, px=17_770)
    finally:
        timer.join()
    assert isinstance(ack, Ack) and ack.dup and c.reconnects >= 1
    book = c.book("ACME", depth=100)
    assert (17_770, 3, 1) in book.asks  # one order, not one per attempt


def test_an_iceberg_shows_its_display_and_refills_and_fills_count_it_whole(rig):
    maker, taker = rig.client(5), rig.client(6)
    ack = maker.new_order("BOLT", "sell", 100, px=2_300, display=20)
    assert isinstance(ack, Ack)
    assert (2_300, 20, 1) in maker.book("BOLT").asks
    hit = taker.new_order("BOLT", "buy", 30, px=2_300, tif="ioc")
    assert isinstance(hit, Ack)
    got = wait_notices(maker, 2, Fill)
    assert [(f.qty, f.leaves, f.liq) for f in got] == [(20, 80, "maker"), (10, 70, "maker")]
    assert (2_300, 10, 1) in maker.book("BOLT").asks  # the refill's 20, less the second fill
    status = maker.status("BOLT", ack.oid)
    assert (status.qty, status.leaves) == (100, 70)
    rep = maker.replace("BOLT", ack.oid, px=2_300, qty=100, display=30)
    assert isinstance(rep, Replaced) and rep.leaves == 70
    assert (2_300, 30, 1) in maker.book("BOLT").asks
    bad = maker.replace("BOLT", ack.oid, px=2_300, qty=100, display=15)  # off BOLT's lot of 10
    assert isinstance(bad, Reject) and (bad.code, bad.field) == ("invalid", "$.display")
    assert bad.reason.startswith("display_invalid")


def test_a_run_of_icebergs_is_checked_whole_and_order_by_order(rig):
    c = rig.client(5)
    orders = [
        order("BOLT", "buy", 50, px=1_800 + 5 * i, display=10, coid=str(i)) for i in range(20)
    ]
    orders[7] = order("BOLT", "buy", 50, px=1_900, display=15, coid="7")  # off the lot
    reply = c.new_orders(orders)
    assert isinstance(reply, BatchAck) and len(reply.results) == 20
    bad = reply.results[7]
    assert isinstance(bad, Reject) and (bad.code, bad.field) == ("invalid", "$.display")
    assert all(isinstance(r, Ack) for i, r in enumerate(reply.results) if i != 7)
    bids = c.book("BOLT", depth=100).bids
    assert (1_800, 10, 1) in bids and (1_895, 10, 1) in bids


def test_a_gtd_order_a_second_ahead_is_cancelled_expired_and_its_owner_is_told(rig):
    c = rig.client(7)
    at = time.time_ns() + 1_000_000_000
    ack = c.new_order("ACME", "buy", 5, px=9_001, tif="gtd", expire_at=at)
    assert isinstance(ack, Ack)
    assert (9_001, 5, 1) in c.book("ACME").bids
    [gone] = wait_notices(c, 1, Cancelled, timeout=15)
    assert time.time_ns() >= at  # never before its time: the shard's EXPIRE carried it
    assert (gone.cid, gone.oid, gone.reason, gone.qty) == (0, ack.oid, "expired", 5)
    assert c.status("ACME", ack.oid).state == "cancelled"
    assert (9_001, 5, 1) not in c.book("ACME").bids
    # the book's now is past ``at``: an order expiring then is refused by the book
    late = c.new_order("ACME", "buy", 5, px=9_001, tif="gtd", expire_at=at)
    assert isinstance(late, Reject) and (late.code, late.field) == ("invalid", "$.expire_at")
    assert late.reason.startswith("expiry_passed")
    # the gateway's refusals name the field
    for fields, field in (
        (dict(tif="gtd"), "$.expire_at"),  # gtd without an expiry
        (dict(expire_at=at), "$.expire_at"),  # an expiry on a gtc order
        (dict(tif="day", expire_at=at), "$.expire_at"),
    ):
        bad = c.new_order("ACME", "buy", 5, px=9_001, **fields)
        assert isinstance(bad, Reject) and (bad.code, bad.field) == ("invalid", field), fields
    bad = c.new_order("ACME", "buy", 5, tif="gtd", type="market", expire_at=at + 10**12)
    assert isinstance(bad, Reject) and (bad.code, bad.field) == ("invalid", "$.tif")
    # DAY: the instrument's session end; an instrument without one refuses it
    day = c.new_order("ACME", "buy", 5, px=9_002, tif="day")
    assert isinstance(day, Ack)
    assert c.cancel("ACME", day.oid).reason == "user"
    none = c.new_order("BTC-USD", "buy", 1, px=5_000_000, tif="day")
    assert isinstance(none, Reject) and (none.code, none.field) == ("invalid", "$.tif")
