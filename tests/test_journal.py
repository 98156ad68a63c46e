"""Journal: round trips, sequence checks, bad input, layout, durability modes, map growth,
full, and damaged bytes refused wherever they are read."""

import os
import shutil
import struct
import zlib

import lmdb
import numpy as np
import pytest
from journal_stream import assert_prefix, cut, idem_entry, shard_stream

from exchange import journal as journal_module
from exchange.batchcodec import batch_record, decode_batch, encode_batch
from exchange.idempotency import used_news
from exchange.journal import (
    LAYOUT,
    Journal,
    JournalDamaged,
    JournalError,
    JournalFull,
    JournalReader,
    batch_items,
    batch_key,
    piece_bytes,
)
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_TRADE,
    EVF_DUPLICATE,
    commands,
    events,
)


def accepts(cmds):
    """The book's ACCEPTED event of each NEW of ``cmds``: a keyed NEW uses its pair up
    only when the book accepted it."""
    news = cmds[cmds["kind"] == CMD_NEW]
    ev = events(len(news))
    ev["kind"] = EV_ACCEPTED
    for f in ("seq", "order_id", "client", "idem_key", "price", "qty", "side"):
        ev[f] = news[f]
    ev["leaves"] = news["qty"]
    return ev


@pytest.fixture
def jdir(tmp_path):
    path = tmp_path / "journal"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stream():
    cmds, evs, _ = shard_stream(seed=7, n=3000)
    return cmds, evs, cut(cmds, evs, seed=1)


def write_all(j, batches):
    for c, e in batches:
        j.write_batch(c, e)


def test_batches_round_trip_and_survive_reopen(jdir, stream):
    cmds, evs, batches = stream
    with Journal(jdir) as j:
        assert j.last_seq == 0
        assert j.latest_snapshot() is None
        write_all(j, batches)
        assert assert_prefix(j, batches) == cmds["seq"][-1]
    with Journal(jdir) as j:
        assert assert_prefix(j, batches) == cmds["seq"][-1]
        st = j.stats()
        assert st.batches == len(batches)
        assert st.idem_entries == len(used_news(cmds, evs))
        assert st.commits == 0  # counted per process


def test_iter_batches_after_a_seq_cuts_the_straddling_batch(jdir, stream):
    cmds, evs, batches = stream
    with Journal(jdir) as j:
        write_all(j, batches)
        for after in (0, int(cmds["seq"][0]), int(cmds["seq"][1000]), int(cmds["seq"][-2])):
            got_c = np.concatenate([c for c, _ in j.iter_batches(after)])
            got_e = np.concatenate([e for _, e in j.iter_batches(after)])
            assert got_c.tobytes() == cmds[cmds["seq"] > after].tobytes()
            assert got_e.tobytes() == evs[evs["seq"] > after].tobytes()
        assert list(j.iter_batches(int(cmds["seq"][-1]))) == []


def test_events_for_returns_exactly_that_commands_events(jdir, stream):
    cmds, evs, batches = stream
    with Journal(jdir) as j:
        write_all(j, batches)
        for seq in cmds["seq"][::97]:
            assert j.events_for(int(seq)).tobytes() == evs[evs["seq"] == seq].tobytes()
        assert len(j.events_for(int(cmds["seq"][-1]) + 1)) == 0
        assert len(j.events_for(0)) == 0


def test_seqs_must_strictly_increase_past_last_seq(jdir, stream):
    _, _, batches = stream
    (c0, e0), (c1, e1) = batches[:2]
    with Journal(jdir) as j:
        j.write_batch(c0, e0)
        with pytest.raises(ValueError, match="not past the journal's last seq"):
            j.write_batch(c0, e0)
        shuffled = c1[::-1].copy()
        if len(shuffled) > 1:
            with pytest.raises(ValueError, match="strictly increase"):
                j.write_batch(shuffled, e1)
        j.write_batch(c1, e1)
        assert_prefix(j, batches)
        assert j.stats().batches == 2


