"""The end-to-end benchmark's parts: a bot step against the real echo process, the
results block, the chart."""

import argparse
import xml.etree.ElementTree as ET

import pytest

from bench.e2e import MARK_BEGIN, MARK_END, Echo, Target, run_step, write_results
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
        target = Target("echo", echo.endpoint, echo.server_key, secrets, True, {})
        args = argparse.Namespace(seconds=1.0, warmup=0.2, ioc=0.5, max_inflight=100)
        step = run_step(target, 400, 1, args, tmp_path)
    finally:
        echo.close()
    # 400 orders/s for 1 s: every frame sent, answered, and timed
    assert (step.lost, step.skipped, step.rejected) == (0, 0, 0)
    assert 300 <= step.achieved <= 500
    assert 0 < step.p50_us <= step.p99_us <= step.p999_us <= step.max_us
    assert not step.saturated
    assert set(step.cpu) == {"bots"}  # no server process given


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
