"""ShardEngine in-process: sequencing, order ids, idempotency, snapshots and recovery."""

import numpy as np
import pytest

from exchange.bookconfig import BookConfig
from exchange.engine import ORDER_ID_SHARD_SHIFT, RecoveryError, ShardEngine, order_id_shard
from exchange.journal import Journal
from exchange.records import (
    CMD_NEW,
    EV_ACCEPTED,
    EV_REJECTED,
    EV_TRADE,
    EVF_DUPLICATE,
    REJ_BAD_COMMAND,
    REJ_CONFLICT,
    SIDE_BUY,
    SIDE_SELL,
    commands,
)

BOOKS = [BookConfig(min_price=1, max_price=1000, capacity=64)] * 2


@pytest.fixture
def journal(tmp_path):
    j = Journal(str(tmp_path / "j"), durability="os")
    try:
        yield j
    finally:
        j.close()


def orders(*specs):
    """specs: (instrument, side, price, qty, client, idem_key, req_id)"""
    cmds = commands(len(specs))
    for c, (inst, side, px, qty, client, key, req) in zip(cmds, specs, strict=True):
        c["kind"], c["instrument"], c["side"], c["price"], c["qty"] = CMD_NEW, inst, side, px, qty
        c["client"], c["idem_key"], c["req_id"] = client, key, req
    return cmds


def test_seqs_and_order_ids_are_assigned_and_instruments_merged(journal):
    eng = ShardEngine(3, BOOKS, journal)
    out = eng.apply(
        orders(
            (0, SIDE_SELL, 100, 5, 1, 0, 1),
            (1, SIDE_SELL, 200, 5, 1, 0, 2),
            (0, SIDE_BUY, 100, 2, 2, 0, 3),
        )
    )
    assert out.commands == 3 and eng.last_seq == 3
    acc = out.events[out.events["kind"] == EV_ACCEPTED]
    assert acc["order_id"].tolist() == [(3 << ORDER_ID_SHARD_SHIFT) | s for s in (1, 2, 3)]
    assert order_id_shard(int(acc["order_id"][0])) == 3
    key = out.events["seq"] * 100_000 + out.events["idx"]
    assert (np.diff(key) > 0).all()  # (seq, idx) order across the two books
    assert (out.events["kind"] == EV_TRADE).sum() == 1
    assert journal.last_seq == 3


def test_unknown_instrument_and_its_retry_are_refused_without_sequencing(journal):
    eng = ShardEngine(0, BOOKS, journal)
    out = eng.apply(orders((9, SIDE_BUY, 100, 1, 1, 5, 1), (9, SIDE_BUY, 100, 1, 1, 5, 2)))
    assert out.commands == 0 and journal.last_seq == 0
    assert out.replies["req_id"].tolist() == [1, 2]
    assert out.replies["code"].tolist() == [REJ_BAD_COMMAND] * 2
    assert (out.replies["seq"] == 0).all()


def test_retry_duplicates_and_conflicts_within_and_across_batches(journal):
    eng = ShardEngine(0, BOOKS, journal)
    first = eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 5, 1), (0, SIDE_BUY, 100, 1, 1, 5, 2)))
    assert first.commands == 1
    dup = first.replies[first.replies["req_id"] == 2]
    assert dup["kind"].tolist() == [EV_ACCEPTED] and dup["flags"][0] & EVF_DUPLICATE
    later = eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 5, 3), (0, SIDE_BUY, 101, 1, 1, 5, 4)))
    assert later.commands == 0
    assert later.replies[later.replies["req_id"] == 3]["flags"][0] & EVF_DUPLICATE
    conflict = later.replies[later.replies["req_id"] == 4]
    assert (conflict["kind"][0], conflict["code"][0]) == (EV_REJECTED, REJ_CONFLICT)


def test_a_batch_of_retries_and_unknowns_commits_its_position_alone(journal):
    eng = ShardEngine(0, BOOKS, journal)
    eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 5, 1)), positions={"req@1": 1})
    out = eng.apply(
        np.concatenate(
            [orders((0, SIDE_BUY, 100, 1, 1, 5, 2)), orders((7, SIDE_BUY, 1, 1, 1, 0, 3))]
        ),
        positions={"req@1": 3},
    )
    assert out.commands == 0 and len(out.events) == 0 and eng.last_seq == journal.last_seq == 1
    assert sorted(out.replies["req_id"].tolist()) == [2, 3]
    assert journal.positions() == {"req@1": 3}


def test_a_batch_that_is_not_commands_is_refused_and_changes_nothing(journal):
    eng = ShardEngine(0, BOOKS, journal)
    good = orders((0, SIDE_BUY, 100, 1, 1, 5, 1))
    for bad, error, message in [
        (good.view(np.uint8), TypeError, "COMMAND_DTYPE, got uint8"),
        ([1, 2], TypeError, "got list"),
        (good.reshape(1, 1), ValueError, "1-d array"),
    ]:
        with pytest.raises(error, match=message):
            eng.apply(bad)
    assert eng.last_seq == journal.last_seq == 0
    assert eng.apply(good).commands == 1


def test_recovery_from_snapshot_equals_full_replay(tmp_path):
    rng = np.random.default_rng(3)
    with Journal(str(tmp_path / "j"), durability="os") as j:
        eng = ShardEngine(0, BOOKS, j, snapshot_every=50)
        req = 0
        for _ in range(20):
            specs = []
            for _ in range(int(rng.integers(1, 30))):
                req += 1
                side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
                specs.append(
                    (int(rng.integers(2)), side, int(rng.integers(90, 110)), 3, 1 + req % 3, 0, req)
                )
            eng.apply(orders(*specs))
        hashes = eng.state_hashes()
    with Journal(str(tmp_path / "j"), readonly=True) as j:
        a = ShardEngine(0, BOOKS, j)
        rec = a.recover()
        assert rec.snapshot_seq > 0 and a.state_hashes() == hashes
        b = ShardEngine(0, BOOKS, j)
        assert b.recover(use_snapshot=False).snapshot_seq == 0
        assert b.state_hashes() == hashes
        # a different book config must not be run on this journal
        other = [BookConfig(min_price=1, max_price=2000, capacity=64)] * 2
        with pytest.raises(RecoveryError, match="instrument 0"):
            ShardEngine(0, other, j).recover()


def test_a_snapshot_is_also_taken_after_snapshot_seconds(journal):
    eng = ShardEngine(0, BOOKS, journal, snapshot_every=10**9, snapshot_seconds=0.0)
    eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 0, 1)))
    assert journal.latest_snapshot()[0] == 1
    eng = ShardEngine(0, BOOKS, journal, snapshot_every=10**9)  # no time trigger: none
    eng.recover()
    eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 0, 2)))
    assert journal.latest_snapshot()[0] == 1
