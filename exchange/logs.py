"""Structured logs: one JSON object per line on stderr.

Every line has ``ts`` (wall clock, for people; nothing depends on it), ``level``,
``role`` and ``msg``; callers add what applies (shard, seq, client, order id).
"""

import json
import os
import sys
import time

_role = {"role": "main", "pid": os.getpid()}


def set_role(role: str, **fields) -> None:
    """Name this process in every line it logs (e.g. role="shard", shard="s0")."""
    _role.clear()
    _role.update(role=role, pid=os.getpid(), **fields)


def log(level: str, msg: str, **fields) -> None:
    line = {"ts": round(time.time(), 6), "level": level, **_role, "msg": msg, **fields}
    sys.stderr.write(json.dumps(line, default=str) + "\n")
    sys.stderr.flush()


def info(msg: str, **fields) -> None:
    log("info", msg, **fields)


def warning(msg: str, **fields) -> None:
    log("warning", msg, **fields)


def error(msg: str, **fields) -> None:
    log("error", msg, **fields)


class Failing:
    """The log of a duty that may fail again and again (a key reload on every handshake,
    a housekeeping step every tick): one error line when a kind of failure starts, one
    info line with the count when the duty works again. Thousands of identical lines
    (one incident logged 5,794 tracebacks) hide everything else."""

    def __init__(self, failed: str, recovered: str):
        self.failed_msg = failed
        self.recovered_msg = recovered
        self.kind = None  # (exception type, errno) of the failure going on
        self.times = 0

    def failed(self, e: BaseException, **fields) -> None:
        kind = (type(e).__name__, getattr(e, "errno", None))
        self.times += 1
        if kind != self.kind:
            self.kind = kind
            error(self.failed_msg, error=f"{type(e).__name__}: {e}", **fields)

    def ok(self) -> None:
        if self.kind is not None:
            info(self.recovered_msg, failures=self.times)
            self.kind = None
            self.times = 0
