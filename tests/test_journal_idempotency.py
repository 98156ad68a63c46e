"""Idempotency: new, identical retry and conflict, within a batch and across batches and reopen."""

import shutil

import numpy as np
import pytest
from journal_stream import CONFIG, idem_entry

from exchange.idempotency import (
    FINGERPRINT_FIELDS,
    SMALL_BATCH,
    decode_entry,
    entries,
    fingerprints,
    plan_batch,
    resend,
)
from exchange.journal import Journal, JournalReader
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    EV_ACCEPTED,
    EV_DEPTH,
    EV_REJECTED,
    EVF_DUPLICATE,
    REJ_CONFLICT,
    SIDE_BUY,
    SIDE_SELL,
    commands,
)
from exchange.reference import ReferenceBook


def fingerprint(cmd) -> bytes:
    """The bytes that tell an identical retry of one NEW from a different request."""
    return fingerprints(np.asarray(cmd).reshape(1)).tobytes()


@pytest.fixture
def jdir(tmp_path):
    path = tmp_path / "journal"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class MiniShard:
    """The shard loop's journal steps, for real: plan, sequence, match, journal, resend."""

    def __init__(self, journal):
        self.journal = journal
        self.book = ReferenceBook(CONFIG)
        self.seq = journal.last_seq
        self.next_id = 1 + max((e.order_id for e in journal.idem_entries()), default=0)

    def step(self, drained, drop=()):
        """One batch; the shard also drops the commands at ``drop`` (say, unknown instruments)."""
        plan = plan_batch(self.journal, drained)
        if plan.keep is None:  # nothing to sort out: every command is kept
            plan = plan._replace(keep=np.ones(len(drained), bool))
        keep = plan.keep.copy()
        keep[list(drop)] = False
        cmds = drained[keep]
        cmds["seq"] = self.seq + 1 + np.arange(len(cmds))
        new = cmds["kind"] == CMD_NEW
        cmds["order_id"][new] = self.next_id + np.arange(new.sum())
        self.next_id += int(new.sum())
        events = self.book.process(cmds)
        if len(cmds):
            self.journal.write_batch(cmds, events)
            self.seq = int(cmds["seq"][-1])
        return plan, cmds, events, resend(self.journal, drained, plan, cmds)


def request(req_id, client=1, key=0, side=SIDE_BUY, price=120, qty=5, kind=CMD_NEW):
    c = commands(1)
    c["req_id"], c["client"], c["idem_key"], c["kind"] = req_id, client, key, kind
    c["side"], c["price"], c["qty"] = side, price, qty
    return c


def test_fingerprint_covers_exactly_the_request_body():
    base = request(1, key=5)
    same = base.copy()
    same["req_id"], same["seq"], same["order_id"] = 99, 1234, 77
    assert fingerprint(base[0]) == fingerprint(same[0])
    assert len(fingerprint(base[0])) == 48  # expires among its fields
    for field in FINGERPRINT_FIELDS:
        other = base.copy()
        other[field] += 1
        assert fingerprint(other[0]) != fingerprint(base[0]), field


