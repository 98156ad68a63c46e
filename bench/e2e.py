"""End-to-end benchmark: bot processes -> the real daemon over CURVE, open loop, and the
same bots against a bare echo server as the machine's floor.

    python -m bench.e2e [--json] [--bots N] [--seconds S] [--batch B] [--wait sleep|spin]
                        [--plot bench/e2e.svg] [--results bench/RESULTS.md]

Targets, each swept over offered rates (orders/s: ``RATES``, doubling from
1,000) until it saturates (it answers less than ``SATURATED`` of the offered
rate, or the bots had to skip sends) and offering more no longer raises what
it answers (by ``PLATEAU``):

- ``echo``: a bare pyzmq ROUTER that sends every frame back (``bench.gateway
  --serve-echo``, CURVE, its own process);
- the daemon (``exchanged run``: supervisor, gateway, two shards; a fresh one
  per durability) with ``fsync`` and ``os`` journals;

with single-order frames, then with ``--batch``-order NewOrders frames. A
fresh daemon first gets one step that is not measured (warm caches). Each
step runs ``--bots`` bot processes (``bench.bots``: one client each, open
loop, round trips timed from each frame's due instant; their frames spread
evenly over the interval, not sent in step) for ``--seconds``
after a warm-up. Per step: achieved rate (answers in the measured window),
round trip p50/p99/p99.9/max, the bots' send lag, and where the time goes:
the CPU each process used, the shards' commit latency and batch size (their
counter blocks). Sustained throughput = the highest achieved rate of the
sweep. ``commit_p50_us``: one synced LMDB commit of one 64-byte record in a
bare environment (``bench.apply.RawLog``), on the same disk, right before the fsync
single-order sweep.
``gateway_rtt_p50_us``: Heartbeats at ``LIGHT_RATE``, which the gateway
answers itself (no ring, shard or journal on their way).

CPU per order: a process's CPU time (user + system) over a step, from before
the bots start sending until the last of them is done, divided by the orders
answered in that time (warm-up included: the same span). ``gateway_cpu_us_per_order``
and ``shards_cpu_us_per_order`` (the shards together) at the saturated step of the
fsync single-order sweep (the saturated step answering the most: the plateau;
the last step if none saturated), ``echo_cpu_us_per_msg`` the echo's at the
saturated step of its single-order sweep, ``*_light`` at ``LIGHT_RATE``.
``echo_cpu_us_per_msg_light`` is the floor under ``gateway_cpu_us_per_order_light``:
at ``LIGHT_RATE`` every message is a turn of its own, woken from sleep (the echo's
loop, ZeroMQ's I/O thread, the kernel's TCP), which the gateway pays too, and once
more for its shard.

``--wait spin`` also runs the fsync single-order sweep against a daemon whose
gateway and shards spin (``[gateway] wait`` / ``[[shards]] wait = "spin"``, see
``shm.wait``), each pinned to cores of its own (``cpus``: two for the gateway,
its loop and ZeroMQ's I/O thread, one per shard), with the supervisor and the
bots on the remaining cores: fields ``spin_*``. Only where this process may use
those and one more; elsewhere the JSON says why in ``spin_skipped`` (spinning
processes sharing cores measure the sharing, not the strategy).

Targets (the daemon, fsync, single-order frames): sustained throughput >=
``THROUGHPUT_SHARE`` of the echo's; ``rtt_p50_us`` at ``LIGHT_RATE`` <=
``echo_rtt_p50_us + commit_p50_us + LATENCY_SLACK_US``; ``gateway_cpu_us_per_order``
<= ``CPU_SHARE_OF_ECHO`` x ``echo_cpu_us_per_msg`` and
``gateway_cpu_us_per_order_light`` <= ``LIGHT_CPU_US`` (``target_cpu_met``). Prints one JSON line
with ``--json``; ``--plot`` writes the latency-vs-load chart (SVG),
``--results`` the table into its own marked block of a Markdown file.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil

from bench.apply import RawLog
from bench.daemon import REPO, BenchDaemon, free_port
from bench.report import emit
from bench.svgplot import Series, line_chart
from exchange.topology import counters_name
from gateway.keys import create_client, create_server_keys
from shm.counters_reader import read_block
from shm.histogram import percentile

RATES = tuple(1_000 * 2**k for k in range(12))  # 1k .. 2M orders/s
LIGHT_RATE = 1_000
SATURATED = 0.9
PLATEAU = 1.05
THROUGHPUT_SHARE = 0.5
LATENCY_SLACK_US = 100
CPU_SHARE_OF_ECHO = 1.5  # the gateway's CPU per order against the echo's per message
LIGHT_CPU_US = 100  # the gateway's CPU per order at LIGHT_RATE
COMMITS = 300
MARK_BEGIN = "<!-- bench.e2e: begin (written by python -m bench.e2e --results) -->"
MARK_END = "<!-- bench.e2e: end -->"


class Step(NamedTuple):
    offered: int  # orders/s
    achieved: float  # orders/s answered in the measured window
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    lost: int  # frames sent and never answered
    skipped: int  # frames the bots did not send (too many in flight)
    rejected: int  # orders refused
    codes: dict  # ... by error code
    lag_p99_us: float  # how late the bots sent (their own lateness)
    cpu: dict  # process -> share of one core over the sending time
    commit_p50_us: float  # the shards' journal commits during the step (NaN: no shard)
    batch_p50: float  # commands per shard batch during the step
    cpu_seconds: dict  # process -> CPU seconds (user + system) over the step
    orders: int  # orders (or frames of Heartbeats) answered over the same span

    @property
    def saturated(self) -> bool:
        return self.achieved < SATURATED * self.offered or self.skipped > 0


class Target(NamedTuple):
    name: str
    endpoint: str
    server_key: bytes
    secrets: list[Path]
    echo: bool
    pids: dict[str, int]  # the server's processes, for their CPU
    namespace: str = ""  # the daemon's: its shards' counter blocks
    shards: tuple = ()
    bot_cpus: tuple = ()  # the CPUs the bots are pinned to (): anywhere)


def _histograms(target: Target) -> dict[str, np.ndarray]:
    """The shards' commit and batch size histograms, summed over the shards."""
    out = {}
    for shard in target.shards:
        block = read_block(target.namespace, counters_name(shard))
        for name in ("commit_us", "batch_size"):
            buckets = block.histograms[name].buckets
            out[name] = out.get(name, 0) + buckets
    return out


