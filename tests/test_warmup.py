"""Warm-ups run every compiled path once and leave nothing behind."""

import glob
import os
import tempfile

from exchange.engine import warm_up
from shm.warmup import warm_up as warm_up_rings


def test_engine_warm_up_leaves_no_journal_behind():
    pattern = os.path.join(tempfile.gettempdir(), "exchange-warm-up-*")
    before = set(glob.glob(pattern))
    warm_up()
    assert set(glob.glob(pattern)) <= before


def test_ring_warm_up_leaves_no_segment():
    before = set(os.listdir("/dev/shm"))
    warm_up_rings()
    assert set(os.listdir("/dev/shm")) <= before
