"""The gateway start-up benchmark on a tiny history: it runs real shards and a real
gateway, and reports sane figures (no timing is asserted: the machine is shared)."""

import json

import pytest

from bench.gateway_start import main


@pytest.mark.timeout(240)
def test_a_tiny_run_reports_a_cold_and_a_warm_start_of_both_shards(tmp_path, capsys):
    assert main(["--sizes", "2000", "--json", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "gateway_start" and out["sizes"] == [2000]
    assert out["synced_ok"] and out["errors"] == 0
    assert out["warm_ratio"] == 1.0  # one size: the largest is the smallest
    assert all(s > 0 for s in out["cold_seconds"] + out["warm_seconds"])
    [run] = out["runs"]
    assert set(run["events"]) == {"s0", "s1"}
    assert all(run["events"][s] > 2000 and run["trades"][s] > 0 for s in ("s0", "s1"))
    for start, from_checkpoint in ((run["cold"], False), (run["warm"], True)):
        assert start["checkpoint"] is from_checkpoint
        assert start["seq"] == {"s0": 2000, "s1": 2000}
        assert start["resting"] == run["resting"]
        assert 0 < start["compiled"] <= start["state_loaded"] <= start["serving"]
        assert start["state_loaded"] <= min(start["synced"].values())
        assert start["synced_all"] == max(start["synced"].values())
    assert run["cold"]["watermarks"] == {"s0": 0, "s1": 0}
    # the clean stop's checkpoint: everything read, only the last batch asked again
    assert run["warm"]["watermarks"] == {"s0": 2000, "s1": 2000}
    assert not list(tmp_path.iterdir())  # journals and gateway state removed
