"""Journal retention: pruning into archives or dropping, what readers, retries, syncs and
the tools make of a pruned journal, a damaged archive, a crash mid-prune, bounded growth."""

import os
import signal
import subprocess
import sys
import time

import msgspec
import numpy as np
import pytest
from journal_stream import idem_entry
from test_tools_journal import BOOKS, MERGE_ROWS, SYMBOLS, order_flow

from bench import retention as bench_retention
from exchange import archive
from exchange.config import DEFAULT_TOML, InstrumentSection, ShardSection, dump_config, parse_config
from exchange.engine import ShardEngine
from exchange.journal import HistoryPruned, Journal, JournalDamaged, JournalReader, batch_items
from exchange.orderstate import ST_LIVE
from exchange.records import (
    CMD_NEW,
    CMD_SYNC,
    EV_ACCEPTED,
    EV_REJECTED,
    EV_SYNCED,
    EVF_DUPLICATE,
    FLAG_RETRY,
    REJ_CONFLICT,
    REJ_KEY_EXPIRED,
    SIDE_BUY,
    commands,
)
from tools import cli
from tools.verify import verify_journal

RETAIN = 400
SNAPSHOT_EVERY = 300


def keyed_order(key: int, price: int = 990, qty: int = 3):
    c = commands(1)
    c["kind"], c["instrument"], c["side"], c["price"], c["qty"] = CMD_NEW, 0, SIDE_BUY, price, qty
    c["client"], c["idem_key"], c["req_id"] = 3, key, 77
    return c


def everything(journal) -> list[bytes]:
    return [c.tobytes() + e.tobytes() for c, e in journal.iter_batches(0)]


def pruned_journal(path, archive_dir, seed: int = 3):
    """A journal made by the engine and pruned as the shard prunes it; (journal, engine,
    the batches before pruning, the first keyed order's seq)."""
    journal = Journal(str(path), durability="os", merge_rows=MERGE_ROWS)
    engine = ShardEngine(
        0,
        BOOKS,
        journal,
        snapshot_every=SNAPSHOT_EVERY,
        retain_commands=RETAIN,
        archive_dir=archive_dir,
    )
    first = engine.apply(keyed_order(1 << 40)).events
    order_flow(np.random.default_rng(seed), engine, 150)
    before = everything(journal)
    while engine.prune() is not None:
        pass
    return journal, engine, before, int(first["seq"][0])


@pytest.fixture
def archived(tmp_path):
    journal, engine, before, first = pruned_journal(tmp_path / "s0", str(tmp_path / "arch"))
    try:
        yield journal, engine, before, first, tmp_path
    finally:
        journal.close()


def test_pruned_batches_are_archived_and_read_back_whole(archived):
    journal, engine, before, _, tmp_path = archived
    pruned = journal.pruned
    # at least RETAIN commands stay, and what recovery replays: the latest snapshot's tail
    assert 0 < pruned <= min(journal.last_seq - RETAIN, journal.latest_snapshot()[0])
    with pytest.raises(HistoryPruned):
        next(journal.iter_batches(0))
    kept = [c.tobytes() + e.tobytes() for c, e in journal.iter_batches(pruned)]
    assert kept == before[-len(kept) :]
    journal.archive_dir = str(tmp_path / "arch")
    assert everything(journal) == before
    files = archive.listing(journal.archive_dir, "s0", journal.identity)
    assert files[0].first_seq == 1 and files[-1].last_seq == pruned
    # a restarted shard recovers from what is left, to the same books
    again = ShardEngine(0, BOOKS, journal)
    again.recover()
    assert again.state_hashes() == engine.state_hashes()
    # finished orders left with their history; live ones stay, whatever their age
    table = journal.tables()
    assert not ((table.orders["status"] != ST_LIVE) & (table.orders["last_seq"] <= pruned)).any()
    resting = [oid for b in engine.books for oid in b.canonical_rows()[:, 2].tolist()]
    assert all(journal.order(oid).status == "live" for oid in resting)


def test_verify_reads_the_archives_and_checks_everything(archived):
    journal, _, _, _, tmp_path = archived
    journal.close()
    report = verify_journal(
        str(tmp_path / "s0"), BOOKS, symbols=SYMBOLS, archive_dir=str(tmp_path / "arch")
    )
    assert report.ok, report.problems
    assert report.history_after == 0 and report.commands == report.last_seq > 0
    # the history is needed: without its archives the journal reads as cut, not damaged
    with pytest.raises(HistoryPruned):
        verify_journal(str(tmp_path / "s0"), BOOKS, symbols=SYMBOLS)


