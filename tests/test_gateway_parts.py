"""The gateway's parts on their own: key files, the ZAP answers, rate limits, sessions,
reply groups, the restart filter, a shard link's progress and the subscriber's gap logic
(the idempotency ledger: test_ledger.py)."""

import errno
import os
import time

import msgspec
import numpy as np
import pytest
import shm_helpers as h
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from exchange.config import DEFAULT_TOML, parse_config
from exchange.records import (
    COMMAND_DTYPE,
    EV_ACCEPTED,
    EV_RESTING,
    EV_SYNCED,
    EV_TRADING,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    EVF_REPLAY,
    EVF_RETRANSMIT,
    STATE_CONTINUOUS,
    STATE_HALTED,
    STATE_NAMES,
    commands,
    events,
)
from exchange.topology import event_ring, request_ring
from gateway import keys as k
from gateway.codec import decode_reply, encode
from gateway.conns import Connections
from gateway.inflight import BatchGroup, Inflight, MassGroup
from gateway.protocol import (
    Ack,
    BookSnapshot,
    Depth,
    Heartbeat,
    MassCancelled,
    Reject,
    TopOfBook,
    Trades,
    TradingState,
)
from gateway.ratelimit import RateLimiter
from gateway.sessions import Sessions
from gateway.shardlink import ShardLink, unseen
from gateway.subscriber import Feeds, LocalBook
from gateway.zap import ZAP_ENDPOINT, KeyTable, ZapHandler
from shm.consumer import Consumer
from shm.producer import Producer
from shm.ring import create_ring

# --- key files


def test_server_and_client_keys_round_trip(tmp_path):
    public = k.create_server_keys(tmp_path)
    assert k.load_server_keys(tmp_path)[0] == public == k.server_public_key(tmp_path)
    assert os.stat(tmp_path / "server.key_secret").st_mode & 0o077 == 0
    bot = k.create_client(tmp_path, 7, tmp_path / "bot.key_secret")
    assert k.load_secret_certificate(tmp_path / "bot.key_secret")[0] == bot
    assert os.stat(tmp_path / "bot.key_secret").st_mode & 0o077 == 0
    other_public, _ = k.new_key_pair()
    k.register_client(tmp_path, 9, other_public.decode())
    assert k.list_clients(tmp_path) == {7: bot, 9: other_public}
    assert k.client_table(tmp_path) == {bot: 7, other_public: 9}
    k.revoke_client(tmp_path, 7)
    assert k.list_clients(tmp_path) == {9: other_public}


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda d: k.create_server_keys(d), "already"),
        (lambda d: k.register_client(d, 1, k.new_key_pair()[0]), "registered already"),
        (lambda d: k.register_client(d, 2, k.list_clients(d)[1]), "as client 1"),
        (lambda d: k.register_client(d, 0, k.new_key_pair()[0]), "1..4294967295"),
        (lambda d: k.register_client(d, 1 << 32, k.new_key_pair()[0]), "1..4294967295"),
        (lambda d: k.register_client(d, True, k.new_key_pair()[0]), "an int"),
        (lambda d: k.register_client(d, 3, b"short"), "40 Z85"),
        (lambda d: k.register_client(d, 3, "~" * 40), "not Z85"),
        (lambda d: k.revoke_client(d, 5), "not registered"),
        (lambda d: k.load_secret_certificate(d / "clients" / "1.key"), "no secret key"),
        (lambda d: k.load_server_keys(d / "nowhere"), "cannot read"),
    ],
)
def test_bad_key_operations_say_why_and_change_nothing(tmp_path, call, words):
    k.create_server_keys(tmp_path)
    k.create_client(tmp_path, 1, tmp_path / "bot.key_secret")
    before = sorted(os.listdir(tmp_path / "clients"))
    with pytest.raises(k.KeysError, match=words):
        call(tmp_path)
    assert sorted(os.listdir(tmp_path / "clients")) == before


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("bot.key", 'curve\n    public-key = "x"\n', "named <client id>.key"),
        ("0.key", "", "outside"),
        ("5.key", "nothing here\n", "No public key"),
        ("6.key", 'curve\n    public-key = "abc"\n', "40 Z85"),
    ],
)
def test_a_bad_file_in_the_clients_directory_is_named(tmp_path, name, text, words):
    k.create_client(tmp_path, 1, tmp_path / "bot.key_secret")
    (tmp_path / "clients" / name).write_text(text)
    with pytest.raises(k.KeysError, match=words) as e:
        k.list_clients(tmp_path)
    assert name in str(e.value)


