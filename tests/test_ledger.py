"""The idempotency ledger on its own: pairs in flight in memory, answered pairs from the
events it folds (a real engine's), kept in the gateway's own store; never a journal."""

import msgspec
import numpy as np
import pytest

from exchange.config import DEFAULT_TOML, parse_config
from exchange.engine import ShardEngine
from exchange.journal import Journal
from exchange.records import (
    CMD_NEW,
    EV_ACCEPTED,
    EV_DEPTH,
    EV_REJECTED,
    EVF_DUPLICATE,
    EVF_REPLAY,
    SIDE_BUY,
    TIF_GTC,
    commands,
    events,
)
from exchange.topology import offsets, symbols
from gateway import store as store_module
from gateway.ledger import UNKNOWN, Ledger
from gateway.store import FORMAT, Checkpoint, GatewayStore


@pytest.fixture
def config(tmp_path):
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    return r(cfg, journal=r(cfg.journal, dir=str(tmp_path / "journal"), durability="os"))


@pytest.fixture
def store(tmp_path):
    s = GatewayStore(str(tmp_path / "gateway"), key_window=1000)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ledger(config, store):
    return Ledger(symbols(config), store)


def journaled(config, shard: int, orders: list[tuple[int, int, str]]) -> np.ndarray:
    """Resting buys (client, idempotency key, symbol) through a real engine and journal;
    the events it publishes."""
    spec = config.shards[shard]
    cmds = commands(len(orders))
    for k, (client, key, sym) in enumerate(orders):
        inst = config.instrument(sym)
        cmds[k]["kind"], cmds[k]["side"], cmds[k]["tif"] = CMD_NEW, SIDE_BUY, TIF_GTC
        cmds[k]["client"], cmds[k]["idem_key"] = client, key
        cmds[k]["instrument"] = spec.instruments.index(sym)
        cmds[k]["price"], cmds[k]["qty"] = inst.ref_price, inst.book.lot_size
    books = [config.instrument(s).book for s in spec.instruments]
    with Journal(f"{config.journal.dir}/{spec.name}", durability="os") as journal:
        engine = ShardEngine(shard, books, journal)
        engine.recover()
        applied = engine.apply(cmds)
    assert (applied.events["kind"] == EV_ACCEPTED).sum() == len(orders)
    return applied.events


def checkpoint(config, ledger: Ledger, store: GatewayStore) -> None:
    cp = Checkpoint(FORMAT, symbols(config), [], False, [], b"", b"", b"")
    store.write(cp, ledger.taken_since())
    ledger.forget_taken()


def answer(client: int, key: int, req_id: int, kind: int = EV_ACCEPTED, idx: int = 0, flags=0):
    ev = events(1)
    ev["client"], ev["idem_key"], ev["req_id"] = client, key, req_id
    ev["kind"], ev["idx"], ev["flags"] = kind, idx, flags
    return ev


def test_a_pair_is_held_by_its_request_until_that_request_is_answered(ledger):
    assert ledger.use(1, 5, "ACME", req_id=100) is None  # nobody holds it: now 100 does
    assert ledger.use(1, 5, "ACME", req_id=101) == "ACME"  # a retry in flight
    assert ledger.use(1, 5, "BTC-USD", req_id=102) == "ACME"  # a conflict
    assert ledger.use(2, 5, "BTC-USD", req_id=103) is None  # another client's keys are its own
    ledger.release(1, 5, 101)  # the retry does not hold the pair
    assert ledger.use(1, 5, "BOLT", req_id=104) == "ACME" and len(ledger) == 2
    # neither the retry's duplicate answer nor a later event of the holder lets go
    ledger.release_answered(
        np.concatenate([answer(1, 5, 101, flags=EVF_DUPLICATE), answer(1, 5, 100, EV_DEPTH, 1)])
    )
    assert len(ledger) == 2
    ledger.release_answered(np.concatenate([answer(1, 5, 100), answer(2, 5, 103, EV_REJECTED)]))
    assert len(ledger) == 0
    assert ledger.use(1, 5, "BOLT", req_id=105) is None
    ledger.release(1, 5, 105)  # not written after all (busy)
    assert len(ledger) == 0


def test_memory_holds_only_what_is_in_flight(ledger):
    rng = np.random.default_rng(3)
    flight = []
    for req_id in range(1, 20_001):
        key = int(rng.integers(1, 1 << 63))
        assert ledger.use(1 + req_id % 4, key, "ACME", req_id) is None
        flight.append(answer(1 + req_id % 4, key, req_id))
        if len(flight) == 64:  # answered a batch at a time
            ledger.release_answered(np.concatenate(flight))
            flight = []
        assert len(ledger) == len(flight)


