"""The supervisor's restarts, with real child processes: a code a restart cannot cure
leaves the child down, a failing child backs off (and `exchanged status` says so), and
a child that has run long enough is restarted without delay again."""

import json
import sys
import time
from pathlib import Path

import msgspec
import pytest

from daemon import status, supervisor
from daemon.supervisor import RESTART_MIN, Child, Supervisor
from exchange import topology
from exchange.config import DEFAULT_TOML, parse_config
from exchange.exitcodes import EXIT_UNTRUSTED, NO_RESTART


@pytest.fixture
def sup(tmp_path):
    cfg = parse_config(DEFAULT_TOML)
    journal = msgspec.structs.replace(cfg.journal, dir=str(tmp_path / "journal"))
    s = Supervisor(msgspec.structs.replace(cfg, journal=journal), None)
    try:
        yield s
    finally:
        for c in s.children:
            if c.proc is not None:
                c.proc.kill()
                c.proc.wait()


def _exits(code: int, after: float = 0.0) -> list[str]:
    return [sys.executable, "-c", f"import sys, time; time.sleep({after}); sys.exit({code})"]


def _tick_until(sup: Supervisor, done, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [c.history for c in sup.children]
        sup.tick()
        time.sleep(0.05)


def _children_status(sup: Supervisor) -> dict[str, dict]:
    doc = json.loads(Path(topology.supervisor_status_path(sup.config)).read_text())
    return {c["name"]: c for c in doc["children"]}


def test_a_child_that_refused_stays_down_and_the_others_are_restarted(sup):
    sup.children = [Child("s0", _exits(EXIT_UNTRUSTED)), Child("s1", _exits(1))]
    _tick_until(sup, lambda: sup.children[1].restarts >= 2)
    refused, failing = sup.children
    assert refused.history == [EXIT_UNTRUSTED] and refused.refused and refused.proc is None
    assert failing.history[:2] == [1, 1] and not failing.refused
    assert set(NO_RESTART) == {2, 3, 4}
    doc = json.loads(Path(topology.supervisor_status_path(sup.config)).read_text())
    shown = {p["name"]: p for p in status.expected_processes(sup.config, doc, {}, {})}
    assert shown["s0"]["exit_code"] == EXIT_UNTRUSTED
    assert status._restart_note(shown["s0"]) == "  exited 4, not restarted"


def test_the_back_off_doubles_shows_in_status_and_resets_once_healthy(sup, monkeypatch):
    monkeypatch.setattr(supervisor, "STABLE_SECONDS", 1.5)
    child = Child("s0", _exits(1))
    sup.children = [child]
    _tick_until(sup, lambda: child.restarts >= 3)
    assert child.backoff == RESTART_MIN * 8
    down = _children_status(sup)["s0"]
    if child.proc is None:  # between a death and its restart: the wait is shown
        assert down["restart_in"] is not None
    assert down["backoff_seconds"] == RESTART_MIN * 8
    note = status._restart_note({"restart_in": None, "backoff_seconds": 4.0})
    assert note == "  back-off 4 s"
    # the next incarnation runs for longer than STABLE_SECONDS: the back-off is reset
    # while it runs, before it ever dies again
    child.argv = _exits(1, after=60)
    _tick_until(sup, lambda: child.proc is not None, timeout=30)
    _tick_until(sup, lambda: child.backoff == RESTART_MIN, timeout=30)
    assert child.proc.poll() is None
    assert _children_status(sup)["s0"]["backoff_seconds"] is None