def _p50(before: dict, after: dict, name: str) -> float:
    if name not in after:
        return np.nan
    diff = after[name] - before[name]
    return float(percentile(diff, 0.5)) if diff.sum() else np.nan


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[name] = t.user + t.system
    return out


def run_step(
    target: Target, rate: int, batch: int, args, work: Path, heartbeats: bool = False
) -> Step:
    n = len(target.secrets)
    procs, outs = [], []
    try:
        for i, secret in enumerate(target.secrets):
            out = work / f"{target.name}-{batch}-{rate}-{i}{'-hb' if heartbeats else ''}.npz"
            argv = [sys.executable, "-m", "bench.bots", "--endpoint", target.endpoint]
            # "=": a Z85 key may start with "-", which argparse would take for an option
            argv += [f"--server-key={target.server_key.decode()}", "--secret", str(secret)]
            argv += ["--rate", str(rate / n), "--seconds", str(args.seconds)]
            argv += ["--warmup", str(args.warmup), "--batch", str(batch), "--ioc", str(args.ioc)]
            argv += ["--max-inflight", str(args.max_inflight), "--out", str(out)]
            # bot i sends i/n of a frame interval after bot 0: n bots make one even stream
            argv += ["--phase", str(i / n)]
            # a seed of its own: the bot's idempotency keys must never repeat an earlier step's
            argv += ["--seed", str(random.randrange(1 << 62))]
            argv += (["--echo"] if target.echo else []) + (["--heartbeats"] if heartbeats else [])
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
            )
            if target.bot_cpus:
                psutil.Process(procs[-1].pid).cpu_affinity(list(target.bot_cpus))
            outs.append(out)
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a bot did not start (exit {p.wait()})")
        before, hist_before = _cpu(target.pids), _histograms(target)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a bot failed with exit code {p.returncode}")
        after, hist_after = _cpu(target.pids), _histograms(target)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    res = [np.load(o) for o in outs]
    rtt = np.concatenate([r["rtt"] for r in res])
    lag = np.concatenate([r["lag"] for r in res])
    answered = rtt[~np.isnan(rtt)] * 1e6
    busy = args.warmup + args.seconds
    cpu_seconds = {k: after[k] - before[k] for k in after if k in before}
    cpu = {k: round(v, 3) / busy for k, v in cpu_seconds.items()}
    cpu["bots"] = sum(float(r["cpu_seconds"]) for r in res) / busy
    pct = np.percentile(answered, [50, 99, 99.9]) if len(answered) else [np.nan] * 3
    lag = lag[~np.isnan(lag)] * 1e6
    return Step(
        offered=rate,
        achieved=sum(int(r["answered_in_window"]) for r in res) * batch / args.seconds,
        p50_us=float(pct[0]),
        p99_us=float(pct[1]),
        p999_us=float(pct[2]),
        max_us=float(answered.max()) if len(answered) else np.nan,
        lost=sum(int(r["lost"]) for r in res),
        skipped=sum(int(r["skipped"]) for r in res),
        rejected=sum(int(r["rejected"]) for r in res),
        codes=_codes(r["codes"] for r in res),
        lag_p99_us=float(np.percentile(lag, 99)) if len(lag) else np.nan,
        cpu={k: round(100 * v) for k, v in cpu.items()},
        commit_p50_us=_p50(hist_before, hist_after, "commit_us"),
        batch_p50=_p50(hist_before, hist_after, "batch_size"),
        cpu_seconds=cpu_seconds,
        orders=sum(int(r["answered"]) for r in res) * batch,
    )


