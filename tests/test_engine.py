"""ShardEngine in-process: sequencing, order ids, idempotency, snapshots, recovery and
the control commands (SYNC, STATUS) it answers from its own state."""

import numpy as np
import pytest
from journal_stream import idem_entry

from exchange import engine as engine_module
from exchange.bookconfig import BookConfig
from exchange.engine import ORDER_ID_SHARD_SHIFT, RecoveryError, ShardEngine, order_id_shard
from exchange.journal import Journal, JournalReader
from exchange.orderstate import ST_CANCELLED, ST_FILLED, ST_LIVE
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_NEW,
    CMD_RESUME,
    CMD_STATUS,
    CMD_SYNC,
    COMMAND_DTYPE,
    CXL_EXPIRED,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_EXPIRED,
    EV_REJECTED,
    EV_RESTING,
    EV_STATE,
    EV_STATUS,
    EV_SYNCED,
    EV_TRADE,
    EV_TRADING,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    EVF_REPLAY,
    EVF_RETRANSMIT,
    FLAG_POST_ONLY,
    REJ_BAD_COMMAND,
    REJ_CONFLICT,
    REJ_POST_ONLY,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
    SYNCF_RETRANSMIT,
    TIF_GTD,
    commands,
    copy_records,
    join_records,
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


def test_a_key_is_used_up_only_by_an_order_the_book_accepted(journal):
    """A keyed NEW the book rejects creates no order and uses no key: its retry is
    evaluated again (and may be accepted), a different order under the key is taken;
    an accepted order's retry is a duplicate, as ever."""
    eng = ShardEngine(0, BOOKS, journal)

    def post_only(key, req, px=100, qty=1):
        c = orders((0, SIDE_BUY, px, qty, 1, key, req))
        c["flags"] = FLAG_POST_ONLY
        return c

    def answer(out, req):
        ev = [e for e in (out.events, out.replies) if len(e)]
        ev = np.concatenate(ev)
        return ev[(ev["req_id"] == req) & (ev["kind"] != EV_DEPTH)]

    sell = eng.apply(orders((0, SIDE_SELL, 100, 5, 2, 0, 1)))
    sell_id = int(sell.events["order_id"][0])
    first = eng.apply(post_only(7, 2))
    assert first.commands == 1
    rej = answer(first, 2)
    assert (rej["kind"].tolist(), rej["code"].tolist()) == ([EV_REJECTED], [REJ_POST_ONLY])
    assert idem_entry(journal, 1, 7) is None  # no entry: the key is free
    # an identical retry is sequenced and evaluated again (not a duplicate)
    again = eng.apply(post_only(7, 3))
    assert again.commands == 1 and len(again.replies) == 0
    rej = answer(again, 3)
    assert rej["code"].tolist() == [REJ_POST_ONLY] and not rej["flags"][0] & EVF_DUPLICATE
    assert rej["seq"][0] == journal.last_seq == 3
    # the crossing order gone, the same request is accepted
    cancel = commands(1)
    cancel["kind"], cancel["order_id"], cancel["client"], cancel["req_id"] = (
        CMD_CANCEL,
        sell_id,
        2,
        4,
    )
    eng.apply(cancel)
    taken = eng.apply(post_only(7, 5))
    acc = answer(taken, 5)
    assert acc["kind"].tolist() == [EV_ACCEPTED] and not acc["flags"][0] & EVF_DUPLICATE
    entry = idem_entry(journal, 1, 7)
    assert (entry.seq, entry.order_id) == (acc["seq"][0], acc["order_id"][0])
    # now the key is used: a retry is the original Ack again, a different order a conflict
    dup = eng.apply(np.concatenate([post_only(7, 6), post_only(7, 7, px=99)]))
    assert dup.commands == 0
    assert answer(dup, 6)["flags"][0] & EVF_DUPLICATE
    assert answer(dup, 6)["order_id"][0] == acc["order_id"][0]
    assert answer(dup, 7)["code"].tolist() == [REJ_CONFLICT]
    # a different order under a key whose order the book rejected is accepted
    eng.apply(orders((0, SIDE_SELL, 200, 1, 2, 0, 8)))
    refused = eng.apply(post_only(8, 9, px=200))  # would take the sell at 200
    assert answer(refused, 9)["code"].tolist() == [REJ_POST_ONLY]
    other = eng.apply(post_only(8, 10, px=150))
    assert answer(other, 10)["kind"].tolist() == [EV_ACCEPTED]
    assert idem_entry(journal, 1, 8).seq == answer(other, 10)["seq"][0]


