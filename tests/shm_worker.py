"""Subprocess worker for the shm tests: one real process per ring end or counter writer.

    python tests/shm_worker.py <command> [args...]

Stress records are ``stress_dtype(size)``: seq, payload words derived from seq,
and a check word over all of them, so a record that is lost, duplicated,
reordered or torn (half old, half new) fails verification. A failing worker
prints the reason on stderr and exits with status 2.
"""

import argparse
import json
import sys
import time

import numpy as np
from numba import njit

from shm import ring_ops as ops
from shm.atomics import load_acquire
from shm.consumer import Consumer
from shm.counters import CounterBlock
from shm.producer import Producer
from shm.ring import create_ring
from shm.wait import strategy

BAD = 2
MIX_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
SPIN_ROUNDS = 20_000


def stress_dtype(size: int) -> np.dtype:
    return np.dtype([("seq", "<i8"), ("payload", "<i8", (size // 8 - 2,)), ("check", "<i8")])


def rows_of(records: np.ndarray) -> np.ndarray:
    return records.view(np.int64).reshape(len(records), records.dtype.itemsize // 8)


@njit(cache=True)
def _mix(x):
    x = (x ^ (x >> 31)) * MIX_MUL
    return x ^ (x >> 29)


@njit(cache=True)
def fill(rows, first_seq):
    """Write records first_seq, first_seq + 1, ... into the int64 rows."""
    width = rows.shape[1]
    for i in range(rows.shape[0]):
        seq = first_seq + i
        check = _mix(seq)
        rows[i, 0] = seq
        for k in range(1, width - 1):
            word = _mix(seq * 64 + k)
            rows[i, k] = word
            check ^= word
        rows[i, width - 1] = check


@njit(cache=True)
def first_bad(rows, first_seq):
    """Index of the first row that is not record first_seq + index, intact; -1 if none."""
    width = rows.shape[1]
    for i in range(rows.shape[0]):
        seq = first_seq + i
        if rows[i, 0] != seq:
            return i
        check = _mix(seq)
        for k in range(1, width - 1):
            word = rows[i, k]
            if word != _mix(seq * 64 + k):
                return i
            check ^= word
        if rows[i, width - 1] != check:
            return i
    return -1


@njit(cache=True, nogil=True)
def produce_some(hdr, words, end, max_batch, bell_fd):
    """Publish records in random batches until the ring is full or ``end`` is reached."""
    position = load_acquire(hdr, ops.H_PUBLISHED)
    while position < end:
        slot, n = ops.write_span(hdr, min(np.random.randint(1, max_batch + 1), end - position))
        if n == 0:
            break
        fill(words[slot : slot + n], position)
        ops.publish(hdr, n, bell_fd)
        position += n
    return position


@njit(cache=True, nogil=True)
def consume_some(hdr, words, max_batch, bell_fd):
    """Verify and release records in random batches until the ring is empty.

    It spins on an empty ring for a while before giving up, so that it reads
    records the moment their cursor is published: the tightest race against a
    producer that would publish before writing. Returns the cursor of the first
    bad record, or -1 if all were good.
    """
    while True:
        position = load_acquire(hdr, ops.H_RELEASED)
        if ops.spin(hdr, ops.CONSUMER, 1, SPIN_ROUNDS) == 0:
            return -1
        slot, n = ops.read_span(hdr, np.random.randint(1, max_batch + 1))
        bad = first_bad(words[slot : slot + n], position)
        if bad >= 0:
            return position + bad
        ops.release(hdr, n, bell_fd)


def fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(BAD)


def cmd_produce(a) -> None:
    dtype = stress_dtype(a.size)
    rng = np.random.default_rng(a.seed)
    np.random.seed(a.seed)  # numba's generator, for the compiled engine
    with Producer(a.ns, a.ring, dtype) as p:
        while p.cursor < a.total:
            if a.engine == "njit":
                produce_some(p.header, p.words, a.total, a.max_batch, p.wake_fd)
            else:
                _produce_python(p, rng, a.total, a.max_batch)
            if p.cursor < a.total:
                p.wait_writable(1, timeout=1.0)


def _produce_python(p: Producer, rng, total: int, max_batch: int) -> None:
    """One batch through ``write`` or ``claim``/``publish``, chosen at random."""
    position = p.cursor
    size = min(int(rng.integers(1, max_batch + 1)), total - position)
    if rng.random() < 0.5:
        batch = np.empty(size, p.dtype)
        fill(rows_of(batch), position)
        written = p.write(batch)
    else:
        view = p.claim(size)
        fill(rows_of(view), position)
        written = len(view)
        p.publish(written)
    if p.cursor != position + written:
        fail(f"producer wrote {written} records but its cursor moved {p.cursor - position}")


def cmd_consume(a) -> None:
    dtype = stress_dtype(a.size)
    rng = np.random.default_rng(a.seed)
    np.random.seed(a.seed)
    with Consumer(a.ns, a.ring, dtype) as c:
        print(json.dumps({"start": c.cursor}), flush=True)
        while c.cursor < a.total:
            if a.engine == "njit":
                bad = consume_some(c.header, c.words, a.max_batch, c.wake_fd)
                if bad >= 0:
                    fail(f"record at cursor {bad} is wrong: {c.records[bad % c.capacity]}")
            else:
                _consume_python(c, rng, a.max_batch)
            if c.cursor < a.total:
                c.wait(timeout=1.0)


def _consume_python(c: Consumer, rng, max_batch: int) -> None:
    """One batch through ``peek``/partial ``release`` or ``read``, chosen at random."""
    position = c.cursor
    if rng.random() < 0.5:
        view = c.peek(int(rng.integers(1, max_batch + 1)))
        bad = first_bad(rows_of(view), position)
        if bad >= 0:
            fail(f"record at cursor {position + bad} is wrong: {view[bad]}")
        c.release(int(rng.integers(0, len(view) + 1)))
    else:
        got = c.read(int(rng.integers(1, max_batch + 1)))
        bad = first_bad(rows_of(got), position)
        if bad >= 0:
            fail(f"record at cursor {position + bad} is wrong: {got[bad]}")


def cmd_create(a) -> None:
    """Create a ring and exit without unlinking it: a segment left by a dead owner."""
    create_ring(a.ns, a.ring, stress_dtype(a.size), a.capacity)


def cmd_sleep_read(a) -> None:
    """Wait (and so sleep on the doorbell, unless ``--wait spin``) for one record; print
    its seq."""
    with Consumer(a.ns, a.ring, stress_dtype(a.size), wait=strategy(a.wait)) as c:
        n = c.wait(timeout=a.timeout)
        seen_ns = time.monotonic_ns()
        got = c.read(1)
        print(json.dumps({"readable": n, "seq": int(got["seq"][0]), "seen_ns": seen_ns}))


def cmd_sleep_write(a) -> None:
    """Wait (and so sleep on the doorbell, unless ``--wait spin``) for one free slot; write
    record ``seq``."""
    dtype = stress_dtype(a.size)
    with Producer(a.ns, a.ring, dtype, wait=strategy(a.wait)) as p:
        n = p.wait_writable(1, timeout=a.timeout)
        batch = np.empty(1, dtype)
        fill(rows_of(batch), p.cursor)
        print(json.dumps({"writable": n, "written": p.write(batch)}))


def cmd_hold(a) -> None:
    """Attach as ``side`` and wait to be killed: a live holder, then a dead one."""
    end = Producer if a.side == "producer" else Consumer
    with end(a.ns, a.ring, stress_dtype(a.size)):
        print("attached", flush=True)
        time.sleep(3600)


def cmd_count(a) -> None:
    """Update a counter block ``a.n`` times; the test reads it meanwhile."""
    block = CounterBlock(
        a.ns, a.block, counters=["events"], gauges=["pair"], histograms=["latency_ns"]
    )
    print("created", flush=True)
    for i in range(1, a.n + 1):
        block.add("events")
        block.set("pair", i * (2**32 + 1))  # both halves equal: a torn read would show
        block.record("latency_ns", i % 5000)
    block.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume", "create", "sleep-read", "sleep-write", "hold"):
        cmd = sub.add_parser(name)
        cmd.add_argument("ns")
        cmd.add_argument("ring")
        cmd.add_argument("--size", type=int, default=64)
        cmd.add_argument("--total", type=int, default=0)
        cmd.add_argument("--seed", type=int, default=0)
        cmd.add_argument("--max-batch", type=int, default=64)
        cmd.add_argument("--engine", choices=("python", "njit"), default="python")
        cmd.add_argument("--capacity", type=int, default=64)
        cmd.add_argument("--timeout", type=float, default=60.0)
        cmd.add_argument("--side", choices=("producer", "consumer"), default="consumer")
        cmd.add_argument("--wait", choices=("sleep", "spin"), default="sleep")
    count = sub.add_parser("count")
    count.add_argument("ns")
    count.add_argument("block")
    count.add_argument("--n", type=int, required=True)
    a = parser.parse_args()
    globals()["cmd_" + a.command.replace("-", "_")](a)


if __name__ == "__main__":
    main()