def test_key_table_follows_the_directory_and_survives_a_bad_file(tmp_path):
    a = k.create_client(tmp_path, 1, tmp_path / "a.key_secret")
    table = KeyTable(tmp_path)
    assert table.client(a) == 1 and len(table) == 1
    b = k.create_client(tmp_path, 2, tmp_path / "b.key_secret")
    table.refresh()
    assert table.client(b) == 2
    k.revoke_client(tmp_path, 1)
    table.refresh()
    assert table.client(a) is None
    (tmp_path / "clients" / "junk.key").write_text("junk")
    table.refresh()  # logged and ignored: the last good table stays
    assert table.client(b) == 2


def test_zap_accepts_registered_curve_keys_only(tmp_path):
    key = k.create_client(tmp_path, 4, tmp_path / "a.key_secret")
    ctx = zmq.Context()
    zap = ZapHandler(ctx, KeyTable(tmp_path), Connections(ctx, 64))
    raw = z85.decode(key)
    try:

        def ask(mechanism=b"CURVE", creds=(raw,), version=b"1.0"):
            return zap.answer([version, b"7", b"d", b"127.0.0.1", b"", mechanism, *creds])

        assert ask() == [b"1.0", b"7", b"200", b"OK", key, b""]
        assert ask(creds=(z85.decode(k.new_key_pair()[0]),))[2] == b"400"
        assert ask(mechanism=b"PLAIN", creds=(b"user", b"pw"))[2] == b"400"
        assert ask(mechanism=b"NULL", creds=())[2] == b"400"
        assert ask(creds=(b"short",))[2] == b"400"
        assert ask(version=b"2.0")[2] == b"500"
        assert zap.answer([b"1.0"])[2] == b"500"
        assert zap.refused == 4
    finally:
        zap.close()
        ctx.term()


def _emfile(*args):
    raise OSError(errno.EMFILE, "Too many open files")


def test_key_table_keeps_its_keys_while_the_directory_cannot_be_read(tmp_path, monkeypatch, capsys):
    a = k.create_client(tmp_path, 1, tmp_path / "a.key_secret")
    table = KeyTable(tmp_path)
    monkeypatch.setattr(k.os, "scandir", _emfile)  # every descriptor in use
    for _ in range(100):  # a rescan at every handshake
        table.refresh()
    monkeypatch.undo()
    assert table.client(a) == 1
    b = k.create_client(tmp_path, 2, tmp_path / "b.key_secret")
    table.refresh()
    assert table.client(b) == 2
    err = capsys.readouterr().err
    assert err.count("client keys not reloaded") == 1  # not one line per handshake
    assert '"client keys readable again", "failures": 100' in err


def test_zap_answers_every_request_it_reads_even_when_answering_fails(
    tmp_path, monkeypatch, capsys
):
    key = k.create_client(tmp_path, 4, tmp_path / "a.key_secret")
    ctx = zmq.Context()
    zap = ZapHandler(ctx, KeyTable(tmp_path), Connections(ctx, 64))
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(ZAP_ENDPOINT)

    def ask() -> list[bytes]:
        req.send_multipart([b"1.0", b"9", b"d", b"127.0.0.1", b"", b"CURVE", z85.decode(key)])
        assert zap.socket.poll(5000)
        zap.handle()
        assert req.poll(5000), "the ZAP request was never answered"
        return req.recv_multipart()

    try:
        monkeypatch.setattr(zap.table, "client", _emfile)
        for _ in range(3):
            assert ask()[1:4] == [b"9", b"500", b"internal error"]
        monkeypatch.undo()
        assert ask()[2:5] == [b"200", b"OK", key]
    finally:
        req.close()
        zap.close()
        ctx.term()
    err = capsys.readouterr().err
    assert err.count("ZAP requests answered 500") == 1  # not one traceback per handshake
    assert '"ZAP handler works again", "failures": 3' in err