def test_a_retry_in_the_batch_of_its_rejected_original_gets_its_reject(journal):
    """Decided at once: the original and its identical retry in one batch are one
    request, the retry answered as a duplicate of the book's reject; the key stays
    free for a later batch."""
    eng = ShardEngine(0, BOOKS, journal)
    eng.apply(orders((0, SIDE_SELL, 100, 5, 2, 0, 1)))
    both = orders((0, SIDE_BUY, 100, 1, 1, 7, 2), (0, SIDE_BUY, 100, 1, 1, 7, 3))
    both["flags"] = FLAG_POST_ONLY
    out = eng.apply(both)
    assert out.commands == 1
    assert out.events["code"].tolist() == [REJ_POST_ONLY]  # a reject: no DEPTH
    dup = out.replies[out.replies["req_id"] == 3]
    assert dup["code"].tolist() == [REJ_POST_ONLY] and dup["flags"][0] & EVF_DUPLICATE
    assert dup["seq"][0] == out.events["seq"][0]
    assert idem_entry(journal, 1, 7) is None
    later = eng.apply(orders((0, SIDE_BUY, 90, 1, 1, 7, 4)))  # a different order
    assert later.commands == 1 and later.events["kind"][0] == EV_ACCEPTED


def test_a_batch_of_retries_and_unknowns_commits_its_position_alone(journal):
    eng = ShardEngine(0, BOOKS, journal)
    eng.apply(orders((0, SIDE_BUY, 100, 1, 1, 5, 1)), consumed={"req@1": 1})
    out = eng.apply(
        np.concatenate(
            [orders((0, SIDE_BUY, 100, 1, 1, 5, 2)), orders((7, SIDE_BUY, 1, 1, 1, 0, 3))]
        ),
        consumed={"req@1": 3},
    )
    assert out.commands == 0 and len(out.events) == 0 and eng.last_seq == journal.last_seq == 1
    assert sorted(out.replies["req_id"].tolist()) == [2, 3]
    assert journal.consumed() == {"req@1": 3}


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
    with JournalReader(str(tmp_path / "j")) as j:
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


# ---------------------------------------------------------------- control commands


def one(dtype, **fields):
    """One record, the named fields set and all else zero."""
    r = np.zeros(1, dtype)
    for name, value in fields.items():
        r[name] = value
    return r


def sync(req_id, after=0, upto=0):
    return one(COMMAND_DTYPE, kind=CMD_SYNC, req_id=req_id, order_id=after, price=upto)


def status(req_id, order_id, instrument):
    return one(
        COMMAND_DTYPE, kind=CMD_STATUS, req_id=req_id, order_id=order_id, instrument=instrument
    )


def trade_for_a_while(eng, seed, batches=12):
    """Random NEWs and CANCELs on both instruments, in batches of various sizes."""
    rng = np.random.default_rng(seed)
    req = 1000
    for _ in range(batches):
        specs = []
        for _ in range(int(rng.integers(1, 40))):
            req += 1
            side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
            px = int(rng.integers(95, 106))
            specs.append((int(rng.integers(2)), side, px, int(rng.integers(1, 6)), req % 5, 0, req))
        cmds = orders(*specs)
        cancel = rng.random(len(cmds)) < 0.2
        cmds["kind"][cancel] = CMD_CANCEL
        cmds["order_id"][cancel] = rng.integers(1, eng.last_seq + 2, int(cancel.sum()))
        cmds["display"] = np.where(rng.random(len(cmds)) < 0.3, 1, 0)  # some icebergs
        eng.apply(cmds)


def journaled_events(journal):
    return join_records([e for _, e in journal.iter_batches()], EVENT_DTYPE)


def answer_of(eng, applied):
    """The whole answer to the one SYNC of a batch."""
    assert len(applied.syncs) == 1
    return join_records(list(eng.sync_answer(applied.syncs[0])), EVENT_DTYPE)


# the first six columns of Book.canonical_rows (then stp and flags, which an EV_RESTING has not)
RESTING_COLUMNS = ("side", "price", "order_id", "client", "qty", "leaves")


