"""Counter blocks and latency histograms: written cheaply by one process, read by any."""

import os

import numpy as np
import pytest
import shm_helpers as h
from numba import njit

from shm.counters import CounterBlock, counter_add, gauge_set
from shm.counters_reader import list_blocks, read_block
from shm.errors import SegmentExistsError, StaleSegmentError
from shm.histogram import LINEAR, N_BUCKETS, bucket_high, bucket_of, hist_record, percentile


@pytest.fixture
def ns():
    with h.namespace() as name:
        yield name


def test_buckets_are_ordered_and_each_value_falls_in_its_bounds():
    values = sorted(
        set(range(300)) | {2**k + d for k in range(5, 40) for d in (-1, 0, 1)} | {2**40 - 1}
    )
    buckets = [bucket_of(v) for v in values]
    assert buckets == sorted(buckets)
    for v, b in zip(values, buckets, strict=True):
        assert v <= bucket_high(b)
        assert b == 0 or v > bucket_high(b - 1)
        assert bucket_high(b) - v <= v // 8  # at most 12.5% wide
    assert [bucket_of(v) for v in range(LINEAR)] == list(range(LINEAR))
    assert bucket_of(2**40) == bucket_of(2**62) == N_BUCKETS - 1
    assert bucket_of(-5) == 0


def test_percentiles_are_upper_bounds_within_an_eighth():
    words = np.zeros(2 + N_BUCKETS, np.int64)
    rng = np.random.default_rng(3)
    values = rng.lognormal(10, 1.5, 100_000).astype(np.int64)
    for v in values:
        hist_record(words, 0, v)
    assert words[0] == len(values) and words[1] == values.sum()
    for q in (0.5, 0.99, 0.999):
        true = int(np.sort(values)[int(np.ceil(q * len(values))) - 1])
        assert true <= percentile(words[2:], q) <= true + true // 8
    assert percentile(np.zeros(N_BUCKETS, np.int64), 0.5) == 0
    with pytest.raises(ValueError, match="quantile"):
        percentile(words[2:], 1.5)


def test_a_block_round_trips_through_the_reader(ns):
    block = CounterBlock(
        ns, "shard-0", counters=["cmds", "events"], gauges=["depth"], histograms=["commit_ns"]
    )
    try:
        block.add("cmds", 3)
        block.add("cmds")
        block.set("depth", -7)
        for v in (5, 1000, 1000, 20_000):
            block.record("commit_ns", v)
        assert list_blocks(ns) == ["shard-0"]
        snap = read_block(ns, "shard-0")
        assert (snap.pid, snap.alive) == (os.getpid(), True)
        assert snap.counters == {"cmds": 4, "events": 0}
        assert snap.gauges == {"depth": -7}
        hist = snap.histograms["commit_ns"]
        assert (hist.count, hist.total, hist.p50) == (4, 22_005, 1023)
        assert hist.p999 == bucket_high(bucket_of(20_000))
    finally:
        block.unlink()
    assert list_blocks(ns) == []


def test_compiled_code_updates_a_block_by_slot(ns):
    @njit
    def hot_loop(words, cmds, depth, lat, n):
        for i in range(n):
            counter_add(words, cmds, 2)
            gauge_set(words, depth, i)
            hist_record(words, lat, i)

    block = CounterBlock(ns, "gw", counters=["cmds"], gauges=["depth"], histograms=["lat"])
    try:
        slots = [block.slot(m) for m in ("cmds", "depth", "lat")]
        hot_loop(block.values, *slots, 1000)
        snap = read_block(ns, "gw")
        assert (snap.counters["cmds"], snap.gauges["depth"]) == (2000, 999)
        assert snap.histograms["lat"].count == 1000
        assert snap.histograms["lat"].total == sum(range(1000))
    finally:
        block.unlink()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"counters": ["Bad"]}, "invalid metric name"),
        ({"counters": ["x" * 49]}, "longer than 48"),
        ({"counters": ["a"], "gauges": ["a"]}, "used twice"),
        ({"histograms": "lat"}, "list of names"),
        ({"gauges": [3]}, "invalid metric name"),
    ],
)
def test_bad_metric_names_are_rejected_and_create_nothing(ns, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CounterBlock(ns, "b", **kwargs)
    assert list_blocks(ns) == []


def test_wrong_kind_or_unknown_metric_changes_nothing(ns):
    block = CounterBlock(ns, "b", counters=["c"], gauges=["g"])
    try:
        with pytest.raises(ValueError, match="'g' is a gauge, not a counter"):
            block.add("g")
        with pytest.raises(ValueError, match="is a counter, not a histogram"):
            block.record("c", 5)
        with pytest.raises(KeyError, match="no metric 'nope'"):
            block.set("nope", 1)
        snap = read_block(ns, "b")
        assert (snap.counters, snap.gauges) == ({"c": 0}, {"g": 0})
        with pytest.raises(SegmentExistsError, match="live pid"):
            CounterBlock(ns, "b", counters=["c"])
    finally:
        block.unlink()


@pytest.mark.timeout(120)
def test_a_block_read_while_another_process_writes_it():
    n = 200_000
    with h.namespace() as ns, h.workers() as w:
        writer = w.start("count", ns, "shard-0", "--n", n)
        assert writer.stdout.readline() == "created\n"
        last_events, last_count, reads = 0, 0, 0
        while writer.poll() is None or reads == 0:
            snap = read_block(ns, "shard-0")
            pair = snap.gauges["pair"]
            assert pair >> 32 == pair & 0xFFFFFFFF  # never half of one store and half of another
            assert snap.counters["events"] >= last_events
            assert snap.histograms["latency_ns"].count >= last_count
            last_events = snap.counters["events"]
            last_count = snap.histograms["latency_ns"].count
            reads += 1
        h.finish(writer, timeout=60)
        snap = read_block(ns, "shard-0")
        hist = snap.histograms["latency_ns"]
        assert snap.counters["events"] == hist.count == int(hist.buckets.sum()) == n
        assert snap.gauges["pair"] == n * (2**32 + 1)
        assert hist.total == sum(i % 5000 for i in range(1, n + 1))
        assert not snap.alive
        with pytest.raises(StaleSegmentError, match="which is gone"):
            CounterBlock(ns, "shard-0", counters=["events"])
        fresh = CounterBlock(ns, "shard-0", counters=["events"], replace_stale=True)
        try:
            assert read_block(ns, "shard-0").counters == {"events": 0}
        finally:
            fresh.close()