def test_bad_batches_are_refused_and_change_nothing(jdir, stream):
    _, _, batches = stream
    c, e = next((c, e) for c, e in batches[1:] if len(e) > 1)
    with Journal(jdir) as j:
        j.write_batch(*batches[0])
        before = j.stats()
        foreign = e.copy()
        foreign["seq"][-1] = c["seq"][-1] + 1
        dup = e.copy()
        dup["flags"][0] |= EVF_DUPLICATE
        disordered = e[::-1].copy()
        cases = [
            (commands(0), events(0), "empty batch"),
            (c.view(np.uint8), e, "commands must be a 1-d array of commands records"),
            (c, e[["seq", "kind"]], "events must be a 1-d array"),
            (c, foreign, "which no command of the batch has"),
            (c, dup, "EVF_DUPLICATE"),
            (c, disordered, r"\(seq, idx\) order"),
        ]
        for bc, be, message in cases:
            with pytest.raises(ValueError, match=message):
                j.write_batch(bc, be)
        assert j.stats() == before
        assert_prefix(j, batches)


def test_events_about_an_unknown_order_are_refused(jdir):
    cmds = commands(1)
    cmds["seq"], cmds["order_id"], cmds["kind"], cmds["client"] = 1, 5, CMD_NEW, 1
    evs = events(2)
    evs["seq"] = 1
    evs["idx"] = [0, 1]
    evs["kind"] = [EV_ACCEPTED, EV_TRADE]
    evs["order_id"] = 5
    evs["other_id"] = 4  # a maker nobody created
    with Journal(jdir) as j:
        with pytest.raises(ValueError, match=r"orders \[4\] that the journal never saw created"):
            j.write_batch(cmds, evs)
        assert j.last_seq == 0 and j.order(5) is None


def test_a_reused_idempotency_key_is_refused_whole(jdir):
    cmds = commands(2)
    cmds["seq"] = [1, 2]
    cmds["order_id"] = [1, 2]
    cmds["kind"] = CMD_NEW
    cmds["client"] = 5
    cmds["idem_key"] = 77
    with Journal(jdir) as j:
        with pytest.raises(ValueError, match=r"\(5, 77\) is already used"):
            j.write_batch(cmds, accepts(cmds))
        assert j.last_seq == 0
        assert j.stats().batches == 0
        j.write_batch(cmds[:1], accepts(cmds[:1]))
        with pytest.raises(ValueError, match=r"\(5, 77\) is already used"):
            j.write_batch(cmds[1:], accepts(cmds[1:]))
        assert j.last_seq == 1
        assert idem_entry(j, 5, 77).seq == 1


def test_snapshots_latest_kept_and_pruned(jdir, stream):
    _, _, batches = stream
    with Journal(jdir, keep_snapshots=2) as j:
        for k, (c, e) in enumerate(batches[:6]):
            j.write_batch(c, e, snapshot=b"state-%d" % k)
        assert j.latest_snapshot() == (int(batches[5][0]["seq"][-1]), b"state-5")
        assert j.stats().snapshots == 2
        mid = int(batches[5][0]["seq"][0])
        j.write_snapshot(mid, b"mid")
        assert j.latest_snapshot() == (int(batches[5][0]["seq"][-1]), b"state-5")
        with pytest.raises(ValueError, match="not a journaled seq"):
            j.write_snapshot(j.last_seq + 1, b"future")
        with pytest.raises(ValueError, match="non-empty bytes"):
            j.write_snapshot(mid, b"")
        with pytest.raises(ValueError, match="non-empty bytes, got str"):
            j.write_batch(*batches[6], snapshot="state")
        assert j.last_seq == batches[5][0]["seq"][-1]


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_both_durability_modes_keep_every_batch(jdir, stream, durability):
    _, _, batches = stream
    with Journal(jdir, durability=durability) as j:
        write_all(j, batches[:40])
        assert j.stats().durability == durability
    with Journal(jdir, durability=durability) as j:
        assert_prefix(j, batches[:40])
        write_all(j, batches[40:])
        assert_prefix(j, batches)