def expected_resting(eng, req_id):
    answer = [
        one(
            EVENT_DTYPE,
            seq=eng.last_seq,
            req_id=req_id,
            kind=EV_RESTING,
            flags=EVF_REPLAY,
            instrument=inst,
            other_leaves=row[9],  # what it shows (an iceberg: not its reserve)
            **dict(zip(RESTING_COLUMNS, row[:6], strict=True)),
        )
        for inst, book in enumerate(eng.books)
        for row in book.canonical_rows().tolist()
    ]
    return join_records(answer, EVENT_DTYPE)


def expected_trading(eng, req_id):
    """The EV_TRADING records of a sync's answer: each book's trading state."""
    return join_records(
        [
            one(
                EVENT_DTYPE,
                seq=eng.last_seq,
                req_id=req_id,
                kind=EV_TRADING,
                flags=EVF_REPLAY,
                instrument=inst,
                code=STATE_HALTED if book.halted else STATE_CONTINUOUS,
            )
            for inst, book in enumerate(eng.books)
        ],
        EVENT_DTYPE,
    )


def check_answer(eng, answer, req_id, after, history, end):
    """The replay of history's events after ``after`` up to ``end``, the resting orders,
    the books' trading states, the count: byte for byte."""
    replay = history[(history["seq"] > after) & (history["seq"] <= end)]
    resting = join_records(
        [expected_resting(eng, req_id), expected_trading(eng, req_id)], EVENT_DTYPE
    )
    assert len(answer) == len(replay) + len(resting) + 1
    got = copy_records(answer[: len(replay)])
    assert (got["flags"] == EVF_REPLAY).all()
    got["flags"] = 0
    assert got.tobytes() == replay.tobytes()
    assert answer[len(replay) : -1].tobytes() == resting.tobytes()
    synced = one(
        EVENT_DTYPE,
        seq=eng.last_seq,
        req_id=req_id,
        kind=EV_SYNCED,
        flags=EVF_REPLAY,
        order_id=after,
        qty=len(replay),
        leaves=len(resting) - len(eng.books),
    )
    assert answer[-1:].tobytes() == synced.tobytes()


def test_sync_replays_the_journal_after_a_seq_then_the_books_then_a_count(journal):
    eng = ShardEngine(0, BOOKS, journal, snapshot_every=50)
    trade_for_a_while(eng, seed=1)
    eng.apply(commands(0), halted={1})  # the answer says which book is halted
    history = journaled_events(journal)
    last = eng.last_seq
    resting = expected_resting(eng, 0)
    assert (history["kind"] == EV_TRADE).any() and len(resting) > 10
    assert (resting["other_leaves"] < resting["leaves"]).any()  # an iceberg shows a part
    cases = [(0, 0), (17, 0), (17, 60), (0, last + 5), (last, 0), (last + 5, 0), (40, 30)]
    for req_id, (after, upto) in enumerate(cases, 1):
        out = eng.apply(sync(req_id, after, upto))
        assert (out.commands, len(out.events), len(out.replies)) == (0, 0, 0)
        end = min(last, upto) if upto else last
        check_answer(eng, answer_of(eng, out), req_id, after, history, end)
    assert eng.last_seq == journal.last_seq == last


def test_a_retransmission_replays_the_range_flagged_without_the_books(journal):
    """CMD_SYNC with SYNCF_RETRANSMIT: the journaled events of the range, flagged
    EVF_REPLAY | EVF_RETRANSMIT, no EV_RESTING, then the EV_SYNCED (flagged the same)."""
    eng = ShardEngine(0, BOOKS, journal, snapshot_every=50)
    trade_for_a_while(eng, seed=3)
    history = journaled_events(journal)
    last = eng.last_seq
    flags = EVF_REPLAY | EVF_RETRANSMIT
    for req_id, (after, upto) in enumerate([(10, 40), (0, last + 9), (last, last + 3)], 1):
        cmd = sync(req_id, after, upto)
        cmd["flags"] = SYNCF_RETRANSMIT
        answer = answer_of(eng, eng.apply(cmd))
        replay = history[(history["seq"] > after) & (history["seq"] <= min(upto, last))]
        assert len(answer) == len(replay) + 1
        got = copy_records(answer[:-1])
        assert (got["flags"] == flags).all()
        got["flags"] = 0
        assert got.tobytes() == replay.tobytes()
        synced = one(
            EVENT_DTYPE,
            seq=last,
            req_id=req_id,
            kind=EV_SYNCED,
            flags=flags,
            order_id=after,
            qty=len(replay),
        )
        assert answer[-1:].tobytes() == synced.tobytes()


