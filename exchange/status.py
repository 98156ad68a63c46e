"""What ``exchanged status`` reports: processes, sequences, rates, ring depths.

Everything is read from outside, without disturbing the daemon: the
supervisor's status file, the processes' counter blocks (two samples
``SAMPLE_SECONDS`` apart give the rates) and the ring headers.
"""

import json
import time

import psutil

from exchange.config import Config
from exchange.supervisor import status_path
from shm.counters_reader import list_blocks, read_block
from shm.ring import inspect_ring, list_rings

SAMPLE_SECONDS = 0.5


def _blocks(ns: str) -> dict:
    out = {}
    for name in list_blocks(ns):
        try:
            out[name] = read_block(ns, name)
        except (OSError, ValueError):
            continue  # a block being created or removed right now
    return out


def collect(config: Config) -> dict:
    ns = config.shm.namespace
    path = status_path(config)
    sup = json.loads(path.read_text()) if path.exists() else None
    running = bool(sup) and psutil.pid_exists(sup["supervisor_pid"])
    first = _blocks(ns)
    time.sleep(SAMPLE_SECONDS)
    second = _blocks(ns)
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
    rings = {}
    for name in list_rings(ns):
        st = inspect_ring(ns, name)
        rings[name] = {"depth": st.depth, "capacity": st.capacity, "published": st.published}
    return {
        "running": running,
        "namespace": ns,
        "supervisor": sup,
        "processes": blocks,
        "rings": rings,
    }


def render(doc: dict) -> str:
    lines = []
    sup = doc["supervisor"]
    if not doc["running"]:
        lines.append(f"exchanged is not running (namespace {doc['namespace']})")
    else:
        lines.append(f"supervisor pid {sup['supervisor_pid']}, namespace {doc['namespace']}")
        for c in sup["children"]:
            lines.append(
                f"  {c['name']:<10} pid {c['pid'] or '-':>8}  up {c['up_seconds']:>8}s  "
                f"restarts {c['restarts']}"
            )
    for name, b in sorted(doc["processes"].items()):
        fields = ", ".join(f"{k}={v}" for k, v in b.items() if k not in ("pid", "alive"))
        lines.append(f"  [{name}] pid {b['pid']} {'up' if b['alive'] else 'gone'}: {fields}")
    for name, r in sorted(doc["rings"].items()):
        lines.append(f"  ring {name:<12} depth {r['depth']:>7} / {r['capacity']}")
    return "\n".join(lines)