def _codes(per_bot) -> dict:
    """The bots' refusals by code, summed ("code=n" strings, as they write them)."""
    parsed = ((item.rsplit("=", 1) for item in codes.tolist()) for codes in per_bot)
    return _codes_sum({code: int(n) for code, n in bot} for bot in parsed)


def cpu_us_per_order(step: Step, names) -> float:
    """The CPU the processes ``names`` used over ``step``, in µs per order answered in it
    (NaN: none of them measured, or nothing answered)."""
    used = [step.cpu_seconds[n] for n in names if n in step.cpu_seconds]
    if not used or not step.orders:
        return np.nan
    return 1e6 * sum(used) / step.orders


def sweep(target: Target, batch: int, args, work: Path) -> list[Step]:
    """Doubling rates until a saturated step answers no more than ``PLATEAU`` times the
    best rate before it: a server answers more under overload than at the first rate
    it cannot keep up with (its batches grow), and its capacity is that plateau."""
    steps = []
    best = 0.0
    for rate in RATES:
        if rate > args.max_rate:
            break
        step = run_step(target, rate, batch, args, work)
        steps.append(step)
        if not args.json:
            print(f"  {target.name:<6} batch {batch:<3} {_row(step)}", flush=True)
        grew = step.achieved > PLATEAU * best
        best = max(best, step.achieved)
        if step.saturated and not grew:
            break
    return steps


def _row(s: Step) -> str:
    return (
        f"offered {s.offered:>9,} achieved {s.achieved:>11,.0f}  p50 {s.p50_us:>9,.0f}  "
        f"p99 {s.p99_us:>9,.0f}  p99.9 {s.p999_us:>9,.0f}  max {s.max_us:>9,.0f} us  "
        f"lost {s.lost} skipped {s.skipped} rejected {s.rejected}  "
        f"commit p50 {_num(s.commit_p50_us)} us  batch p50 {_num(s.batch_p50)}  cpu {s.cpu}"
    )


