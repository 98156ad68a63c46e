"""The journal across real processes: a reader while a writer writes, SIGKILL, a full disk."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from journal_stream import assert_prefix, cut, idem_entries_of, save, shard_stream

from exchange.idempotency import used_news
from exchange.journal import Journal, JournalReader

WORKER = Path(__file__).with_name("journal_worker.py")


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    cmds, evs, _ = shard_stream(seed=21, n=4000)
    batches = cut(cmds, evs, seed=2)
    path = tmp_path_factory.mktemp("journal-stream") / "stream.npz"
    save(path, batches)
    try:
        yield path, batches
    finally:
        path.unlink()


@pytest.fixture
def jdir(tmp_path):
    path = tmp_path / "journal"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn():
    """Start worker processes; every one is killed and reaped at the end."""
    procs = []

    def start(*args):
        p = subprocess.Popen(
            [sys.executable, str(WORKER), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
            for pipe in (p.stdin, p.stdout, p.stderr):
                pipe.close()


def ask(p, line: str | None = None) -> list[str]:
    """Send a line (if any) and read one answer line, split in words."""
    if line is not None:
        p.stdin.write(line + "\n")
        p.stdin.flush()
    answer = p.stdout.readline()
    if not answer:
        p.kill()
        raise AssertionError(f"worker died: {p.communicate(timeout=30)[1]}")
    return answer.split()


@pytest.mark.timeout(120)
def test_a_reader_process_reads_while_a_writer_process_writes(jdir, stream_file, spawn):
    path, batches = stream_file
    # a small map, so that the writer grows it under the reader's feet
    writer = spawn("write", jdir, path, "--step", "--map-size", 256 << 10)
    assert ask(writer, "1") == ["ack", str(batches[0][0]["seq"][-1])]
    reader = spawn("read", jdir, path)
    written = 1
    while written < len(batches) // 2:
        _, acked = ask(writer, "7")
        written += 7
        # everything committed is visible to the reader, nothing more
        assert ask(reader, "check") == ["seen", acked]
    # now both at once: the reader checks whole prefixes until it sees the end
    final = str(batches[-1][0]["seq"][-1])
    writer.stdin.write(f"{len(batches)}\n")
    writer.stdin.flush()
    assert ask(reader, f"follow {final}")[0] == "followed"
    assert ask(writer) == ["ack", final]
    writer.stdin.close()
    word, grows = ask(writer)
    assert word == "done" and int(grows) > 0
    assert writer.wait(timeout=30) == 0
    reader.stdin.close()
    assert reader.wait(timeout=30) == 0


@pytest.mark.timeout(120)
def test_a_reader_kept_open_finds_every_key_across_folds(jdir, stream_file, spawn):
    """After each step of a writer that folds every few batches (moving the log's
    idempotency entries into the table), one reader left open finds exactly the pairs
    written so far, with their seqs (the offline tools read live journals)."""
    path, batches = stream_file
    writer = spawn("write", jdir, path, "--step", "--merge-rows", 300)
    ask(writer, "1")
    keyed = [  # the keyed NEWs the book accepted: the others use no key
        (int(c["client"]), int(c["idem_key"]), int(c["seq"]))
        for cmds, events in batches
        for c in cmds[used_news(cmds, events)]
    ]
    clients, keys = [c for c, _, _ in keyed], [k for _, k, _ in keyed]
    written = 1
    with JournalReader(jdir) as r:
        while written < len(batches):
            acked = int(ask(writer, "2")[1])
            written += 2
            found = [None if e is None else e.seq for e in idem_entries_of(r, clients, keys)]
            assert found == [s if s <= acked else None for _, _, s in keyed]
        assert r.stats().orders_merged > 0  # it did fold meanwhile
    writer.stdin.close()
    assert ask(writer)[0] == "done"


def kill_mid_stream(jdir, stream_file, spawn, acks_before_kill: int, durability: str):
    path, batches = stream_file
    writer = spawn("write", jdir, path, "--durability", durability)
    acked = 0
    for _ in range(acks_before_kill):
        acked = int(ask(writer)[1])
    time.sleep(random.uniform(0, 0.01))
    os.kill(writer.pid, signal.SIGKILL)
    for line in writer.communicate(timeout=30)[0].splitlines():
        word, value = line.split()
        if word == "ack":  # else "done": the machine was too slow to kill it mid-stream
            acked = int(value)
    assert writer.returncode == -signal.SIGKILL
    with Journal(jdir, durability=durability) as j:
        last = assert_prefix(j, batches)
        assert last >= acked
        k = sum(1 for c, _ in batches if c["seq"][-1] <= last)
        # committed with their batch: they name exactly the batches there
        assert j.consumed() == {"input": k}
        # the survivor is a working journal: it takes the next batch
        if k < len(batches):
            j.write_batch(*batches[k])
            assert assert_prefix(j, batches) == batches[k][0]["seq"][-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_sigkill_mid_stream_keeps_every_acknowledged_batch(jdir, stream_file, spawn, durability):
    kill_mid_stream(jdir, stream_file, spawn, acks_before_kill=25, durability=durability)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_many_points(tmp_path, stream_file, spawn):
    rng = random.Random(5)
    for round_ in range(30):
        path = tmp_path / f"journal-{round_}"
        try:
            kill_mid_stream(
                path, stream_file, spawn, rng.randint(1, 100), rng.choice(["fsync", "os"])
            )
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(120)
def test_a_full_disk_stops_the_writer_cleanly(jdir, stream_file, spawn):
    path, batches = stream_file
    limit = 1 << 20  # bytes any file of the writer may reach
    writer = spawn("write", jdir, path, "--fsize-limit", limit, "--map-size", 8 << 20)
    out, err = writer.communicate(timeout=60)
    lines = out.splitlines()
    assert writer.returncode == 3, err
    assert lines[-1].startswith("full ") and "disk refused a write" in lines[-1]
    acked = int(lines[-2].split()[1]) if len(lines) > 1 else 0
    assert len(lines) - 1 < len(batches)
    with Journal(jdir) as j:
        assert assert_prefix(j, batches) == acked
        assert j.consumed() == {"input": len(lines) - 1}
