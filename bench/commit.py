"""The journal's synced commit of a one-command batch against a bare synced put, in one run.

    python -m bench.commit [--json] [--commits N] [--warmup N] [--prefill N]
                           [--dir DIR] [--strace]

Two environments on the same disk (under ./var, not /dev/shm, so fsync is real):
a journal (``durability="fsync"``) taking one-command batches as the shard
commits them (with a ring position), and ``bench.apply.RawLog``, one 64-byte
put per synced commit in a bare LMDB environment (the floor; ``bench.e2e``'s
``commit_p50_us``). After ``--warmup`` commits of each, ``--commits`` rounds
each commit one of both, in turns (who goes first alternates), so both see the
same load. ``--prefill N`` first writes N batches (and N records) of history
with the same flow (unsynced, then flushed): the trees are deeper then.

Per side: the commit's p50 and mean (the journal's is what ``write_batch``
returns, its commit alone; ``write_p50_us`` is the whole ``write_batch``), and
per commit, from ``/proc/self/io`` deltas around it: the bytes handed to
write calls (``wchar``), the write calls (``syscw``) and the whole pages among
those bytes (``data_pages``, p50 and mean; the rest is the 120-byte meta page
update); the depth of the tree the record goes into at the end. ``ratio``:
journal commit p50 / bare commit p50.

``--strace``: the syncs per commit, counted: the same two sides run in a child
process under ``strace`` (``--commits`` of each, not timed), and for each side
the fdatasync/fsync calls and the writes to the O_DSYNC descriptor (LMDB writes
the meta page through one, each such write a sync of its own) are counted
between markers and divided by the commits.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import journal as bench_journal
from bench.apply import RawLog
from bench.report import emit
from exchange.book import Book
from exchange.bookconfig import BookConfig
from exchange.journal import Journal

REPO = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")  # LMDB's page size
POSITION = "bench-req@1"


def io_counts() -> tuple[int, int] | None:
    """(wchar, syscw) of this process, None where /proc/self/io is not readable."""
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:
        return None
    return int(fields["wchar"]), int(fields["syscw"])


class Side:
    """One of the two: commits and what each wrote."""

    def __init__(self):
        self.commit_s: list[float] = []
        self.wall_s: list[float] = []
        self.wchar: list[int] = []
        self.syscw: list[int] = []

    def timed(self, commit, keep: bool) -> None:
        before = io_counts()
        t0 = time.perf_counter()
        dt = commit()
        wall = time.perf_counter() - t0
        after = io_counts()
        if not keep:
            return
        self.commit_s.append(dt)
        self.wall_s.append(wall)
        if before is not None and after is not None:
            self.wchar.append(after[0] - before[0])
            self.syscw.append(after[1] - before[1])

    def report(self, depth: int, whole: bool) -> dict:
        out = {
            "commit_p50_us": round(1e6 * statistics.median(self.commit_s), 1),
            "commit_mean_us": round(1e6 * statistics.mean(self.commit_s), 1),
        }
        if whole:
            out["write_p50_us"] = round(1e6 * statistics.median(self.wall_s), 1)
        if self.wchar:
            pages = np.array(self.wchar) // PAGE
            out["bytes_per_commit"] = round(statistics.mean(self.wchar))
            out["data_pages_p50"] = float(np.median(pages))
            out["data_pages_mean"] = round(float(pages.mean()), 2)
            out["write_calls_mean"] = round(statistics.mean(self.syscw), 2)
        out["depth"] = depth
        return out


def flow(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` one-command batches (commands, events) of the journal bench's stream."""
    cmds = bench_journal.make_stream(n)
    events = Book(BookConfig(min_price=1, max_price=100_000, capacity=1 << 14)).process(cmds)
    return list(bench_journal.batches(cmds, events, 1))


class Pair:
    """The journal and the bare environment, side by side in ``root``."""

    def __init__(self, root: str, batches, prefill: int):
        self.jpath = os.path.join(root, "journal")
        self.batches = iter(batches)
        self.k = 0
        raw_path = os.path.join(root, "raw")
        os.makedirs(raw_path)
        if prefill:
            with Journal(self.jpath, durability="os", map_size=256 << 20) as j:
                for _ in range(prefill):
                    self._write(j)
        self.journal = Journal(self.jpath, durability="fsync", map_size=256 << 20)
        self.raw = RawLog(raw_path)
        if prefill:
            with self.raw.env.begin(write=True) as txn:
                for _ in range(prefill):
                    self.raw.n += 1
                    txn.put(self.raw.n.to_bytes(8, "big"), bytes(64), append=True)

    def _write(self, journal) -> float:
        c, e = next(self.batches)
        self.k += 1
        return journal.write_batch(c, e, consumed={POSITION: self.k})

    def journal_commit(self) -> float:
        return self._write(self.journal)

    def depths(self) -> tuple[int, int]:
        with self.journal._read() as txn:
            jdepth = txn.stat(self.journal._db["batches"])["depth"]
        return jdepth, self.raw.env.stat()["depth"]

    def close(self) -> None:
        self.journal.close()
        self.raw.close()


