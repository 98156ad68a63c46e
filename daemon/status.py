"""What ``exchanged status`` reports: which processes run, with their pids and
uptimes; sequences, rates, ring depths.

Everything is read from outside, without disturbing the daemon. It runs one of
two ways, told apart here:

- under the supervisor (``exchanged run``), whose status file names it and its
  children: the daemon runs while the supervisor does;
- standalone, as the systemd units start it (``--role rings|shard|gateway``),
  with no status file: the processes are found by what they keep in shared
  memory. Each shard and the gateway writes a counter block that records its
  pid (a shard makes it once recovered, the gateway before it binds its
  sockets), and every ring's header records its owner. The daemon runs while
  every expected process is up.

The config says which processes are expected: every shard and the gateway,
and standalone the rings' owner too (under the supervisor, it is the owner).
Each is ``up`` (its block's writer, or the rings' owner, is alive), ``starting``
(the supervisor started it and it has no block yet: compiling, recovering) or
``down``; a shard that is up is ``stalled`` instead while the gateway's block
says so (its ``stalled_ms.<shard>`` gauge: no progress on the requests waiting
for it for ``[gateway] stall_ms``; the gateway refuses new requests for it).
``all_up`` is what ``exchanged status`` exits 0 on. The rates come from two
samples of the blocks ``SAMPLE_SECONDS`` apart.
"""

import json
import time
from pathlib import Path

import psutil

from exchange import topology
from exchange.config import Config
from exchange.topology import counters_name, event_ring, request_ring
from gateway.counters import BLOCK as GATEWAY_BLOCK
from gateway.counters import STALLED as STALLED_GAUGE
from shm.counters_reader import BlockSnapshot, list_blocks, read_block
from shm.errors import ShmError
from shm.ring import RingStatus, inspect_ring, list_rings

SAMPLE_SECONDS = 0.5
SUPERVISOR = "supervisor"
STANDALONE = "standalone (systemd)"
UP, STARTING, DOWN, STALLED = "up", "starting", "down", "stalled"


def _read_all(ns: str, names, read) -> dict:
    """name -> ``read(ns, name)`` for each name, without the ones being created or
    removed right now."""
    out = {}
    for name in names:
        try:
            out[name] = read(ns, name)
        except (OSError, ShmError):
            continue
    return out


def read_blocks(ns: str) -> dict[str, BlockSnapshot]:
    return _read_all(ns, list_blocks(ns), read_block)


def read_rings(ns: str) -> dict[str, RingStatus]:
    return _read_all(ns, list_rings(ns), inspect_ring)


def read_supervisor(config: Config) -> dict | None:
    """The supervisor's status document, if the supervisor it names is alive."""
    try:
        sup = json.loads(Path(topology.supervisor_status_path(config)).read_text())
    except FileNotFoundError:
        return None
    return sup if psutil.pid_exists(sup["supervisor_pid"]) else None


def _up_seconds(pid: int) -> float | None:
    try:
        return round(time.time() - psutil.Process(pid).create_time(), 1)
    except psutil.Error:
        return None


def _entry(name: str, role: str, block: str | None, state: str, pid: int | None) -> dict:
    return {
        "name": name,
        "role": role,
        "block": block,
        "pid": pid,
        "state": state,
        "up_seconds": _up_seconds(pid) if pid and state != DOWN else None,
    }


def _from_block(name: str, role: str, block: str, blocks: dict, child: dict | None) -> dict:
    """A shard or the gateway: up if its block's writer lives; a block left by a
    killed process gives the pid it had."""
    b = blocks.get(block)
    if b is not None and b.alive:
        entry = _entry(name, role, block, UP, b.pid)
    elif child is not None and child["pid"] and psutil.pid_exists(child["pid"]):
        entry = _entry(name, role, block, STARTING, child["pid"])
    else:
        entry = _entry(name, role, block, DOWN, b.pid if b is not None else None)
    if child is not None:
        entry["restarts"] = child["restarts"]
        entry["backoff_seconds"] = child["backoff_seconds"]
        entry["restart_in"] = child["restart_in"]
        if child["refused_code"] is not None:  # down for good: see its last log line
            entry["exit_code"] = child["refused_code"]
    return entry


def _rings_owner(config: Config, rings: dict[str, RingStatus]) -> dict:
    """The rings' owner (``--role rings``): up if every ring of the config is there
    and one live process owns them all."""
    mine = [rings.get(r(s.name)) for s in config.shards for r in (request_ring, event_ring)]
    owners = {st.owner_pid for st in mine if st is not None}
    pid = min(owners) if owners else None
    up = None not in mine and len(owners) == 1 and all(st.owner_alive for st in mine)
    return _entry("rings", "rings", None, UP if up else DOWN, pid)


