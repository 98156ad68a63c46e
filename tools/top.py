"""``exch top``: a live view of every process of the daemon, redrawn every interval.

The figures are what ``exchanged status`` collects (``daemon.status.collect``):
the supervisor's status file (when a supervisor runs; under systemd there is
none), each process's counter block (two samples give the rates) and the ring
headers. Reading them never disturbs the daemon.

A row per expected process (named by its counter block; an expected process
that is down has a row too, with no figures), then one per other block. A
column shows the first of its metrics that a process's block has, '-' when it
has none: shards count ``commands`` and ``batches``, time their commits
(``commit_us``) and report ``request_depth``; the gateway counts ``orders``,
``fills`` and ``rejects.<code>`` (the codes above zero make the rejects line)
and keeps a ``clients`` gauge (``gateway.counters``).
"""

import json
import time

from daemon.status import STANDALONE, SUPERVISOR, collect
from exchange.config import Config
from gateway.counters import REJECTS

CLEAR = "\x1b[H\x1b[2J"

# (header, width, metrics: the first one a block has is shown; "a/b" shows two together)
COLUMNS = (
    ("orders/s", 9, ("commands_per_sec", "orders_per_sec", "requests_per_sec")),
    ("fills/s", 8, ("fills_per_sec", "trades_per_sec")),
    ("events/s", 9, ("events_per_sec",)),
    ("batches/s", 9, ("batches_per_sec",)),
    ("last seq", 10, ("last_seq",)),
    ("req depth", 9, ("request_depth",)),
    ("commit p50/p99 us", 17, ("commit_us_p50/commit_us_p99",)),
    ("clients", 7, ("clients",)),
)


def _cell(block: dict, metrics: tuple[str, ...]) -> str:
    for m in metrics:
        if "/" in m:
            a, b = m.split("/")
            if a in block and b in block:
                return f"{block[a]}/{block[b]}"
        elif m in block:
            return str(block[m])
    return "-"


def frame(doc: dict, now: float | None = None) -> str:
    """One screen of the view, from a ``collect`` document."""
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    sup = doc["supervisor"]
    mode = doc.get("mode")
    if mode == SUPERVISOR:
        who = f"supervisor pid {sup['supervisor_pid']}"
    elif mode == STANDALONE:
        who = f"{STANDALONE}, no supervisor"
    else:
        who = "no supervisor, nothing up: not running"
    lines = [f"exch top - namespace {doc['namespace']} - {who} - {clock}", ""]
    header = f"{'process':<14} {'pid':>8} {'state':<8}" + "".join(
        f" {h:>{w}}" for h, w, _ in COLUMNS
    )
    lines.append(header)
    children = (sup or {}).get("children", [])
    procs = doc["processes"]
    rows = [
        (p["block"] or p["name"], p["pid"] or "-", p["state"], procs.get(p["block"], {}))
        for p in doc.get("expected", ())
    ]
    shown = {p["block"] for p in doc.get("expected", ())}
    rows += [
        (name, b["pid"], "up" if b["alive"] else "gone", b)
        for name, b in sorted(procs.items())
        if name not in shown
    ]
    for name, pid, state, b in rows:
        lines.append(
            f"{name:<14} {pid:>8} {state:<8}"
            + "".join(f" {_cell(b, ms):>{w}}" for _, w, ms in COLUMNS)
        )
    if not procs:
        lines.append("(no process has a counter block: is the daemon running?)")
    if children:
        lines += ["", "supervised: " + ", ".join(_child(c) for c in children)]
    lines += ["", f"{'ring':<14} {'depth':>9} {'capacity':>9} {'published':>12}"]
    for name, r in sorted(doc["rings"].items()):
        lines.append(f"{name:<14} {r['depth']:>9} {r['capacity']:>9} {r['published']:>12}")
    rejects = {
        k[len(REJECTS) :]: v
        for b in procs.values()
        for k, v in b.items()
        if k.startswith(REJECTS) and not k.endswith("_per_sec") and v
    }
    if rejects:
        lines += ["", "rejects: " + ", ".join(f"{k} {v}" for k, v in sorted(rejects.items()))]
    return "\n".join(lines)


def _child(c: dict) -> str:
    return f"{c['name']} (pid {c['pid'] or '-'}, up {c['up_seconds']}s, restarts {c['restarts']})"


def run(config: Config, out, *, interval: float, once: bool, as_json: bool) -> int:
    """Draw frames on ``out`` until Ctrl-C (or one, with ``once``)."""
    live = not once and not as_json and out.isatty()
    try:
        while True:
            t0 = time.monotonic()
            doc = collect(config)  # takes two samples, SAMPLE_SECONDS apart, for the rates
            if as_json:
                out.write(json.dumps(doc) + "\n")
            else:
                out.write((CLEAR if live else "") + frame(doc) + "\n")
            out.flush()
            if once:
                return 0
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        return 0
