"""Memory accounting from inside a process, for finding what grows (off unless asked for).

With ``EXCHANGE_MEMDEBUG=<file>`` in its environment, a process that calls
``install`` traces its Python allocations (``tracemalloc``, ``FRAMES`` frames a
trace) and, on SIGUSR2 and at exit, appends one JSON line to ``<file>``:

- ``rss``: the process's resident memory by kind of mapping, in kB
  (``smaps_by_kind``: the brk heap, other anonymous mappings, each mapped file
  that holds more than ``FILE_KB`` kB, the rest of the files);
- ``malloc``: glibc's ``mallinfo2`` (bytes: ``arena`` the brk heap, ``hblkhd``
  blocks mmapped one each, ``uordblks`` in use, ``fordblks`` free in the heaps);
- ``python``: ``sys.getallocatedblocks``, the ``gc`` generations' counts and
  the objects it tracks, what ``tracemalloc`` traces now and at its peak;
- ``top``: the ``TOP`` call sites whose traced memory changed the most since the
  first dump (the baseline: send the first SIGUSR2 after the warm-up).

Allocations outside Python's allocators (LMDB's pages, Numba's arrays, glibc's
own) show in ``malloc`` and ``rss`` but not in ``tracemalloc``: the difference
between the two growths is what C code holds. Tracing slows every allocation:
a debugging tool, never for a benchmark's figures.
Without the variable ``install`` does nothing and nothing is traced.
"""

import atexit
import ctypes
import gc
import json
import os
import signal
import sys
import time
import tracemalloc

ENV = "EXCHANGE_MEMDEBUG"
FRAMES = 8
TOP = 25
FILE_KB = 1024  # a mapped file with at least this much resident is named on its own


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, int] | None:
    """glibc's ``mallinfo2`` (2.33 on), None elsewhere."""
    fn = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if fn is None:
        return None
    fn.restype = _Mallinfo2
    info = fn()
    return {name: int(getattr(info, name)) for name, _ in _Mallinfo2._fields_}


def smaps_by_kind(pid: int | str = "self") -> dict[str, dict[str, int]]:
    """kB of Rss and Anonymous by kind of mapping of process ``pid``: "heap" (brk),
    "anon" (other anonymous mappings: mmapped malloc blocks, arenas, Numba's and
    numpy's large arrays), "shm" (/dev/shm: the rings), each file with at least
    ``FILE_KB`` kB resident by its path, "files" for the rest, "stack" and "other"
    (the kernel's [vdso], [vvar], ...)."""
    out: dict[str, dict[str, int]] = {}
    per_file: dict[str, dict[str, int]] = {}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5:  # a mapping's first line
                path = head[5].strip() if len(head) == 6 else ""
                if path == "[heap]":
                    kind = "heap"
                elif not path:
                    kind = "anon"
                elif path.startswith("[stack"):
                    kind = "stack"
                elif path.startswith("["):
                    kind = "other"
                elif path.startswith("/dev/shm/"):
                    kind = "shm"
                else:
                    kind = None
                    entry = per_file.setdefault(path, {"rss": 0, "anon": 0})
                continue
            field = head[0].rstrip(":")
            if field not in ("Rss", "Anonymous"):
                continue
            value = int(head[1])
            target = out.setdefault(kind, {"rss": 0, "anon": 0}) if kind else entry
            target["rss" if field == "Rss" else "anon"] += value
    files = {"rss": 0, "anon": 0}
    for path, entry in per_file.items():
        if entry["rss"] >= FILE_KB:
            out[path] = entry
        else:
            files = {k: files[k] + entry[k] for k in files}
    out["files"] = files
    return out


class _Dumper:
    def __init__(self, path: str, role: str):
        self.path = path
        self.role = role
        self.baseline: tracemalloc.Snapshot | None = None

    def dump(self, *_) -> None:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if self.baseline is None:
            self.baseline = snap
        top = snap.compare_to(self.baseline, "traceback")
        top.sort(key=lambda s: abs(s.size_diff), reverse=True)
        current, peak = tracemalloc.get_traced_memory()
        line = {
            "ts": round(time.time(), 3),
            "pid": os.getpid(),
            "role": self.role,
            "rss": smaps_by_kind(),
            "malloc": mallinfo(),
            "python": {
                "allocated_blocks": sys.getallocatedblocks(),
                "gc_counts": gc.get_count(),
                "gc_objects": len(gc.get_objects()),
                "traced": current,
                "traced_peak": peak,
            },
            "top": [
                {
                    "size_diff": s.size_diff,
                    "count_diff": s.count_diff,
                    "size": s.size,
                    "where": [f"{fr.filename}:{fr.lineno}" for fr in s.traceback][::-1],
                }
                for s in top[:TOP]
            ],
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def install(role: str) -> bool:
    """Trace and dump as the module docstring says when ``EXCHANGE_MEMDEBUG`` is set;
    returns whether it is."""
    path = os.environ.get(ENV)
    if not path:
        return False
    tracemalloc.start(FRAMES)
    dumper = _Dumper(path, role)
    signal.signal(signal.SIGUSR2, dumper.dump)
    atexit.register(dumper.dump)
    return True
