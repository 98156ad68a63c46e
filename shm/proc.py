"""Process identity tokens: a pid that cannot be mistaken for a later process reusing it.

A token packs the pid with the process start time (clock ticks since boot, from
``/proc/<pid>/stat``) in one int64, so it can be stored and compared-and-swapped
in shared memory as a single word, and a recycled pid does not look alive.
"""

import os

PID_BITS = 22  # Linux PID_MAX_LIMIT is 2**22
_PID_MASK = (1 << PID_BITS) - 1


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces or parentheses itself.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie has exited; only its exit status is left
        return None
    return int(fields[19])


def token(pid: int | None = None) -> int:
    """The token of ``pid`` (default: this process); raises ProcessLookupError if it is gone."""
    pid = os.getpid() if pid is None else pid
    ticks = _start_ticks(pid)
    if ticks is None:
        raise ProcessLookupError(f"no process with pid {pid}")
    return (ticks << PID_BITS) | pid


def token_pid(tok: int) -> int:
    return tok & _PID_MASK


def token_alive(tok: int) -> bool:
    """Whether the process the token names is still running (0 names nobody)."""
    if tok == 0:
        return False
    return _start_ticks(token_pid(tok)) == tok >> PID_BITS
