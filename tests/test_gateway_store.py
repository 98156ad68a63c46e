"""The gateway's own state store: checkpoints written and read back, refused when
damaged or made for other instruments (moved aside, never served)."""

import os

import lmdb
import numpy as np
import pytest

from gateway import store as store_module
from gateway.keyfilter import KeyFilter
from gateway.positions import Positions
from gateway.store import (
    FORMAT,
    Checkpoint,
    KeyUse,
    ShardMark,
    StoreError,
    open_store,
    taken_records,
)

SYMS = ["ACME", "BOLT"]


def taken(uses: dict[tuple[int, int], KeyUse]) -> np.ndarray:
    """The store's records of pairs (client, key) taken."""
    if not uses:
        return taken_records([], [], [], [], [])
    clients, keys = zip(*uses, strict=True)
    insts, oids, seqs = zip(*uses.values(), strict=True)
    return taken_records(clients, keys, insts, oids, seqs)


def a_checkpoint(clean=False) -> Checkpoint:
    pos = Positions(SYMS, [100, 200])
    pos.slots.row(7)
    pos.slots.row(9)
    pos.fit()
    pos.acct[0, 1, 0] = 5
    pos.cash[1] = -500
    pos.last_px[1] = 210
    clients, acct, cash, last_px = pos.export()
    marks = [ShardMark("s0", 12, 3, True, 111, 40), ShardMark("s1", 0, 0, False, 0, 0)]
    return Checkpoint(FORMAT, SYMS, marks, clean, clients, acct, cash, last_px)


def test_a_checkpoint_and_its_keys_read_back(tmp_path):
    path = str(tmp_path / "gw")
    store, cp, problem = open_store(path, 100, SYMS)
    assert cp is None and problem is None
    uses = {(7, 5): KeyUse(1, 77, 12), (9, 5): KeyUse(0, 78, 13)}
    written = a_checkpoint(clean=True)
    store.write(written, taken(uses), durable=True)
    store.close()
    store, cp, problem = open_store(path, 100, SYMS)
    try:
        assert problem is None and cp == written
        assert store.lookup(7, 5) == KeyUse(1, 77, 12)
        assert store.lookup(5, 7) is None
        pos = Positions(SYMS, [100, 200])
        pos.restore(cp.clients, cp.acct, cp.cash, cp.last_px)
        assert pos.position(7, 1) == 5 and pos.cash_moved(9) == -500 and pos.mark(1) == 210
    finally:
        store.close()


def test_a_damaged_checkpoint_is_moved_aside_and_never_served(tmp_path):
    path = str(tmp_path / "gw")
    store, _, _ = open_store(path, 100, SYMS)
    store.write(a_checkpoint(), taken({(7, 5): KeyUse(1, 77, 12)}))
    store.close()
    env = lmdb.open(path, max_dbs=3)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(b"checkpoint", db=meta))
        value[-5] ^= 0xFF
        txn.put(b"checkpoint", bytes(value), db=meta)
    env.close()
    store, cp, problem = open_store(path, 100, SYMS)
    try:
        assert cp is None and "digest" in problem and "old-1" in problem
        assert store.lookup(7, 5) is None  # a new, empty store: rebuilt from 0
        assert os.path.isdir(path + ".old-1")
    finally:
        store.close()


def test_a_store_made_for_other_instruments_is_moved_aside(tmp_path):
    path = str(tmp_path / "gw")
    store, _, _ = open_store(path, 100, SYMS)
    store.write(a_checkpoint(), taken({}))
    store.close()
    store, cp, problem = open_store(path, 100, ["BOLT", "ACME"])
    store.close()
    assert cp is None and "numbers the instruments" in problem


def test_a_store_that_cannot_be_made_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError):
        open_store(str(tmp_path / "file" / "gw"), 100, SYMS)


