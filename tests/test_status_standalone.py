"""`exchanged status` and `exch top` without a supervisor: the processes started the way
the systemd units start them (`exchanged run --role rings|shard|gateway`), found by
their counter blocks and the rings' headers."""

import json
import os

import pytest
from daemon_harness import Daemon
from test_systemd_roles import Units

from daemon import cli
from daemon.status import STANDALONE, expected_processes
from exchange.config import DEFAULT_TOML, parse_config
from gateway.counters import BLOCK
from shm.counters_reader import list_blocks
from tools.top import frame


@pytest.fixture
def units(tmp_path):
    daemon = Daemon(tmp_path)  # for its config; nothing is started by it
    u = Units(daemon)
    try:
        yield u
    finally:
        u.close()
        daemon.close()


def status(units: Units, capsys, *, as_json: bool = True) -> tuple[int, dict | str]:
    argv = ["status", "--config", str(units.daemon.path)] + (["--json"] if as_json else [])
    code = cli.main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out) if as_json else out


def by_name(doc: dict) -> dict:
    return {p["name"]: p for p in doc["expected"]}


@pytest.mark.timeout(180)
def test_status_tells_which_unit_processes_run(units, capsys):
    ns = units.daemon.ns
    code, doc = status(units, capsys)
    assert code == 1 and doc["mode"] is None and not doc["running"]
    assert [(p["name"], p["state"], p["pid"]) for p in doc["expected"]] == [
        ("rings", "down", None),
        ("s0", "down", None),
        ("s1", "down", None),
        ("gateway", "down", None),
    ]

    procs = {"rings": units.start("rings", "--role", "rings")}
    assert units.notified() == "READY=1"
    for shard in ("s0", "s1"):
        procs[shard] = units.start(shard, "--role", "shard", "--name", shard)
    procs["gateway"] = units.start("gateway", "--role", "gateway")
    units.wait_log("gateway", '"msg": "serving"')
    for shard in ("s0", "s1"):
        units.wait_log(shard, '"msg": "running"')

    code, doc = status(units, capsys)
    assert code == 0 and doc["running"] and doc["all_up"], doc["expected"]
    assert doc["mode"] == STANDALONE and doc["supervisor"] is None
    assert {n: (p["state"], p["pid"]) for n, p in by_name(doc).items()} == {
        n: ("up", proc.pid) for n, proc in procs.items()
    }
    assert all(p["up_seconds"] > 0 for p in doc["expected"])
    screen = frame(doc, now=0).splitlines()
    assert STANDALONE in screen[0]
    rows = {line.split()[0]: line.split()[1:3] for line in screen[3:7]}
    assert rows == {
        "rings": [str(procs["rings"].pid), "up"],
        "shard-s0": [str(procs["s0"].pid), "up"],
        "shard-s1": [str(procs["s1"].pid), "up"],
        "gateway": [str(procs["gateway"].pid), "up"],
    }

    # the gateway dies: its block stays, naming a dead pid
    killed = procs["gateway"]
    killed.kill()
    killed.wait()
    code, doc = status(units, capsys)
    assert code == 1 and not doc["running"] and not doc["all_up"]
    assert doc["mode"] == STANDALONE  # the rest still runs
    states = {n: (p["state"], p["pid"]) for n, p in by_name(doc).items()}
    assert states["gateway"] == ("down", killed.pid)
    assert {states[n][0] for n in ("rings", "s0", "s1")} == {"up"}
    code, text = status(units, capsys, as_json=False)
    assert code == 1 and "1 of 4 expected processes not up: gateway" in text

    # systemd restarts it: the new gateway replaces the stale block
    procs["gateway"] = units.start("gateway", "--role", "gateway")
    units.wait_log("gateway", '"msg": "serving"', count=2)
    code, doc = status(units, capsys)
    assert code == 0 and by_name(doc)["gateway"]["pid"] == procs["gateway"].pid

    # a clean stop removes the block: down, with no pid to show
    assert units.stop("gateway") == 0
    assert BLOCK not in list_blocks(ns)
    code, doc = status(units, capsys)
    assert code == 1 and (by_name(doc)["gateway"]["state"], by_name(doc)["gateway"]["pid"]) == (
        "down",
        None,
    )


_RESTART = {"refused_code": None, "backoff_seconds": None, "restart_in": None}


def test_a_child_the_supervisor_started_without_a_block_yet_is_starting():
    config = parse_config(DEFAULT_TOML)
    sup = {
        "supervisor_pid": os.getpid(),
        "children": [
            {"name": "s0", "pid": os.getpid(), "restarts": 0, "up_seconds": 1.0, **_RESTART},
            {"name": "s1", "pid": None, "restarts": 2, "up_seconds": 0, **_RESTART},
            {"name": "gateway", "pid": os.getpid(), "restarts": 1, "up_seconds": 1.0, **_RESTART},
        ],
    }
    got = expected_processes(config, sup, blocks={}, rings={})
    assert [(p["name"], p["state"], p["pid"], p["restarts"]) for p in got] == [
        ("s0", "starting", os.getpid(), 0),
        ("s1", "down", None, 2),
        ("gateway", "starting", os.getpid(), 1),
    ]
    assert got[0]["up_seconds"] > 0 and got[1]["up_seconds"] is None