def test_bad_options_are_refused(jdir):
    with pytest.raises(ValueError, match="durability must be one of"):
        Journal(jdir, durability="sometimes")
    with pytest.raises(ValueError, match="map_size"):
        Journal(jdir, map_size=1 << 30, max_map_size=1 << 20)
    with pytest.raises(ValueError, match="keep_snapshots"):
        Journal(jdir, keep_snapshots=0)


def test_one_writer_at_a_time_and_readers_cannot_write(jdir, stream):
    _, _, batches = stream
    with Journal(jdir) as j:
        with pytest.raises(JournalError, match="already open for writing"):
            Journal(jdir)
        j.write_batch(*batches[0])
    with JournalReader(jdir) as r:
        assert r.last_seq == batches[0][0]["seq"][-1]
        # a reader has nothing to write with: the writer is its own class
        writes = ("write_batch", "write_snapshot", "write_consumed", "prune")
        assert not [m for m in writes if hasattr(r, m)]


def test_opening_what_is_not_this_journal_fails_clearly(jdir, tmp_path):
    with pytest.raises(JournalError, match="no journal at"):
        JournalReader(tmp_path / "missing")
    with Journal(jdir):
        pass
    # /2: without checksums; /3: the batches in a named sub-database; /5: batch records
    # in one value; /6: 64-byte commands; /7: commands without an expiry
    older_layouts = (b"exchange.journal/0", b"exchange.journal/2", b"exchange.journal/3")
    for older in (
        *older_layouts,
        b"exchange.journal/5",
        b"exchange.journal/6",
        b"exchange.journal/7",
    ):
        env = lmdb.open(str(jdir), max_dbs=8)
        with env.begin(write=True) as txn:
            txn.put(b"layout", older, db=env.open_db(b"meta", txn=txn))
        env.close()
        for opened in (Journal, JournalReader):
            with pytest.raises(JournalError, match=f"has layout {older!r}"):
                opened(jdir)
    other = tmp_path / "other"
    try:
        env = lmdb.open(str(other))
        with env.begin(write=True) as txn:
            txn.put(b"something", b"else")
        env.close()
        with pytest.raises(JournalError, match="no journal"):
            Journal(other)
    finally:
        shutil.rmtree(other, ignore_errors=True)
    assert LAYOUT != b"exchange.journal/0"


def test_the_map_grows_when_needed(jdir, stream):
    _, _, batches = stream
    with Journal(jdir, durability="os", map_size=128 << 10, max_map_size=1 << 30) as j:
        write_all(j, batches)
        st = j.stats()
        assert st.map_grows >= 3
        assert st.map_size >= st.used_bytes
        assert_prefix(j, batches)
    with JournalReader(jdir) as j:
        assert_prefix(j, batches)


def test_full_at_the_maximum_map_size_keeps_every_committed_batch(jdir, stream):
    _, _, batches = stream
    written = 0
    with Journal(jdir, durability="os", map_size=128 << 10, max_map_size=512 << 10) as j:
        with pytest.raises(JournalFull, match="full at its maximum"):
            for c, e in batches:
                j.write_batch(c, e)
                written += 1
        assert 0 < written < len(batches)
        assert j.stats().map_grows == 2
        # still full, still consistent
        with pytest.raises(JournalFull):
            j.write_batch(*batches[written])
        assert_prefix(j, batches[:written])
    with Journal(jdir, map_size=128 << 10, max_map_size=512 << 10) as j:
        assert assert_prefix(j, batches) == batches[written - 1][0]["seq"][-1]


def test_positions_commit_with_their_batch_or_alone(jdir, stream):
    _, _, batches = stream
    with Journal(jdir) as j:
        assert j.consumed() == {}
        j.write_batch(*batches[0], consumed={"requests@1": 10, "other": 0})
        j.write_consumed({"requests@1": 12})
        for bad, message in [
            ({"requests@1": -1}, "must be an int"),
            ({"": 3}, "non-empty str"),
            ({"x": "3"}, "must be an int"),
            ([("x", 3)], "must be a dict"),
        ]:
            with pytest.raises(ValueError, match=message):
                j.write_batch(*batches[1], consumed=bad)
        assert j.last_seq == batches[0][0]["seq"][-1]
    with JournalReader(jdir) as r:
        assert r.consumed() == {"requests@1": 12, "other": 0}


