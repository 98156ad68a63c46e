"""The shard process with real rings and a real journal: durable, exactly once, recoverable."""

import time

import numpy as np
import pytest
from bookcheck import BookChecker
from shard_harness import ShardRig

from exchange.book import Book
from exchange.engine import ShardEngine, order_id_shard
from exchange.journal import JournalReader
from exchange.records import (
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_SYNC,
    EV_ACCEPTED,
    EV_REJECTED,
    EV_RESTING,
    EV_SYNCED,
    EV_TRADE,
    EV_TRADING,
    EVF_DUPLICATE,
    EVF_REPLAY,
    REJ_BAD_COMMAND,
    REJ_CONFLICT,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    TIF_GTC,
    TIF_IOC,
    commands,
    copy_records,
)
from exchange.topology import counters_name
from shm.counters_reader import read_block
from shm.ring import inspect_ring


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**opts):
        r = ShardRig(tmp_path, **opts)
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


class Flow:
    """Random requests for a shard's instruments, cancelling ids it learned from acks."""

    def __init__(self, rig: ShardRig, seed: int):
        self.rig = rig
        self.rng = np.random.default_rng(seed)
        self.req_id = 0
        self.books = [rig.config.instrument(s).book for s in rig.config.shards[0].instruments]
        self.mids = [
            (b.min_price + b.max_price) // 2 // b.tick_size * b.tick_size for b in self.books
        ]
        self.sent = []

    def learned(self) -> list[tuple[int, int, int]]:
        ev = self.rig.all_received()
        acc = ev[ev["kind"] == EV_ACCEPTED]
        return list(
            zip(
                acc["order_id"].tolist(),
                acc["client"].tolist(),
                acc["instrument"].tolist(),
                strict=True,
            )
        )

    def batch(self, n: int) -> np.ndarray:
        rng = self.rng
        known = self.learned()
        cmds = commands(n)
        for c in cmds:
            self.req_id += 1
            c["req_id"] = self.req_id
            p = rng.random()
            if p < 0.25 and known:
                oid, client, inst = known[rng.integers(len(known))]
                c["kind"] = CMD_CANCEL if p < 0.2 else CMD_REPLACE
                c["order_id"], c["client"], c["instrument"] = oid, client, inst
                book = self.books[inst]
                c["price"] = self.mids[inst] + book.tick_size * int(rng.integers(-5, 6))
                c["qty"] = book.lot_size * int(rng.integers(1, 20))
                continue
            if p > 0.99:
                c["kind"] = CMD_MASS_CANCEL
                c["client"] = rng.integers(1, 5)
                c["instrument"] = rng.integers(len(self.books))
                continue
            inst = int(rng.integers(len(self.books)))
            book = self.books[inst]
            side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
            aggressive = rng.random() < 0.15
            off = int(rng.geometric(0.3)) * (-1 if aggressive else 1)
            c["kind"] = CMD_NEW
            c["instrument"] = inst
            c["client"] = rng.integers(1, 5)
            c["side"] = side
            c["tif"] = TIF_IOC if aggressive else TIF_GTC
            c["price"] = self.mids[inst] + (-off if side == SIDE_BUY else off) * book.tick_size
            c["qty"] = book.lot_size * int(rng.integers(1, 30))
        self.sent.append(cmds)
        return cmds


def _journal_batches(path):
    with JournalReader(str(path)) as j:
        return [(c.copy(), e.copy()) for c, e in j.iter_batches()]


def _recovered_hashes(rig, *, use_snapshot: bool) -> list[str]:
    books = [rig.config.instrument(s).book for s in rig.config.shards[0].instruments]
    with JournalReader(str(rig.journal_dir)) as j:
        engine = ShardEngine(0, books, j)
        engine.recover(use_snapshot=use_snapshot)
        return engine.state_hashes()


def verify(rig: ShardRig, sent: np.ndarray) -> dict:
    """Everything the shard published is journaled, every request was taken exactly
    once, the journal replays to the same books with and without snapshots, and
    no book invariant (no overfill, FIFO, levels, ...) was ever broken."""
    batches = _journal_batches(rig.journal_dir)
    cmds = np.concatenate([c for c, _ in batches])
    events = np.concatenate([e for _, e in batches])
    assert (np.diff(cmds["seq"]) == 1).all() and cmds["seq"][0] == 1
    # exactly once: each request sequenced once, none lost, none twice
    assert sorted(cmds["req_id"].tolist()) == sorted(sent["req_id"].tolist())
    # what consumers saw is the journal, byte for byte, all of it, in order
    seen = rig.history()
    assert seen.tobytes() == events.tobytes()
    news = cmds["kind"] == CMD_NEW
    assert (order_id_shard(cmds["order_id"][news]) == 0).all()
    assert _recovered_hashes(rig, use_snapshot=True) == _recovered_hashes(rig, use_snapshot=False)
    configs = [rig.config.instrument(s).book for s in rig.config.shards[0].instruments]
    for inst, cfg in enumerate(configs):
        checker = BookChecker(Book(cfg))
        for c, e in batches:
            ci, ei = c[c["instrument"] == inst], e[e["instrument"] == inst]
            if len(ci):
                events_i = checker.book.process(ci)
                assert events_i.tobytes() == ei.tobytes()
                checker.check(ci, events_i)
    return {
        "commands": len(cmds),
        "events": len(events),
        "trades": int((events["kind"] == EV_TRADE).sum()),
    }


