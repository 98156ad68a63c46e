"""Order state rows derived from real event streams, checked against the books themselves."""

import shutil

import numpy as np
import pytest
from journal_stream import CONFIG, cut, shard_stream

from exchange.journal import Journal, JournalReader
from exchange.orderstate import NEEDS_KEY, ORDER_DTYPE, PendingRows
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    SIDE_BUY,
    SIDE_SELL,
    STP_NONE,
    TIF_GTC,
    TIF_IOC,
    commands,
)
from exchange.reference import ReferenceBook


@pytest.fixture
def jdir(tmp_path):
    path = tmp_path / "journal"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def command(seq, kind, order_id, client=1, side=SIDE_BUY, price=120, qty=5, idem=0, tif=TIF_GTC):
    c = commands(1)
    c["seq"], c["kind"], c["order_id"], c["client"] = seq, kind, order_id, client
    c["side"], c["price"], c["qty"], c["idem_key"], c["tif"] = side, price, qty, idem, tif
    c["stp"] = STP_NONE
    return c


def journal_commands(j, book, *batches):
    for batch in batches:
        cmds = np.concatenate(batch)
        j.write_batch(cmds, book.process(cmds))


def test_a_life_of_orders_across_batches(jdir):
    book = ReferenceBook(CONFIG)
    with Journal(jdir) as j:
        journal_commands(
            j,
            book,
            [
                command(1, CMD_NEW, 1, client=7, price=120, qty=5, idem=11),
                command(2, CMD_NEW, 2, client=8, side=SIDE_SELL, price=119, qty=3),
                command(3, CMD_NEW, 3, client=8, qty=0),  # rejected: qty
            ],
            [command(4, CMD_REPLACE, 1, client=7, price=120, qty=4)],  # keeps priority
            [command(5, CMD_NEW, 1, client=9, price=110)],  # REJ_DUPLICATE_ID: 1 is live
            [command(6, CMD_CANCEL, 42, client=7)],  # REJ_NOT_FOUND
            [
                command(7, CMD_NEW, 4, client=9, side=SIDE_SELL, price=100, qty=9, tif=TIF_IOC),
                command(8, CMD_CANCEL, 1, client=7),
            ],
        )
        o1, o2, o3, o4 = (j.order(i) for i in (1, 2, 3, 4))
        assert j.order(42) is None and j.order(5) is None
    # 1: accepted 5, sold 3 to order 2, replaced to 4 (leaves 1), then filled by 4's IOC
    assert (o1.status, o1.qty, o1.leaves, o1.price, o1.client) == ("filled", 4, 0, 120, 7)
    assert (o1.idem_key, o1.side, o1.last_seq) == (11, SIDE_BUY, 7)
    assert (o2.status, o2.qty, o2.leaves, o2.price, o2.last_seq) == ("filled", 3, 0, 119, 2)
    assert (o3.status, o3.qty, o3.leaves, o3.last_seq) == ("rejected", 0, 0, 3)
    # 4: the IOC took 1 from order 1 at 120, the rest was cancelled
    assert (o4.status, o4.qty, o4.leaves, o4.price, o4.side) == ("cancelled", 9, 0, 100, SIDE_SELL)


def test_a_resting_order_keeps_its_idem_key_and_qty_when_hit_later(jdir):
    book = ReferenceBook(CONFIG)
    with Journal(jdir) as j:
        journal_commands(
            j,
            book,
            [command(1, CMD_NEW, 1, client=7, price=120, qty=5, idem=99)],
            [command(2, CMD_NEW, 2, client=8, side=SIDE_SELL, price=120, qty=2)],
        )
        o1 = j.order(1)
    assert (o1.status, o1.qty, o1.leaves, o1.idem_key, o1.last_seq) == ("live", 5, 3, 99, 2)


def fold_rows(cmds, events):
    """Obviously-correct order rows: a dict walk over every event, by the rules of orderstate."""
    by_seq = {int(c["seq"]): c for c in cmds}
    rows: dict[int, dict] = {}
    for e in events:
        kind, code, seq = int(e["kind"]), int(e["code"]), int(e["seq"])
        c = by_seq[seq]
        if kind == 1:  # accepted
            rows[int(e["order_id"])] = {
                "price": int(e["price"]),
                "qty": int(e["qty"]),
                "leaves": int(e["leaves"]),
                "status": "live",
                "idem_key": int(e["idem_key"]),
                "client": int(e["client"]),
            }
        elif kind == 2 and int(c["kind"]) == CMD_NEW and code != 7:  # rejected NEW
            rows[int(c["order_id"])] = {
                "price": int(c["price"]),
                "qty": int(c["qty"]),
                "leaves": 0,
                "status": "rejected",
                "idem_key": int(c["idem_key"]),
                "client": int(c["client"]),
            }
        elif kind == 3:  # trade
            for oid, leaves in ((e["order_id"], e["leaves"]), (e["other_id"], e["other_leaves"])):
                r = rows[int(oid)]
                r["leaves"] = int(leaves)
                r["status"] = "filled" if leaves == 0 else "live"
        elif kind == 4:  # cancelled (leaves > 0: an STP decrement's partial cancel)
            r = rows[int(e["order_id"])]
            r["leaves"] = int(e["leaves"])
            if e["leaves"]:
                r["qty"] -= int(e["qty"])
            r["status"] = "live" if e["leaves"] else "cancelled"
        elif kind == 5:  # replaced
            r = rows[int(e["order_id"])]
            r["price"], r["qty"], r["leaves"] = int(e["price"]), int(e["qty"]), int(e["leaves"])
            r["status"] = "live"
    return rows