def commit_p50_us(root: Path) -> float:
    """One synced LMDB commit of one record, in a bare environment on the same disk: the
    floor a journaled acknowledgement cannot go under (not the journal's own commit, so
    the budget does not move with the code it measures)."""
    path = tempfile.mkdtemp(prefix="e2e-commit-", dir=root)
    raw = RawLog(path)
    try:
        return round(1e6 * statistics.median(raw.commit() for _ in range(COMMITS)), 1)
    finally:
        raw.close()
        shutil.rmtree(path)


class Echo:
    """The bare ROUTER echo (``bench.gateway --serve-echo``) in its own process."""

    def __init__(self, root: Path):
        keys = root / "echo-keys"
        self.server_key = create_server_keys(keys)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "bench.gateway", "--serve-echo", self.endpoint]
        self.proc = subprocess.Popen(argv + ["--keys", str(keys)], cwd=REPO)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Results(NamedTuple):
    sweeps: dict  # (target name, orders per frame) -> [Step], in the order measured
    commit_p50_us: float  # one synced commit of one record, outside the daemon
    gateway: Step  # Heartbeats at LIGHT_RATE to the fsync daemon: the gateway alone
    shards: tuple = ()  # the daemon's shard names (their processes' CPU)
    spin_skipped: str | None = None  # why ``--wait spin`` measured no spinning daemon


SPIN = "fsync-spin"  # the sweep against the spinning daemon


def spin_cpus(shards: list[str]) -> tuple[dict[str, list[int]], list[int]] | str:
    """Cores of their own for the gateway (two: its loop, ZeroMQ's I/O thread) and each
    shard (one), from the CPUs this process may use, and the rest (for the supervisor
    and the bots, at least one); or why not."""
    usable = sorted(os.sched_getaffinity(0))
    own = 2 + len(shards)
    if len(usable) < own + 1:
        return (
            f"spinning needs {own + 1} cpus (2 for the gateway, 1 for each of the "
            f"{len(shards)} shards, 1 more for the supervisor and the bots); this process "
            f"may use {len(usable)}"
        )
    mine, rest = usable[-own:], usable[:-own]
    cpus = {"gateway": mine[:2], **{s: [c] for s, c in zip(shards, mine[2:], strict=True)}}
    return cpus, rest


def measure(args, root: Path) -> Results:
    clients = list(range(1, args.bots + 1))
    sweeps = {}
    echo = Echo(root)
    try:
        secrets = []
        for c in clients:
            secrets.append(root / f"echo-client-{c}.key_secret")
            create_client(root / "echo-keys", c, secrets[-1])
        target = Target(
            "echo", echo.endpoint, echo.server_key, secrets, True, {"echo": echo.proc.pid}
        )
        for batch in (1, args.batch):
            sweeps[("echo", batch)] = sweep(target, batch, args, root)
    finally:
        echo.close()
    gateway = None
    for durability in ("fsync", "os"):
        for batch in (1, args.batch):
            work = Path(tempfile.mkdtemp(prefix=f"{durability}-{batch}-", dir=root))
            d = BenchDaemon(work, durability=durability, clients=clients)
            try:
                d.start()
                pids = {k: v for k, v in d.pids().items() if v is not None}
                secrets = [d.secrets[c] for c in clients]
                shards = tuple(s.name for s in d.config.shards)
                target = Target(
                    durability, d.endpoint, d.server_key, secrets, False, pids, d.ns, shards
                )
                # not measured: every code path once (Numba caches, connections, books)
                run_step(target, LIGHT_RATE, batch, args, work)
                if gateway is None:
                    gateway = run_step(target, LIGHT_RATE, 1, args, work, heartbeats=True)
                    # the disk's commit latency drifts with other users: taken right
                    # before the sweep whose light-load latency is held against it
                    commit = commit_p50_us(work)
                    if not args.json:
                        print(f"  gateway alone (Heartbeats) {_row(gateway)}", flush=True)
                        print(f"  one synced commit of one record: {commit:,.0f} us", flush=True)
                sweeps[(durability, batch)] = sweep(target, batch, args, work)
                if d.stop() != 0:
                    raise RuntimeError(f"the daemon did not stop cleanly:\n{d.log()[-3000:]}")
            finally:
                d.close()
    skipped = None
    if args.wait == "spin":
        plan = spin_cpus(list(shards))
        if isinstance(plan, str):
            skipped = plan
            if not args.json:
                print(f"  spin skipped: {plan}", flush=True)
        else:
            sweeps[(SPIN, 1)] = spin_sweep(args, root, clients, *plan)
    return Results(sweeps, commit, gateway, shards, skipped)


