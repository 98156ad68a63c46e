"""Helpers for the shm tests: unique namespaces and worker processes, always cleaned up."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from shm.names import unlink_namespace

WORKER = Path(__file__).with_name("shm_worker.py")


@contextlib.contextmanager
def namespace():
    """A fresh namespace; every file in it is removed on exit, whatever happened."""
    ns = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield ns
    finally:
        unlink_namespace(ns)


class Workers:
    """Starts ``tests/shm_worker.py`` processes and kills whatever is left at the end."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, *args) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, *args, timeout: float = 60) -> str:
        """Run a worker to completion; its stdout, or AssertionError with its stderr."""
        return finish(self.start(*args), timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()


@contextlib.contextmanager
def workers():
    w = Workers()
    try:
        yield w
    finally:
        w.kill_all()


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for a worker; its stdout, or AssertionError with its exit status and stderr."""
    return finish_all([proc], timeout)[0]


def finish_all(procs, timeout: float) -> list[str]:
    """Wait for all workers; their stdouts. Fails as soon as one exits with an error
    (the others, stuck without it, are killed by ``workers()``)."""
    deadline = time.monotonic() + timeout
    outs = {}
    while len(outs) < len(procs):
        for proc in procs:
            if proc not in outs and proc.poll() is not None:
                out, err = proc.communicate()
                assert proc.returncode == 0, (
                    f"worker {proc.args[2:]} exited {proc.returncode}: {err}"
                )
                outs[proc] = out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for workers to finish: {procs}")
        time.sleep(0.005)
    return [outs[proc] for proc in procs]


def wait_until(predicate, timeout: float, what: str, procs=()) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout`` s,
    or as soon as one of ``procs`` has exited (with its status and stderr).

    A liveness bound for cross-process steps, not a speed check: the bounds are
    generous and only a hang reaches them.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(
                    f"worker {proc.args[2:]} exited {proc.returncode} while waiting for "
                    f"{what}: {err}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
