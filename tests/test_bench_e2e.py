"""The end-to-end benchmark's parts: a bot step against the real echo process, the
summary's fields (CPU per order, the spinning daemon or why not), a tiny whole run,
the results block, the chart."""

import argparse
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from daemon_harness import REPO

from bench import e2e
from bench.e2e import (
    MARK_BEGIN,
    MARK_END,
    SPIN,
    Echo,
    Results,
    Step,
    Target,
    cpu_us_per_order,
    run_step,
    spin_cpus,
    summary,
    write_results,
)
from bench.svgplot import Series, line_chart
from gateway.keys import create_client


@pytest.mark.timeout(120)
def test_a_step_of_two_bots_against_the_echo(tmp_path):
    echo = Echo(tmp_path)
    try:
        secrets = []
        for c in (1, 2):
            secrets.append(tmp_path / f"c{c}.key_secret")
            create_client(tmp_path / "echo-keys", c, secrets[-1])
        pids = {"echo": echo.proc.pid}
        target = Target("echo", echo.endpoint, echo.server_key, secrets, True, pids)
        args = argparse.Namespace(seconds=1.0, warmup=0.2, ioc=0.5, max_inflight=100)
        step = run_step(target, 400, 1, args, tmp_path)
    finally:
        echo.close()
    # 400 orders/s for 1 s: every frame sent, answered, and timed
    assert (step.lost, step.skipped, step.rejected) == (0, 0, 0)
    assert 300 <= step.achieved <= 500
    assert 0 < step.p50_us <= step.p99_us <= step.p999_us <= step.max_us
    assert not step.saturated
    assert set(step.cpu) == {"echo", "bots"}
    # the CPU per order: over every order answered (warm-up included), as the CPU is
    assert 400 * 1.2 * 0.9 <= step.orders <= 400 * 1.2
    assert set(step.cpu_seconds) == {"echo"} and step.cpu_seconds["echo"] > 0
    per_msg = cpu_us_per_order(step, ["echo"])
    assert per_msg == pytest.approx(1e6 * step.cpu_seconds["echo"] / step.orders)
    assert 0 < per_msg < 100_000
    assert math.isnan(cpu_us_per_order(step, ["gateway"]))  # not measured: NaN, not 0


def _step(offered, achieved, cpu, orders, p50=500.0):
    return Step(offered, achieved, p50, 2 * p50, 3 * p50, 4 * p50, 0, 0, 0, {}, 10.0,
                {}, 800.0, 1.0, cpu, orders)  # fmt: skip


def _sweep(gateway_us: list[float], achieved: list[float]):
    """Steps at 1,000, 2,000... orders/s answering ``achieved``, the gateway using
    ``gateway_us`` per order and the two shards 10 and 20 µs."""
    steps = []
    for k, (us, got) in enumerate(zip(gateway_us, achieved, strict=True)):
        orders = round(got * 3.5)
        cpu = {"gateway": us * orders / 1e6, "s0": 10 * orders / 1e6, "s1": 20 * orders / 1e6}
        steps.append(_step(1_000 * 2**k, got, cpu, orders))
    return steps


def test_the_summary_reports_cpu_per_order_at_the_saturated_and_the_light_step():
    fsync = _sweep([60, 40, 30, 28], [1_000, 2_000, 3_000, 3_100])  # saturated from 4,000
    echo = [  # 90 µs a message at 1,000/s (a wake-up each), 20 µs once busy
        _step(1_000 * 2**k, a, {"echo": (20 if k else 90) * a * 3.5 / 1e6}, round(a * 3.5))
        for k, a in enumerate([1_000, 2_000, 4_000, 5_000, 5_100])
    ]
    sweeps = {("echo", 1): echo, ("echo", 8): echo, ("fsync", 1): fsync}
    sweeps |= {("fsync", 8): fsync, ("os", 1): fsync, ("os", 8): fsync}
    results = Results(sweeps, 150.0, fsync[0], ("s0", "s1"), "no cores")
    out = summary(results, 8)
    # the saturated step answering the most: 8,000 offered (3,100 answered)
    assert out["cpu_saturated_offered"] == 8_000
    assert out["gateway_cpu_us_per_order"] == pytest.approx(28, abs=0.1)
    assert out["shards_cpu_us_per_order"] == pytest.approx(30, abs=0.1)
    assert out["gateway_cpu_us_per_order_light"] == pytest.approx(60, abs=0.1)
    assert out["shards_cpu_us_per_order_light"] == pytest.approx(30, abs=0.1)
    assert out["echo_cpu_saturated_offered"] == 16_000
    assert out["echo_cpu_us_per_msg"] == pytest.approx(20, abs=0.1)
    assert out["echo_cpu_us_per_msg_light"] == pytest.approx(90, abs=0.1)
    assert out["target_cpu_met"]  # 28 <= 1.5 x 20 and 60 <= 100
    assert out["spin_skipped"] == "no cores" and "spin_orders_per_sec" not in out
    json.dumps(out)  # one JSON line: no NaN, no numpy scalars in it

    worse = dict(sweeps)
    worse[("fsync", 1)] = _sweep([120, 40, 30, 25], [1_000, 2_000, 3_000, 3_100])
    out = summary(Results(worse, 150.0, fsync[0], ("s0", "s1")), 8)
    assert out["gateway_cpu_us_per_order"] <= 1.5 * out["echo_cpu_us_per_msg"]
    assert not out["target_cpu_met"]  # 120 µs per order at 1,000/s
    assert "spin_skipped" not in out

    spun = dict(sweeps)
    spun[(SPIN, 1)] = _sweep([900, 500, 40, 38], [1_000, 2_000, 3_500, 3_600])
    out = summary(Results(spun, 150.0, fsync[0], ("s0", "s1")), 8)
    assert (out["spin_orders_per_sec"], out["spin_rtt_p50_us"]) == (3_600, 500)
    assert out["spin_gateway_cpu_us_per_order"] == pytest.approx(38, abs=0.1)
    assert out["spin_gateway_cpu_us_per_order_light"] == pytest.approx(900, abs=0.1)
    assert out["spin_cpu_saturated_offered"] == 8_000