def spin_sweep(args, root: Path, clients, cpus: dict, rest: list[int]) -> list[Step]:
    """The fsync single-order sweep against a daemon whose processes spin, each on its
    own core; the supervisor and the bots on ``rest``."""
    work = Path(tempfile.mkdtemp(prefix="fsync-spin-", dir=root))
    d = BenchDaemon(work, durability="fsync", clients=clients, wait="spin", cpus=cpus)
    try:
        d.start()
        pids = {k: v for k, v in d.pids().items() if v is not None}
        psutil.Process(pids["supervisor"]).cpu_affinity(rest)
        shards = tuple(s.name for s in d.config.shards)
        secrets = [d.secrets[c] for c in clients]
        target = Target(
            SPIN, d.endpoint, d.server_key, secrets, False, pids, d.ns, shards, tuple(rest)
        )
        run_step(target, LIGHT_RATE, 1, args, work)  # not measured, as above
        steps = sweep(target, 1, args, work)
        if d.stop() != 0:
            raise RuntimeError(f"the daemon did not stop cleanly:\n{d.log()[-3000:]}")
        return steps
    finally:
        d.close()


def _light(steps: list[Step]) -> Step:
    return next(s for s in steps if s.offered == LIGHT_RATE)


def _sustained(steps: list[Step]) -> float:
    return max(s.achieved for s in steps)


def _saturated(steps: list[Step]) -> Step:
    """The saturated step answering the most (the plateau); the last if none saturated."""
    saturated = [s for s in steps if s.saturated]
    return max(saturated, key=lambda s: s.achieved) if saturated else steps[-1]


def _us(v: float) -> float | None:
    return None if np.isnan(v) else round(v, 1)


def cpu_fields(steps: list[Step], shards, prefix: str = "") -> dict:
    """The gateway's and the shards' CPU per order at the saturated and the light step."""
    heavy, light = _saturated(steps), _light(steps)
    return {
        f"{prefix}gateway_cpu_us_per_order": _us(cpu_us_per_order(heavy, ["gateway"])),
        f"{prefix}shards_cpu_us_per_order": _us(cpu_us_per_order(heavy, shards)),
        f"{prefix}cpu_saturated_offered": heavy.offered,
        f"{prefix}gateway_cpu_us_per_order_light": _us(cpu_us_per_order(light, ["gateway"])),
        f"{prefix}shards_cpu_us_per_order_light": _us(cpu_us_per_order(light, shards)),
    }