def test_a_sync_answer_comes_in_chunks_of_the_same_bytes(journal, monkeypatch):
    eng = ShardEngine(0, BOOKS, journal)
    trade_for_a_while(eng, seed=2)
    whole = answer_of(eng, eng.apply(sync(1)))
    monkeypatch.setattr(engine_module, "SYNC_CHUNK", 7)
    chunks = list(eng.sync_answer(sync(1)[0]))
    biggest_batch = max(len(e) for _, e in journal.iter_batches())
    assert len(chunks) > 10 and max(map(len, chunks)) < 7 + biggest_batch
    assert join_records(chunks, EVENT_DTYPE).tobytes() == whole.tobytes()


def test_a_sync_answers_from_the_state_its_batch_left(journal):
    eng = ShardEngine(0, BOOKS, journal)
    trade_for_a_while(eng, seed=3, batches=3)
    before = eng.last_seq
    news = orders((0, SIDE_SELL, 100, 5, 1, 0, 1), (1, SIDE_BUY, 100, 2, 2, 0, 3))
    out = eng.apply(np.concatenate([news[:1], sync(2, after=before), news[1:]]))
    assert out.commands == 2 and eng.last_seq == before + 2 and len(out.replies) == 0
    assert not np.isin(out.events["req_id"], [2]).any()
    answer = answer_of(eng, out)
    # its replay is exactly this batch's events, its resting orders the books after it
    check_answer(eng, answer, 2, before, journaled_events(journal), eng.last_seq)
    assert answer["qty"][-1] == len(out.events)


def test_control_commands_are_never_journaled_sequenced_or_seen_by_a_book(journal):
    eng = ShardEngine(0, BOOKS, journal)
    trade_for_a_while(eng, seed=4, batches=4)
    last, hashes, batches = eng.last_seq, eng.state_hashes(), journal.stats().batches
    asked = np.concatenate([sync(1), status(2, 1, 0), sync(3, after=5), status(4, 2, 9)])
    out = eng.apply(asked, consumed={"req@1": 4})
    assert (out.commands, len(out.events)) == (0, 0)
    assert out.syncs.tobytes() == asked[[0, 2]].tobytes()
    assert out.replies["kind"].tolist() == [EV_STATUS] * 2
    for s in out.syncs:
        list(eng.sync_answer(s))
    # nothing was written, not even the ring's position (answering again is harmless,
    # and a commit per STATUS poll would cost an fsync each)
    assert (eng.last_seq, journal.last_seq, journal.stats().batches) == (last, last, batches)
    assert eng.state_hashes() == hashes and "req@1" not in journal.consumed()
    # mixed with orders: only the orders are sequenced and journaled
    news = orders((0, SIDE_BUY, 99, 1, 1, 0, 5), (1, SIDE_SELL, 101, 1, 2, 0, 6))
    out = eng.apply(np.concatenate([asked[:2], news[:1], asked[2:], news[1:]]))
    assert out.commands == 2 and eng.last_seq == journal.last_seq == last + 2
    cmds = np.concatenate([c for c, _ in journal.iter_batches(last)])
    assert cmds["req_id"].tolist() == [5, 6]
    assert set(out.events["req_id"].tolist()) == {5, 6}
    # and the journal still replays to the same books
    again = ShardEngine(0, BOOKS, journal)
    again.recover(use_snapshot=False)
    assert again.state_hashes() == eng.state_hashes()


def expected_status(req_id, order_id, instrument, **state):
    return one(
        EVENT_DTYPE,
        kind=EV_STATUS,
        req_id=req_id,
        order_id=order_id,
        instrument=instrument,
        **state,
    )