@pytest.mark.timeout(120)
def test_orders_match_through_the_rings_and_are_journaled(rig):
    r = rig()
    r.start()
    cmds = commands(3)
    cmds["kind"] = CMD_NEW
    cmds["req_id"] = [1, 2, 3]
    cmds["client"] = [1, 2, 3]
    cmds["side"] = [SIDE_SELL, SIDE_BUY, SIDE_BUY]
    cmds["price"] = [10_000, 10_000, 10_000]
    cmds["qty"] = [5, 3, 1]
    cmds["instrument"] = [0, 0, 9]  # the shard holds 2 instruments: 9 is unknown
    r.send(cmds)
    r.wait_for(lambda: len(r.history()) >= 5 and (r.all_received()["seq"] == 0).any())
    got = r.all_received()
    reject = got[got["seq"] == 0]
    assert reject["req_id"].tolist() == [3] and reject["code"].tolist() == [REJ_BAD_COMMAND]
    trade = got[got["kind"] == EV_TRADE]
    assert (trade["qty"].tolist(), trade["price"].tolist()) == ([3], [10_000])
    assert (trade["client"].tolist(), trade["other_client"].tolist()) == ([2], [1])
    assert r.stop() == 0
    verify(r, cmds[:2])


@pytest.mark.timeout(120)
def test_a_sync_is_answered_on_the_event_ring_while_the_shard_goes_on(rig):
    r = rig()
    flow = Flow(r, seed=8)
    r.start()
    first = flow.batch(300)
    r.send(first)
    r.wait_for(lambda: set(first["req_id"].tolist()) <= set(r.history()["req_id"].tolist()))
    # in the same ring write as more orders: it may share their batch, or not
    sync = commands(1)
    sync["kind"], sync["req_id"] = CMD_SYNC, 10**9
    r.send(np.concatenate([flow.batch(100), sync, flow.batch(100)]))

    def answer():
        got = r.all_received()
        return got[got["flags"] & EVF_REPLAY != 0]

    r.wait_for(lambda: (answer()["kind"] == EV_SYNCED).any(), what="the SYNC's answer")
    last = flow.batch(200)
    r.send(last)
    r.wait_for(lambda: set(last["req_id"].tolist()) <= set(r.history()["req_id"].tolist()))
    replayed_counter = read_block(r.ns, counters_name("s0")).counters["replayed"]
    assert r.stop() == 0
    verify(r, np.concatenate(flow.sent))

    # in one piece: nothing published between the records of one answer
    at_ring = np.flatnonzero(r.all_received()["flags"] & EVF_REPLAY)
    assert (np.diff(at_ring) == 1).all()
    got = answer()
    synced = got[-1]
    at = int(synced["seq"])
    assert synced["kind"] == EV_SYNCED and synced["req_id"] == 10**9
    configs = [r.config.instrument(s).book for s in r.config.shards[0].instruments]
    books = len(configs)
    assert len(got) == synced["qty"] + synced["leaves"] + books + 1 == replayed_counter
    batches = [(c, e) for c, e in _journal_batches(r.journal_dir) if c["seq"][-1] <= at]
    replay = copy_records(got[: synced["qty"]])
    assert (replay["flags"] == EVF_REPLAY).all()
    replay["flags"] = 0
    assert replay.tobytes() == np.concatenate([e for _, e in batches]).tobytes()
    # the resting orders: the books replayed up to the seq it answered at
    resting = got[synced["qty"] : -1 - books]
    assert (resting["kind"] == EV_RESTING).all() and (resting["seq"] == at).all()
    # then each book's trading state (none was halted)
    trading = got[-1 - books : -1]
    assert (trading["kind"] == EV_TRADING).all() and (trading["seq"] == at).all()
    assert trading["instrument"].tolist() == list(range(books))
    assert (trading["code"] == STATE_CONTINUOUS).all()
    for inst, cfg in enumerate(configs):
        book = Book(cfg)
        for c, _ in batches:
            if (c["instrument"] == inst).any():
                book.process(c[c["instrument"] == inst])
        mine = resting[resting["instrument"] == inst]
        cols = ["side", "price", "order_id", "client", "qty", "leaves"]
        assert np.array_equal(np.stack([mine[f] for f in cols], 1), book.canonical_rows()[:, :6])
    # and the shard went on sequencing past it
    assert at < r.history()["seq"].max()