@pytest.mark.parametrize("seed", [3, 4])
def test_rows_match_a_plain_fold_and_the_books(jdir, seed):
    cmds, evs, books = shard_stream(seed=seed, n=2500)
    expected = fold_rows(cmds, evs)
    with Journal(jdir, durability="os") as j:
        for c, e in cut(cmds, evs, seed=seed):
            j.write_batch(c, e)
        for oid in set(cmds["order_id"].tolist()) - set(expected):
            assert j.order(oid) is None, oid
        for oid, want in expected.items():
            got = j.order(oid)._asdict()
            assert {k: got[k] for k in want} == want, oid
            live = books[got["instrument"]].order(oid)
            if live is None:
                assert got["status"] != "live" and got["leaves"] == 0, got
            else:
                assert got["status"] == "live", got
                same = ("order_id", "client", "side", "price", "qty", "leaves")
                assert {k: got[k] for k in same} == {k: live[k] for k in same}
    assert {s for s in (r["status"] for r in expected.values())} == {
        "live",
        "filled",
        "cancelled",
        "rejected",
    }


def test_rows_do_not_depend_on_batches_merges_or_reopening(tmp_path):
    cmds, evs, _ = shard_stream(seed=5, n=1500)
    batches = cut(cmds, evs, seed=9, max_batch=8)
    half = len(batches) // 2
    paths = {name: tmp_path / name for name in ("one", "many", "merged", "reopened")}
    try:
        with Journal(paths["one"], durability="os") as j:
            j.write_batch(cmds, evs)
        with Journal(paths["many"], durability="os") as j:
            for c, e in batches:
                j.write_batch(c, e)
        with Journal(paths["merged"], durability="os", merge_rows=50) as j:
            for c, e in batches:
                j.write_batch(c, e)
            st = j.stats()
            assert st.orders_merged > 0 and st.order_log_rows < 50
        for part in (batches[:half], batches[half:]):
            # the rows logged before a reopen are found again
            with Journal(paths["reopened"], durability="os", merge_rows=10**6) as j:
                for c, e in part:
                    j.write_batch(c, e)
        journals = [JournalReader(p) for p in paths.values()]
        try:
            ids = set(cmds["order_id"].tolist())
            for oid in ids:
                states = [j.order(oid) for j in journals]
                assert all(s == states[0] for s in states), oid
            assert sum(journals[0].order(oid) is not None for oid in ids) > 1000
        finally:
            for j in journals:
                j.close()
    finally:
        for p in paths.values():
            shutil.rmtree(p, ignore_errors=True)


def test_pending_rows_find_the_latest_row_of_each_order():
    rng = np.random.default_rng(1)
    pending = PendingRows()
    model = {}
    for step in range(60):  # enough ids to grow the buffer and the index several times
        rows = np.zeros(int(rng.integers(1, 400)), ORDER_DTYPE)
        rows["order_id"] = rng.integers(-50, 6000, len(rows))
        rows["last_seq"] = step
        rows["leaves"] = np.arange(len(rows))
        rows["idem_key"] = rng.integers(1, 1 << 40, len(rows))
        pending.add(rows)
        for r in rows:
            model[int(r["order_id"])] = r.copy()

    def merged(probe):
        """(found mask, the idem keys merge_into gave the rows of ``probe``)."""
        rows = np.zeros(len(probe), ORDER_DTYPE)
        rows["order_id"] = probe
        missing = pending.merge_into(rows, np.full(len(probe), NEEDS_KEY, np.uint8))
        found = np.ones(len(probe), bool)
        found[missing] = False
        return found, rows["idem_key"]

    probe = np.arange(-60, 6100)
    found, keys = merged(probe)
    assert found.tolist() == [int(i) in model for i in probe]
    assert keys[found].tolist() == [int(model[int(i)]["idem_key"]) for i in probe[found]]
    assert not keys[~found].any()
    newer = np.zeros(3, ORDER_DTYPE)
    newer["order_id"] = [7000, 5, -50]
    newer["last_seq"] = 99
    model.update({int(r["order_id"]): r.copy() for r in newer})
    latest = pending.latest(newer)
    assert latest["order_id"].tolist() == sorted(model)
    assert latest.tobytes() == b"".join(model[i].tobytes() for i in sorted(model))
    pending.clear()
    assert pending.rows == pending.batches == 0
    assert not merged(probe)[0].any()
    assert len(pending.latest(newer[:0])) == 0  # a fold with no rows at all