def test_answered_pairs_are_remembered_from_the_events_and_kept_by_the_store(config, ledger, store):
    off = offsets(config)
    ledger.fold(journaled(config, 0, [(1, 7, "BOLT"), (1, 8, "ACME"), (2, 9, "ACME")]), off[0])
    assert [ledger.used_on(c, k) for c, k in [(1, 7), (1, 8), (2, 9), (1, 9), (3, 7)]] == [
        "BOLT",
        "ACME",
        "ACME",
        None,
        None,
    ]
    assert len(ledger.recent) == 3 and store.keys() == 0
    checkpoint(config, ledger, store)
    # the store has them now, and memory does not
    assert not ledger.recent and store.keys() == 3
    assert ledger.used_on(1, 7) == "BOLT" and ledger.used_on(2, 9) == "ACME"
    # a shard's replayed history counts like its live events; its own replies do not
    served = journaled(config, 1, [(1, 1 << 63, "ETH-USD"), (2, 7, "BTC-USD")])
    served["flags"] |= EVF_REPLAY
    dup = answer(3, 5, 1, flags=EVF_DUPLICATE)
    dup["seq"] = 9
    refused = answer(3, 6, 2, kind=EV_REJECTED)  # seq 0: a conflict the shard refused
    ledger.fold(np.concatenate([served, dup, refused]), off[1])
    assert ledger.used_on(1, 1 << 63) == "ETH-USD" and ledger.used_on(2, 7) == "BTC-USD"
    assert ledger.used_on(3, 5) is None and ledger.used_on(3, 6) is None
    assert len(ledger) == 0  # looking up holds nothing


def test_a_pair_folded_twice_is_written_once_with_its_latest_use(config, ledger, store):
    """A shard's history folded again (served after a crash that lost the checkpoint)
    takes a pair twice: the checkpoint writes it once, with its latest use."""
    first, other, again = answer(1, 5, 100), answer(2, 5, 101), answer(1, 5, 102)
    uses = [(3, 30, 0), (4, 40, 0), (9, 90, 1)]
    for e, (seq, oid, inst) in zip((first, other, again), uses, strict=True):
        e["seq"], e["order_id"], e["instrument"] = seq, oid, inst
    ledger.fold(np.concatenate([first, other]), 0)
    ledger.fold(again, 0)
    assert ledger.used_on(1, 5) == symbols(config)[1]
    taken = ledger.taken_since()
    assert sorted(taken[["order_id", "seq"]].tolist()) == [(40, 4), (90, 9)]
    checkpoint(config, ledger, store)
    assert store.keys() == 2 and store.lookup(1, 5).order_id == 90


def test_a_pair_found_nowhere_is_unknown_while_a_shard_is_not_synced(config, ledger, store):
    ledger.fold(journaled(config, 0, [(1, 7, "BOLT")]), 0)
    ledger.uncertain.add("s1")
    assert ledger.used_on(1, 7) == "BOLT"  # known wherever else it might be: answered
    assert ledger.used_on(1, 8) == UNKNOWN
    ledger.uncertain.discard("s1")
    assert ledger.used_on(1, 8) is None


def test_the_store_keeps_the_last_key_window_pairs(config, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "RUN_PAIRS", 1)  # runs of one checkpoint each
    store = GatewayStore(str(tmp_path / "small"), key_window=3)
    try:
        ledger = Ledger(symbols(config), store)
        ev = journaled(config, 0, [(1, k, "ACME") for k in range(1, 6)])
        for k in range(5):  # a checkpoint after each order
            ledger.fold(ev[ev["seq"] == k + 1], 0)
            checkpoint(config, ledger, store)
        assert store.keys() == 3
        assert [ledger.used_on(1, k) for k in range(1, 6)] == [None, None, "ACME", "ACME", "ACME"]
        # a key older than the window is new again; used again, it is remembered anew
        again = journaled(config, 1, [(1, 3, "BTC-USD"), (1, 1, "BTC-USD")])
        ledger.fold(again, offsets(config)[1])
        checkpoint(config, ledger, store)
        assert store.keys() == 3
        got = [ledger.used_on(1, k) for k in range(1, 6)]
        assert got == ["BTC-USD", None, "BTC-USD", None, "ACME"]
    finally:
        store.close()