def test_idem_entries_come_whole_and_in_key_order_across_read_chunks(jdir, monkeypatch):
    monkeypatch.setattr(journal_module, "_SCAN_CHUNK", 7)
    cmds = commands(50)
    cmds["seq"] = cmds["order_id"] = np.arange(1, 51)
    cmds["kind"] = CMD_NEW
    cmds["client"] = np.arange(50) % 3
    cmds["idem_key"] = 100 - np.arange(50) // 2
    with Journal(jdir) as j:
        j.write_batch(cmds, accepts(cmds))
        got = [(e.idem_key, e.client, e.seq) for e in j.idem_entries()]
    pairs = zip(cmds["idem_key"].tolist(), cmds["client"].tolist(), range(1, 51), strict=True)
    assert got == sorted(pairs)


def test_reads_agree_whatever_the_folds_and_across_a_reopen(tmp_path, stream):
    """Reads combine the log (the records since the last fold) with the tables: a
    journal that folds every few batches and one that never does answer alike."""
    cmds, evs, batches = stream
    paths = {merge_rows: tmp_path / f"merge-{merge_rows}" for merge_rows in (40, 10**9)}
    expected = {}
    try:
        for merge_rows, path in paths.items():
            half = len(batches) // 2
            for part in (batches[:half], batches[half:]):  # a reopen reloads the log
                with Journal(path, merge_rows=merge_rows) as j:
                    for c, e in part:
                        k = int(c["seq"][-1])
                        consumed = {"in@1": k, f"side@{k % 3}": k}
                        j.write_batch(c, e, consumed=consumed)
                        expected.update(consumed)
                    j.write_consumed({"in@1": 10**6})
                    expected["in@1"] = 10**6
        keyed = used_news(cmds, evs)  # the keyed NEWs the book accepted
        ik, cl = cmds["idem_key"][keyed].tolist(), cmds["client"][keyed].tolist()
        pairs = sorted(zip(ik, cl, strict=True))
        oids = np.unique(cmds["order_id"][cmds["kind"] == CMD_NEW])[::7].tolist()
        answers = []
        for path in paths.values():
            for opened in (Journal, JournalReader):
                with opened(path) as j:
                    entries = list(j.idem_entries())
                    assert [(e.idem_key, e.client) for e in entries] == pairs
                    assert j.consumed() == expected
                    assert j.stats().idem_entries == len(pairs)
                    one = entries[len(entries) // 2]
                    assert idem_entry(j, one.client, one.idem_key) == one
                    answers.append((entries, [j.order(o) for o in oids]))
        assert all(a == answers[0] for a in answers[1:])
        with Journal(paths[40]) as j:
            assert j.stats().orders_merged > 0
    finally:
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)


def test_a_pair_in_the_log_or_in_the_table_is_refused(jdir):
    cmds = commands(3)
    cmds["seq"] = cmds["order_id"] = [1, 2, 3]
    cmds["kind"] = CMD_NEW
    cmds["client"] = 5
    cmds["idem_key"] = [77, 78, 77]
    with Journal(jdir, merge_rows=1) as j:
        j.write_batch(cmds[:1], accepts(cmds[:1]))  # folded at once: (5, 77) is in the table
        j.idem_values([b"not a key used"])  # a lookup does not vouch for other keys
        with pytest.raises(ValueError, match=r"\(5, 77\) is already used"):
            j.write_batch(cmds[2:], accepts(cmds[2:]))
    with Journal(jdir) as j:
        j.write_batch(cmds[1:2], accepts(cmds[1:2]))  # (5, 78) stays in the log
        again = cmds[2:].copy()
        again["idem_key"] = 78
        with pytest.raises(ValueError, match=r"\(5, 78\) is already used"):
            j.write_batch(again, accepts(again))
        assert j.last_seq == 2


