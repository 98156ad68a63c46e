"""Warm-ups run every compiled path once and leave nothing behind."""

import glob
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from exchange.engine import warm_up
from shm.names import PREFIX, shm_dir
from shm.warmup import sweep
from shm.warmup import warm_up as warm_up_rings


def test_engine_warm_up_leaves_no_journal_behind(tmp_path, monkeypatch):
    # a temporary directory of its own: a shard starting elsewhere on the machine
    # warms up too, in the shared one
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    warm_up()
    assert glob.glob(os.path.join(tmp_path, "exchange-warm-up-*")) == []


def test_ring_warm_up_leaves_no_segment():
    before = set(os.listdir("/dev/shm"))
    warm_up_rings()
    assert set(os.listdir("/dev/shm")) <= before


# warm_up, with the throwaway ring's creation announcing its namespace and then hanging
_HANG_AFTER_CREATE = """
import time
import shm.warmup as w

real = w.create_ring

def create_and_hang(ns, *args, **kwargs):
    real(ns, *args, **kwargs)
    print(ns, flush=True)
    time.sleep(600)

w.create_ring = create_and_hang
w.warm_up()
"""


@pytest.mark.timeout(120)
def test_a_warm_up_killed_midway_is_swept_by_the_next_one():
    child = subprocess.Popen(
        [sys.executable, "-c", _HANG_AFTER_CREATE], stdout=subprocess.PIPE, text=True
    )
    try:
        ns = child.stdout.readline().strip()
        assert ns, "the child died before its warm-up made its ring"

        def left() -> list[str]:
            return [e for e in os.listdir(shm_dir()) if e.startswith(f"{PREFIX}.{ns}.")]

        assert left()
        warm_up_rings()
        assert left(), "a warm-up swept the ring of a process still warming up"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert left()  # what a SIGKILL during the warm-up leaves
        warm_up_rings()
        assert left() == []
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stdout.close()
        sweep()