def test_status_tells_the_journaled_state_of_an_order_of_the_instrument_asked(journal):
    eng = ShardEngine(0, BOOKS, journal)
    # seqs (= order ids on shard 0): 1 A sells 5 at 100, 2 B buys 3 at 90, 3 C sells 2 at 200
    eng.apply(
        orders(
            (0, SIDE_SELL, 100, 5, 1, 42, 1),
            (0, SIDE_BUY, 90, 3, 2, 0, 2),
            (1, SIDE_SELL, 200, 2, 3, 0, 3),
        )
    )
    # 4 D buys 6 at 100 and fills A (D rests with 1), 5 B is cancelled
    cancel = commands(1)
    cancel["kind"], cancel["order_id"], cancel["client"], cancel["req_id"] = CMD_CANCEL, 2, 2, 5
    eng.apply(np.concatenate([orders((0, SIDE_BUY, 100, 6, 4, 0, 4)), cancel]))
    # 6 E, asked about in its own batch: answered after it is committed
    unknown = orders((9, SIDE_BUY, 1, 1, 1, 0, 10))
    asked = np.concatenate(
        [
            orders((0, SIDE_SELL, 150, 1, 5, 0, 6)),
            status(11, 1, 0),
            status(12, 2, 0),
            unknown,
            status(13, 3, 1),
            status(14, 4, 0),
            status(15, 6, 0),
            status(16, 3, 0),  # C is on instrument 1
            status(17, 12345, 0),
            status(18, 1, 9),  # no such instrument here
        ]
    )
    out = eng.apply(asked)
    assert out.commands == 1 and len(out.syncs) == 0 and eng.last_seq == 6
    sell, buy = {"side": SIDE_SELL}, {"side": SIDE_BUY}
    want = [
        expected_status(
            11, 1, 0, client=1, **sell, price=100, qty=5, code=ST_FILLED, other_id=4, idem_key=42
        ),
        expected_status(12, 2, 0, client=2, **buy, price=90, qty=3, code=ST_CANCELLED, other_id=5),
        expected_status(
            13, 3, 1, client=3, **sell, price=200, qty=2, leaves=2, code=ST_LIVE, other_id=3
        ),
        expected_status(
            14, 4, 0, client=4, **buy, price=100, qty=6, leaves=1, code=ST_LIVE, other_id=4
        ),
        expected_status(
            15, 6, 0, client=5, **sell, price=150, qty=1, leaves=1, code=ST_LIVE, other_id=6
        ),
        expected_status(16, 3, 0),
        expected_status(17, 12345, 0),
        expected_status(18, 1, 9),
    ]
    # after the replies there were before control commands (here a reject)
    assert out.replies["req_id"].tolist() == [10, *range(11, 19)]
    assert out.replies[1:].tobytes() == join_records(want, EVENT_DTYPE).tobytes()


# ---------------------------------------------------------------- expiries

T = 1_800_000_000 * 10**9
SEC = 10**9


def gtd(inst, side, price, qty, client, expires, req):
    c = orders((inst, side, price, qty, client, 0, req))
    c["tif"], c["expires"] = TIF_GTD, expires
    return c


def test_expires_are_sequenced_for_the_books_with_orders_due_and_journaled(tmp_path):
    with Journal(str(tmp_path / "j"), durability="os") as j:
        eng = ShardEngine(0, BOOKS, j, snapshot_every=3)
        out = eng.apply(gtd(0, SIDE_BUY, 100, 5, 1, T + 5 * SEC, 1), clock_ns=T)
        assert out.commands == 1  # nothing due at T: no EXPIRE
        eng.apply(gtd(1, SIDE_SELL, 200, 5, 2, T + 9 * SEC, 2), clock_ns=T + SEC)
        assert eng.apply(commands(0), clock_ns=T + 4 * SEC).commands == 0
        # at T + 6 s book 0's order is due, book 1's is not: one EXPIRE, for book 0
        out = eng.apply(orders((1, SIDE_BUY, 150, 1, 3, 0, 3)), clock_ns=T + 6 * SEC)
        assert out.commands == 2 and eng.last_seq == 4
        cancelled = out.events[out.events["kind"] == EV_CANCELLED]
        assert cancelled["code"].tolist() == [CXL_EXPIRED] and cancelled["seq"].tolist() == [4]
        assert cancelled["instrument"].tolist() == [0]
        expired = out.events[out.events["kind"] == EV_EXPIRED]
        assert (expired["other_id"].tolist(), expired["req_id"].tolist()) == ([T + 6 * SEC], [0])
        eng.apply(commands(0), clock_ns=T + 10 * SEC)  # book 1's, alone
        hashes = eng.state_hashes()
        journaled = [(c.copy(), e.copy()) for c, e in j.iter_batches(0)]
    kinds = np.concatenate([c["kind"] for c, _ in journaled]).tolist()
    assert kinds == [CMD_NEW, CMD_NEW, CMD_NEW, CMD_EXPIRE, CMD_EXPIRE]
    # recovery (from a snapshot and from the start) reads no clock: the journaled EXPIREs
    # expire the same orders at the same seqs, and a clock that says otherwise now changes
    # nothing
    with Journal(str(tmp_path / "j"), durability="os") as j:
        for use_snapshot in (True, False):
            eng = ShardEngine(0, BOOKS, j)
            eng.recover(use_snapshot=use_snapshot)
            assert eng.state_hashes() == hashes
            assert [b.now for b in eng.books] == [T + 6 * SEC, T + 10 * SEC]
        assert eng.apply(commands(0), clock_ns=T).commands == 0
        assert eng.state_hashes() == hashes


