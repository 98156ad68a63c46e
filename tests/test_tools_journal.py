"""``exch journal verify`` and ``exch journal book``: healthy journals pass, corrupted copies fail.

The journals are made by the real ``ShardEngine`` (kernel, idempotency, order
states, snapshots) from a seeded order flow that rests, crosses, cancels,
replaces and retries. The corruptions are what real failures look like, made
with LMDB directly on a copy: a trade's qty changed in a batch record, a batch
lost, two orders under one idempotency key, a snapshot that is not the book,
a journal whose last batch is missing (it reads as a shorter, sound journal), and
damage to the stored bytes themselves: a flipped byte in a table or in an old batch
(refused wherever it is read, reported by verify), and tables that do not hold what
the batches say (as a broken fold would leave them: values with sound checksums).
"""

import json
import shutil
import struct
import zlib

import lmdb
import numpy as np
import pytest
from journal_stream import idem_entry

from exchange.batchcodec import decode_batch, encode_batch
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine
from exchange.idempotency import used_news
from exchange.journal import (
    Journal,
    JournalDamaged,
    JournalReader,
    batch_items,
    batch_seq,
    delete_pieces,
    joined_items,
    piece_bytes,
    put_pieces,
)
from exchange.orderstate import ORDER_DTYPE, ST_FILLED
from exchange.records import (
    CMD_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_SYNC,
    EV_ACCEPTED,
    EV_TRADE,
    EVF_DUPLICATE,
    SIDE_BUY,
    SIDE_SELL,
    STP_DECREMENT,
    STP_NONE,
    TIF_GTC,
    TIF_IOC,
    commands,
)
from tools import cli
from tools.bookat import book_at
from tools.errors import ToolError
from tools.verify import verify_journal

BOOKS = [
    BookConfig(min_price=900, max_price=1100, capacity=512),
    BookConfig(min_price=4000, max_price=6000, tick_size=10, lot_size=5, capacity=512),
]
SYMBOLS = ["AAA", "BBB"]
LEVELS = 1000  # every level of these books
MERGE_ROWS = 300  # folds every few batches: the tables and a log both hold something


def order_flow(rng, engine: ShardEngine, batches: int, after_batch=None) -> None:
    """Batches of orders around a drifting mid; cancels and replaces of live orders;
    identical retries of earlier orders (same idempotency key). ``after_batch(engine)``
    is called after each batch is committed."""
    live: list[tuple[int, int, int]] = []  # (instrument, order id, client)
    sent = []
    mid = [1000, 5000]
    key = 0
    read = 0  # the position committed with each batch, as a shard's request ring's
    for _ in range(batches):
        n = int(rng.integers(1, 40))
        cmds = commands(n)
        for j in range(n):
            c = cmds[j]
            r = rng.random()
            if r < 0.15 and live:
                inst, oid, client = live.pop(int(rng.integers(len(live))))
                c["kind"], c["instrument"], c["order_id"], c["client"] = (
                    CMD_CANCEL,
                    inst,
                    oid,
                    client,
                )
                if rng.random() < 0.4:
                    book = BOOKS[inst]
                    c["kind"] = CMD_REPLACE
                    c["price"] = mid[inst] + book.tick_size * int(rng.integers(-6, 7))
                    c["qty"] = book.lot_size * int(rng.integers(1, 12))
                    live.append((inst, oid, client))
            elif r < 0.2 and sent:
                cmds[j] = sent[int(rng.integers(len(sent)))]  # a retry: same key, same body
            else:
                inst = int(rng.integers(2))
                book = BOOKS[inst]
                mid[inst] += book.tick_size * int(rng.integers(-1, 2))
                side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
                away = book.tick_size * int(rng.integers(-2, 8))
                key += 1
                c["kind"], c["instrument"], c["side"] = CMD_NEW, inst, side
                c["price"] = mid[inst] - away if side == SIDE_BUY else mid[inst] + away
                c["qty"] = book.lot_size * int(rng.integers(1, 20))
                c["tif"] = TIF_IOC if rng.random() < 0.1 else TIF_GTC
                c["stp"] = STP_DECREMENT if rng.random() < 0.2 else STP_NONE
                c["client"] = int(rng.integers(1, 4))
                c["idem_key"] = key
                c["req_id"] = key
                sent.append(cmds[j].copy())
        read += n
        out = engine.apply(cmds, consumed={"requests@1": read})
        for e in out.events[out.events["kind"] == EV_ACCEPTED]:
            live.append((int(e["instrument"]), int(e["order_id"]), int(e["client"])))
        if after_batch is not None:
            after_batch(engine)


