"""A shard runs only on its own, whole journal: gone, replaced, truncated or with a bad
meta page, it refuses with exit code 4 and one line naming the file; the supervisor
leaves it down; a new journal is made at the first start or by `exch journal new`."""

import os
import subprocess
import sys
from pathlib import Path

import lmdb
import msgspec
import pytest
from shard_harness import REPO, SHARD, ShardRig

from exchange import journalid, lmdbfile, topology
from exchange.config import DEFAULT_TOML, parse_config
from exchange.exitcodes import EXIT_UNTRUSTED, NO_RESTART
from exchange.journal import MERGE_BATCHES, Journal, JournalDamaged, JournalError, batch_items
from exchange.records import (
    CMD_NEW,
    CMD_SYNC,
    EV_ACCEPTED,
    EVF_REPLAY,
    SIDE_BUY,
    TIF_GTC,
    commands,
)
from gateway.store import GatewayStore, StoreError


@pytest.fixture
def rig(tmp_path):
    r = ShardRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _config(tmp_path):
    cfg = parse_config(DEFAULT_TOML)
    journal = msgspec.structs.replace(cfg.journal, dir=str(tmp_path / "journal"), durability="os")
    return msgspec.structs.replace(cfg, journal=journal)


def _orders(rig: ShardRig, n: int, first_req: int = 1):
    book = rig.config.instrument(rig.config.shards[0].instruments[0]).book
    cmds = commands(n)
    cmds["kind"] = CMD_NEW
    cmds["req_id"] = range(first_req, first_req + n)
    cmds["client"] = 1
    cmds["side"] = SIDE_BUY
    cmds["tif"] = TIF_GTC
    cmds["price"] = book.min_price + book.tick_size
    cmds["qty"] = book.lot_size
    return cmds


def _run_then_stop(rig: ShardRig, n: int = 50) -> None:
    rig.start()
    rig.wait_running()
    rig.send(_orders(rig, n))
    rig.wait_for(lambda: (rig.all_received()["kind"] == EV_ACCEPTED).sum() >= n)
    assert rig.stop() == 0


