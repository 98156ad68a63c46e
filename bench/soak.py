"""Soak: the real daemon under steady load for a long time; does anything grow?

    python -m bench.soak [--json] [--minutes 10] [--rate R] [--bots N] [--window S]
        [--retain N] [--keep-resting]

Starts the daemon (``bench.daemon``, fsync journals, retention at ``--retain``
commands: ``RETAIN`` by default, and a snapshot every tenth of that, as the
embedded config's ratio, which a shard reaches within the probe and the warm-up at
the rates this machine sustains, so that the windows measured find the journals
at the size they keep for good, the state of a daemon that has run for months;
the embedded config's 1,000,000 would take most of ten minutes), measures its capacity
unless ``--rate`` is given, then offers half of it for ``--minutes``, in
consecutive windows of ``--window`` seconds (fresh bot processes and connections
each window, as ``bench.e2e`` steps). After each
window every bot client cancels what it has resting (one MassCancel each),
so that each window starts from empty books: the bots' GTC orders rest
faster than their IOC orders take them, and without the cancels the books
(and every process's state of live orders) grow all run long, which is load,
not a leak (``--keep-resting`` leaves them, to see it). Then it samples
every daemon process (supervisor, gateway, shards): RSS (with its anonymous
and file-backed parts, from /proc), open file descriptors, and the
namespace's shared-memory segments.

The capacity is the highest rate the daemon keeps up with (``probe``): steps of
``PROBE_SECONDS`` of single-order frames at doubling rates until one is
saturated (answers under 90 % of the offer, or bots skipping frames), then
``PROBE_BISECTIONS`` steps halving the interval between the last rate it kept
up with and the first it did not. Not the plateau ``bench.e2e`` reports: under
overload the answers per second go on rising with the offer (the batches grow,
and so does latency, to a third of a second), and half of that plateau is a rate
this machine does not sustain (the soaks of 2026-12-03 at 09d3f39 ran behind
from their first window).

The first ``--warmup-windows`` windows warm up; the figures after them are
the baseline, and the run passes when, at the end:

- every process's anonymous RSS (its heap) is less than ``RSS_GROWTH`` (5 %)
  above its baseline (stated in bytes per order too);
- every process's file-backed RSS (mostly a journal's map: pages the kernel
  can take back, and does every ``RELEASE_SECONDS``, so a sample falls
  anywhere in that saw-tooth) has stopped growing: its highest sample in the
  second half of the windows is less than ``RSS_GROWTH`` above its highest in
  the first half; and so has each journal's data file (its end size against
  its size halfway). A journal grows until it holds ``[journal]
  retain_commands`` and a snapshot interval; from then on retention frees as
  many pages as the new batches take, and LMDB reuses them;
- every process has the descriptors it had at the baseline, and the namespace
  the same segments; after the daemon stops, none of its segments is left;
- latency is stable: the median over the last quarter of the windows of the
  per-window p50 (p99) is at most ``DRIFT`` times that of the first quarter
  after the warm-up.

Prints a line per window and the figures; exits 1 if a criterion failed.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import e2e
from bench.daemon import REPO, BenchDaemon
from bench.report import emit
from exchange import topology
from gateway.client import Client
from gateway.keys import load_secret_certificate
from gateway.protocol import MassCancelled
from shm.names import PREFIX, shm_dir

RSS_GROWTH = 0.05
DRIFT = 1.5
PROBE_SECONDS = 3.0
PROBE_BISECTIONS = 3
RETAIN = 100_000  # commands each journal keeps (``[journal] retain_commands``)
SETTLE_SECONDS = 1.0  # for the connections the bots and the cancels just closed to go


def sample(pid: int) -> dict:
    """RSS (kB, total and parts) and open descriptors of a process, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def journal_kb(path: Path) -> int:
    """The size of a journal's LMDB data file, kB."""
    return (path / "data.mdb").stat().st_size // 1024


def namespace_segments(namespace: str) -> list[str]:
    """Every file of the namespace in the shared-memory directory (segments, doorbells)."""
    head = f"{PREFIX}.{namespace}."
    return sorted(e for e in os.listdir(shm_dir()) if e.startswith(head))


