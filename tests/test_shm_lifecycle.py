"""Lifecycle across processes: dead owners are reported, dead ends are replaced, restarts
resume at the shared cursors."""

import os

import numpy as np
import pytest
import shm_helpers as h
from shm_worker import fill, rows_of, stress_dtype

from exchange.records import EVENT_DTYPE
from shm.consumer import Consumer
from shm.errors import HeaderMismatchError, RoleTakenError, SegmentExistsError, StaleSegmentError
from shm.producer import Producer
from shm.ring import adopt_ring, create_ring, inspect_ring

DTYPE = stress_dtype(64)


def records(first: int, n: int) -> np.ndarray:
    batch = np.empty(n, DTYPE)
    fill(rows_of(batch), first)
    return batch


@pytest.mark.timeout(60)
def test_a_ring_left_by_a_dead_owner_is_reported_not_reused():
    with h.namespace() as ns, h.workers() as w:
        w.run("create", ns, "r", "--capacity", 16)
        status = inspect_ring(ns, "r")
        assert not status.owner_alive and status.owner_pid != os.getpid()
        with pytest.raises(StaleSegmentError, match=f"pid {status.owner_pid}, which is gone"):
            create_ring(ns, "r", DTYPE, 16)
        with pytest.raises(StaleSegmentError, match="adopt=True"):
            Producer(ns, "r", DTYPE)
        assert inspect_ring(ns, "r") == status


@pytest.mark.timeout(60)
def test_adopting_a_stale_ring_keeps_its_records():
    with h.namespace() as ns, h.workers() as w:
        w.run("create", ns, "r", "--capacity", 16)
        with Producer(ns, "r", DTYPE, adopt=True) as p:
            p.write(records(0, 5))
        status = inspect_ring(ns, "r")
        assert (status.owner_pid, status.owner_alive, status.depth) == (os.getpid(), True, 5)
        with Consumer(ns, "r", DTYPE) as c:
            assert c.read(16)["seq"].tolist() == list(range(5))


@pytest.mark.timeout(60)
def test_a_restarted_supervisor_adopts_a_stale_ring_for_its_ends():
    with h.namespace() as ns, h.workers() as w:
        w.run("create", ns, "r", "--capacity", 16)
        dead = inspect_ring(ns, "r")
        with pytest.raises(HeaderMismatchError):
            adopt_ring(ns, "r", EVENT_DTYPE)
        assert inspect_ring(ns, "r") == dead
        status = adopt_ring(ns, "r", DTYPE)
        assert (status.owner_pid, status.owner_alive) == (os.getpid(), True)
        with pytest.raises(SegmentExistsError, match="live pid"):
            adopt_ring(ns, "r", DTYPE)
        with Producer(ns, "r", DTYPE) as p, Consumer(ns, "r", DTYPE) as c:
            p.write(records(0, 2))
            assert c.read(4)["seq"].tolist() == [0, 1]


@pytest.mark.timeout(60)
def test_replacing_a_stale_ring_starts_empty():
    with h.namespace() as ns, h.workers() as w:
        w.run("create", ns, "r", "--capacity", 16)
        create_ring(ns, "r", DTYPE, 32, replace_stale=True)
        status = inspect_ring(ns, "r")
        assert (status.capacity, status.published, status.owner_pid) == (32, 0, os.getpid())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("side", ["producer", "consumer"])
def test_a_live_end_is_refused_and_a_killed_one_is_taken_over(side):
    end = Producer if side == "producer" else Consumer
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 16)
        holder = w.start("hold", ns, "r", "--side", side)
        assert holder.stdout.readline() == "attached\n"
        with pytest.raises(RoleTakenError, match=f"live {side}, pid {holder.pid}"):
            end(ns, "r", DTYPE)
        other = Consumer if side == "producer" else Producer
        with other(ns, "r", DTYPE) as peer:
            assert peer.peer_alive()
            holder.kill()
            holder.wait()
            assert not peer.peer_alive()
        with end(ns, "r", DTYPE):
            assert getattr(inspect_ring(ns, "r"), f"{side}_pid") == os.getpid()


@pytest.mark.timeout(90)
def test_a_killed_producer_restarts_at_the_published_cursor():
    total = 1000
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 64)
        first = w.start("produce", ns, "r", "--total", total, "--max-batch", 48)
        h.wait_until(
            lambda: inspect_ring(ns, "r").producer_sleeping,
            timeout=30,
            what="the producer to fill the ring and sleep",
            procs=[first],
        )
        first.kill()
        first.wait()
        assert inspect_ring(ns, "r").published == 64
        second = w.start("produce", ns, "r", "--total", total, "--max-batch", 48)
        consumer = w.start("consume", ns, "r", "--total", total, "--engine", "njit")
        h.finish_all([second, consumer], timeout=60)
        status = inspect_ring(ns, "r")
        assert (status.published, status.released) == (total, total)