def summary(results: Results, batch: int) -> dict:
    sweeps = results.sweeps
    fsync, echo = sweeps[("fsync", 1)], sweeps[("echo", 1)]
    light, echo_light = _light(fsync), _light(echo)
    out = {
        "bench": "e2e",
        "orders_per_sec": round(_sustained(fsync)),
        "echo_orders_per_sec": round(_sustained(echo)),
        "rtt_p50_us": round(light.p50_us),
        "rtt_p99_us": round(light.p99_us),
        "rtt_p999_us": round(light.p999_us),
        "rtt_max_us": round(light.max_us),
        "echo_rtt_p50_us": round(echo_light.p50_us),
        "echo_rtt_p99_us": round(echo_light.p99_us),
        "commit_p50_us": round(results.commit_p50_us),
        "gateway_rtt_p50_us": round(results.gateway.p50_us),
        "shard_commit_p50_us": round(light.commit_p50_us),
        "os_orders_per_sec": round(_sustained(sweeps[("os", 1)])),
        "os_rtt_p50_us": round(_light(sweeps[("os", 1)]).p50_us),
        "batch": batch,
        "batch_orders_per_sec": round(_sustained(sweeps[("fsync", batch)])),
        "os_batch_orders_per_sec": round(_sustained(sweeps[("os", batch)])),
        "echo_batch_orders_per_sec": round(_sustained(sweeps[("echo", batch)])),
    }
    out["throughput_ratio"] = round(out["orders_per_sec"] / out["echo_orders_per_sec"], 3)
    out["rtt_budget_us"] = out["echo_rtt_p50_us"] + out["commit_p50_us"] + LATENCY_SLACK_US
    out["target_throughput_met"] = out["throughput_ratio"] >= THROUGHPUT_SHARE
    out["target_latency_met"] = out["rtt_p50_us"] <= out["rtt_budget_us"]
    out.update(cpu_fields(fsync, results.shards))
    echo_heavy = _saturated(echo)
    out["echo_cpu_us_per_msg"] = _us(cpu_us_per_order(echo_heavy, ["echo"]))
    out["echo_cpu_saturated_offered"] = echo_heavy.offered
    out["echo_cpu_us_per_msg_light"] = _us(cpu_us_per_order(echo_light, ["echo"]))
    gw, gw_light, per_msg = (
        out["gateway_cpu_us_per_order"],
        out["gateway_cpu_us_per_order_light"],
        out["echo_cpu_us_per_msg"],
    )
    out["target_cpu_met"] = (
        None not in (gw, gw_light, per_msg)
        and gw <= CPU_SHARE_OF_ECHO * per_msg
        and gw_light <= LIGHT_CPU_US
    )
    if (SPIN, 1) in sweeps:
        spin = sweeps[(SPIN, 1)]
        out["spin_orders_per_sec"] = round(_sustained(spin))
        out["spin_rtt_p50_us"] = round(_light(spin).p50_us)
        out["spin_rtt_p99_us"] = round(_light(spin).p99_us)
        out.update(cpu_fields(spin, results.shards, "spin_"))
    if results.spin_skipped is not None:
        out["spin_skipped"] = results.spin_skipped
    steps = [s for v in sweeps.values() for s in v]
    out["lost"] = sum(s.lost for s in steps)
    out["rejected"] = sum(s.rejected for s in steps)
    out["rejected_by_code"] = _codes_sum(s.codes for s in steps)
    return out


def _codes_sum(dicts) -> dict:
    """Counts by code, summed."""
    out: dict[str, int] = {}
    for d in dicts:
        for code, n in d.items():
            out[code] = out.get(code, 0) + n
    return out


def plot(results: Results, batch: int) -> str:
    series = []
    for (name, b), steps in results.sweeps.items():
        frames = "1 order" if b == 1 else f"{b} orders"
        xs = [s.achieved for s in steps]
        series.append(Series(f"{name}, {frames}: p50", xs, [s.p50_us for s in steps]))
        series.append(Series(f"{name}, {frames}: p99", xs, [s.p99_us for s in steps], True))
    return line_chart(
        series,
        title=f"Acknowledgement round trip vs throughput (frames of 1 and {batch} orders)",
        x_label="throughput (orders/s answered)",
        y_label="round trip (µs, from the due instant)",
        log_x=True,
        log_y=True,
    )