def _quarter_median(windows: list[e2e.Step], attr: str, last: bool) -> float:
    q = max(1, len(windows) // 4)
    part = windows[-q:] if last else windows[:q]
    return statistics.median(getattr(s, attr) for s in part)


def cancel_resting(target: e2e.Target) -> int:
    """Every bot client's resting orders cancelled (a MassCancel each); how many there were."""
    n = 0
    for secret in target.secrets:
        public, private = load_secret_certificate(secret)
        with Client(target.endpoint, target.server_key, public, private, timeout=30) as c:
            reply = c.mass_cancel()
        if not isinstance(reply, MassCancelled):
            raise RuntimeError(f"a mass cancel was answered {reply}")
        n += reply.n
    return n


def judge(
    samples: list[dict], windows: list[e2e.Step], shm: list, left: list, seconds: float
) -> dict:
    """The figures and verdicts from the samples and windows after the warm-up (the
    baseline is the sample after the first of them: the growth is the others')."""
    base, mid, end = samples[0], samples[len(samples) // 2], samples[-1]
    first, second = samples[: len(samples) // 2], samples[len(samples) // 2 :]

    def highest(part: list[dict], name: str) -> int:
        return max(s[name]["RssFile"] for s in part)

    growth = {
        name: round(100 * (end[name]["VmRSS"] / s["VmRSS"] - 1), 2) for name, s in base.items()
    }
    anon = {
        name: round(100 * (end[name]["RssAnon"] / s["RssAnon"] - 1), 2) for name, s in base.items()
    }
    anon_kb = {name: end[name]["RssAnon"] - s["RssAnon"] for name, s in base.items()}
    orders = sum(s.achieved for s in windows[1:]) * seconds
    fds = {name: end[name]["fds"] - s["fds"] for name, s in base.items()}
    drift = {
        q: round(_quarter_median(windows, q, True) / _quarter_median(windows, q, False), 2)
        for q in ("p50_us", "p99_us")
    }
    out = {
        "rss_kb_baseline": {n: s["VmRSS"] for n, s in base.items()},
        "rss_growth_pct": growth,
        "rss_anon_growth_pct": anon,
        "rss_anon_kb_growth": anon_kb,
        "rss_anon_bytes_per_order": {
            n: round(1024 * kb / orders, 1) if orders else None for n, kb in anon_kb.items()
        },
        # where the growth came: all at once (a plateau reached) or window after window
        "rss_anon_kb_per_window": {n: [s[n]["RssAnon"] for s in samples] for n in base},
        "rss_file_kb_growth": {n: end[n]["RssFile"] - s["RssFile"] for n, s in base.items()},
        "rss_file_kb_highest_first_second_half": {
            n: [highest(first, n), highest(second, n)] for n in base
        },
        "journal_kb_baseline_mid_end": {
            n: [base[n]["journal_kb"], mid[n]["journal_kb"], end[n]["journal_kb"]]
            for n in base
            if "journal_kb" in base[n]
        },
        "fd_growth": fds,
        "shm_segments": len(shm[-1]),
        "shm_leaked_while_running": sorted(set(shm[-1]) - set(shm[0])),
        "shm_left_after_stop": left,
        "p50_drift": drift["p50_us"],
        "p99_drift": drift["p99_us"],
    }
    out["rss_anon_ok"] = all(g < 100 * RSS_GROWTH for g in anon.values())
    out["rss_file_ok"] = all(
        highest(second, n) < (1 + RSS_GROWTH) * highest(first, n) for n in base
    ) and all(
        end < (1 + RSS_GROWTH) * mid for _, mid, end in out["journal_kb_baseline_mid_end"].values()
    )
    out["fds_ok"] = not any(fds.values())
    out["shm_ok"] = not out["shm_leaked_while_running"] and not left
    out["latency_ok"] = max(drift.values()) <= DRIFT
    verdicts = ("rss_anon_ok", "rss_file_ok", "fds_ok", "shm_ok", "latency_ok")
    out["ok"] = all(out[v] for v in verdicts)
    return out


def soak(args, root: Path) -> dict:
    clients = list(range(1, args.bots + 1))
    d = BenchDaemon(
        root,
        durability="fsync",
        clients=clients,
        retain_commands=args.retain,
        snapshot_every=max(args.retain // 10, 1),
    )
    try:
        d.start()
        pids = {k: v for k, v in d.pids().items() if v is not None}
        shards = tuple(s.name for s in d.config.shards)
        secrets = [d.secrets[c] for c in range(1, args.bots + 1)]
        target = e2e.Target("fsync", d.endpoint, d.server_key, secrets, False, pids, d.ns, shards)
        capacity, probed = (args.rate * 2, []) if args.rate else probe(target, args, root)
        rate = int(capacity / 2)
        log(args, f"capacity {capacity:,.0f} orders/s: soaking at {rate:,} for {args.minutes} min")
        n = max(4 * args.warmup_windows, round(60 * args.minutes / args.window))
        step_args = argparse.Namespace(
            seconds=args.window, warmup=0.5, ioc=args.ioc, max_inflight=2_000
        )
        windows, samples, shm, resting = [], [], [], []
        t0 = time.monotonic()
        for k in range(n):
            step = e2e.run_step(target, rate, 1, step_args, root)
            left_resting = 0 if args.keep_resting else cancel_resting(target)
            time.sleep(SETTLE_SECONDS)
            if {k: v for k, v in d.pids().items() if k in pids} != pids:
                raise RuntimeError(f"a daemon process was restarted:\n{d.log()[-3000:]}")
            now = {name: sample(pid) for name, pid in pids.items()}
            for name in shards:  # its journal's data file (kB): what its map can hold
                now[name]["journal_kb"] = journal_kb(Path(topology.journal_path(d.config, name)))
            warm = k >= args.warmup_windows
            if warm:
                windows.append(step)
                samples.append(now)
                shm.append(namespace_segments(d.ns))
                resting.append(left_resting)
            rss = ", ".join(f"{name} {s['VmRSS'] / 1024:.1f}" for name, s in now.items())
            anon = ", ".join(f"{name} {s['RssAnon'] / 1024:.1f}" for name, s in now.items())
            fds = ", ".join(f"{name} {s['fds']}" for name, s in now.items())
            files = ", ".join(f"{name} {now[name]['RssFile'] / 1024:.1f}" for name in now)
            journals = ", ".join(f"{name} {now[name]['journal_kb'] / 1024:.1f}" for name in shards)
            log(
                args,
                f"{time.monotonic() - t0:6.0f} s {'' if warm else '(warm-up) '}"
                f"achieved {step.achieved:,.0f}/s p50 {step.p50_us:,.0f} p99 {step.p99_us:,.0f} "
                f"p99.9 {step.p999_us:,.0f} max {step.max_us:,.0f} us lost {step.lost}; "
                f"resting {'kept' if args.keep_resting else left_resting}; "
                f"RSS MiB {rss}; anon MiB {anon}; file-backed MiB {files}; "
                f"journal files MiB {journals}; fds {fds}",
            )
        if d.stop() != 0:
            raise RuntimeError(f"the daemon did not stop cleanly:\n{d.log()[-3000:]}")
        left = namespace_segments(d.ns)
    finally:
        d.close()
    out = {
        "bench": "soak",
        "minutes": args.minutes,
        "capacity_orders_per_sec": round(capacity),
        "probe": [[s.offered, round(s.achieved), not s.saturated] for s in probed],
        "rate": rate,
        "retain_commands": args.retain,
        "windows": len(windows),
        "orders": round(sum(s.achieved for s in windows) * args.window),
        "lost": sum(s.lost for s in windows),
        "resting_cancelled_per_window": None if args.keep_resting else resting,
        "p50_us_first_last": [round(windows[0].p50_us), round(windows[-1].p50_us)],
        "p99_us_first_last": [round(windows[0].p99_us), round(windows[-1].p99_us)],
        **judge(samples, windows, shm, left, args.window),
    }
    out["ok"] = out["ok"] and not out["lost"]
    return out


def probe(target: e2e.Target, args, root: Path) -> tuple[float, list[e2e.Step]]:
    """The highest rate (orders/s) the daemon kept up with, and the steps that found it
    (see the module docstring)."""
    step_args = argparse.Namespace(
        seconds=PROBE_SECONDS, warmup=0.5, ioc=args.ioc, max_inflight=2_000
    )
    steps = []

    def kept_up(rate: int) -> bool:
        step = e2e.run_step(target, rate, 1, step_args, root)
        steps.append(step)
        log(
            args,
            f"  probe: offered {rate:,}/s, achieved {step.achieved:,.0f}/s, "
            f"p50 {step.p50_us:,.0f} us{' (saturated)' if step.saturated else ''}",
        )
        return not step.saturated

    good = 0
    for rate in e2e.RATES:
        if not kept_up(rate):
            bad = rate
            break
        good = rate
    else:
        return float(good), steps
    for _ in range(PROBE_BISECTIONS):
        mid = (good + bad) // 2
        if kept_up(mid):
            good = mid
        else:
            bad = mid
    return float(good), steps


def log(args, text: str) -> None:
    if not args.json:
        print(text, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to soak")
    ap.add_argument("--rate", type=int, help="orders/s to offer (default: half the capacity)")
    ap.add_argument("--bots", type=int, default=4, help="bot processes (one client each)")
    ap.add_argument("--retain", type=int, default=RETAIN, help="retain_commands of the journals")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per window")
    ap.add_argument("--warmup-windows", type=int, default=2, help="windows before the baseline")
    ap.add_argument("--ioc", type=float, default=0.5, help="share of IOC orders that trade")
    ap.add_argument(
        "--keep-resting",
        action="store_true",
        help="leave the bots' resting orders between windows (the books grow all run)",
    )
    ap.add_argument("--dir", default=str(REPO / "var"), help="where the journals are made")
    args = ap.parse_args()
    if args.minutes <= 0 or args.window <= 0 or args.bots < 1 or args.warmup_windows < 0:
        ap.error("need --minutes > 0, --window > 0, --bots >= 1, --warmup-windows >= 0")
    if args.rate is not None and args.rate <= 0:
        ap.error("--rate must be > 0")
    os.makedirs(args.dir, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-soak-", dir=args.dir))
    try:
        out = soak(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    emit(out, args.json)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
