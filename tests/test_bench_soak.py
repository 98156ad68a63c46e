"""bench.soak's verdicts, from made-up samples and windows."""

from bench.e2e import Step
from bench.soak import judge


def _window(p50: float) -> Step:
    return Step(1_000, 1_000.0, p50, 2 * p50, 3 * p50, 4 * p50, 0, 0, 0, {}, 10.0,
                {}, 800.0, 1.0, {}, 30_000)  # fmt: skip


def _samples(anon: list[int], file: list[int], journal: list[int] | None = None) -> list[dict]:
    """One process, "s0", sampled once per window (kB), and its journal's data file."""
    journal = journal or [90_000] * len(anon)
    return [
        {"s0": {"VmRSS": a + f, "RssAnon": a, "RssFile": f, "fds": 9, "journal_kb": j}}
        for a, f, j in zip(anon, file, journal, strict=True)
    ]


def _judge(anon, file, p50s=(500.0,) * 8, journal=None):
    samples = _samples(anon, file, journal)
    return judge(samples, [_window(p) for p in p50s], [[]] * 8, [], 30.0)


def test_a_flat_heap_and_a_journal_map_that_stopped_growing_pass():
    # the map doubles while the journal fills up to its retention, then holds; the kernel
    # takes pages back every few seconds, so a sample falls anywhere below the highest
    file = [400_000, 600_000, 790_000, 800_000, 500_000, 810_000, 640_000, 805_000]
    out = _judge([100_000] * 8, file, journal=[50_000, 80_000, 99_000] + [100_000] * 5)
    assert out["rss_anon_ok"] and out["rss_file_ok"] and out["latency_ok"] and out["ok"]
    assert out["rss_file_kb_growth"] == {"s0": 405_000}
    assert out["rss_file_kb_highest_first_second_half"] == {"s0": [800_000, 810_000]}
    assert out["journal_kb_baseline_mid_end"] == {"s0": [50_000, 100_000, 100_000]}


def test_a_heap_growing_5_percent_fails():
    out = _judge(
        [100_000, 101_000, 102_000, 103_000, 103_500, 104_000, 104_500, 105_000], [1_000] * 8
    )
    assert out["rss_anon_growth_pct"] == {"s0": 5.0}
    assert out["rss_anon_kb_per_window"]["s0"][-2:] == [104_500, 105_000]
    assert not out["rss_anon_ok"] and not out["ok"]
    assert out["rss_anon_bytes_per_order"] == {"s0": round(1024 * 5_000 / (7 * 30_000), 1)}


def test_a_map_still_growing_in_the_second_half_fails():
    file = [400_000, 500_000, 600_000, 700_000, 800_000, 850_000, 900_000, 950_000]
    out = _judge([100_000] * 8, file)
    assert not out["rss_file_ok"] and not out["ok"]  # 950,000 >= 1.05 x 700,000


def test_a_journal_file_still_growing_in_the_second_half_fails():
    grows = [50_000 + 10_000 * k for k in range(8)]
    out = _judge([100_000] * 8, [500_000] * 8, journal=grows)
    assert not out["rss_file_ok"] and not out["ok"]  # 120,000 >= 1.05 x 90,000


def test_latency_drifting_up_fails():
    out = _judge([100_000] * 8, [1_000] * 8, (500, 500, 520, 600, 700, 760, 800, 900))
    assert out["p50_drift"] == 1.7  # the last two windows' median 850, the first two's 500
    assert not out["latency_ok"] and not out["ok"]