def _verify(rig: ShardRig) -> subprocess.CompletedProcess:
    """`exch journal verify` of the rig's shard, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "journal", "verify", "--shard", SHARD]
        + ["--config", str(rig.config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def _start_refused(rig: ShardRig) -> str:
    """Start the shard; it must exit 4 (not die of a signal) with one error line."""
    rig.start()
    code = rig.proc.wait(timeout=120)
    rig.proc = None
    log = rig.log().splitlines()[-1]
    assert code == EXIT_UNTRUSTED, (code, rig.log())
    assert '"level": "error"' in log and "journal refused" in log, log
    return log


# ------------------------------------------------------------ the data file, before mapping


def _journal_with_pages(path) -> None:
    Journal(path, durability="os").close()
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        db = env.open_db(b"filler", txn=txn)
        for i in range(5000):
            txn.put(b"%08d" % i, os.urandom(200), db=db)
    env.close()


def test_a_whole_file_has_no_problem_and_a_short_one_is_named(tmp_path):
    path = tmp_path / "j"
    _journal_with_pages(path)
    assert lmdbfile.problem(path) is None
    data = path / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    assert "truncated" in lmdbfile.problem(path) and str(data) in lmdbfile.problem(path)


def test_a_file_short_of_free_pages_only_is_whole(tmp_path):
    """LMDB counts a page a transaction took from the end and freed before it committed,
    and never writes it: a sound file can end before its last counted pages, all free
    (a running shard's journal did). Here: a big value's overflow pages at the end are
    freed by a delete, the pages after them by the next puts, which reuse the freed
    pages below; the file cut after those reads whole, and cut into a page in use it is
    truncated."""
    path = tmp_path / "j"
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"big", os.urandom(100_000))
    with env.begin(write=True) as txn:
        txn.put(b"small", b"x")
        txn.delete(b"big")
    for key in (b"other", b"more"):  # their pages and free lists' reuse freed pages
        with env.begin(write=True) as txn:
            txn.put(key, b"y")
    last = env.info()["last_pgno"]
    env.close()
    data = path / "data.mdb"
    assert data.stat().st_size == (last + 1) * 4096
    os.truncate(data, (last - 20) * 4096)  # the last 21 pages: free
    assert lmdbfile.problem(path) is None
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin() as txn:
        assert (txn.get(b"small"), txn.get(b"more"), txn.get(b"big")) == (b"x", b"y", None)
    env.close()
    os.truncate(data, 3 * 4096)  # the metas and a leaf: the free list is cut off
    assert "(truncated: its free list's page 3 is past the end)" in lmdbfile.problem(path)


def test_a_damaged_meta_page_is_named(tmp_path):
    path = tmp_path / "j"
    _journal_with_pages(path)
    with open(path / "data.mdb", "r+b") as f:
        f.seek(16)  # meta page 0's magic
        f.write(b"\0\0\0\0")
    assert "meta page 0 is damaged" in lmdbfile.problem(path)


def test_no_file_or_an_empty_one_is_left_to_lmdb(tmp_path):
    assert lmdbfile.problem(tmp_path) is None
    (tmp_path / "data.mdb").write_bytes(b"")
    assert lmdbfile.problem(tmp_path) is None


def test_journal_and_gateway_store_refuse_a_short_file_without_mapping_it(tmp_path):
    path = tmp_path / "j"
    _journal_with_pages(path)
    data = path / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    # in a child: were the file mapped, the read past its end would be a SIGBUS
    probe = (
        "import sys\n"
        "from exchange.journal import JournalDamaged, JournalReader\n"
        "try:\n"
        f"    JournalReader({str(path)!r})\n"
        "except JournalDamaged as e:\n"
        "    print(e); sys.exit(4)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 4 and "truncated" in done.stdout, done
    with pytest.raises(StoreError, match="truncated"):
        GatewayStore(str(path), key_window=10)


# ------------------------------------------------------------ the recorded identity


def test_first_start_makes_and_records_the_journal_then_only_that_one_is_run(tmp_path):
    config = _config(tmp_path)
    with journalid.open_journal(config, "s0") as j:
        identity = j.identity
    assert journalid.recorded(config, "s0") == identity
    record = Path(journalid.record_path(config, "s0"))
    assert Path(config.journal.dir) not in record.parents  # survives losing that directory
    with journalid.open_journal(config, "s0") as j:
        assert j.identity == identity


def test_a_journal_gone_or_emptied_or_replaced_is_refused(tmp_path):
    config = _config(tmp_path)
    path = topology.journal_path(config, "s0")
    journalid.open_journal(config, "s0").close()
    os.truncate(os.path.join(path, "data.mdb"), 0)
    with pytest.raises(JournalDamaged, match="is gone"):
        journalid.open_journal(config, "s0")
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)
    with pytest.raises(JournalDamaged, match="exch journal new --shard s0"):
        journalid.open_journal(config, "s0")
    assert not os.path.exists(path)  # nothing was made in its place
    Journal(path, durability="os").close()  # another journal, made behind its back
    with pytest.raises(JournalDamaged, match="put the shard's own journal back"):
        journalid.open_journal(config, "s0")


def test_a_journal_without_a_record_is_adopted(tmp_path):
    config = _config(tmp_path)
    with Journal(
        topology.journal_path(config, "s0"), durability="os"
    ) as j:  # restored onto this host
        identity = j.identity
    journalid.open_journal(config, "s0").close()
    assert journalid.recorded(config, "s0") == identity


def test_journal_new_replaces_a_lost_journal_only(tmp_path):
    config = _config(tmp_path)
    journalid.open_journal(config, "s0").close()
    with pytest.raises(JournalError, match="move it aside first"):
        journalid.new_journal(config, "s0")
    os.truncate(os.path.join(topology.journal_path(config, "s0"), "data.mdb"), 0)
    identity = journalid.new_journal(config, "s0")
    assert journalid.recorded(config, "s0") == identity
    with journalid.open_journal(config, "s0") as j:
        assert j.identity == identity and j.last_seq == 0


# ------------------------------------------------------------ the shard process


def test_a_running_shard_that_reads_a_damaged_record_stops_with_exit_4(tmp_path):
    """History before the snapshot is read only to answer a SYNC: a record there that
    fails its check stops the shard loudly, never serves the gateway wrong history."""
    rig = ShardRig(tmp_path, snapshot_every=100)
    try:
        rig.start()
        rig.wait_running()
        # batches of one: the first MERGE_BATCHES are folded into the tables (start-up
        # reads the log after the fold in full), snapshots follow every 100 commands
        for i in range(MERGE_BATCHES + 50):
            rig.send(_orders(rig, 1, first_req=1 + i))
            rig.wait_for(lambda n=i + 1: (rig.all_received()["kind"] == EV_ACCEPTED).sum() >= n)
        assert rig.stop() == 0
        env = lmdb.open(str(rig.journal_dir), max_dbs=8, map_size=1 << 30)
        with env.begin(write=True) as txn:
            key, value = next(batch_items(env, txn))  # the first batch
            damaged = bytearray(value)
            damaged[40] ^= 1
            txn.put(key, bytes(damaged))
        env.close()
        rig.start()
        rig.wait_running()  # recovery starts from the snapshot, after the damage
        sync = commands(1)
        sync["kind"], sync["req_id"] = CMD_SYNC, 10**6  # after seq 0: the whole history
        rig.send(sync)
        code = rig.proc.wait(timeout=60)
        rig.proc = None
        assert code == EXIT_UNTRUSTED, rig.log()
        last = rig.log().splitlines()[-1]
        assert "journal refused: intake stopped" in last and "batches seq" in last, last
        served = rig.all_received()
        assert not (served["flags"] & EVF_REPLAY).any()  # not one replayed event served
    finally:
        rig.close()


def test_shard_whose_journal_is_gone_exits_4_and_exch_journal_new_lets_it_start(rig):
    _run_then_stop(rig)
    for name in os.listdir(rig.journal_dir):
        os.unlink(rig.journal_dir / name)
    log = _start_refused(rig)
    assert str(rig.journal_dir) in log and "is gone" in log
    assert not (rig.journal_dir / "data.mdb").exists()
    made = subprocess.run(
        [sys.executable, "-m", "tools.cli", "journal", "new", "--shard", SHARD]
        + ["--config", str(rig.config_path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    rig.start()
    rig.wait_running()
    assert '"seq": 0' in rig.log().splitlines()[-1]


def test_shard_on_a_truncated_journal_exits_4_naming_the_file_not_sigbus(rig):
    _run_then_stop(rig, n=2000)
    data = rig.journal_dir / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    log = _start_refused(rig)
    assert str(data) in log and "truncated" in log


def test_shard_on_a_damaged_snapshot_exits_4_and_verify_names_it(tmp_path):
    rig = ShardRig(tmp_path, snapshot_every=10)
    try:
        rig.start()
        rig.wait_running()
        for i in range(3):
            rig.send(_orders(rig, 10, first_req=1 + 10 * i))
            rig.wait_for(
                lambda n=10 * (i + 1): (rig.all_received()["kind"] == EV_ACCEPTED).sum() >= n
            )
        assert rig.stop() == 0
        env = lmdb.open(str(rig.journal_dir), max_dbs=8, map_size=1 << 30)
        with env.begin(write=True) as txn:
            snapshots = env.open_db(b"snapshots", txn=txn, create=False)
            cur = txn.cursor(db=snapshots)
            assert cur.last()
            damaged = bytearray(cur.value())
            damaged[len(damaged) // 2] ^= 1
            txn.put(cur.key(), bytes(damaged), db=snapshots)
        env.close()
        log = _start_refused(rig)
        assert "snapshots" in log, log
        verified = _verify(rig)
        assert verified.returncode == EXIT_UNTRUSTED, verified.stdout + verified.stderr
        assert "snapshot" in verified.stdout + verified.stderr
        assert "Traceback" not in verified.stderr
    finally:
        rig.close()


def test_exch_journal_verify_on_a_truncated_file_exits_4_with_one_line(rig):
    _run_then_stop(rig, n=2000)
    data = rig.journal_dir / "data.mdb"
    os.truncate(data, data.stat().st_size // 2)
    verified = _verify(rig)
    assert verified.returncode == EXIT_UNTRUSTED, verified  # not -SIGBUS
    lines = verified.stderr.strip().splitlines()
    assert len(lines) == 1 and str(data) in lines[0] and "truncated" in lines[0], lines


def test_shard_on_a_damaged_meta_page_exits_4(rig):
    _run_then_stop(rig)
    with open(rig.journal_dir / "data.mdb", "r+b") as f:
        for page in (0, 4096):
            f.seek(page + 16)
            f.write(b"\xff\xff\xff\xff")
    assert "meta page 0 is damaged" in _start_refused(rig)


def test_operations_md_has_a_row_for_every_exit_code_and_no_other():
    from exchange import exitcodes

    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    section = text.split("## What the exit codes mean", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    documented = {int(c) for c in rows if c.isdigit()}
    codes = {v for k, v in vars(exitcodes).items() if k.startswith("EXIT_")}
    assert documented == codes
    restarts = section.split("do not restart a process that exits ", 1)[1].split("(", 1)[0]
    assert {int(c) for c in restarts.replace("or", ",").split(",")} == set(NO_RESTART)