def test_new_retry_and_conflict_within_one_batch(jdir):
    with Journal(jdir) as j:
        shard = MiniShard(j)
        drained = np.concatenate(
            [
                request(10, key=1),  # new
                request(11, key=1),  # identical retry of 10
                request(12, key=1, price=121),  # conflict with 10
                request(13, key=0, side=SIDE_SELL, price=130),  # no key: always new
                request(14, key=2, side=SIDE_SELL, price=131),  # new
                request(15, client=2, key=1),  # same key, other client: new
                request(16, key=1, kind=CMD_CANCEL),  # keys of non-NEW commands are ignored
            ]
        )
        plan, cmds, events, dups = shard.step(drained)
        assert plan.keep.tolist() == [True, False, False, True, True, True, True]
        assert cmds["req_id"].tolist() == [10, 13, 14, 15, 16]

        (conflict,) = plan.conflicts
        assert (conflict["kind"], conflict["code"], conflict["req_id"]) == (
            EV_REJECTED,
            REJ_CONFLICT,
            12,
        )
        assert (conflict["seq"], conflict["order_id"], conflict["client"]) == (0, 0, 1)
        assert conflict["idem_key"] == 1 and conflict["price"] == 121

        original = events[(events["seq"] == cmds["seq"][0]) & (events["kind"] != EV_DEPTH)]
        assert original["kind"].tolist() == [EV_ACCEPTED]
        assert len(dups) == len(original)
        assert (dups["flags"] & EVF_DUPLICATE).all()
        assert (dups["req_id"] == 11).all()
        expect = original.copy()
        expect["req_id"], expect["flags"] = 11, EVF_DUPLICATE
        assert dups.tobytes() == expect.tobytes()

        entries = list(j.idem_entries())
        assert [(e.client, e.idem_key) for e in entries] == [(1, 1), (2, 1), (1, 2)]
        assert shard.next_id == 5  # four NEWs ran
        assert all(j.order(i) for i in range(1, 5))


def test_retry_and_conflict_across_batches_and_reopen(jdir):
    with Journal(jdir) as j:
        _, cmds, events, _ = MiniShard(j).step(np.concatenate([request(1, key=7, qty=3)]))
        first = events[events["kind"] != EV_DEPTH]
        entry = idem_entry(j, 1, 7)
        assert (entry.seq, entry.order_id, entry.instrument) == (1, 1, 0)
        assert entry.fingerprint == fingerprint(cmds[0])
    for _ in range(2):  # reopened, then again
        with Journal(jdir) as j:
            shard = MiniShard(j)
            drained = np.concatenate([request(2, key=7, qty=3), request(3, key=7, qty=4)])
            plan, cmds, _, dups = shard.step(drained)
            assert plan.keep.tolist() == [False, False]
            assert len(cmds) == 0
            assert plan.retries["original_seq"].tolist() == [1]
            assert plan.conflicts["req_id"].tolist() == [3]
            expect = first.copy()
            expect["req_id"], expect["flags"] = 2, EVF_DUPLICATE
            assert dups.tobytes() == expect.tobytes()
            assert j.last_seq == 1 and j.order(2) is None
    with JournalReader(jdir) as r:
        assert idem_entry(r, 1, 7) == entry
        assert idem_entry(r, 1, 8) is None
        assert idem_entry(r, 2, 7) is None


def test_a_retry_with_another_display_is_a_conflict(jdir):
    """An iceberg's display is part of the request: the same order shown differently
    under a used pair is another request (in the batch and across batches)."""
    with Journal(jdir) as j:
        shard = MiniShard(j)
        iceberg = request(1, key=9, qty=20)
        iceberg["display"] = 5
        plan, cmds, _, _ = shard.step(iceberg)
        assert len(cmds) == 1 and idem_entry(j, 1, 9).fingerprint == fingerprint(cmds[0])
        again, shown_more, plain = (
            request(2, key=9, qty=20),
            request(3, key=9, qty=20),
            request(4, key=9, qty=20),
        )
        again["display"], shown_more["display"] = 5, 10
        plan, cmds, _, dups = shard.step(np.concatenate([again, shown_more, plain]))
        assert len(cmds) == 0
        assert plan.retries["original_seq"].tolist() == [1]
        assert plan.conflicts["req_id"].tolist() == [3, 4]
        assert (plan.conflicts["code"] == REJ_CONFLICT).all()
        assert (dups["req_id"] == 2).all()


