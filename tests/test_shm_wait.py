"""The wait strategies (``shm.wait``): a spinning end waits without ever announcing a
sleep, so the other side never rings its doorbell; a sleeping one is counted."""

import json
import os
import time

import numpy as np
import pytest
import shm_helpers as h
from shm_worker import fill, rows_of, stress_dtype

from shm.consumer import Consumer
from shm.producer import Producer
from shm.ring import create_ring, inspect_ring, ring_paths
from shm.wait import SLEEPING, SPINNING, strategy

DTYPE = stress_dtype(64)


def records(first: int, n: int) -> np.ndarray:
    batch = np.empty(n, DTYPE)
    fill(rows_of(batch), first)
    return batch


def bell_bytes(path: str) -> int:
    """What was written to a doorbell and never drained (reads it off)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return len(os.read(fd, 4096))
    except BlockingIOError:
        return 0
    finally:
        os.close(fd)


def test_strategies_by_their_config_names():
    assert strategy("sleep") is SLEEPING and not SLEEPING.spins
    assert strategy("spin") is SPINNING and SPINNING.spins
    with pytest.raises(ValueError, match="no wait strategy 'yield'"):
        strategy("yield")


def test_a_spinning_wait_returns_what_is_there_and_times_out_without_announcing():
    with h.namespace() as ns:
        create_ring(ns, "r", DTYPE, 16)
        with (
            Producer(ns, "r", DTYPE, wait=SPINNING) as p,
            Consumer(ns, "r", DTYPE, wait=SPINNING) as c,
        ):
            t0 = time.monotonic()
            assert c.wait(timeout=0.05) == 0
            assert 0.05 <= time.monotonic() - t0 < 5
            assert c.wait(timeout=0) == 0
            p.write(records(0, 3))
            assert c.wait(timeout=0.05) == 3
            assert c.wait() == 3
            assert p.wait_writable(13, timeout=0.05) == 13
            assert p.wait_writable(14, timeout=0.05) == 13
            status = inspect_ring(ns, "r")
            assert (status.consumer_sleeps, status.producer_sleeps) == (0, 0)
            assert (status.data_rings, status.space_rings) == (0, 0)


@pytest.mark.timeout(60)
def test_a_spinning_consumer_process_sees_a_write_and_is_never_rung():
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 16)
        spinner = w.start("sleep-read", ns, "r", "--timeout", 3600, "--wait", "spin")
        h.wait_until(
            lambda: inspect_ring(ns, "r").consumer_alive,
            timeout=30,
            what="the consumer to attach",
            procs=[spinner],
        )
        time.sleep(0.3)  # spinning by now (a sleeper would have announced its sleep)
        with Producer(ns, "r", DTYPE) as p:
            assert p.write(records(0, 1)) == 1
            out = json.loads(h.finish(spinner, timeout=30))
        assert out["readable"] == 1 and out["seq"] == 0
        status = inspect_ring(ns, "r")
        assert status.released == 1
        assert (status.consumer_sleeps, status.data_rings) == (0, 0)
        assert bell_bytes(ring_paths(ns, "r").data_bell) == 0


@pytest.mark.timeout(60)
def test_a_spinning_producer_process_sees_a_release_and_is_never_rung():
    with h.namespace() as ns, h.workers() as w:
        create_ring(ns, "r", DTYPE, 4)
        with Producer(ns, "r", DTYPE) as p:
            assert p.write(records(0, 4)) == 4
        spinner = w.start("sleep-write", ns, "r", "--timeout", 3600, "--wait", "spin")
        h.wait_until(
            lambda: inspect_ring(ns, "r").producer_alive,
            timeout=30,
            what="the producer to attach",
            procs=[spinner],
        )
        time.sleep(0.3)
        with Consumer(ns, "r", DTYPE) as c:
            assert c.read(1)["seq"].tolist() == [0]
            out = json.loads(h.finish(spinner, timeout=30))
            assert out == {"writable": 1, "written": 1}
        status = inspect_ring(ns, "r")
        assert (status.producer_sleeps, status.space_rings) == (0, 0)
        assert bell_bytes(ring_paths(ns, "r").space_bell) == 0