def test_a_client_at_its_connection_cap_is_refused_until_one_closes(tmp_path):
    k.create_client(tmp_path, 4, tmp_path / "a.key_secret")
    public, secret = k.load_secret_certificate(tmp_path / "a.key_secret")
    server_public, server_secret = k.new_key_pair()
    ctx = zmq.Context()
    conns = Connections(ctx, 2)
    zap = ZapHandler(ctx, KeyTable(tmp_path), conns)
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.curve_server = True
    router.curve_publickey, router.curve_secretkey = server_public, server_secret
    router.zap_domain = b"test"
    conns.watch(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealers = []

    def connect() -> tuple[zmq.Socket, int]:
        d = ctx.socket(zmq.DEALER)
        d.linger = 0
        d.curve_serverkey, d.curve_publickey, d.curve_secretkey = server_public, public, secret
        monitor = d.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
        dealers.append(d)
        d.connect(f"tcp://127.0.0.1:{port}")
        try:
            for _ in range(500):
                if zap.socket.poll(10):
                    zap.handle()
                if monitor.poll(0):
                    return d, recv_monitor_message(monitor)["event"]
            raise AssertionError("no handshake")
        finally:
            d.disable_monitor()
            monitor.close()

    try:
        first, ok = connect()
        assert ok == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert connect()[1] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        third, refused = connect()
        assert refused == zmq.EVENT_HANDSHAKE_FAILED_AUTH and conns.held == {4: 2}
        third.close()
        first.close()
        for _ in range(500):
            conns.poll()
            if conns.held == {4: 1}:
                break
            time.sleep(0.01)
        assert conns.held == {4: 1}
        assert connect()[1] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert conns.held == {4: 2}
    finally:
        for d in dealers:
            d.close()
        router.close()
        zap.close()
        conns.close()
        ctx.term()


# --- rate limits, sessions


def test_token_bucket_grants_the_burst_then_the_rate():
    r = RateLimiter(rate=10, burst=5)
    assert r.take(1, 8, now=100.0) == 5  # a new client starts with a full bucket
    assert r.take(1, 1, now=100.0) == 0
    assert r.take(2, 1, now=100.0) == 1  # buckets are per client
    assert r.take(1, 3, now=100.25) == 2  # 0.25 s at 10/s
    assert r.take(1, 9, now=200.0) == 5  # never more than the burst
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(rate=0, burst=1)


def test_sessions_track_connections_and_report_silent_armed_clients():
    s = Sessions()
    s.seen(1, b"a", now=0.0)
    s.seen(1, b"b", now=0.0)
    s.seen(2, b"c", now=0.0)
    assert s.connections(1) == [b"a", b"b"]
    s.seen(2, b"a", now=0.1)  # a routing id reused by another client moves
    assert s.connections(1) == [b"b"] and s.connections(2) == [b"c", b"a"]
    s.gone(b"b")
    assert s.connections(1) == []
    s.arm(1, True)
    s.arm(2, True)
    s.seen(2, b"c", now=1.0)
    assert s.silent(now=1.2, after=1.0) == [1]
    assert s.silent(now=1.5, after=1.0) == []  # 1 is disarmed; 2 spoke at 1.0
    assert s.silent(now=2.0, after=1.0) == [2]
    s.arm(2, True)
    s.arm(2, False)
    assert s.silent(now=9.0, after=1.0) == []


# --- reply groups and request ids


def test_batch_group_replies_when_every_slot_is_in():
    g = BatchGroup(b"c", 1, cid=9, base=100, coids=["a", "b"])
    ack = Ack(cid=9, sym="A", oid=1, seq=1, coid="a")
    busy = Reject(cid=9, code="busy", field="$", reason="x", coid="b")
    assert g.coid(101) == "b"
    assert g.put(101, busy) is None
    assert g.put(100, ack).results == [ack, busy]


def test_mass_group_sums_counts_and_reports_a_refused_part():
    g = MassGroup(b"c", 1, cid=3, parts=2)
    assert g.put(7, MassCancelled(cid=3, sym="A", n=2)) is None
    assert g.put(8, MassCancelled(cid=3, sym="B", n=5)) == MassCancelled(cid=3, sym=None, n=7)
    g = MassGroup(b"c", 1, cid=3, parts=2)
    busy = Reject(cid=3, code="busy", field="$", reason="x")
    g.put(7, busy)
    assert g.put(8, MassCancelled(cid=3, sym="B", n=5)) == busy


def test_request_ids_carry_the_incarnation_and_roll_over_to_a_new_one():
    f = Inflight(incarnation=0xABCD)
    assert f.new_req_ids() == 0xABCD << 32 | 1
    assert f.new_req_ids(3) == 0xABCD << 32 | 2 and f.new_req_ids() == 0xABCD << 32 | 5
    f._counter = (1 << 32) - 2
    rid = f.new_req_ids(3)  # would not fit: all three come from a new incarnation
    assert rid & 0xFFFFFFFF == 1 and f.incarnation == rid >> 32
    assert f.new_req_ids() == rid + 3


# --- a shard's progress, as the gateway sees it


def test_a_shard_is_idle_only_while_requests_wait_and_it_moves_neither_cursor():
    with h.namespace() as ns:
        r = msgspec.structs.replace
        config = parse_config(DEFAULT_TOML)
        config = r(config, shm=r(config.shm, namespace=ns))
        create_ring(ns, request_ring("s0"), COMMAND_DTYPE, 8)
        create_ring(ns, event_ring("s0"), EVENT_DTYPE, 8)
        link = ShardLink(config, 0)
        # this process plays the shard too: it takes requests and publishes events
        taken = Consumer(ns, request_ring("s0"), COMMAND_DTYPE)
        published = Producer(ns, event_ring("s0"), EVENT_DTYPE)
        try:
            assert link.look(10.0, True) == 0.0  # nothing waiting: nothing to make progress on
            assert link.look(20.0, True) == 0.0
            assert link.requests.write(commands(2)) == 2
            assert link.look(21.0, True) == 1.0  # since the ring was last seen empty
            assert link.look(23.0, True) == 3.0
            published.write(events(1))  # e.g. a chunk of a SYNC's answer: it works
            assert link.look(24.0, True) == 0.0
            assert link.look(26.0, True) == 2.0
            taken.release(1)
            assert link.look(27.0, True) == 0.0
            assert link.look(30.0, False) == 0.0  # not live (down, not synced): not watched
            assert link.look(31.0, True) == 1.0
            taken.release(1)
            assert link.look(40.0, True) == 0.0
        finally:
            taken.close()
            published.close()
            link.close()


def test_a_syncs_answer_seeds_each_mirror_with_its_books_trading_state():
    """The EV_TRADING records of the sync's answer (one per book, before its EV_SYNCED,
    possibly in another drained batch than the end) set the mirrors' states; an answer
    with none (a shard older than halts) leaves every book continuous."""
    with h.namespace() as ns:
        r = msgspec.structs.replace
        config = parse_config(DEFAULT_TOML)
        config = r(config, shm=r(config.shm, namespace=ns))
        create_ring(ns, request_ring("s0"), COMMAND_DTYPE, 8)  # room for the three syncs
        create_ring(ns, event_ring("s0"), EVENT_DTYPE, 8)
        link = ShardLink(config, 0)
        try:
            assert len(link.mirrors) == 2
            for answer_states in ([STATE_HALTED, STATE_CONTINUOUS], None, [STATE_CONTINUOUS] * 2):
                assert link.sync(77)
                resting = events(1)
                resting["kind"], resting["instrument"], resting["side"] = EV_RESTING, 1, 1
                resting["price"], resting["qty"], resting["leaves"] = 2_000, 5, 5
                resting["other_leaves"] = 5
                parts = [resting]
                if answer_states is not None:
                    trading = events(2)
                    trading["kind"], trading["instrument"] = EV_TRADING, [0, 1]
                    trading["code"] = answer_states
                    parts.append(trading)
                end = events(1)
                end["kind"] = EV_SYNCED
                answer = np.concatenate(parts + [end])
                answer["seq"], answer["req_id"], answer["flags"] = 9, 77, EVF_REPLAY
                assert link.answered(answer[:-1]) is None  # the end is in the next batch
                seq, got, trading, kept = link.answered(answer[-1:])
                assert (seq, len(got), kept) == (9, 1, 0)
                link.seed_mirrors(seq, got, trading)
                states = [m.book(1, 5).state for m in link.mirrors]
                want = answer_states or [STATE_CONTINUOUS] * 2
                assert states == [STATE_NAMES[s] for s in want]
                assert link.mirrors[1].book(1, 5).bids == [(2_000, 5, 1)]  # BOLT
                assert link.mirrors[0].seq == 9
        finally:
            link.close()


# --- restart filter


def test_unseen_drops_republished_history_but_never_replies():
    ev = events(6)
    ev["seq"] = [5, 5, 6, 0, 7, 4]
    ev["idx"] = [0, 1, 0, 0, 0, 0]
    ev["flags"][5] = EVF_DUPLICATE  # a re-send of seq 4 to a retry
    kept, last, served, _ = unseen(ev, (5, 0))
    assert kept["seq"].tolist() == [5, 6, 0, 7, 4] and last == (7, 0) and served == 0
    again, last, _, _ = unseen(ev[:3], last)  # a restarted shard publishes its tail again
    assert len(again) == 0 and last == (7, 0)
    only_replies = ev[3:4]
    assert unseen(only_replies, last)[:3] == (only_replies, last, 0)


def test_unseen_takes_each_journaled_event_once_live_or_served_and_every_sync_answer():
    ev = events(7)
    ev["seq"] = [3, 4, 5, 5, 6, 6, 6]
    ev["idx"] = [0, 0, 0, 1, 0, 0, 0]
    ev["kind"] = [EV_ACCEPTED] * 4 + [EV_ACCEPTED, EV_RESTING, EV_SYNCED]
    ev["flags"] = EVF_REPLAY
    kept, last, served, _ = unseen(ev, (4, 0))  # history after the watermark, then the answer
    assert kept["seq"].tolist() == [5, 5, 6, 6, 6] and served == 5 and last == (6, 0)
    # the same history live (a shard that published it before the sync): not again
    live = ev[:5].copy()
    live["flags"] = 0
    assert len(unseen(live, last)[0]) == 0
    # a link catching up takes history only from a sync: the ring may hold it after a gap
    later = live.copy()
    later["seq"] += 10
    kept, still, served, _ = unseen(later, last, live_ok=False)
    assert len(kept) == 0 and still == last and served == 0


def test_unseen_takes_a_syncs_trading_states_as_answers_never_as_history():
    """EV_TRADING records (a book's trading state at the shard's last seq L) pass like
    the resting orders: with (seq L, idx 0) behind the last event folded, taken for
    history they would be dropped, and they must not move the watermark."""
    ev = events(5)
    ev["seq"] = [6, 6, 6, 6, 6]
    ev["idx"] = [0, 1, 0, 0, 0]
    ev["kind"] = [EV_ACCEPTED, EV_ACCEPTED, EV_TRADING, EV_TRADING, EV_SYNCED]
    ev["instrument"] = [0, 0, 0, 1, 0]
    ev["flags"] = EVF_REPLAY
    kept, last, served, _ = unseen(ev, (5, 0))
    assert kept["kind"].tolist() == ev["kind"].tolist() and served == 5 and last == (6, 1)
    # the sync's answer alone, its history all folded before
    kept, same, served, _ = unseen(ev[2:], last)
    assert len(kept) == 3 and served == 3 and same == last


def test_unseen_never_takes_a_retransmission_for_history():
    ev = events(5)
    ev["seq"] = [8, 9, 10, 11, 11]
    ev["kind"] = [EV_ACCEPTED, EV_ACCEPTED, EV_ACCEPTED, EV_ACCEPTED, EV_SYNCED]
    ev["flags"] = [0, EVF_REPLAY | EVF_RETRANSMIT, EVF_REPLAY | EVF_RETRANSMIT, 0] + [
        EVF_REPLAY | EVF_RETRANSMIT
    ]
    kept, last, served, retx = unseen(ev, (7, 0))
    assert kept["seq"].tolist() == [8, 11] and last == (11, 0) and served == 0
    assert retx["seq"].tolist() == [9, 10, 11] and retx["kind"][-1] == EV_SYNCED


# --- the subscriber's chain logic, message by message


def _feeds(books):
    asked = []

    def snapshot(sym, depth):
        asked.append((sym, depth))
        return books.pop(0)

    return Feeds(["ACME"], snapshot), asked


def test_subscriber_detects_a_gap_and_refreshes_from_a_snapshot():
    books = [BookSnapshot(cid=1, sym="ACME", seq=10, bids=[(99, 5, 1)], asks=[])]
    sub, asked = _feeds(books)
    sub.refresh()
    assert sub.books["ACME"] == LocalBook(10, [(99, 5, 1)], [])

    def depth(seq, prev, bids):
        return Depth(sym="ACME", seq=seq, prev=prev, bids=bids, asks=[])

    sub.handle(b"ACME", depth(9, 0, [(98, 1, 1)]))  # older than the snapshot: ignored
    assert sub.books["ACME"].seq == 10
    sub.handle(b"ACME", depth(12, 9, [(99, 7, 2)]))
    assert sub.books["ACME"] == LocalBook(12, [(99, 7, 2)], []) and sub.gaps == 0
    sub.handle(b"ACME", Trades(sym="ACME", seq=12, prev=0, side="buy", prints=[(99, 1)]))
    sub.handle(b"ACME", Trades(sym="ACME", seq=20, prev=15, side="buy", prints=[(99, 1)]))
    assert sub.gaps == 1 and not sub.stale  # lost trades are counted, not refreshed
    sub.handle(b"ACME", depth(30, 25, [(97, 1, 1)]))  # 25 never arrived
    assert sub.gaps == 2 and sub.stale == {"ACME"}
    books.append(BookSnapshot(cid=2, sym="ACME", seq=31, bids=[(97, 3, 1)], asks=[]))
    sub.refresh()
    assert sub.books["ACME"] == LocalBook(31, [(97, 3, 1)], []) and asked == [("ACME", 5)] * 2
    top = TopOfBook(sym="ACMEX", seq=40, prev=0, bid_px=0, bid_qty=0, ask_px=0, ask_qty=0)
    assert sub.handle(b"ACMEX", top) is None  # a prefix match of another symbol


def test_subscriber_keeps_the_trading_state_from_snapshots_and_the_feed():
    books = [BookSnapshot(cid=1, sym="ACME", seq=10, bids=[(99, 5, 1)], asks=[], state="halted")]
    sub, _ = _feeds(books)
    sub.refresh()
    assert sub.books["ACME"] == LocalBook(10, [(99, 5, 1)], [], "halted")

    def state(seq, prev, name, px=0, qty=0):
        return TradingState(sym="ACME", seq=seq, prev=prev, state=name, px=px, qty=qty)

    sub.handle(b"ACME", state(8, 0, "halted"))  # older than the snapshot: ignored
    # a resume: its auction's Trades, its TradingState, then the Depth of the same seq
    sub.handle(b"ACME", Trades(sym="ACME", seq=14, prev=0, side="buy", prints=[(99, 2)]))
    sub.handle(b"ACME", state(14, 8, "continuous", 99, 2))
    assert sub.books["ACME"] == LocalBook(10, [(99, 5, 1)], [], "continuous")
    sub.handle(b"ACME", Depth(sym="ACME", seq=14, prev=0, bids=[(99, 3, 1)], asks=[]))
    assert sub.books["ACME"] == LocalBook(14, [(99, 3, 1)], [], "continuous") and not sub.gaps
    sub.handle(b"ACME", state(30, 20, "halted"))  # 20 never arrived: the book is stale
    assert sub.gaps == 1 and sub.stale == {"ACME"}


def test_a_snapshot_refused_leaves_the_book_stale():
    sub, _ = _feeds([Reject(cid=1, code="unavailable", field="$", reason="down")])
    sub.refresh()
    assert sub.stale == {"ACME"} and "ACME" not in sub.books


def test_heartbeat_reply_echoes_cancel_on_disconnect():
    assert decode_reply(encode(Heartbeat(cid=1, v=1, cod=True))) == Heartbeat(cid=1, v=1, cod=True)
    assert np.frombuffer(encode(Heartbeat(cid=1, v=1)), np.uint8)[0] == 0x83  # cod omitted
