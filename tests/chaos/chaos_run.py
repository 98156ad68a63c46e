"""One chaos run: the real daemon, bots trading through it, SIGKILLs, then the checks.

``run_chaos(tmp, kills=K, ...)``: ``exchanged run`` on a tmp config (snapshots
every second, so recoveries start from snapshots and each shard leaves a
recent one to check), ``bots`` bot processes (``chaos_bot.py``) trading at
``rate`` requests a second each; then K times, at a random instant up to ``gap``
seconds after the previous victim was started again, a random victim among:

- a shard or the gateway: SIGKILL of that process; the supervisor starts it again;
- ``supervisor``: SIGKILL of the ``exchanged run`` process alone; the parent-death
  signal stops its children (SIGTERM: each stops cleanly), and once they are all
  gone a new ``exchanged run`` on the same config adopts the rings it left;
- ``all``: SIGKILL of the supervisor and every child at the same instant, then a
  new ``exchanged run`` as above;

and wait until every victim has a successor process (not until it is ready:
kills can land while a process is still starting or recovering). Meanwhile an
operator halts one of the bots' instruments now and then (``exch halt``'s request
file) and resumes it a moment later, so orders pile up crossed and reopening
auctions run between the kills; every halt is taken back before the bots stop. The first
kills go to each victim once, in random order. After the last kill, once every
process is up, the bots trade for ``after`` more seconds, are told to stop
(SIGTERM), chase their last answers and write their records; the daemon is
stopped and ``chaos_check.check`` reads the journals. Every process the run
started is killed at the end, whatever happened (``Daemon.close_all``).
Returns the report and, per kill whose successors all got that far, the victim
and the seconds until the last successor said it was ready (the supervisor's
backoff, or the new supervisor's start, included).
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
from chaos_bot import SHARDS
from chaos_check import Report, check
from daemon_harness import REPO, Daemon

from exchange import halts, topology
from exchange.config import dump_config
from gateway.keys import create_client

BOT = Path(__file__).resolve().parent / "chaos_bot.py"
READY = {"gateway": "serving"}  # the log message of a process ready to work; shards: "running"
SNAPSHOT_EVERY_COMMANDS = 2_000
FIRST_CLIENT = 11
SUPERVISOR_KILLS = ("supervisor", "all")  # victims after which a new ``exchanged run`` starts
CHILDREN_STOP_SECONDS = 60  # for the children of a killed supervisor to stop (SIGTERM)


def _configure(daemon: Daemon, durability: str) -> None:
    r = msgspec.structs.replace
    cfg = daemon.config
    daemon.config = r(
        cfg,
        journal=r(cfg.journal, durability=durability),
        snapshot=r(cfg.snapshot, every_commands=SNAPSHOT_EVERY_COMMANDS, every_seconds=1),
    )
    daemon.path.write_text(dump_config(daemon.config))


def _pids(daemon: Daemon) -> dict[str, int | None]:
    return {c["name"]: c["pid"] for c in daemon.status()["children"]}


def _ready(daemon: Daemon) -> dict[int, float]:
    """pid -> when (log time) it said it was ready to work."""
    out = {}
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc["msg"] == READY.get(doc["role"], "running"):
                out[doc["pid"]] = doc["ts"]
    return out


def _wait(what: str, ready, daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: {daemon.log()[-3000:]}")
        time.sleep(0.05)


def _respawned(daemon: Daemon, name: str, old: int) -> bool:
    pid = _pids(daemon)[name]
    return pid is not None and pid != old


def _supervised(daemon: Daemon) -> bool:
    """The status file is the running supervisor's, and names a process for every child."""
    doc = daemon.status()
    return doc["supervisor_pid"] == daemon.proc.pid and all(c["pid"] for c in doc["children"])


def _stopped(daemon: Daemon, pids) -> int:
    """How many of ``pids`` logged that they stopped (cleanly, on SIGTERM)."""
    out = set()
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc["msg"] == "stopped" and doc["pid"] in pids:
                out.add(doc["pid"])
    return len(out)


def _kill_supervisor(daemon: Daemon, victim: str) -> list[int]:
    """SIGKILL the supervisor (``victim`` 'all': and every child at once), wait for its
    children to be gone, start a new one; returns the new one's children."""
    if victim == "all":
        old = daemon.kill_everything()
    else:
        old = daemon.kill_supervisor()
    left = daemon.wait_gone(old, CHILDREN_STOP_SECONDS)
    if left:
        raise AssertionError(
            f"{CHILDREN_STOP_SECONDS} s after the supervisor's SIGKILL ({victim}), its children "
            f"{left} still run: {daemon.log()[-3000:]}"
        )
    # informative: a child still starting may die of the SIGTERM before it handles it
    print(f"chaos {victim}: {_stopped(daemon, old)} of its children {old} logged 'stopped'")
    daemon.launch()
    _wait("a new supervisor's children", lambda: _supervised(daemon), daemon, 90)
    return list(_pids(daemon).values())


