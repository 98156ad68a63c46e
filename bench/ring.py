"""Benchmark of the shared-memory ring: throughput, one-way hand-off latency, idle cost.

    python -m bench.ring [--json] [--repeat N]

Each figure comes from real processes over a real ring (COMMAND_DTYPE records, 80 bytes):

records_per_sec         compiled producer -> compiled consumer, batched, both spinning
python_records_per_sec  Python producer writing batches of commands -> compiled consumer
handoff_p50_ns/p99_ns   one record at a time, the consumer spinning: publish -> seen
idle_cpu_percent        CPU of a consumer process waiting on an idle ring for 2 s
wake_p50_us/max_us      a sleeping consumer: publish -> its wait() returns

Every record is checked by the consumer (its sequence number is in ``seq`` and
``idem_key``), so a fast but wrong ring cannot produce a figure. Each figure is the median
of ``--repeat`` runs.
"""

import argparse
import multiprocessing as mp
import statistics
import sys
import time
import uuid

import numpy as np
import psutil
from numba import njit

from bench.report import emit
from exchange.records import COMMAND_DTYPE
from shm import ring_ops as ops
from shm.atomics import cpu_relax, load_acquire
from shm.clock import monotonic_ns
from shm.consumer import Consumer
from shm.names import unlink_namespace
from shm.producer import Producer
from shm.ring import create_ring, inspect_ring

CAPACITY = 8192
BATCH = 512
THROUGHPUT_RECORDS = 40_000_000
PYTHON_RECORDS = 5_000_000
PYTHON_BATCH = 1024
HANDOFFS = 100_000
HANDOFF_GAP_SPINS = 300  # let the consumer get back to spinning between hand-offs
IDLE_SECONDS = 2.0
WAKES = 30
CHECK_WORD = COMMAND_DTYPE.fields["idem_key"][1] // 8  # set to the seq by both producers


@njit(cache=True, nogil=True)
def produce(hdr, words, total, batch, bell_fd):
    """Publish records 0..total-1 (each word = seq) in batches; return the start time."""
    start = monotonic_ns()
    position = load_acquire(hdr, ops.H_PUBLISHED)
    end = position + total
    while position < end:
        slot, n = ops.write_span(hdr, min(batch, end - position))
        if n == 0:
            cpu_relax()
            continue
        for i in range(n):
            words[slot + i, :] = position + i
        ops.publish(hdr, n, bell_fd)
        position += n
    return start


@njit(cache=True, nogil=True)
def consume(hdr, words, total, batch, bell_fd):
    """Check and release ``total`` records; return (end time, number of bad records)."""
    position = load_acquire(hdr, ops.H_RELEASED)
    end = position + total
    bad = 0
    while position < end:
        slot, n = ops.read_span(hdr, batch)
        if n == 0:
            cpu_relax()
            continue
        for i in range(n):
            if words[slot + i, 0] != position + i or words[slot + i, CHECK_WORD] != position + i:
                bad += 1
        ops.release(hdr, n, bell_fd)
        position += n
    return monotonic_ns(), bad


@njit(cache=True, nogil=True)
def send_one_by_one(hdr, words, count, gap_spins, bell_fd):
    """Publish ``count`` single records stamped with the publish time, each after the
    previous one was released and a short gap."""
    position = load_acquire(hdr, ops.H_PUBLISHED)
    for i in range(count):
        while load_acquire(hdr, ops.H_RELEASED) != position:
            cpu_relax()
        for _ in range(gap_spins):
            cpu_relax()
        slot = position & (hdr[ops.H_CAPACITY] - 1)
        words[slot, 1] = i
        words[slot, 0] = monotonic_ns()
        ops.publish(hdr, 1, bell_fd)
        position += 1


@njit(cache=True, nogil=True)
def receive_one_by_one(hdr, words, count, bell_fd):
    """Spin for ``count`` records; return each one's publish-to-seen time in ns."""
    latencies = np.empty(count, np.int64)
    for i in range(count):
        while ops.readable(hdr) == 0:
            cpu_relax()
        seen = monotonic_ns()
        slot, _ = ops.read_span(hdr, 1)
        if words[slot, 1] != i:
            latencies[i] = -1
        else:
            latencies[i] = seen - words[slot, 0]
        ops.release(hdr, 1, bell_fd)
    return latencies


def _compiled_producer(ns, total, batch, results):
    with Producer(ns, "bench", COMMAND_DTYPE) as p:
        results.put(("start", produce(p.header, p.words, total, batch, p.wake_fd)))


def _python_producer(ns, total, batch_size, results):
    batch = np.zeros(batch_size, COMMAND_DTYPE)
    base = np.arange(batch_size)
    with Producer(ns, "bench", COMMAND_DTYPE) as p:
        start = time.monotonic_ns()
        position = 0
        while position < total:
            n = min(batch_size, total - position)
            batch["seq"] = base + position
            batch["idem_key"] = batch["seq"]
            written = p.write(batch[:n])
            while written < n:
                p.wait_writable(1)
                written += p.write(batch[written:n])
            position += n
        results.put(("start", start))