def test_dropped_history_is_checked_from_the_latest_snapshot(tmp_path):
    journal, engine, _, _ = pruned_journal(tmp_path / "s0", None)
    journal.close()
    report = verify_journal(str(tmp_path / "s0"), BOOKS, symbols=SYMBOLS)
    assert report.ok, report.problems
    assert report.history_after > 0 and report.snapshot_seq >= report.history_after
    assert list(report.hashes.values()) == engine.state_hashes()


def test_a_pruned_orders_key_leaves_with_it_and_a_flagged_retry_is_refused_expired(archived):
    journal, engine, _, first, _ = archived
    assert first <= journal.pruned
    assert idem_entry(journal, 3, 1 << 40) is None  # the entry left with its batch
    last = engine.last_seq
    retry = keyed_order(1 << 40)
    retry["flags"] = FLAG_RETRY  # the gateway knows an order used the pair
    (no,) = engine.apply(retry).replies
    assert engine.last_seq == last  # nothing sequenced
    assert no["kind"] == EV_REJECTED and no["code"] == REJ_KEY_EXPIRED
    assert (no["seq"], no["order_id"], no["req_id"], no["idem_key"]) == (0, 0, 77, 1 << 40)
    # unflagged (the gateway's window is over too): a new order under the pair
    applied = engine.apply(keyed_order(1 << 40))
    assert engine.last_seq == last + 1 and applied.events["kind"][0] == EV_ACCEPTED
    assert idem_entry(journal, 3, 1 << 40).seq == last + 1
    # and a flagged retry of that one is a duplicate, as an unflagged one is
    retry["req_id"] = 78
    ack = engine.apply(retry).replies[0]  # then what its arrival did, duplicates too
    assert ack["kind"] == EV_ACCEPTED and ack["flags"] & EVF_DUPLICATE
    assert (ack["seq"], ack["req_id"]) == (last + 1, 78)
    (no,) = engine.apply(keyed_order(1 << 40, qty=4)).replies
    assert no["kind"] == EV_REJECTED and no["code"] == REJ_CONFLICT


def test_the_idem_table_holds_the_entries_of_the_batches_kept_only(archived):
    journal, _, _, _, _ = archived
    pruned = journal.pruned
    kept = [c for c, _ in journal.iter_batches(pruned)]
    cmds = np.concatenate(kept)
    keyed = cmds[(cmds["kind"] == CMD_NEW) & (cmds["idem_key"] != 0)]
    entries = list(journal.idem_entries())
    assert entries and all(e.seq > pruned for e in entries)
    assert len(entries) <= len(keyed)  # the ones the book accepted


def test_a_sync_from_before_the_pruned_seq_says_where_the_history_starts(archived):
    journal, engine, _, _, _ = archived
    ask = commands(1)[0]
    ask["kind"], ask["order_id"], ask["req_id"] = CMD_SYNC, 0, 5
    answer = np.concatenate(list(engine.sync_answer(ask)))
    end = answer[answer["kind"] == EV_SYNCED][0]
    assert end["other_id"] == journal.pruned > 0
    replayed = answer[answer["kind"] != EV_SYNCED]
    assert replayed["seq"][replayed["seq"] > 0].min() > journal.pruned


def test_a_damaged_archive_is_refused_loudly(archived, tmp_path):
    journal, *_ = archived
    journal.archive_dir = str(tmp_path / "arch")
    first = archive.listing(journal.archive_dir, "s0", journal.identity)[0].path
    with open(first, "r+b") as f:
        f.seek(os.path.getsize(first) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))
    with pytest.raises(JournalDamaged, match="checksum"):
        everything(journal)
    journal.close()
    config = _config(tmp_path, str(tmp_path / "arch"))
    assert cli.main(["journal", "verify", "--config", config]) == 4