def _all_ready(daemon: Daemon) -> bool:
    pids = _pids(daemon)
    return None not in pids.values() and set(pids.values()) <= _ready(daemon).keys()


def _start_bots(daemon: Daemon, tmp: Path, n: int, rate: float, rng) -> list:
    keys = daemon.config.gateway.keys_dir
    bots = []
    for k in range(n):
        client = FIRST_CLIENT + k
        secret = tmp / f"bot{client}.key_secret"
        create_client(keys, client, secret)
        out = tmp / f"bot{client}.json"
        argv = [
            sys.executable,
            str(BOT),
            "--endpoint",
            daemon.router,
            "--keys-dir",
            keys,
            "--secret",
            str(secret),
            "--client",
            str(client),
            "--rate",
            str(rate),
            "--seed",
            str(rng.getrandbits(32)),
            "--out",
            str(out),
        ]
        with open(tmp / f"bot{client}.log", "w") as log:
            bots.append((subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log), out))
    return bots


HALT_SECONDS = (1.0, 2.0)  # how long the operator keeps an instrument halted
HALT_GAP_SECONDS = (0.3, 1.0)  # and how long it waits before the next halt


def _operator(daemon: Daemon, rng: random.Random, done: threading.Event) -> None:
    """Halt a random instrument of the bots' at once (everything is up: the first halt
    is journaled whatever the kills do next), resume it, again until ``done``; what is
    halted when it is told to stop is resumed."""
    where = topology.halts_dir(daemon.config)
    gap = 0.0
    while not done.wait(gap):
        gap = rng.uniform(*HALT_GAP_SECONDS)
        sym = rng.choice(sorted(SHARDS))
        halts.request_halt(where, sym, "chaos operator")
        done.wait(rng.uniform(*HALT_SECONDS))
        halts.request_resume(where, sym)


def run_chaos(
    tmp: Path,
    *,
    kills: int,
    bots: int = 3,
    rate: float = 40.0,
    gap: float = 2.0,
    after: float = 2.0,
    durability: str = "os",
    seed: int | None = None,
) -> tuple[Report, list[tuple[str, float]]]:
    seed = random.randrange(1 << 32) if seed is None else seed
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    daemon = Daemon(tmp)
    _configure(daemon, durability)
    routes = topology.routes(daemon.config)
    # the bots reuse keys on the other shard's instruments: they must know which is which
    assert {sym: routes[sym][0] for sym in SHARDS} == SHARDS, routes
    procs = []
    halting = threading.Event()  # set: the operator resumes what it halted and stops
    operator = None
    killed = []  # (monotonic instant, wall-clock instant, victim, the pids started again)
    try:
        daemon.start()
        # the gateway reloads the keys directory every second: bots are admitted after it
        procs = _start_bots(daemon, tmp, bots, rate, rng)
        # a gateway killed before a bot's first connection is no reconnection for it
        connected = [Path(f"{out}.ready") for _, out in procs]
        _wait("every bot connected", lambda: all(c.exists() for c in connected), daemon, 120)
        operator = threading.Thread(
            target=_operator, args=(daemon, random.Random(rng.getrandbits(32)), halting)
        )
        operator.start()
        time.sleep(1.5)
        names = [s.name for s in daemon.config.shards] + ["gateway"]
        victims = names + list(SUPERVISOR_KILLS)
        first = rng.sample(victims, len(victims))
        for k in range(kills):
            time.sleep(rng.uniform(0, gap))
            pids = _pids(daemon)
            up = [n for n in names if pids[n] is not None] + list(SUPERVISOR_KILLS)
            victim = first[k] if k < len(first) and first[k] in up else rng.choice(up)
            instant, wall = time.monotonic(), time.time()
            if victim in SUPERVISOR_KILLS:
                successors = _kill_supervisor(daemon, victim)
            else:
                old = pids[victim]
                os.kill(old, signal.SIGKILL)
                _wait(
                    f"{victim} restarted",
                    lambda n=victim, p=old: _respawned(daemon, n, p),
                    daemon,
                    90,
                )
                successors = [_pids(daemon)[victim]]
            print(f"chaos kill {k + 1}/{kills}: {victim}, successors {successors}", flush=True)
            killed.append((instant, wall, victim, successors))
        _wait("every process ready", lambda: _all_ready(daemon), daemon, 120)
        halting.set()
        operator.join()
        time.sleep(after)
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            assert proc.wait(120) == 0, f"a bot failed: see {tmp}/bot*.log"
        ready = _ready(daemon)
        assert daemon.stop() == 0, daemon.log()[-3000:]
    finally:
        halting.set()
        if operator is not None:
            operator.join()
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        daemon.close_all()
    records = [json.loads(out.read_text()) for _, out in procs]
    report = check(daemon.config, records, [(t, victim) for t, _, victim, _ in killed])
    # a successor killed before it was ready has no figure
    return report, [
        (victim, max(ready[pid] for pid in pids) - wall)
        for _, wall, victim, pids in killed
        if all(pid in ready for pid in pids)
    ]