def _compiled_consumer(ns, total, batch, results):
    with Consumer(ns, "bench", COMMAND_DTYPE) as c:
        results.put(("attached", 0))
        results.put(("end", consume(c.header, c.words, total, batch, c.wake_fd)))


def _one_by_one_producer(ns, count, results):
    with Producer(ns, "bench", COMMAND_DTYPE) as p:
        send_one_by_one(p.header, p.words, count, HANDOFF_GAP_SPINS, p.wake_fd)
        results.put(("sent", count))


def _one_by_one_consumer(ns, count, results):
    with Consumer(ns, "bench", COMMAND_DTYPE) as c:
        results.put(("attached", 0))
        results.put(("latencies", receive_one_by_one(c.header, c.words, count, c.wake_fd)))


def _sleepy_consumer(ns, wakes, results):
    """Wait the way a shard does (spin, back off, doorbell) and time each wake-up."""
    with Consumer(ns, "bench", COMMAND_DTYPE) as c:
        c.wait()  # the warm-up record: loads the compiled functions before timing
        c.read(1)
        results.put(("attached", 0))
        latencies = []
        for _ in range(wakes):
            c.wait()
            seen = time.monotonic_ns()
            latencies.append(seen - int(c.read(1)["seq"][0]))
        results.put(("latencies", latencies))


class Run:
    """One ring in a fresh namespace and the processes of one measurement."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.ns = f"bench-{uuid.uuid4().hex[:8]}"
        self.results = ctx.Queue()
        self.pending = {}
        self.procs = []
        create_ring(self.ns, "bench", COMMAND_DTYPE, CAPACITY)

    def start(self, target, *args):
        proc = self.ctx.Process(target=target, args=(self.ns, *args, self.results), daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def get(self, tag, timeout=300):
        """The value a process sent under ``tag`` (messages of other tags wait their turn)."""
        while tag not in self.pending:
            got, value = self.results.get(timeout=timeout)
            self.pending[got] = value
        return self.pending.pop(tag)

    def close(self):
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        unlink_namespace(self.ns)


def measure(ctx, body):
    run = Run(ctx)
    try:
        return body(run)
    finally:
        run.close()


def throughput(run, producer, total, batch):
    run.start(_compiled_consumer, total, BATCH)
    run.get("attached")
    run.start(producer, total, batch)
    start = run.get("start")
    end, bad = run.get("end")
    if bad:
        raise RuntimeError(f"consumer saw {bad} bad records")
    return total / ((end - start) / 1e9)


def handoff(run):
    run.start(_one_by_one_consumer, HANDOFFS)
    run.get("attached")
    run.start(_one_by_one_producer, HANDOFFS)
    latencies = run.get("latencies")
    if (latencies < 0).any():
        raise RuntimeError("hand-off records arrived out of order")
    run.get("sent")
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def idle_and_wake(run):
    proc = run.start(_sleepy_consumer, WAKES)
    record = np.zeros(1, COMMAND_DTYPE)
    with Producer(run.ns, "bench", COMMAND_DTYPE) as p:
        p.write(record)
        run.get("attached")
        wait_sleeping(run.ns)
        ps = psutil.Process(proc.pid)
        before, t0 = ps.cpu_times(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        after, t1 = ps.cpu_times(), time.monotonic()
        busy = (after.user - before.user) + (after.system - before.system)
        cpu = busy / (t1 - t0) * 100
        for _ in range(WAKES):
            wait_sleeping(run.ns)
            time.sleep(0.01)
            record["seq"] = time.monotonic_ns()
            p.write(record)
        latencies = run.get("latencies")
    return cpu, statistics.median(latencies) / 1e3, max(latencies) / 1e3


def wait_sleeping(ns):
    deadline = time.monotonic() + 30
    while not inspect_ring(ns, "bench").consumer_sleeping:
        if time.monotonic() > deadline:
            raise RuntimeError("the consumer never went to sleep")
        time.sleep(0.001)


def run_once(ctx):
    handoff_p50, handoff_p99 = measure(ctx, handoff)
    idle_cpu, wake_p50, wake_max = measure(ctx, idle_and_wake)
    return {
        "records_per_sec": measure(
            ctx, lambda r: throughput(r, _compiled_producer, THROUGHPUT_RECORDS, BATCH)
        ),
        "python_records_per_sec": measure(
            ctx, lambda r: throughput(r, _python_producer, PYTHON_RECORDS, PYTHON_BATCH)
        ),
        "handoff_p50_ns": handoff_p50,
        "handoff_p99_ns": handoff_p99,
        "idle_cpu_percent": idle_cpu,
        "wake_p50_us": wake_p50,
        "wake_max_us": wake_max,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--repeat", type=int, default=3, help="runs; each figure is the median")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    ctx = mp.get_context("spawn")
    runs = [run_once(ctx) for _ in range(args.repeat)]
    result = {"bench": "ring", "record_bytes": COMMAND_DTYPE.itemsize, "capacity": CAPACITY}
    result |= {"batch": BATCH, "python_batch": PYTHON_BATCH, "repeat": args.repeat}
    for key in runs[0]:
        result[key] = round(statistics.median(run[key] for run in runs), 3)
    emit(result, args.json)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