def test_the_filter_never_forgets_a_pair_of_the_last_capacity_added():
    rng = np.random.default_rng(5)
    f = KeyFilter(capacity=5_000)
    keys = rng.integers(1, 1 << 63, 23_000, dtype=np.int64).astype(np.uint64)
    clients = rng.integers(1, 1 << 32, len(keys), dtype=np.int64).astype(np.uint32)
    for at in range(0, len(keys), 1_700):  # checkpoints of uneven sizes
        f.add(clients[at : at + 1_700], keys[at : at + 1_700])
        done = min(at + 1_700, len(keys))
        last = range(max(0, done - 5_000), done)
        assert all(f.may_hold(int(clients[i]), int(keys[i])) for i in last)
    fresh = rng.integers(1, 1 << 63, 20_000, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    wrong = sum(f.may_hold(7, int(k)) for k in fresh)  # keys above int64's range too
    assert wrong < 0.03 * len(fresh)  # the rest are read from the store


def test_a_reopened_store_finds_every_pair_of_its_window(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "RUN_PAIRS", 100)  # runs of one checkpoint each
    path = str(tmp_path / "gw")
    store, _, _ = open_store(path, 300, SYMS)
    cp = a_checkpoint()
    pairs = [(1 + k % 5, 1_000 + k) for k in range(1_000)]
    for at in range(0, len(pairs), 100):
        store.write(cp, taken({(c, k): KeyUse(0, k, k) for c, k in pairs[at : at + 100]}))
    store.close()
    store, _, _ = open_store(path, 300, SYMS)
    try:
        assert store.keys() == 300  # the runs wholly older than the window are gone

        def found(n):
            assert all(store.lookup(c, k) == KeyUse(0, k, k) for c, k in pairs[-n:])
            assert not any(store.lookup(c, k) for c, k in pairs[:-n])

        found(300)  # before the filter has the store's pairs: the runs are searched
        # the filter takes them a run at a time, while new pairs come
        assert not store.fill_filter()
        store.write(cp, taken({(9, 5): KeyUse(1, 5, 5)}))
        found(300)
        assert not store.fill_filter()
        assert store.fill_filter() and store.fill_filter()
        found(300)
        assert store.lookup(9, 5) == KeyUse(1, 5, 5)
        assert not store.filter.may_hold(7, 12345)  # a new pair: no run is searched
    finally:
        store.close()


def test_runs_merge_into_a_few_and_the_newest_use_of_a_pair_wins(tmp_path):
    store, _, _ = open_store(str(tmp_path / "gw"), 1_000_000, SYMS)
    try:
        # a checkpoint a second, 300 seconds of 10 pairs; clients 0, 256 and 512 end in a
        # zero byte: a pair's bytes must compare whole
        for n in range(1, 301):
            store.write(
                a_checkpoint(),
                taken({(256 * (k % 3), 10 * n + k): KeyUse(0, n, k) for k in range(10)}),
            )
        assert store.keys() == 3_000 and len(store._runs) <= 12
        assert all(
            store.lookup(256 * (k % 3), 10 * n + k) == KeyUse(0, n, k)
            for n in range(1, 301)
            for k in range(10)
        )
        store.write(a_checkpoint(), taken({(0, 10): KeyUse(1, 99, 99)}))  # again, later
        store.write(a_checkpoint(), taken({(0, 20): KeyUse(1, 98, 98)}))
        assert store.lookup(0, 10) == KeyUse(1, 99, 99) and store.lookup(0, 20) == KeyUse(1, 98, 98)
        assert store.lookup(0, 11) is None and store.lookup(256, 10) is None
    finally:
        store.close()


def test_screened_pairs_are_answered_as_the_filter_would_one_by_one(tmp_path):
    store, _, _ = open_store(str(tmp_path / "gw"), 1_000, SYMS)
    try:
        store.write(a_checkpoint(), taken({(7, 5): KeyUse(1, 77, 12)}))
        store.screen([7, 7, 9], [5, 6, 1 << 63])  # one held, two new (one above int64)
        assert store.lookup(7, 5) == KeyUse(1, 77, 12)
        assert store.lookup(7, 6) is None and store.lookup(9, 1 << 63) is None
        # a pair screened as new and written since is found: the write forgets the screen
        store.write(a_checkpoint(), taken({(7, 6): KeyUse(0, 78, 13)}))
        assert store.lookup(7, 6) == KeyUse(0, 78, 13)
    finally:
        store.close()
