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