def test_a_pair_creates_at_most_one_order_over_a_retrying_stream(jdir):
    rng = np.random.default_rng(11)
    sent = {}  # (client, key) -> the request body first sent
    with Journal(jdir) as j:
        shard = MiniShard(j)
        for step in range(40):
            reqs = []
            for r in range(int(rng.integers(1, 20))):
                pair = (int(rng.integers(1, 4)), int(rng.integers(1, 30)))
                req_id = step * 100 + r
                if pair in sent and rng.random() < 0.7:
                    body = sent[pair].copy()  # an identical retry
                    body["req_id"] = req_id
                else:
                    body = request(req_id, *pair, side=int(rng.integers(1, 3)))
                    body["price"] = int(rng.integers(110, 131))
                    sent.setdefault(pair, body)
                reqs.append(body)
            drained = np.concatenate(reqs)
            plan, cmds, events, dups = shard.step(drained)
            retried = set(plan.retries["index"].tolist())
            conflicted = set(plan.conflicts["req_id"].tolist())
            for r, req in enumerate(drained):
                first = sent[(int(req["client"]), int(req["idem_key"]))]
                if plan.keep[r]:
                    assert req["req_id"] == first["req_id"]
                elif fingerprint(req) == fingerprint(first):
                    assert r in retried
                else:
                    assert req["req_id"] in conflicted
            # every retry is answered with flagged originals carrying its own req_id
            assert set(dups["req_id"].tolist()) == set(drained["req_id"][plan.retries["index"]])
        entries = {(e.client, e.idem_key): e for e in j.idem_entries()}
        assert set(entries) == set(sent)
        for pair, e in entries.items():
            assert e.fingerprint == fingerprint(sent[pair])
        # exactly one NEW per pair ever reached the book
        news = [c[c["kind"] == CMD_NEW] for c, _ in j.iter_batches()]
        assert sum(map(len, news)) == len(sent)


def test_a_retry_finds_its_in_batch_original_whatever_else_the_shard_drops(jdir):
    with Journal(jdir) as j:
        shard = MiniShard(j)
        drained = np.concatenate(
            [request(1, key=3, price=130), request(2, key=4), request(3, key=4)]
        )
        plan, cmds, events, dups = shard.step(drained, drop=[0])
        assert cmds["req_id"].tolist() == [2]
        original = events[events["kind"] != EV_DEPTH]
        assert dups["seq"].tolist() == original["seq"].tolist() == [cmds["seq"][0]]
        assert dups["req_id"].tolist() == [3]
        with pytest.raises(ValueError, match="was not journaled: answer the retry"):
            shard.step(np.concatenate([request(4, key=5), request(5, key=5)]), drop=[0])


def test_entries_of_a_small_batch_are_those_of_the_numba_pass():
    """Batches of up to SMALL_BATCH commands are packed in plain Python: the same bytes."""
    rng = np.random.default_rng(3)
    cmds = commands(200)
    for f in ("seq", "order_id", "price", "qty", "req_id"):
        cmds[f] = rng.integers(-(1 << 62), 1 << 62, len(cmds))
    cmds["idem_key"] = rng.integers(0, 1 << 64, len(cmds), dtype=np.uint64)
    cmds["idem_key"][::5] = 0
    cmds["client"] = rng.integers(0, 1 << 32, len(cmds), dtype=np.uint32)
    cmds["instrument"] = rng.integers(0, 1 << 16, len(cmds))
    for f in ("kind", "side", "tif", "ord_type", "flags", "stp"):
        cmds[f] = rng.integers(0, 256, len(cmds))
    cmds["kind"][::2] = CMD_NEW
    index, keys, values = entries(cmds)  # the numba pass
    assert len(cmds) > SMALL_BATCH and 0 < len(index) < len(cmds)
    at = 0
    for lo in range(0, len(cmds), SMALL_BATCH):
        small = entries(cmds[lo : lo + SMALL_BATCH])
        n = len(small[0])
        assert [lo + i for i in small[0]] == index[at : at + n]
        assert small[1:] == (keys[at : at + n], values[at : at + n])
        at += n
    assert at == len(index)
    for i, key, value in zip(index, keys, values, strict=True):
        entry = decode_entry(key, value)
        c = cmds[i]
        assert (entry.client, entry.idem_key) == (c["client"], c["idem_key"])
        assert (entry.seq, entry.order_id) == (c["seq"], c["order_id"])
        assert entry.fingerprint == fingerprint(c)
