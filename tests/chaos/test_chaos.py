"""Chaos: SIGKILL shards, the gateway, the supervisor, and all of them at once under steady
trading, the bots retrying with the same keys and reusing keys on the other shard's
instruments; nothing acknowledged is lost and no key makes two orders.

The short run (default) kills each shard, the gateway, the supervisor alone and
everything at once, once each in random order; the long one (``-m slow``, ``make
chaos``) kills 24 times, with fsync journals. What is checked afterwards is
``chaos_check``'s docstring; the summary is printed (``-s`` shows it).
"""

import statistics
from collections import defaultdict

import pytest
from chaos_run import run_chaos


def _report(report, restarts) -> None:
    print(report.summary())
    by_victim = defaultdict(list)
    for victim, seconds in restarts:
        by_victim[victim].append(seconds)
    if by_victim:
        print(
            "ready again after a kill (backoff or new supervisor included): "
            + ", ".join(
                f"{victim} median {statistics.median(s):.2f} s max {max(s):.2f} s ({len(s)})"
                for victim, s in sorted(by_victim.items())
            )
        )
    for v in report.violations:
        print("  " + v)


def _each_kind(report) -> bool:
    kills = (report.shard_kills, report.gateway_kills, report.supervisor_kills, report.all_kills)
    return min(kills) > 0


@pytest.mark.timeout(180)
def test_kill_each_process_once_while_bots_trade(tmp_path):
    report, restarts = run_chaos(tmp_path, kills=5, bots=3, rate=40)
    _report(report, restarts)
    assert report.kills == 5 and report.shard_kills == 2 and _each_kind(report)
    assert report.acks > 0 and report.trades > 0 and report.retries > 0
    assert report.reuses > 0 and report.reuse_conflicts > 0 and report.iceberg_acks > 0
    assert report.gtd_acks > 0 and report.expired > 0 and report.halts > 0
    assert report.violations == []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_many_kills_with_fsync_journals(tmp_path):
    report, restarts = run_chaos(
        tmp_path, kills=24, bots=4, rate=50, gap=3.0, after=3.0, durability="fsync"
    )
    _report(report, restarts)
    assert report.kills == 24 and _each_kind(report)
    assert report.acks > 0 and report.trades > 0 and report.retries > 0
    assert report.reuses > 0 and report.reuse_conflicts > 0 and report.iceberg_acks > 0
    assert report.gtd_acks > 0 and report.expired > 0 and report.halts > 0
    assert report.violations == []