def measure(root: str, commits: int, warmup: int, prefill: int) -> dict:
    pair = Pair(root, flow(prefill + warmup + commits + 1), prefill)
    journal, raw = Side(), Side()
    try:
        for k in range(warmup + commits):
            keep = k >= warmup
            turns = ((journal, pair.journal_commit), (raw, pair.raw.commit))
            for side, commit in turns if k % 2 == 0 else turns[::-1]:
                side.timed(commit, keep)
        jdepth, rdepth = pair.depths()
    finally:
        pair.close()
    out = {"journal": journal.report(jdepth, True), "raw": raw.report(rdepth, False)}
    out["ratio"] = round(out["journal"]["commit_p50_us"] / out["raw"]["commit_p50_us"], 3)
    out["ratio_write"] = round(out["journal"]["write_p50_us"] / out["raw"]["commit_p50_us"], 3)
    return out


MARK = "getppid"  # the child's markers: a side's commits are between two of them


def child(root: str, commits: int, warmup: int, prefill: int) -> None:
    """The traced run: warm-up, then for each side a marker, its commits, a marker."""
    pair = Pair(root, flow(prefill + warmup + 2 * commits + 1), prefill)
    try:
        for _ in range(warmup):
            pair.journal_commit()
            pair.raw.commit()
        for commit in (pair.journal_commit, pair.raw.commit):
            os.getppid()
            for _ in range(commits):
                commit()
            os.getppid()
    finally:
        pair.close()


_CALL = re.compile(r"^(?:\d+\s+)?(\w+)\((\d+)?.*=\s*(-?\d+)")


def count_syncs(root: str, commits: int, warmup: int, prefill: int) -> dict | None:
    """Per side: syncs (fdatasync/fsync calls and writes through an O_DSYNC descriptor)
    and write calls per commit, counted by strace in a child process; None without a
    working strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    log = os.path.join(root, "strace.txt")
    calls = "getppid,openat,fdatasync,fsync,pwrite64,pwritev,writev,write"
    argv = [sys.executable, "-m", "bench.commit", "--child", "--dir", root]
    argv += ["--commits", str(commits), "--warmup", str(warmup), "--prefill", str(prefill)]
    traced = [strace, "-f", "-qq", "-e", f"trace={calls}", "-o", log, *argv]
    if subprocess.run(traced, cwd=REPO).returncode != 0:  # e.g. ptrace not allowed here
        return None
    dsync_fds: set[int] = set()
    sides = [{"syncs": 0, "fdatasync": 0, "dsync_writes": 0, "writes": 0} for _ in range(2)]
    marks = 0
    with open(log) as f:
        for line in f:
            m = _CALL.match(line)
            if m is None:
                continue
            name, fd, result = m.group(1), m.group(2), int(m.group(3))
            if name == MARK:
                marks += 1
            elif name == "openat" and "O_DSYNC" in line and result >= 0:
                dsync_fds.add(result)
            elif marks in (1, 3):  # inside the journal's, then the bare side's commits
                side = sides[marks // 2]
                if name in ("fdatasync", "fsync"):
                    side["fdatasync"] += 1
                elif name != "openat":
                    side["writes"] += 1
                    side["dsync_writes"] += fd is not None and int(fd) in dsync_fds
    out = {}
    for key, side in zip(("journal", "raw"), sides, strict=True):
        side["syncs"] = side["fdatasync"] + side["dsync_writes"]
        out[key] = {f"{k}_per_commit": round(v / commits, 2) for k, v in side.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--commits", type=int, default=400, help="timed commits of each side")
    ap.add_argument("--warmup", type=int, default=50, help="untimed commits of each side first")
    ap.add_argument("--prefill", type=int, default=0, help="batches of history written first")
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the environments are made")
    ap.add_argument("--strace", action="store_true", help="count syncs per commit with strace")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bench-commit-", dir=args.dir)
    try:
        if args.child:
            child(root, args.commits, args.warmup, args.prefill)
            return 0
        result = {
            "bench": "commit",
            "loadavg_1m_start": round(os.getloadavg()[0], 2),
            "commits": args.commits,
            "prefill": args.prefill,
            **measure(root, args.commits, args.warmup, args.prefill),
        }
        result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        if args.strace:
            result["strace"] = count_syncs(root, args.commits, args.warmup, args.prefill)
    finally:
        shutil.rmtree(root)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