@pytest.mark.timeout(120)
def test_idempotency_survives_a_kill(rig):
    r = rig(durability="fsync")
    r.start()
    order = commands(1)
    order["kind"], order["side"], order["price"], order["qty"] = CMD_NEW, SIDE_BUY, 9_000, 4
    order["client"], order["idem_key"], order["req_id"] = 7, 1234, 1
    r.send(order)
    r.wait_for(lambda: (r.all_received()["kind"] == EV_ACCEPTED).any())
    first = r.all_received()[r.all_received()["kind"] == EV_ACCEPTED][0].copy()
    r.kill()
    r.start()
    retry = order.copy()
    retry["req_id"] = 2
    other = order.copy()
    other["req_id"], other["qty"] = 3, 5  # same key, different request
    r.send(np.concatenate([retry, other]))
    r.wait_for(lambda: {2, 3} <= set(r.all_received()["req_id"].tolist()))
    got = r.all_received()
    dup = got[got["req_id"] == 2]
    assert dup["kind"].tolist() == [EV_ACCEPTED]
    assert dup["flags"][0] & EVF_DUPLICATE
    assert (dup["order_id"][0], dup["seq"][0]) == (first["order_id"], first["seq"])
    conflict = got[got["req_id"] == 3]
    assert conflict["kind"].tolist() == [EV_REJECTED]
    assert conflict["code"].tolist() == [REJ_CONFLICT]
    assert r.stop() == 0
    with JournalReader(str(r.journal_dir)) as j:
        assert j.last_seq == 1  # neither the retry nor the conflict was sequenced


def _crash_run(rig, *, kills: int, per_round: int, seed: int, **opts):
    r = rig(**opts)
    flow = Flow(r, seed)
    rng = np.random.default_rng(seed + 1)
    r.start()
    for _ in range(kills):
        sent_before = r.starts
        # feed a round in pieces and pull the plug somewhere inside it
        pieces = int(rng.integers(2, 6))
        kill_after = int(rng.integers(1, pieces + 1))
        for p in range(pieces):
            r.send(flow.batch(per_round // pieces))
            r.drain()
            if p + 1 == kill_after:
                r.kill()
                # requests keep arriving while the shard is down: the ring holds
                # what fits, the rest waits for the restarted shard
                late = flow.batch(int(rng.integers(1, 50)))
                held = r.requests.write(late)
                r.start()
                r.send(late[held:])
        assert r.starts > sent_before
    r.send(flow.batch(per_round))
    assert r.stop() == 0, r.log()
    return verify(r, np.concatenate(flow.sent))


@pytest.mark.timeout(300)
def test_sigkill_at_random_points_loses_and_repeats_nothing(rig):
    summary = _crash_run(rig, kills=4, per_round=800, seed=11, snapshot_every=500)
    assert summary["commands"] > 3000 and summary["trades"] > 0


@pytest.mark.timeout(300)
def test_crash_run_with_fsync_durability(rig):
    summary = _crash_run(
        rig, kills=2, per_round=600, seed=5, durability="fsync", snapshot_every=700
    )
    assert summary["trades"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_many_kills_long_stream(rig):
    summary = _crash_run(rig, kills=30, per_round=3000, seed=99, snapshot_every=5000)
    assert summary["commands"] > 90_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wait", ["sleep", "spin"])
def test_a_full_event_ring_makes_the_shard_wait_not_drop(rig, wait):
    r = rig(event_capacity=64, wait=wait)
    flow = Flow(r, seed=3)
    r.start()
    r.wait_running()
    if wait == "sleep":  # asleep on the request ring before the requests come, not after
        r.wait_for(lambda: inspect_ring(r.ns, "s0-req").consumer_sleeping, what="a sleep")
    cmds = flow.batch(400)
    assert r.requests.write(cmds) == len(cmds)
    time.sleep(1.0)  # nobody reads events: the shard must be stuck publishing
    evt = inspect_ring(r.ns, "s0-evt")
    assert evt.depth == evt.capacity  # full, and the shard is waiting on it
    assert r.alive()
    assert r.stop() == 0
    verify(r, cmds)
    req, evt = inspect_ring(r.ns, "s0-req"), inspect_ring(r.ns, "s0-evt")
    if wait == "spin":  # it never announced a sleep, so nobody ever rang it
        assert (req.consumer_sleeps, req.data_rings) == (0, 0), req
        assert (evt.producer_sleeps, evt.space_rings) == (0, 0), evt
    else:
        assert req.consumer_sleeps > 0 and evt.producer_sleeps > 0 and evt.space_rings > 0