def test_a_missing_archive_is_damage_not_a_shorter_history(archived, tmp_path):
    journal, *_ = archived
    journal.archive_dir = str(tmp_path / "arch")
    files = archive.listing(journal.archive_dir, "s0", journal.identity)
    os.remove(files[len(files) // 2].path)
    with pytest.raises(JournalDamaged, match="not all there|archives end"):
        everything(journal)


def test_a_prune_cut_short_before_its_commit_leaves_a_journal_that_is_accepted(archived):
    """A crash after the archive is written, before the journal's txn commits: the
    batches are still in the journal and an archive holds them too."""
    journal, engine, before, _, tmp_path = archived
    arch = str(tmp_path / "arch")
    order_flow(np.random.default_rng(9), engine, 60)
    before = everything_with(journal, arch)
    pruned = journal.pruned
    with journal._read() as txn:
        items = [(bytes(k), bytes(v)) for k, v in batch_items(journal._env, txn, pruned + 1)]
    items = items[:5]
    last = int.from_bytes(items[-1][0], "big") ^ (1 << 63)
    head = archive.Header("s0", journal.identity, pruned + 1, last, len(items))
    archive.write(arch, head, items)  # what prune writes first; the crash: no commit
    journal.close()
    with Journal(str(tmp_path / "s0"), durability="os", archive_dir=arch) as j:
        assert j.pruned == pruned and everything(j) == before
        again = ShardEngine(0, BOOKS, j, retain_commands=RETAIN, archive_dir=arch)
        again.recover()
        assert again.state_hashes() == engine.state_hashes()
        while again.prune() is not None:  # the next prune replaces the stale archive
            pass
        assert j.pruned > pruned and everything(j) == before
    report = verify_journal(str(tmp_path / "s0"), BOOKS, symbols=SYMBOLS, archive_dir=arch)
    assert report.ok, report.problems


def everything_with(journal, archive_dir) -> list[bytes]:
    journal.archive_dir = archive_dir
    try:
        return everything(journal)
    finally:
        journal.archive_dir = None


_KILLED_WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_tools_journal import BOOKS
from bench.retention import Market
from exchange.engine import ShardEngine
from exchange.journal import Journal
with Journal(sys.argv[1], durability="fsync", merge_rows=300) as j:
    engine = ShardEngine(0, BOOKS, j, snapshot_every=200, retain_commands=300,
                         archive_dir=sys.argv[2])
    engine.recover()
    market = Market(int(sys.argv[4]))
    print("ready", flush=True)
    while True:
        for _ in range(5):
            engine.apply(market.batch(16))
        while engine.prune() is not None:
            pass
"""


def test_a_shard_killed_while_it_prunes_leaves_a_journal_that_verifies(tmp_path):
    path, arch = str(tmp_path / "s0"), str(tmp_path / "arch")
    here = os.path.dirname(__file__)
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, path, arch, here, str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.0 + round_ * 0.37)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
    report = verify_journal(path, BOOKS, symbols=SYMBOLS, archive_dir=arch)
    assert report.ok, report.problems
    with JournalReader(path) as j:
        assert j.pruned > 0


def test_the_data_file_stops_growing_under_steady_load(tmp_path):
    """20 x retain_commands through the journal with retention, every NEW keyed: the file
    stops growing (the second half adds under 5 %; at 1x it has no free pages yet, so it
    levels off higher: LMDB's free pages, a snapshot's room, a B-tree of random keys),
    and the idempotency entries are those of the history kept."""
    figures = bench_retention.run(str(tmp_path), retain=10_000, rounds=20, archive=False)
    assert figures["pruned"] > 18 * 10_000
    assert figures["growth_second_half"] <= 1.05, figures
    assert figures["data_bytes_20x"] <= 1.7 * figures["data_bytes_1x"], figures
    assert 0 < figures["idem_entries_kept"] <= figures["last_seq"] - figures["pruned"]


def test_the_data_file_stops_growing_when_batch_sizes_vary(tmp_path):
    """The same with batches of 1 to 4,096 commands, as the load comes and goes. Stored
    whole, a batch record larger than half a page was a run of overflow pages that LMDB
    must find contiguous, and it searches only part of its free list before it grows
    the file: the file grew to 2.6x its size at 1x and went on (2.8x at 40x). In
    pieces that fit a page it levels off at ~2x, as with uniform batches."""
    figures = bench_retention.run(
        str(tmp_path), retain=20_000, rounds=20, archive=False, varied=True
    )
    assert figures["batches"] == "varied" and figures["pruned"] > 18 * 20_000
    assert figures["growth_second_half"] <= 1.05, figures
    assert figures["data_bytes_20x"] <= 2.2 * figures["data_bytes_1x"], figures


def _config(tmp_path, archive_dir: str) -> str:
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    instruments = [
        InstrumentSection(symbol=sym, ref_price=book.min_price, book=book)
        for sym, book in zip(SYMBOLS, BOOKS, strict=True)
    ]
    cfg = r(
        cfg,
        instruments=instruments,
        shards=[ShardSection(name="s0", instruments=SYMBOLS)],
        journal=r(cfg.journal, dir=str(tmp_path), archive_dir=archive_dir),
    )
    path = tmp_path / "exchange.toml"
    path.write_text(dump_config(cfg))
    return str(path)