def table(results: Results, head: dict) -> str:
    gw = results.gateway
    skipped = (
        f" Spinning daemon not measured: {head['spin_skipped']}." if "spin_skipped" in head else ""
    )
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M')}, {head['bots']} bots, load average "
        f"{head['loadavg_1m_start']} -> {head['loadavg_1m_end']}. One synced LMDB commit of "
        f"one record: {head['commit_p50_us']} µs (median). The gateway alone (Heartbeats at "
        f"{LIGHT_RATE:,}/s): p50 {gw.p50_us:,.0f} µs, p99 {gw.p99_us:,.0f} µs. CPU per order "
        f"(fsync, 1 order a frame; at the saturated step / at {LIGHT_RATE:,}/s): gateway "
        f"{head['gateway_cpu_us_per_order']} / {head['gateway_cpu_us_per_order_light']} µs, "
        f"shards {head['shards_cpu_us_per_order']} / {head['shards_cpu_us_per_order_light']} "
        f"µs; the echo {head['echo_cpu_us_per_msg']} / {head['echo_cpu_us_per_msg_light']} "
        f"µs per message.{skipped}",
        "",
        "| target | orders/frame | offered/s | achieved/s | p50 µs | p99 µs | p99.9 µs | max µs "
        "| shard commit p50 µs | shard batch p50 | lost | skipped | CPU % of a core |",
        "| --- " + "| ---: " * 11 + "| --- |",
    ]
    for (name, b), steps in results.sweeps.items():
        for s in steps:
            cpu = ", ".join(f"{k} {v}" for k, v in s.cpu.items())
            lines.append(
                f"| {name} | {b} | {s.offered:,} | {s.achieved:,.0f} | {s.p50_us:,.0f} | "
                f"{s.p99_us:,.0f} | {s.p999_us:,.0f} | {s.max_us:,.0f} | "
                f"{_num(s.commit_p50_us)} | {_num(s.batch_p50)} | {s.lost} | {s.skipped} | {cpu} |"
            )
    return "\n".join(lines)


def _num(v: float) -> str:
    return "-" if np.isnan(v) else f"{v:,.0f}"


def write_results(path: Path, block: str) -> None:
    """Replace the marked block of ``path`` with ``block``; no block yet: append one."""
    text = path.read_text()
    new = f"{MARK_BEGIN}\n{block}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + new + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--bots", type=int, default=4, help="bot processes (one client each)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per step")
    ap.add_argument("--warmup", type=float, default=0.5, help="sent before each measurement")
    ap.add_argument("--batch", type=int, default=64, help="orders per NewOrders frame")
    ap.add_argument("--ioc", type=float, default=0.5, help="share of IOC orders that trade")
    ap.add_argument("--max-inflight", type=int, default=2_000, help="unanswered frames per bot")
    ap.add_argument("--max-rate", type=int, default=RATES[-1], help="highest rate offered")
    ap.add_argument("--dir", default=str(REPO / "var"), help="where journals are made")
    ap.add_argument("--plot", help="write the latency-vs-load chart here (SVG)")
    ap.add_argument("--results", help="write the table into this Markdown file's e2e block")
    ap.add_argument(
        "--wait",
        choices=("sleep", "spin"),
        default="sleep",
        help="spin: also sweep a daemon whose processes spin, each on a core of its own",
    )
    args = ap.parse_args()
    if args.bots < 1 or args.seconds <= 0 or args.batch < 2 or args.max_rate < LIGHT_RATE:
        ap.error(f"need --bots >= 1, --seconds > 0, --batch >= 2, --max-rate >= {LIGHT_RATE}")
    os.makedirs(args.dir, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=args.dir))
    load = round(os.getloadavg()[0], 2)
    try:
        results = measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = summary(results, args.batch)
    out.update(
        wait=args.wait,
        bots=args.bots,
        loadavg_1m_start=load,
        loadavg_1m_end=round(os.getloadavg()[0], 2),
    )
    if args.plot:
        Path(args.plot).write_text(plot(results, args.batch))
    if args.results:
        write_results(Path(args.results), table(results, out))
    emit(out, args.json)


if __name__ == "__main__":
    main()
