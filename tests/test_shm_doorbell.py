"""Waiting: a sleeping end is woken by the other side's doorbell, and only then rung."""

import json
import select

import numpy as np
import pytest
import shm_helpers as h
import zmq
from shm_worker import fill, rows_of, stress_dtype

from shm import ring_ops as ops
from shm.consumer import Consumer
from shm.producer import Producer
from shm.ring import create_ring, inspect_ring

DTYPE = stress_dtype(64)


def records(first: int, n: int) -> np.ndarray:
    batch = np.empty(n, DTYPE)
    fill(rows_of(batch), first)
    return batch


@pytest.mark.timeout(60)
def test_a_sleeping_consumer_process_is_woken_by_a_write():
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 16)
        sleeper = w.start("sleep-read", ns, "r", "--timeout", 3600)
        h.wait_until(
            lambda: inspect_ring(ns, "r").consumer_sleeping,
            timeout=30,
            what="the consumer to announce its sleep",
            procs=[sleeper],
        )
        with Producer(ns, "r", DTYPE) as p:
            assert p.write(records(0, 1)) == 1
            out = json.loads(h.finish(sleeper, timeout=30))
        assert out["readable"] == 1 and out["seq"] == 0
        status = inspect_ring(ns, "r")
        assert status.released == 1 and not status.consumer_sleeping
        # the counts test_shm_wait's spinning ends hold at 0 do count (its control)
        assert status.consumer_sleeps >= 1 and status.data_rings == 1
        assert (status.producer_sleeps, status.space_rings) == (0, 0)


@pytest.mark.timeout(60)
def test_a_producer_process_waiting_for_space_is_woken_by_a_release():
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 4)
        with Producer(ns, "r", DTYPE) as p:
            assert p.write(records(0, 4)) == 4
        sleeper = w.start("sleep-write", ns, "r", "--timeout", 3600)
        h.wait_until(
            lambda: inspect_ring(ns, "r").producer_sleeping,
            timeout=30,
            what="the producer to announce its sleep",
            procs=[sleeper],
        )
        with Consumer(ns, "r", DTYPE) as c:
            assert c.read(1)["seq"].tolist() == [0]
            out = json.loads(h.finish(sleeper, timeout=30))
            assert out == {"writable": 1, "written": 1}
            assert c.read(8)["seq"].tolist() == [1, 2, 3, 4]


def test_the_doorbell_fd_works_in_a_zmq_poller_and_rings_only_when_announced():
    with h.namespace() as ns:
        create_ring(ns, "r", DTYPE, 16)
        with Producer(ns, "r", DTYPE) as p, Consumer(ns, "r", DTYPE) as c:
            poller = zmq.Poller()
            poller.register(c.fileno(), zmq.POLLIN)
            p.write(records(0, 1))  # the consumer has not announced a sleep: no ring
            assert poller.poll(0) == []
            assert c.prepare_sleep() == 1  # data is there: do not sleep
            c.finish_sleep()
            c.read(1)
            assert c.prepare_sleep() == 0
            assert poller.poll(0) == []
            p.write(records(1, 1))
            assert poller.poll(10_000) == [(c.fileno(), zmq.POLLIN)]
            p.write(records(2, 1))  # one ring per announced sleep
            c.finish_sleep()
            assert poller.poll(0) == []
            assert c.read(8)["seq"].tolist() == [1, 2]


def test_compiled_publish_rings_only_a_sleeping_consumer():
    with h.namespace() as ns:
        create_ring(ns, "r", DTYPE, 16)
        with Producer(ns, "r", DTYPE) as p, Consumer(ns, "r", DTYPE) as c:
            assert not ops.publish(p.header, 0, p.wake_fd)
            assert select.select([c], [], [], 0)[0] == []
            assert ops.sleep_begin(c.header, ops.CONSUMER) == 0
            assert ops.publish(p.header, 0, p.wake_fd)
            assert not ops.publish(p.header, 0, p.wake_fd)
            assert select.select([c], [], [], 0)[0] == [c]
            c.finish_sleep()
            assert select.select([c], [], [], 0)[0] == []


def test_wait_returns_what_is_there_and_times_out_when_idle():
    with h.namespace() as ns:
        create_ring(ns, "r", DTYPE, 16)
        with Producer(ns, "r", DTYPE) as p, Consumer(ns, "r", DTYPE) as c:
            assert c.wait(timeout=0.05) == 0
            assert not inspect_ring(ns, "r").consumer_sleeping
            p.write(records(0, 3))
            assert c.wait(timeout=0) == 3
            assert c.wait() == 3
            assert p.wait_writable(13, timeout=0.05) == 13
            assert p.wait_writable(14, timeout=0.05) == 13
            assert not inspect_ring(ns, "r").producer_sleeping