def test_an_expire_from_the_ring_is_refused(journal):
    eng = ShardEngine(0, BOOKS, journal)
    eng.apply(gtd(0, SIDE_BUY, 100, 5, 1, T + SEC, 1))
    c = commands(1)
    c["kind"], c["expires"], c["req_id"] = CMD_EXPIRE, T + 2 * SEC, 7
    out = eng.apply(c)
    assert out.commands == 0 and eng.books[0].now == 0
    assert out.replies["code"].tolist() == [REJ_BAD_COMMAND]
    assert eng.expiries_due(T).tolist() == []
    assert eng.expiries_due(T + SEC)["instrument"].tolist() == [0]


# ---------------------------------------------------------------- halts


def test_halts_and_resumes_are_sequenced_for_the_books_asked_and_journaled(tmp_path):
    with Journal(str(tmp_path / "j"), durability="os") as j:
        eng = ShardEngine(0, BOOKS, j, snapshot_every=3)
        assert eng.apply(commands(0), halted=set()).commands == 0  # as asked already
        out = eng.apply(orders((1, SIDE_SELL, 100, 5, 2, 0, 1)), halted={1})
        assert out.commands == 2 and eng.halted() == {1}
        state = out.events[out.events["kind"] == EV_STATE]
        assert (state["instrument"].tolist(), state["code"].tolist()) == ([1], [STATE_HALTED])
        assert state["req_id"].tolist() == [0]
        assert eng.apply(commands(0), halted={1}).commands == 0  # asking twice is once
        # halted, a crossing buy rests; the resume's auction trades it at 100
        out = eng.apply(orders((1, SIDE_BUY, 101, 3, 3, 0, 2)), halted={1})
        assert not (out.events["kind"] == EV_TRADE).any()
        out = eng.apply(commands(0), halted=())
        trade, state = out.events[np.isin(out.events["kind"], (EV_TRADE, EV_STATE))]
        assert (trade["price"], trade["qty"], state["code"]) == (100, 3, STATE_CONTINUOUS)
        assert eng.halted() == set()
        eng.apply(commands(0), halted={0, 1})
        hashes = eng.state_hashes()
        journaled = np.concatenate([c["kind"] for c, _ in j.iter_batches(0)]).tolist()
    assert journaled == [CMD_NEW, CMD_HALT, CMD_NEW, CMD_RESUME, CMD_HALT, CMD_HALT]
    # recovery gives the same states from the journal alone, snapshot or not
    with Journal(str(tmp_path / "j"), durability="os") as j:
        for use_snapshot in (True, False):
            eng = ShardEngine(0, BOOKS, j)
            eng.recover(use_snapshot=use_snapshot)
            assert eng.state_hashes() == hashes and eng.halted() == {0, 1}


@pytest.mark.parametrize("kind", [CMD_HALT, CMD_RESUME])
def test_a_halt_or_resume_from_the_ring_is_refused(journal, kind):
    eng = ShardEngine(0, BOOKS, journal)
    c = commands(1)
    c["kind"], c["req_id"] = kind, 7
    out = eng.apply(c)
    assert out.commands == 0 and eng.halted() == set()
    assert out.replies["code"].tolist() == [REJ_BAD_COMMAND]