def test_spinning_takes_cores_of_their_own_and_one_more_or_says_why_not(monkeypatch):
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    cpus, rest = spin_cpus(["s0", "s1"])
    assert cpus == {"gateway": [2, 3], "s0": [4], "s1": [5]} and rest == [0, 1]
    monkeypatch.setattr(e2e.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    why = spin_cpus(["s0", "s1"])
    assert isinstance(why, str) and why.startswith("spinning needs 5 cpus") and "use 4" in why


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_tiny_whole_run_prints_every_field(tmp_path):
    """Echo, then fsync and os daemons, 1,000 orders/s, 1 and 2 orders a frame; with
    ``--wait spin``, the spinning daemon too where the machine has the cores. Four
    daemons one after the other (~20 s): slow; the default run tests a step against the
    echo, the summary, the results block and the chart."""
    argv = [sys.executable, "-m", "bench.e2e", "--json", "--bots", "1", "--seconds", "0.4"]
    argv += ["--warmup", "0.1", "--max-rate", "1000", "--batch", "2", "--wait", "spin"]
    run = subprocess.run(
        argv + ["--dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=580
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["lost"] == 0 and out["wait"] == "spin"
    for key in (
        "gateway_cpu_us_per_order",
        "gateway_cpu_us_per_order_light",
        "shards_cpu_us_per_order",
        "shards_cpu_us_per_order_light",
        "echo_cpu_us_per_msg",
        "echo_cpu_us_per_msg_light",
    ):
        assert isinstance(out[key], float) and out[key] > 0, (key, out[key])
    assert out["cpu_saturated_offered"] == out["echo_cpu_saturated_offered"] == 1_000
    assert isinstance(out["target_cpu_met"], bool)
    if isinstance(spin_cpus(["s0", "s1"]), str):
        assert out["spin_skipped"].startswith("spinning needs")
    else:
        assert out["spin_gateway_cpu_us_per_order"] > 0 and out["spin_orders_per_sec"] > 0


def test_the_results_block_is_appended_once_then_replaced(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Someone else's section\n\nfigures\n")
    write_results(path, "first table")
    write_results(path, "second table")
    text = path.read_text()
    assert text.startswith("# Results\n\n## Someone else's section\n\nfigures\n\n")
    assert text.count(MARK_BEGIN) == 1 and text.count(MARK_END) == 1
    assert "second table" in text and "first table" not in text


def test_the_chart_is_svg_with_a_line_per_series_and_log_ticks():
    svg = line_chart(
        [
            Series("a", [1_000, 2_000, 4_000], [300, 400, 2_000]),
            Series("b", [1_000, 2_000, float("nan")], [500, 0, 700], dashed=True),
        ],
        title="t",
        x_label="x",
        y_label="y",
        log_x=True,
        log_y=True,
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert [len(p.get("points").split()) for p in lines] == [3, 1]  # NaN and 0 left out
    assert lines[1].get("stroke-dasharray")
    labels = [t.text for t in root.findall(f"{ns}text")]
    assert {"1k", "2k", "5k", "10k", "100", "200", "500"} <= set(labels)
    with pytest.raises(ValueError, match="nothing to plot"):
        line_chart([Series("c", [0], [1])], title="t", x_label="x", y_label="y", log_x=True)
