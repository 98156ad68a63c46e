"""The idempotency ledger on its own, over real shard links: pairs in flight in memory,
every other pair looked up in the shards' real journals (written by a real engine)."""

import uuid

import msgspec
import numpy as np
import pytest

from exchange.config import DEFAULT_TOML, parse_config
from exchange.engine import ShardEngine
from exchange.journal import Journal
from exchange.records import (
    CMD_NEW,
    COMMAND_DTYPE,
    EV_ACCEPTED,
    EV_DEPTH,
    EV_REJECTED,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    SIDE_BUY,
    TIF_GTC,
    commands,
    events,
)
from exchange.shard import event_ring, request_ring
from gateway.ledger import Ledger
from gateway.shardlink import ShardLink
from shm.names import unlink_namespace
from shm.ring import create_ring


@pytest.fixture
def config(tmp_path):
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    cfg = r(
        cfg,
        journal=r(cfg.journal, dir=str(tmp_path / "journal"), durability="os"),
        shm=r(cfg.shm, namespace="l" + uuid.uuid4().hex[:12], request_ring=64, event_ring=64),
    )
    try:
        for s in cfg.shards:
            create_ring(cfg.shm.namespace, request_ring(s.name), COMMAND_DTYPE, 64)
            create_ring(cfg.shm.namespace, event_ring(s.name), EVENT_DTYPE, 64)
        yield cfg
    finally:
        unlink_namespace(cfg.shm.namespace)


@pytest.fixture
def links(config):
    made = []
    try:
        for i in range(len(config.shards)):
            made.append(ShardLink(config, i))
        yield made
    finally:
        for link in made:
            link.close()


def journal_orders(config, shard: int, orders: list[tuple[int, int, str]]) -> None:
    """Resting buys (client, idempotency key, symbol) through a real engine into the
    shard's journal, which is closed again (a process opens one environment per path)."""
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


def answer(client: int, key: int, req_id: int, kind: int = EV_ACCEPTED, idx: int = 0, flags=0):
    ev = events(1)
    ev["client"], ev["idem_key"], ev["req_id"] = client, key, req_id
    ev["kind"], ev["idx"], ev["flags"] = kind, idx, flags
    return ev


def test_a_pair_is_held_by_its_request_until_that_request_is_answered(links):
    ledger = Ledger(links)
    assert ledger.use(1, 5, "ACME", req_id=100) is None  # nobody holds it: now 100 does
    assert ledger.use(1, 5, "ACME", req_id=101) == "ACME"  # a retry in flight
    assert ledger.use(1, 5, "BTC-USD", req_id=102) == "ACME"  # a conflict
    assert ledger.use(2, 5, "BTC-USD", req_id=103) is None  # another client's keys are its own
    ledger.release(1, 5, 101)  # the retry does not hold the pair
    assert ledger.use(1, 5, "BOLT", req_id=104) == "ACME" and len(ledger) == 2
    # neither the retry's duplicate answer nor a later event of the holder lets go
    ledger.settle(
        np.concatenate([answer(1, 5, 101, flags=EVF_DUPLICATE), answer(1, 5, 100, EV_DEPTH, 1)])
    )
    assert len(ledger) == 2
    ledger.settle(np.concatenate([answer(1, 5, 100), answer(2, 5, 103, EV_REJECTED)]))
    assert len(ledger) == 0
    assert ledger.use(1, 5, "BOLT", req_id=105) is None
    ledger.release(1, 5, 105)  # not written after all (busy)
    assert len(ledger) == 0


def test_memory_holds_only_what_is_in_flight(links):
    ledger = Ledger(links)
    rng = np.random.default_rng(3)
    flight = []
    for req_id in range(1, 20_001):
        key = int(rng.integers(1, 1 << 63))
        assert ledger.use(1 + req_id % 4, key, "ACME", req_id) is None
        flight.append(answer(1 + req_id % 4, key, req_id))
        if len(flight) == 64:  # answered a batch at a time
            ledger.settle(np.concatenate(flight))
            flight = []
        assert len(ledger) == len(flight)


def test_journaled_pairs_are_found_in_every_shards_journal(config, links):
    journal_orders(config, 0, [(1, 7, "BOLT"), (1, 8, "ACME"), (2, 9, "ACME")])
    ledger = Ledger(links)
    # s1 has no journal yet: nothing was used there
    got = ledger.journaled([1, 1, 2, 1, 2, 3], [7, 8, 9, 9, 7, 1 << 63])
    assert got == ["BOLT", "ACME", "ACME", None, None, None]
    journal_orders(config, 1, [(1, 1 << 63, "ETH-USD"), (2, 7, "BTC-USD")])
    # a journal that appears later is read, and each call reads what is committed by then
    got = ledger.journaled([1, 1, 2, 1, 2, 3], [7, 8, 9, 1 << 63, 7, 1 << 63])
    assert got == ["BOLT", "ACME", "ACME", "ETH-USD", "BTC-USD", None]
    # a pair's own shard need not be asked: it refuses a reuse among its instruments itself
    assert ledger.journaled([1, 1, 2], [7, 7, 7], homes=[0, 1, 0]) == [None, "BOLT", "BTC-USD"]
    assert len(ledger) == 0  # looking up holds nothing
