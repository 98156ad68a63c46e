"""Chaos: SIGKILL shards and the gateway under steady trading; nothing acknowledged is lost.

The short run (default) kills each shard and the gateway once; the long one
(``-m slow``, ``make chaos``) kills 24 times, with fsync journals. What is
checked afterwards is ``chaos_check``'s docstring; the summary is printed
(``-s`` shows it).
"""

import statistics

import pytest
from chaos_run import run_chaos


def _report(report, restarts) -> None:
    print(report.summary())
    if restarts:
        print(
            f"restart after a kill (backoff included): median {statistics.median(restarts):.2f} s,"
            f" max {max(restarts):.2f} s"
        )
    for v in report.violations:
        print("  " + v)


@pytest.mark.timeout(180)
def test_kill_each_process_once_while_bots_trade(tmp_path):
    report, restarts = run_chaos(tmp_path, kills=3, bots=3, rate=40)
    _report(report, restarts)
    assert report.kills == 3 and report.gateway_kills == 1
    assert report.acks > 0 and report.trades > 0 and report.retries > 0
    assert report.violations == []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_many_kills_with_fsync_journals(tmp_path):
    report, restarts = run_chaos(
        tmp_path, kills=24, bots=4, rate=50, gap=3.0, after=3.0, durability="fsync"
    )
    _report(report, restarts)
    assert report.kills == 24
    assert report.acks > 0 and report.trades > 0 and report.retries > 0
    assert report.violations == []