def test_a_batch_record_round_trips_and_a_broken_one_is_refused(jdir, stream):
    _, _, batches = stream
    c, e = batches[0]
    with Journal(jdir) as j:
        j.write_batch(c, e, consumed={"in@1": 3})
    env = lmdb.open(str(jdir), max_dbs=8)
    try:
        with env.begin() as txn:
            [(key, value)] = list(batch_items(env, txn))  # the main database's
            keys = [k for k, _ in txn.cursor()]
        st = env.stat()
    finally:
        env.close()
    # after the 5 named sub-databases, the record in pieces that each fit a leaf page:
    # no run of overflow pages, which would need a contiguous run of free pages
    pieces = -(-len(value) // piece_bytes(st["psize"]))
    assert pieces > 1 and st["overflow_pages"] == 0
    assert keys[5:] == [key] + [key + i.to_bytes(4, "big") for i in range(1, pieces)]
    assert key == batch_key(int(c["seq"][-1]))  # keyed by its last seq
    assert key == (int(c["seq"][-1]) + 2**63).to_bytes(8, "big")
    rec = decode_batch(value)
    assert rec.commands.tobytes() == c.tobytes() and rec.events.tobytes() == e.tobytes()
    assert rec.consumed == {"in@1": 3}
    assert len(rec.idem_keys) == len(rec.idem_values) > 0
    assert encode_batch(rec) == value
    with pytest.raises(ValueError, match="checksum mismatch"):
        decode_batch(value[:-1])
    with pytest.raises(ValueError, match="shorter than its header"):
        decode_batch(value[:10])
    # checksums that match bytes that are no record: what only a bug could write
    parts = (rec.commands, rec.events, rec.rows, rec.idem_values.tobytes())
    keys = rec.idem_keys.tobytes()
    with pytest.raises(ValueError, match="does not hold what its header says"):
        decode_batch(batch_record(*parts, keys + b"?", b""))
    with pytest.raises(ValueError, match="consumed counts are unreadable"):
        decode_batch(batch_record(*parts, keys, b"\xc1"))  # a byte msgpack never uses


def _mapped_kb(path) -> int:
    """The RSS (kB) of this process's mappings of ``path``, from /proc/self/smaps."""
    data = os.path.realpath(path)
    kb, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = len(head) == 6 and head[5].strip() == data
            elif inside and head[0] == "Rss:":
                kb += int(head[1])
    return kb


@pytest.mark.parametrize("readonly", [False, True])
def test_release_pages_gives_back_the_map_and_reads_still_agree(jdir, stream, readonly):
    cmds, _, batches = stream
    with Journal(jdir) as j:
        write_all(j, batches)
    data = jdir / "data.mdb"
    with (JournalReader if readonly else Journal)(jdir) as j:
        assert assert_prefix(j, batches) == cmds["seq"][-1]
        read = _mapped_kb(data)
        assert read > 64  # every batch was read through the map
        assert j.release_pages() > 0
        assert _mapped_kb(data) < read / 4
        assert assert_prefix(j, batches) == cmds["seq"][-1]  # the same, mapped again
        assert _mapped_kb(data) > 64


def test_row_checksums_are_zlibs_crc32_of_the_key_then_the_value():
    rng = np.random.default_rng(3)
    # the orders and idem tables' sizes, and sizes that are no multiple of 4 bytes
    for key_size, size in ((8, 56), (12, 40), (3, 5), (1, 0)):
        keys = rng.integers(0, 256, (50, key_size), dtype=np.uint8)
        values = rng.integers(0, 256, (50, size), dtype=np.uint8)
        out = np.empty(50, "<u4")
        journal_module._row_sums(keys, values, out)
        pairs = zip(keys, values, strict=True)
        assert out.tolist() == [zlib.crc32(v.tobytes(), zlib.crc32(k.tobytes())) for k, v in pairs]


def tamper(path, table: bytes | None, key: bytes, at: int) -> None:
    """Flip a bit of a stored value through LMDB, bypassing the journal (``table`` None:
    the main database, where the batches are)."""
    env = lmdb.open(str(path), max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(table, create=False)) as txn:
            value = bytearray(txn.get(key))
            value[at] ^= 1
            txn.put(key, bytes(value))
    finally:
        env.close()


@pytest.fixture
def folded(tmp_path, stream):
    """A journal with tables, a log after them, consumed and a snapshot; returns its
    path and the seqs it folded up to and ends at."""
    path = tmp_path / "folded"
    _, _, batches = stream
    with Journal(path, merge_rows=500) as j:
        for k, (c, e) in enumerate(batches):
            j.write_batch(c, e, consumed={"in@1": k + 1})
        j.write_snapshot(j.last_seq, b"the state")
        last = j.last_seq
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    with env.begin(db=env.open_db(b"meta", create=False)) as txn:
        done = int.from_bytes(txn.get(b"folded")[:8], "big")
    env.close()
    assert 0 < done < last
    return path, done, last


@pytest.mark.parametrize("damage", ["log", "meta"])
def test_damaged_meta_or_log_is_refused_at_the_writers_open(folded, damage):
    path, _, last = folded
    if damage == "log":
        tamper(path, None, batch_key(last), 30)
        where = f"batches seq {last}: checksum mismatch"
    else:
        tamper(path, b"meta", b"folded", 7)
        where = "meta 'folded': checksum mismatch"
    with pytest.raises(JournalDamaged, match=f"journal {path}: {where}"):
        Journal(path)


def test_a_value_under_another_key_is_refused(folded):
    path, _, _ = folded
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"positions", create=False)) as txn:
        txn.put(b"in@2", txn.get(b"in@1"))
    env.close()
    with JournalReader(path) as r:
        with pytest.raises(JournalDamaged, match="positions 'in@2': checksum mismatch"):
            r.consumed()
        assert [m for _, m in r.damaged()] == [
            f"journal {path}: positions 'in@2': checksum mismatch"
        ]


