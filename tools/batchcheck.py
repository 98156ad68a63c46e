"""The framing of one journaled batch, in one pass: the Numba half of the sequence and
events checks of ``exch journal verify``.

Commands: seqs go on from ``next_seq`` one by one, and every command is for an
instrument the shard has. Events: each has the seq of a command of the batch,
in (seq, idx) order with idx counting 0, 1, 2... per command, none is an
EVF_DUPLICATE re-send, and every command has at least one event.

Problems go to a ``(n, 4)`` array of (B_* code, seq, a, b) whose meaning per
code is in ``PROBLEMS``; ``scan`` returns how many it found (storing the first
``len(problems)``).
"""

import numpy as np
from numba import njit

from exchange.records import EVF_DUPLICATE

B_GAP = 1  # seqs a..b missing before seq
B_BACK = 2  # seq after a (not above it)
B_INSTRUMENT = 3  # the command at seq is for instrument a; the shard has b
B_FOREIGN = 4  # event a of the batch has seq, which no command of the batch has
B_ORDER = 5  # event (seq, a) follows (b, ...) or an idx not above it
B_IDX = 6  # event idx a where b was due
B_SILENT = 7  # the command at seq has no event
B_DUPLICATE = 8  # the event at seq is an EVF_DUPLICATE re-send
SEQUENCE = (B_GAP, B_BACK)  # the rest are the events check


def message(code: int, seq: int, a: int, b: int) -> str:
    if code == B_GAP:
        return f"seqs {a}..{b} are missing (a lost batch?)"
    if code == B_BACK:
        return f"seq {seq} comes after seq {a}"
    if code == B_INSTRUMENT:
        return f"the command is for instrument {a}; the shard has {b}"
    if code == B_FOREIGN:
        return f"event {a} of its batch has seq {seq}, which no command of the batch has"
    if code == B_ORDER:
        return f"event ({seq}, {a}) comes after an event of seq {b} with an idx not below"
    if code == B_IDX:
        return f"event idx {a} where {b} was due"
    if code == B_SILENT:
        return "the command has no event (every command is answered)"
    return "a duplicate re-send (EVF_DUPLICATE) is journaled as history"


@njit(cache=True)
def _add(problems, n, code, seq, a, b):
    if n < problems.shape[0]:
        problems[n, 0] = code
        problems[n, 1] = seq
        problems[n, 2] = a
        problems[n, 3] = b
    return n + 1


@njit(cache=True)
def scan(cmds, events, instruments, next_seq, problems):
    """(problems found, the seq due after this batch)."""
    n = 0
    for i in range(cmds.shape[0]):
        s = cmds[i].seq
        if s > next_seq:
            n = _add(problems, n, B_GAP, s, next_seq, s - 1)
        elif s < next_seq:
            n = _add(problems, n, B_BACK, s, next_seq - 1, 0)
        next_seq = max(next_seq, s + 1)
        if cmds[i].instrument >= instruments:
            n = _add(problems, n, B_INSTRUMENT, s, cmds[i].instrument, instruments)
    ci = 0  # the command the events are at
    answered = False  # whether cmds[ci] has had an event
    for k in range(events.shape[0]):
        e = events[k]
        if e.flags & EVF_DUPLICATE:
            n = _add(problems, n, B_DUPLICATE, e.seq, 0, 0)
        if k > 0:
            p = events[k - 1]
            if e.seq < p.seq or (e.seq == p.seq and e.idx <= p.idx):
                n = _add(problems, n, B_ORDER, e.seq, e.idx, p.seq)
                continue
        while ci < cmds.shape[0] and cmds[ci].seq < e.seq:
            if not answered:
                n = _add(problems, n, B_SILENT, cmds[ci].seq, 0, 0)
            ci += 1
            answered = False
        if ci == cmds.shape[0] or cmds[ci].seq != e.seq:
            n = _add(problems, n, B_FOREIGN, e.seq, k, 0)
            continue
        due = events[k - 1].idx + 1 if answered else 0
        if e.idx != due:
            n = _add(problems, n, B_IDX, e.seq, e.idx, due)
        answered = True
    while ci < cmds.shape[0]:
        if not answered:
            n = _add(problems, n, B_SILENT, cmds[ci].seq, 0, 0)
        ci += 1
        answered = False
    return n, next_seq


def new_problems(size: int) -> np.ndarray:
    return np.zeros((size, 4), np.int64)
