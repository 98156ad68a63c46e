"""Cross-process stress: a producer and a consumer process, random batches, many wraps,
the consumer (and in the long runs the producer too) killed with SIGKILL and restarted.

Every record carries its sequence number and a check word; the consumer verifies
that the record at cursor c is record c, intact, so any lost, duplicated,
reordered or torn record fails the run. The compiled consumer spins on the
cursor and checks each record the moment it is published: the tightest race
against a producer whose stores would become visible out of order.
"""

import json

import pytest
import shm_helpers as h
from shm_worker import stress_dtype

from shm.ring import create_ring, inspect_ring


def kill_points(total: int, consumer_kills: int, producer_kills: int) -> list[tuple[int, str]]:
    """(cursor value, side) pairs, evenly spread, producer kills between consumer kills."""
    points = [(total * (i + 1) // (consumer_kills + 1), "consumer") for i in range(consumer_kills)]
    points += [
        (total * (2 * i + 1) // (2 * producer_kills + 1), "producer") for i in range(producer_kills)
    ]
    return sorted(points)


def run_stress(ns, w, engines, total, size, capacity, kills, timeout):
    create_ring(ns, "stress", stress_dtype(size), capacity)
    common = ("--total", total, "--size", size, "--max-batch", 2 * capacity)

    def start(side, seed):
        command, engine = ("produce", engines[0]) if side == "producer" else ("consume", engines[1])
        return w.start(command, ns, "stress", *common, "--engine", engine, "--seed", seed)

    procs = {"producer": start("producer", 1), "consumer": start("consumer", 2)}
    starts = []  # the cursor each consumer incarnation started from
    for seed, (at, side) in enumerate(kills, start=3):
        cursor = "released" if side == "consumer" else "published"
        h.wait_until(
            lambda at=at, cursor=cursor: getattr(inspect_ring(ns, "stress"), cursor) >= at,
            timeout=timeout,
            what=f"the {cursor} cursor to reach {at}",
            procs=procs.values(),
        )
        procs[side].kill()
        out, err = procs[side].communicate()
        assert procs[side].returncode == -9, f"the {side} ended before its kill: {err}"
        if side == "consumer":
            starts.append(json.loads(out.splitlines()[0])["start"])
        procs[side] = start(side, seed)
    _, out = h.finish_all([procs["producer"], procs["consumer"]], timeout=timeout)
    starts.append(json.loads(out.splitlines()[0])["start"])

    status = inspect_ring(ns, "stress")
    assert (status.published, status.released) == (total, total)
    assert not status.producer_alive and not status.consumer_alive
    # each restarted consumer resumed at the released cursor its predecessor left
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert len(starts) == 1 + sum(side == "consumer" for _, side in kills)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "engines, total",
    [(("python", "python"), 200_000), (("njit", "njit"), 2_000_000), (("python", "njit"), 300_000)],
    ids=["python-python", "njit-njit", "python-njit"],
)
def test_stress_with_consumer_restart(engines, total):
    with h.namespace() as ns, h.workers() as w:
        run_stress(ns, w, engines, total, 64, 1024, kill_points(total, 1, 0), timeout=90)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "engines, total, size, capacity",
    [
        (("njit", "njit"), 50_000_000, 64, 4096),
        (("njit", "njit"), 20_000_000, 128, 256),
        (("python", "njit"), 5_000_000, 64, 1024),
        (("njit", "python"), 3_000_000, 128, 512),
        (("python", "python"), 3_000_000, 64, 64),
    ],
    ids=["njit-njit-64B", "njit-njit-128B", "python-njit", "njit-python", "python-python"],
)
def test_stress_long_with_restarts(engines, total, size, capacity):
    with h.namespace() as ns, h.workers() as w:
        run_stress(ns, w, engines, total, size, capacity, kill_points(total, 3, 2), timeout=800)