def expected_processes(
    config: Config, sup: dict | None, blocks: dict[str, BlockSnapshot], rings: dict
) -> list[dict]:
    """Each process the config expects, from the supervisor's status document (None:
    standalone), the counter blocks and the rings' headers; see the module's doc."""
    children = {c["name"]: c for c in sup["children"]} if sup else {}
    gateway = blocks.get(GATEWAY_BLOCK)
    out = [] if sup else [_rings_owner(config, rings)]
    for s in config.shards:
        entry = _from_block(s.name, "shard", counters_name(s.name), blocks, children.get(s.name))
        # a dead gateway's gauges are what they were when it died
        stalled_ms = (
            gateway.gauges.get(STALLED_GAUGE + s.name, 0) if gateway and gateway.alive else 0
        )
        entry["stalled_seconds"] = stalled_ms / 1000 if stalled_ms else None
        if stalled_ms and entry["state"] == UP:
            entry["state"] = STALLED
        out.append(entry)
    out.append(_from_block("gateway", "gateway", GATEWAY_BLOCK, blocks, children.get("gateway")))
    return out


def collect(config: Config) -> dict:
    ns = config.shm.namespace
    sup = read_supervisor(config)
    first = read_blocks(ns)
    time.sleep(SAMPLE_SECONDS)
    second = read_blocks(ns)
    rings = read_rings(ns)
    expected = expected_processes(config, sup, second, rings)
    all_up = all(p["state"] == UP for p in expected)
    every_process_runs = all(p["state"] in (UP, STALLED) for p in expected)
    if sup is not None:
        mode = SUPERVISOR
    elif any(p["state"] == UP for p in expected):
        mode = STANDALONE
    else:
        mode = None
    blocks = {}
    for name, b in second.items():
        rates = {}
        if name in first:
            for k, v in b.counters.items():
                rates[k + "_per_sec"] = round((v - first[name].counters.get(k, v)) / SAMPLE_SECONDS)
        blocks[name] = {
            "pid": b.pid,
            "alive": b.alive,
            **b.counters,
            **b.gauges,
            **rates,
            **{f"{h}_p50": s.p50 for h, s in b.histograms.items()},
            **{f"{h}_p99": s.p99 for h, s in b.histograms.items()},
        }
    return {
        "running": sup is not None or every_process_runs,
        "all_up": all_up,
        "mode": mode,
        "namespace": ns,
        "supervisor": sup,
        "expected": expected,
        "processes": blocks,
        "rings": {
            name: {"depth": st.depth, "capacity": st.capacity, "published": st.published}
            for name, st in rings.items()
        },
    }


def _headline(doc: dict) -> str:
    ns = doc["namespace"]
    if doc["mode"] is None:
        return f"exchanged is not running (namespace {ns})"
    if doc["mode"] == SUPERVISOR:
        how = f"under the supervisor (pid {doc['supervisor']['supervisor_pid']})"
    else:
        how = STANDALONE
    not_up = [
        f"{p['name']} (stalled {p['stalled_seconds']:.1f} s)"
        if p["state"] == STALLED
        else p["name"]
        for p in doc["expected"]
        if p["state"] != UP
    ]
    health = (
        "every expected process is up"
        if not not_up
        else f"{len(not_up)} of {len(doc['expected'])} expected processes not up: "
        + ", ".join(not_up)
    )
    return f"exchanged runs {how}, namespace {ns}: {health}"


def _restart_note(p: dict) -> str:
    """What the supervisor will do about the process: nothing (it refused to run), a
    restart after its back-off, or a back-off above the minimum if it dies again."""
    if "exit_code" in p:
        return f"  exited {p['exit_code']}, not restarted"
    if p.get("restart_in") is not None:
        return f"  restart in {p['restart_in']} s"
    if p.get("backoff_seconds") is not None:
        return f"  back-off {p['backoff_seconds']:g} s"
    return ""


def render(doc: dict) -> str:
    lines = [_headline(doc)]
    for p in doc["expected"]:
        up = f"{p['up_seconds']}s" if p["up_seconds"] is not None else "-"
        restarts = f"  restarts {p['restarts']}" if "restarts" in p else ""
        lines.append(
            f"  {p['name']:<10} {p['role']:<8} pid {p['pid'] or '-':>8}  {p['state']:<8} "
            f"up {up:>9}{restarts}{_restart_note(p)}"
        )
    for name, b in sorted(doc["processes"].items()):
        fields = ", ".join(f"{k}={v}" for k, v in b.items() if k not in ("pid", "alive"))
        lines.append(f"  [{name}] pid {b['pid']} {'up' if b['alive'] else 'gone'}: {fields}")
    for name, r in sorted(doc["rings"].items()):
        lines.append(f"  ring {name:<12} depth {r['depth']:>7} / {r['capacity']}")
    return "\n".join(lines)
