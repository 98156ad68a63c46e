"""exchange.memdebug: memory by kind of mapping, and the dumps a process makes when asked."""

import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

from shard_harness import REPO, ShardRig

from exchange import memdebug
from exchange.records import CMD_NEW, SIDE_BUY, TIF_GTC, commands

MB = 1024  # kB


def test_smaps_by_kind_counts_anonymous_memory_and_names_a_mapped_file(tmp_path):
    before = memdebug.smaps_by_kind()
    # a mapping of its own (malloc could serve an array from its heap), every page touched
    block = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.write(b"\1" * len(block))
    path = tmp_path / "mapped"
    path.write_bytes(b"x" * (8 << 20))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert sum(m[i] for i in range(0, len(m), 4096)) == ord("x") * (len(m) // 4096)
        after = memdebug.smaps_by_kind()
    assert after["anon"]["anon"] - before["anon"]["anon"] >= 64 * MB - 1 * MB
    assert after[str(path)] == {"rss": 8 * MB, "anon": 0}
    assert str(path) not in before
    block.close()


def test_install_without_the_variable_does_nothing(monkeypatch):
    monkeypatch.delenv(memdebug.ENV, raising=False)
    assert not memdebug.install("test")
    assert not tracemalloc.is_tracing()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dumps_on_sigusr2_and_at_exit_with_the_growth_since_the_first(tmp_path):
    out = tmp_path / "mem.jsonl"
    script = textwrap.dedent(
        """
        import os, signal
        from exchange import memdebug
        assert memdebug.install("test")
        os.kill(os.getpid(), signal.SIGUSR2)
        kept = [bytes(1000) for _ in range(20_000)]  # ~20 MB held from here on
        os.kill(os.getpid(), signal.SIGUSR2)
        """
    )
    env = {**os.environ, memdebug.ENV: str(out)}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=60)
    first, second, at_exit = _lines(out)
    assert first["role"] == "test"
    assert all(t["size_diff"] == 0 for t in first["top"])  # the baseline
    grown = second["top"][0]
    assert grown["count_diff"] >= 20_000 and grown["size_diff"] >= 20_000_000
    assert grown["where"][-1] == "<string>:6"
    assert second["python"]["traced"] - first["python"]["traced"] >= 20_000_000
    assert second["malloc"]["uordblks"] - first["malloc"]["uordblks"] >= 20_000_000
    assert second["rss"]["heap"]["anon"] > 0
    assert at_exit["pid"] == second["pid"]


def test_a_shard_dumps_its_memory_when_asked(tmp_path):
    rig = ShardRig(tmp_path)
    try:
        _dump_from_a_shard(rig, tmp_path / "shard-mem.jsonl")
    finally:
        rig.close()


def _dump_from_a_shard(rig: ShardRig, out) -> None:
    rig.start(env={memdebug.ENV: str(out)})
    rig.wait_running()
    rig.proc.send_signal(signal.SIGUSR2)
    cmds = commands(100)
    cmds["kind"], cmds["side"], cmds["tif"] = CMD_NEW, SIDE_BUY, TIF_GTC
    cmds["price"], cmds["qty"], cmds["client"] = 9_000, 1, 1
    rig.send(cmds)
    rig.wait_for(lambda: len(rig.history()) >= 100)
    deadline = time.monotonic() + 60
    while not out.exists() or not out.read_text().endswith("\n"):
        assert time.monotonic() < deadline, rig.log()
        time.sleep(0.01)
    assert rig.stop() == 0
    asked, at_exit = _lines(out)
    assert asked["role"] == at_exit["role"] == "shard s0"
    assert asked["rss"]["heap"]["rss"] > 0 and asked["malloc"]["uordblks"] > 0
    assert at_exit["python"]["gc_objects"] > 0
