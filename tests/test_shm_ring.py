"""The ring API within one process: order, wrap-around, full ring, views, bad input, headers."""

import os
import time

import numpy as np
import pytest
import shm_helpers as h

from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.shard import ShardLoop, StopFlag
from exchange.topology import request_ring
from shm import ring_ops as ops
from shm.consumer import Consumer
from shm.errors import HeaderMismatchError, RoleTakenError, SegmentExistsError, SegmentNotFoundError
from shm.names import shm_dir
from shm.producer import Producer
from shm.ring import create_ring, inspect_ring, list_rings, ring_paths, unlink_ring


@pytest.fixture
def ns():
    with h.namespace() as name:
        yield name


def commands(first: int, n: int) -> np.ndarray:
    batch = np.zeros(n, COMMAND_DTYPE)
    batch["seq"] = np.arange(first, first + n)
    batch["qty"] = 10 * batch["seq"]
    return batch


def namespace_files(ns: str) -> list[str]:
    return sorted(f for f in os.listdir(shm_dir()) if f.startswith(f"exch.{ns}."))


def test_records_come_out_in_order_across_many_wraps(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        sent, got = 0, []
        for size in [3, 5, 7, 1, 8, 2, 6, 4] * 20:
            sent += p.write(commands(sent, size))
            got.append(c.read(size))
        got = np.concatenate(got)
        assert sent > 10 * 8
        assert got["seq"].tolist() == list(range(sent))
        assert (got["qty"] == 10 * got["seq"]).all()


def test_full_ring_takes_a_prefix_never_blocks_and_loses_nothing(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        assert p.writable() == 8
        assert p.write(commands(0, 12)) == 8
        assert p.writable() == 0
        assert p.write(commands(8, 4)) == 0
        assert p.claim(4).shape == (0,)
        assert c.readable() == 8
        assert c.read(100)["seq"].tolist() == list(range(8))
        assert p.write(commands(8, 4)) == 4
        assert c.read(100)["seq"].tolist() == [8, 9, 10, 11]
        assert inspect_ring(ns, "r").depth == 0


def test_peek_is_an_in_place_view_that_stops_at_the_wrap(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        p.write(commands(0, 6))
        c.release(6)
        p.write(commands(6, 6))  # slots 6, 7, then 0..3
        view = c.peek(10)
        assert view["seq"].tolist() == [6, 7]
        assert np.shares_memory(view, c.records)
        with pytest.raises(ValueError):
            view["qty"] = 0
        c.release(1)
        assert c.peek(10)["seq"].tolist() == [7]
        c.release(1)
        assert c.peek(3)["seq"].tolist() == [8, 9, 10]
        assert c.readable() == 4


def test_a_new_producer_sees_what_an_earlier_one_left_unconsumed(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Consumer(ns, "r", COMMAND_DTYPE) as c:
        with Producer(ns, "r", COMMAND_DTYPE) as p:
            p.write(commands(0, 6))
            c.release(5)
            p.write(commands(6, 6))  # slots 6, 7, then 0..3: across the wrap
            c.peek(2)  # looked at, not released: still unconsumed
        with Producer(ns, "r", COMMAND_DTYPE) as again:
            left = again.unconsumed()
            assert left["seq"].tolist() == [5, 6, 7, 8, 9, 10, 11]
            assert not np.shares_memory(left, again.records)  # a copy
            c.release(7)
            assert again.unconsumed().shape == (0,)


def test_claim_fills_slots_in_place_and_publish_exposes_them(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        view = p.claim(5)
        view[:] = commands(0, 5)
        assert c.readable() == 0  # nothing is visible before publish
        p.publish(5)
        assert c.read(5)["seq"].tolist() == list(range(5))
        view = p.claim(10)
        assert len(view) == 3  # up to the end of the slot array
        view[:] = commands(5, 3)
        p.publish(3)
        assert p.cursor == 8
        assert c.read(8)["seq"].tolist() == [5, 6, 7]
        assert c.cursor == 8


def test_event_records_of_128_bytes_round_trip_byte_for_byte(ns):
    create_ring(ns, "events", EVENT_DTYPE, 16)
    rng = np.random.default_rng(7)
    sent = np.frombuffer(rng.bytes(40 * EVENT_DTYPE.itemsize), EVENT_DTYPE)
    with Producer(ns, "events", EVENT_DTYPE) as p, Consumer(ns, "events", EVENT_DTYPE) as c:
        got, i = [], 0
        while i < len(sent):
            i += p.write(sent[i : i + 11])
            got.append(c.read(7))
        got.append(c.read(16))
    assert np.concatenate(got).tobytes() == sent.tobytes()


def test_bad_input_raises_and_changes_nothing(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        p.write(commands(0, 3))
        before = inspect_ring(ns, "r")
        with pytest.raises(ValueError, match="dtype"):
            p.write(np.zeros(2, EVENT_DTYPE))
        with pytest.raises(ValueError, match="1-d"):
            p.write(commands(0, 4).reshape(2, 2))
        with pytest.raises(ValueError, match="free slots"):
            p.publish(6)
        with pytest.raises(ValueError, match="readable"):
            c.release(4)
        for call in (p.publish, p.claim, c.peek, c.release, c.read, p.wait_writable):
            with pytest.raises(ValueError, match="non-negative int"):
                call(-1)
        with pytest.raises(ValueError, match="non-negative int"):
            c.peek("3")
        with pytest.raises(ValueError, match="can never succeed"):
            p.wait_writable(9)
        assert inspect_ring(ns, "r") == before
        assert c.read(8)["seq"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "dtype, capacity, message",
    [
        (COMMAND_DTYPE, 12, "not a power of two"),
        (COMMAND_DTYPE, 1, "capacity"),
        (COMMAND_DTYPE, 2**31, "capacity"),
        (np.dtype([("a", "<i8")] * 1 + [("b", "V44")]), 8, "multiple of 16"),
        (np.dtype([("o", "O"), ("pad", "V56")]), 8, "Python objects"),
        ("not a dtype", 8, "invalid record dtype"),
    ],
)
def test_create_rejects_bad_layouts_and_creates_nothing(ns, dtype, capacity, message):
    with pytest.raises(ValueError, match=message):
        create_ring(ns, "r", dtype, capacity)
    assert namespace_files(ns) == []


@pytest.mark.parametrize("name", ["", "a.b", "x" * 65, "sp ace", "../etc"])
def test_bad_names_are_rejected(ns, name):
    with pytest.raises(ValueError, match="invalid name"):
        create_ring(ns, name, COMMAND_DTYPE, 8)
    with pytest.raises(ValueError, match="invalid namespace"):
        create_ring(name, "r", COMMAND_DTYPE, 8)
    assert namespace_files(ns) == []


def test_create_refuses_a_ring_whose_owner_is_alive(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with pytest.raises(SegmentExistsError, match=f"live pid {os.getpid()}"):
        create_ring(ns, "r", COMMAND_DTYPE, 8, replace_stale=True)


def test_attach_checks_record_size_and_layout(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with pytest.raises(HeaderMismatchError, match="80-byte records; the caller expects 128"):
        Consumer(ns, "r", EVENT_DTYPE)
    same_size = np.dtype([("x", "<i8", (COMMAND_DTYPE.itemsize // 8,))])
    with pytest.raises(HeaderMismatchError, match="another layout"):
        Producer(ns, "r", same_size)
    with pytest.raises(SegmentNotFoundError):
        Consumer(ns, "missing", COMMAND_DTYPE)
    status = inspect_ring(ns, "r")
    assert (status.producer_pid, status.consumer_pid) == (0, 0)


@pytest.mark.parametrize(
    "word, value, message",
    [
        (ops.H_VERSION, 99, "layout version 99"),
        (ops.H_MAGIC, 12345, "not a ring"),
        (ops.H_CAPACITY, 12, "corrupt header"),
    ],
)
def test_attach_refuses_a_foreign_or_damaged_header(ns, word, value, message):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    header = np.memmap(ring_paths(ns, "r").segment, np.int64, "r+", shape=(ops.HEADER_WORDS,))
    header[word] = value
    header.flush()
    del header
    with pytest.raises(HeaderMismatchError, match=message):
        Producer(ns, "r", COMMAND_DTYPE)
    with pytest.raises(HeaderMismatchError, match=message):
        inspect_ring(ns, "r")


def test_one_holder_per_side_and_close_gives_the_side_up(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    p = Producer(ns, "r", COMMAND_DTYPE)
    with pytest.raises(RoleTakenError, match="already holds the producer side"):
        Producer(ns, "r", COMMAND_DTYPE)
    assert inspect_ring(ns, "r").producer_pid == os.getpid()
    p.close()
    p.close()
    assert inspect_ring(ns, "r").producer_pid == 0
    with Producer(ns, "r", COMMAND_DTYPE) as again:
        assert again.write(commands(0, 1)) == 1


def test_list_inspect_and_unlink(ns):
    create_ring(ns, "b", COMMAND_DTYPE, 8)
    create_ring(ns, "a", EVENT_DTYPE, 16)
    assert list_rings(ns) == ["a", "b"]
    status = inspect_ring(ns, "a")
    assert (status.record_size, status.capacity) == (128, 16)
    assert (status.owner_pid, status.owner_alive) == (os.getpid(), True)
    with Producer(ns, "b", COMMAND_DTYPE) as p, Consumer(ns, "b", COMMAND_DTYPE) as c:
        p.write(commands(0, 5))
        c.release(2)
        status = inspect_ring(ns, "b")
        assert (status.published, status.released, status.depth) == (5, 2, 3)
        assert status.producer_alive and status.consumer_alive
        assert unlink_ring(ns, "b")
        assert not unlink_ring(ns, "b")
        # the ends keep their mapping: records already in flight are not lost
        assert p.write(commands(5, 1)) == 1
        assert c.read(8)["seq"].tolist() == [2, 3, 4, 5]
    assert list_rings(ns) == ["a"]
    unlink_ring(ns, "a")
    assert namespace_files(ns) == []


def test_a_ring_made_again_under_a_repeating_clock_is_another_incarnation(ns, monkeypatch):
    """A clock that repeats (a reboot without a clock source) must not make a new request
    ring look like the old one: the shard would skip into it by the old one's position."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    name = request_ring("s0")
    keys, rings = [], []
    for _ in range(2):
        create_ring(ns, name, COMMAND_DTYPE, 8)
        with Consumer(ns, name, COMMAND_DTYPE) as c:
            # the loop's position key is all this reads of it; no engine, no event ring
            keys.append(ShardLoop(None, c, None, ns, StopFlag()).consumed_key)
        rings.append(inspect_ring(ns, name))
        unlink_ring(ns, name)
    assert keys[0] != keys[1]
    assert rings[0].incarnation != rings[1].incarnation
    assert keys[1] == f"{name}@{rings[1].incarnation}"


def test_a_consumer_that_leaves_waits_out_what_the_producer_writes_unasked(ns):
    """``Producer.unasked`` / ``Consumer.leave``: records a producer decides to write
    because a consumer reads are read by it, or never written (a shard's own commands
    against a gateway stopping)."""
    import threading

    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with Producer(ns, "r", COMMAND_DTYPE) as p, Consumer(ns, "r", COMMAND_DTYPE) as c:
        decided = threading.Event()

        def tick():
            with p.unasked() as reading:
                assert reading
                decided.set()
                time.sleep(0.2)  # journaling what it decided, say
                p.write(commands(1, 2))

        writer = threading.Thread(target=tick)
        writer.start()
        assert decided.wait(5)
        assert c.leave(timeout=5)  # returns once the records are in the ring
        assert c.read(8)["seq"].tolist() == [1, 2]
        writer.join()
        assert not p.peer_alive()  # gone for the producer: it decides nothing more
        with p.unasked() as reading:
            assert not reading
        c.close()


def test_a_leave_gives_up_on_a_producer_that_never_finishes(ns):
    create_ring(ns, "r", COMMAND_DTYPE, 8)
    with (
        Producer(ns, "r", COMMAND_DTYPE) as p,
        Consumer(ns, "r", COMMAND_DTYPE) as c,
        p.unasked(),
    ):
        t0 = time.monotonic()
        assert not c.leave(timeout=0.1)
        assert time.monotonic() - t0 < 2