def test_a_damaged_row_is_refused_when_a_batch_needs_it(jdir):
    """The row a fill or cancel builds on (merge_prior) is checked too: the batch is refused."""
    new = commands(1)
    new["seq"], new["order_id"], new["kind"], new["client"] = 1, 5, CMD_NEW, 1
    accepted = events(1)
    accepted["seq"], accepted["order_id"], accepted["kind"] = 1, 5, EV_ACCEPTED
    accepted["qty"] = accepted["leaves"] = 10
    cancel = commands(1)
    cancel["seq"], cancel["order_id"], cancel["kind"], cancel["client"] = 2, 5, CMD_CANCEL, 1
    cancelled = events(1)
    cancelled["seq"], cancelled["order_id"], cancelled["kind"] = 2, 5, EV_CANCELLED
    with Journal(jdir, merge_rows=1) as j:
        j.write_batch(new, accepted)  # folded at once: the row is in the table
    tamper(jdir, b"orders", (5).to_bytes(8, "big"), 16)  # qty
    with Journal(jdir) as j:
        with pytest.raises(JournalDamaged, match=f"journal {jdir}: orders order 5: checksum"):
            j.write_batch(cancel, cancelled)
        assert j.last_seq == 1


def test_lmdb_reporting_a_damaged_page_is_journal_damage(folded):
    """A B-tree page LMDB cannot use (here the orders table's root, made a page of no
    kind) is refused naming the table, as a value failing its checksum is."""
    path, _, _ = folded
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    orders = env.open_db(b"orders", create=False)
    with env.begin() as txn:
        # the main database's record of a named one is its MDB_db: md_root last
        root = struct.unpack_from("<Q", txn.get(b"orders"), 40)[0]
        order_id = int.from_bytes(next(iter(txn.cursor(db=orders)))[0], "big")
    psize = env.stat()["psize"]
    env.close()
    with open(path / "data.mdb", "r+b") as f:
        f.seek(root * psize + 10)  # mp_flags, after mp_pgno and mp_pad
        f.write(b"\0\0")
    with JournalReader(path) as r:
        with pytest.raises(JournalDamaged, match=f"{path}: .*orders.*: LMDB reports damage"):
            r.order(order_id)
        assert any("orders: LMDB reports damage" in m for _, m in r.damaged())
