"""The gateway's I/O loops (the two sleeping ones and the spinning one) end on a signal
and on a failed turn, whatever state they are in (each in its own process: a loop that
wedged would take the test run with it)."""

import signal
import subprocess
import sys
import time

import pytest
from gateway_harness import REPO

# What the loops use of a Gateway and a ZapHandler, in a process that installs the flag
# handler gateway.server installs; the next tick an hour away, so nothing but a signal
# or the failure wakes a loop that went to sleep.
SCRIPT = """
import signal, sys, time
import zmq
from gateway.loops import LOOPS, run_spin

loop, mode = sys.argv[1:]
ctx = zmq.Context()

class Zap:
    socket = ctx.socket(zmq.REP)
    def handle(self):
        pass

class Gateway:
    router = ctx.socket(zmq.ROUTER)
    links = []
    stopping = False
    ticks = 0
    clock = staticmethod(time.monotonic)
    next_tick = time.monotonic() + 3600
    def step(self):
        if mode == "fail":
            raise RuntimeError("a bug in a turn")
        return 0

gw = Gateway()
def stop(signum, frame):
    gw.stopping = True
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
(run_spin if loop == "spin" else LOOPS[loop])(gw, Zap())
print("returned", flush=True)
"""


def _start(loop: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, loop, mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "ready\n"
    return proc


def _finish(proc: subprocess.Popen, seconds: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the loop was still running after {seconds} s:\n{err}") from None
    return proc.returncode, out, err


@pytest.mark.parametrize("loop", ["asyncio", "poll", "spin"])
def test_sigterm_ends_a_loop_asleep_with_no_tick_due(loop):
    proc = _start(loop, "sleep")
    try:
        time.sleep(0.5)  # asleep by now
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (code, out) == (0, "returned\n"), err


@pytest.mark.parametrize("loop", ["asyncio", "poll", "spin"])
def test_an_exception_in_a_turn_ends_the_loop_and_reaches_its_caller(loop):
    proc = _start(loop, "fail")
    try:
        code, out, err = _finish(proc, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1 and out == "" and "RuntimeError: a bug in a turn" in err