def make_journal(path, seed: int = 1, batches: int = 120, snapshot_every: int = 500) -> dict:
    """A journal made by the real engine; returns the live books after each batch:
    {seq: [(hash, depth) per instrument]}."""
    books = {}

    def keep(engine):
        books[engine.last_seq] = [(b.state_hash(), b.depth(LEVELS)) for b in engine.books]

    with Journal(str(path), durability="os", merge_rows=MERGE_ROWS) as j:
        engine = ShardEngine(0, BOOKS, j, snapshot_every=snapshot_every)
        order_flow(np.random.default_rng(seed), engine, batches, keep)
    return books


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    path = tmp_path_factory.mktemp("journal") / "s0"
    return path, make_journal(path)


@pytest.fixture(scope="module")
def healthy(made):
    return made[0]


@pytest.fixture
def copy(healthy, tmp_path):
    dst = tmp_path / "s0"
    shutil.copytree(healthy, dst, ignore=shutil.ignore_patterns("writer.lock"))
    return dst


def verify(path):
    return verify_journal(str(path), BOOKS, symbols=SYMBOLS, shard="s0")


def checks(report) -> set[str]:
    return {p.check for p in report.problems}


class Raw:
    """The journal's LMDB environment opened directly, to corrupt it as a failure would."""

    def __init__(self, path):
        self.env = lmdb.open(str(path), max_dbs=16, map_size=1 << 30)
        names = ("orders", "idem", "snapshots", "meta", "positions")
        self.dbs = {n: self.env.open_db(n.encode(), create=False) for n in names}
        self.dbs["batches"] = self.env.open_db(None)  # the main database holds them

    def db(self, name: str):
        return self.dbs[name]

    def batches(self) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
        """(key, commands, events) of every batch record, as writable copies."""
        with self.env.begin() as txn:
            out = []
            for k, v in batch_items(self.env, txn):
                rec = decode_batch(v)
                out.append((k, rec.commands.copy(), rec.events.copy()))
            return out

    def put_batch(self, key: bytes, cmds: np.ndarray, events: np.ndarray) -> None:
        """Rewrite a batch record's commands and events, the rest of it left as it is."""
        db, psize = self.db("batches"), self.env.stat()["psize"]
        with self.env.begin(write=True) as txn:
            _, value = next(batch_items(self.env, txn, batch_seq(key)))
            record = encode_batch(decode_batch(value)._replace(commands=cmds, events=events))
            delete_pieces(txn, db, key)
            put_pieces(txn, db, key, record, psize)

    def items(self, name: str) -> list[tuple[bytes, bytes]]:
        with self.env.begin() as txn:
            if name == "snapshots":  # stored in pieces, as the batches
                return list(joined_items(txn.cursor(db=self.db(name))))
            return list(txn.cursor(db=self.db(name)))

    def flip(self, name: str, key: bytes, at: int, bits: int = 1) -> None:
        """Flip bits of one stored byte, as a bad disk or a stray write would."""
        if name == "batches":  # the byte ``at`` of the record is in one of its pieces
            step = piece_bytes(self.env.stat()["psize"])
            key, at = (key + (at // step).to_bytes(4, "big") if at >= step else key), at % step
        with self.env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=self.db(name)))
            value[at] ^= bits
            txn.put(key, bytes(value), db=self.db(name))

    def put(self, name: str, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            if name in ("batches", "snapshots"):  # stored in pieces
                delete_pieces(txn, self.db(name), key)
                put_pieces(txn, self.db(name), key, value, self.env.stat()["psize"])
            else:
                txn.put(key, value, db=self.db(name))

    def delete(self, name: str, key: bytes) -> None:
        """Delete a record (of ``batches``: a batch record, every piece of it)."""
        with self.env.begin(write=True) as txn:
            assert txn.get(key, db=self.db(name)) is not None
            if name == "batches":
                delete_pieces(txn, self.db(name), key)
            else:
                txn.delete(key, db=self.db(name))

    def close(self) -> None:
        self.env.close()


def sealed(key: bytes, value: bytes) -> bytes:
    """A table value as the journal stores it (value, then crc32 of key and value): how
    a bug, not damage, would write a wrong one."""
    return value + struct.pack("<I", zlib.crc32(value, zlib.crc32(key)))


@pytest.fixture
def raw(copy):
    r = Raw(copy)
    try:
        yield r
    finally:
        r.close()


def test_a_healthy_journal_passes_with_its_numbers(healthy):
    seen = []
    report = verify_journal(
        str(healthy), BOOKS, symbols=SYMBOLS, progress=lambda s, t: seen.append((s, t))
    )
    assert report.ok, report.problems
    assert seen == sorted(seen) and seen[-1] == (report.last_seq, report.last_seq)
    with JournalReader(str(healthy)) as j:
        stats = j.stats()
        trades = sum(int((ev["kind"] == EV_TRADE).sum()) for _, ev in j.iter_batches())
    assert report.last_seq == stats.last_seq > 0
    assert report.batches == stats.batches
    assert report.trades == trades > 0
    assert report.idem_entries == stats.idem_entries > 0
    assert report.snapshot_seq > 0  # the snapshot path was checked too
    assert set(report.hashes) == set(SYMBOLS)


def test_a_trade_qty_changed_in_a_batch_record_fails(raw, copy):
    key, cmds, ev = next(b for b in raw.batches() if (b[2]["kind"] == EV_TRADE).any())
    i = int(np.flatnonzero(ev["kind"] == EV_TRADE)[0])
    ev["qty"][i] += 1
    raw.put_batch(key, cmds, ev)
    raw.close()
    report = verify(copy)
    assert not report.ok
    assert {"fills", "replay"} <= checks(report)
    replay = next(p for p in report.problems if p.check == "replay")
    assert (
        replay.seq == int(cmds["seq"][-1])
        and "does not give the journaled events" in replay.message
    )
    fills = [p for p in report.problems if p.check == "fills"]
    assert any(f"order {ev['order_id'][i]}" in p.message for p in fills)


def test_a_lost_batch_fails(raw, copy):
    batches = raw.batches()
    key, cmds, _ = batches[len(batches) // 2]
    raw.delete("batches", key)
    raw.close()
    report = verify(copy)
    assert "sequence" in checks(report)
    first, last = int(cmds["seq"][0]), int(cmds["seq"][-1])
    assert any(f"seqs {first}..{last} are missing" in p.message for p in report.problems)


def test_a_missing_last_batch_leaves_a_shorter_journal(raw, copy):
    """The last seq is the last batch's (one put per commit, no separate counter): a
    journal whose last record is gone reads as the sound journal of the batches before."""
    key, cmds, _ = raw.batches()[-1]
    raw.delete("batches", key)
    raw.close()
    report = verify(copy)
    assert report.ok, report.problems
    assert report.last_seq == cmds["seq"][0] - 1


def test_events_without_their_command_or_flagged_as_retries_fail(raw, copy):
    batches = [b for b in raw.batches() if len(b[1]) > 2]
    key, cmds, ev = batches[1]
    silent = int(cmds["seq"][0])
    raw.put_batch(key, cmds, ev[ev["seq"] != silent])  # its command's events lost
    key, cmds, ev = batches[2]
    ev["flags"][-1] |= EVF_DUPLICATE  # a re-send journaled as history
    raw.put_batch(key, cmds, ev)
    raw.close()
    report = verify(copy)
    events = {(p.seq, p.message) for p in report.problems if p.check == "events"}
    assert (silent, "the command has no event (every command is answered)") in events
    flagged = int(ev["seq"][-1])
    assert (flagged, "a duplicate re-send (EVF_DUPLICATE) is journaled as history") in events
    assert "replay" in checks(report)


def test_two_orders_under_one_idempotency_key_fail(raw, copy):
    """The journal as a broken dedupe would leave it: a second NEW under a used
    (client, key), consistent in its commands and events, so the replay passes."""
    news = [
        (key, cmds, ev, i)
        for key, cmds, ev in raw.batches()
        for i in used_news(cmds, ev).tolist()  # orders: the NEWs the book accepted
    ]
    _, _, _, i0 = first = news[0]
    client = int(first[1]["client"][i0])
    key, cmds, ev, i = next(n for n in news[1:] if int(n[1]["client"][n[3]]) == client)
    old_key = int(cmds["idem_key"][i])
    cmds["idem_key"][i] = first[1]["idem_key"][i0]
    ev["idem_key"][ev["seq"] == cmds["seq"][i]] = first[1]["idem_key"][i0]
    raw.put_batch(key, cmds, ev)
    raw.close()
    report = verify(copy)
    assert checks(report) == {"idempotency"}, report.problems
    text = "\n".join(p.message for p in report.problems)
    assert f"(client {client}, key {first[1]['idem_key'][i0]}) made two orders" in text
    assert f"key {old_key}) names seq {cmds['seq'][i]}, where the journal has no NEW" in text


def test_a_snapshot_of_another_book_fails(raw, copy):
    snaps = raw.items("snapshots")
    assert len(snaps) == 2  # the older one becomes the latest's content
    seq = int.from_bytes(snaps[-1][0], "big")
    raw.put("snapshots", snaps[-1][0], snaps[0][1])  # moved: its checksum names the old seq
    raw.close()
    report = verify(copy)
    assert checks(report) == {"checksums", "snapshot"}, report.problems
    [damage] = [p for p in report.problems if p.check == "checksums"]
    assert f"{copy}: snapshots seq {seq}: checksum mismatch" in damage.message
    with Journal(str(copy)) as j:  # written by a buggy writer: a sound checksum
        j.write_snapshot(seq, snaps[0][1][:-4])
    report = verify(copy)
    assert checks(report) == {"snapshot"}, report.problems
    assert report.problems[0].seq == seq


def test_a_flipped_leaves_byte_in_the_orders_table_is_refused_and_reported(raw, copy):
    """Issue #14: verify passed it, and the order's status said leaves 3 on a filled order."""
    rows = [(k, np.frombuffer(v[:-4], ORDER_DTYPE)[0]) for k, v in raw.items("orders")]
    key, row = next((k, r) for k, r in rows if r["status"] == ST_FILLED)
    oid = int(row["order_id"])
    raw.flip("orders", key, ORDER_DTYPE.fields["leaves"][1], bits=3)
    raw.close()
    damaged = f"{copy}: orders order {oid}: checksum mismatch"
    with JournalReader(str(copy)) as j, pytest.raises(JournalDamaged, match=damaged):
        j.order(oid)
    report = verify(copy)
    assert checks(report) == {"checksums"}, report.problems
    assert f"orders order {oid}: checksum mismatch" in report.problems[0].message


def test_tables_that_do_not_hold_what_the_batches_say_fail(raw, copy):
    """Wrong values with sound checksums (a broken fold): a row, an entry gone, one made up."""
    orders = raw.items("orders")
    key, value = orders[len(orders) // 2]
    row = np.frombuffer(value[:-4], ORDER_DTYPE).copy()
    row["leaves"] += 3
    raw.put("orders", key, sealed(key, row.tobytes()))
    fake = (int(row["order_id"][0]) + 10**9).to_bytes(8, "big")
    raw.put("orders", fake, sealed(fake, row.tobytes()))
    idem = raw.items("idem")
    gone = idem[0][0]
    raw.delete("idem", gone)
    name, _ = raw.items("positions")[0]
    raw.delete("positions", name)
    raw.close()
    report = verify(copy)
    assert "tables" in checks(report) and "checksums" not in checks(report), report.problems
    tables = "\n".join(p.message for p in report.problems if p.check == "tables")
    oid, leaves = int(row["order_id"][0]), int(row["leaves"][0])
    assert f"orders table, order {oid}: leaves {leaves} (the batches: {leaves - 3})" in tables
    assert f"orders table: order {oid + 10**9} is in no batch" in tables
    client, idem_key = int.from_bytes(gone[8:], "big"), int.from_bytes(gone[:8], "big")
    assert f"idem table: (client {client}, idem key {idem_key}) is missing" in tables
    assert f"positions table: {name.decode()!r} is missing" in tables


def test_a_damaged_idem_value_is_refused_never_a_conflict(raw, copy):
    """Issue #14: an unchanged retry was answered ``conflict`` from a damaged entry."""
    key, _ = raw.items("idem")[0]
    raw.flip("idem", key, 20)  # in the request's fingerprint
    raw.close()
    client, idem_key = int.from_bytes(key[8:], "big"), int.from_bytes(key[:8], "big")
    with Journal(str(copy)) as j:
        original = next(
            c
            for cmds, _ in j.iter_batches()
            for c in cmds
            if c["kind"] == CMD_NEW and (c["client"], c["idem_key"]) == (client, idem_key)
        )
        with pytest.raises(JournalDamaged, match=r"idem \(client .*: checksum mismatch"):
            idem_entry(j, client, idem_key)
        engine = ShardEngine(0, BOOKS, j)
        engine.recover()
        retry = commands(1)
        retry[0] = original
        retry["seq"] = retry["order_id"] = 0
        with pytest.raises(JournalDamaged, match="checksum mismatch"):
            engine.apply(retry)
        assert j.last_seq == engine.last_seq  # nothing was journaled


def test_a_damaged_batch_before_the_snapshot_is_never_served(raw, copy):
    """Issue #14: start-up checked only the batches after the snapshot, and a SYNC
    replay served a damaged fill. Start-up still works (it reads nothing before the
    snapshot); every read of the damaged batch is refused, naming it."""
    snap_seq = int.from_bytes(raw.items("snapshots")[-1][0], "big")
    key, cmds, ev = next(b for b in raw.batches() if (b[2]["kind"] == EV_TRADE).any())
    seq = batch_seq(key)
    assert seq < snap_seq
    trade = int(np.flatnonzero(ev["kind"] == EV_TRADE)[0])
    at = 24 + cmds.nbytes + trade * ev.dtype.itemsize + ev.dtype.fields["qty"][1]
    raw.flip("batches", key, at)
    raw.close()
    with Journal(str(copy)) as j:
        engine = ShardEngine(0, BOOKS, j)
        assert engine.recover().snapshot_seq == snap_seq
        where = f"{copy}: batches seq {seq}: checksum mismatch"
        with pytest.raises(JournalDamaged, match=where):
            list(j.iter_batches())
        with pytest.raises(JournalDamaged, match=where):
            j.events_for(int(cmds["seq"][0]))
        sync = commands(1)
        sync["kind"] = CMD_SYNC
        with pytest.raises(JournalDamaged, match=where):
            list(engine.sync_answer(sync[0]))
    report = verify(copy)
    assert ("checksums", seq) in {(p.check, p.seq) for p in report.problems}


def test_the_journal_commands(made, copy, raw, tmp_path, capsys):
    """``exch journal verify`` and ``exch journal book`` with a config naming the journal."""
    healthy, books = made
    config = tmp_path / "exchange.toml"
    config.write_text(
        f"""
[[instruments]]
symbol = "AAA"
ref_price = 1000
[instruments.book]
min_price = 900
max_price = 1100
capacity = 512
[[instruments]]
symbol = "BBB"
ref_price = 5000
[instruments.book]
min_price = 4000
max_price = 6000
tick_size = 10
lot_size = 5
capacity = 512
[[shards]]
name = "s0"
instruments = ["AAA", "BBB"]
[gateway]
router = ["tcp://127.0.0.1:1"]
pub = ["tcp://127.0.0.1:2"]
keys_dir = "{tmp_path}/keys"
[journal]
dir = "{healthy.parent}"
durability = "os"
[snapshot]
every_commands = 500
every_seconds = 60
[session]
heartbeat_ms = 1000
cancel_on_disconnect_ms = 0
[rate]
orders_per_second = 1000
burst = 100
[risk]
max_order_qty = 1000
max_notional = 1000000000
price_collar_bps = 1000
max_open_orders = 100
max_position = 100000
[shm]
namespace = "verify"
request_ring = 1024
event_ring = 1024
"""
    )
    assert cli.main(["journal", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "s0" in out and "OK" in out
    assert cli.main(["journal", "verify", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["shards"][0]["trades"] > 0

    key, cmds, ev = raw.batches()[3]
    ev["qty"][0] += 1
    raw.put_batch(key, cmds, ev)
    raw.close()
    argv = ["journal", "verify", "--config", str(config), "--shard", "s0", "--path", str(copy)]
    assert cli.main(argv) == 4
    out = capsys.readouterr().out
    assert "FAIL" in out and "replay" in out
    argv = ["journal", "backup", str(tmp_path / "bad"), "--shard", "s0", "--path", str(copy)]
    assert cli.main([*argv, "--config", str(config)]) == 4  # copied as it is, and it fails
    assert "FAIL" in capsys.readouterr().out

    seq = sorted(books)[5]
    argv = ["journal", "book", "BBB", "--at-seq", str(seq), "--config", str(config)]
    assert cli.main([*argv, "--json", "--levels", str(LEVELS)]) == 0
    doc = json.loads(capsys.readouterr().out)
    state_hash, (bids, asks) = books[seq][1]
    assert doc["seq"] == seq and doc["state_hash"] == state_hash
    assert doc["bids"] == [list(b) for b in bids] and doc["asks"] == [list(a) for a in asks]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"BBB at seq {seq}" in out and str(asks[0][0]) in out
    assert cli.main(["journal", "book", "ZZZ", "--config", str(config)]) == 2
    assert "no instrument 'ZZZ'" in capsys.readouterr().err

    backup = tmp_path / "backup-s0"
    argv = ["journal", "backup", str(backup), "--shard", "s0", "--config", str(config)]
    assert cli.main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["last_seq"] == max(books) and doc["verified"]["ok"]
    assert doc["verified"]["hashes"] == verify(healthy).hashes
    assert cli.main(argv) == 2  # never over an existing directory
    assert "exists already" in capsys.readouterr().err

    assert cli.main(["journal", "verify", "--config", str(config), "--shard", "zz"]) == 2
    assert "no shard 'zz'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["journal", "verify", "--config", str(config), "--shard", "s0", "--path", str(empty)]
    assert cli.main(argv) == 2
    assert "no journal at" in capsys.readouterr().err


def test_the_book_at_a_seq_is_the_live_book_of_then(made):
    path, books = made
    seqs = sorted(books)
    with JournalReader(str(path)) as j:
        snap_seq, _ = j.latest_snapshot()
    # before the first snapshot, at it, after it, the end: from the empty book or the snapshot
    picks = {seqs[0], seqs[len(seqs) // 3], snap_seq, seqs[-2], seqs[-1]}
    for seq in picks:
        for inst in range(len(BOOKS)):
            at = book_at(str(path), BOOKS, inst, seq, levels=LEVELS)
            assert at.seq == seq
            assert (at.state_hash, (at.bids, at.asks)) == books[seq][inst], seq
            assert at.snapshot_seq == (snap_seq if seq >= snap_seq else 0)
    assert book_at(str(path), BOOKS, 0).seq == seqs[-1]


def test_the_book_inside_a_batch_is_cut_at_the_seq(made):
    """A seq in the middle of a batch: the commands up to it, through a fresh book."""
    path, books = made
    seqs = sorted(books)
    seq = seqs[10] - 1
    assert seq not in books
    fresh = [Book(cfg) for cfg in BOOKS]
    with JournalReader(str(path)) as j:
        for cmds, _ in j.iter_batches():
            cmds = cmds[cmds["seq"] <= seq]
            for inst, book in enumerate(fresh):
                mine = cmds[cmds["instrument"] == inst]
                if len(mine):
                    book.process(mine)
    for inst, book in enumerate(fresh):
        at = book_at(str(path), BOOKS, inst, seq, levels=LEVELS)
        assert (at.bids, at.asks) == book.depth(LEVELS)


def test_a_seq_outside_the_journal_is_refused(healthy):
    with JournalReader(str(healthy)) as j:
        end = j.last_seq
    for bad in (-1, end + 1):
        with pytest.raises(ToolError, match=f"seq {bad} is not in the journal"):
            book_at(str(healthy), BOOKS, 0, bad)
    assert book_at(str(healthy), BOOKS, 0, 0).bids == []  # seq 0: the empty book
