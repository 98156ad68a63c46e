"""The commit benchmark on a tiny run: it reports both sides, the pages a commit writes
(one per level of the tree and one free-list page) and, under strace, two syncs per
commit for both (no timing is asserted: the machine is shared)."""

import json
import os
import shutil

import pytest

from bench.commit import main


@pytest.mark.timeout(240)
def test_a_tiny_run_reports_both_sides_their_pages_and_syncs(tmp_path, capsys):
    argv = ["--json", "--dir", str(tmp_path), "--commits", "30", "--warmup", "10"]
    traced = shutil.which("strace") is not None
    assert main([*argv, "--strace"] if traced else argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "commit" and out["commits"] == 30 and out["prefill"] == 0
    journal, raw = out["journal"], out["raw"]
    assert 0 < journal["commit_p50_us"] <= journal["write_p50_us"]
    assert raw["commit_p50_us"] > 0 and out["ratio"] > 0 and out["ratio_write"] > 0
    if os.path.exists("/proc/self/io"):
        # a commit writes the path to its record's leaf and a free-list page, no more
        for side in (journal, raw):
            assert side["data_pages_p50"] == side["depth"] + 1
    if traced and out["strace"] is not None:
        for side in ("journal", "raw"):
            counted = out["strace"][side]
            assert counted["fdatasync_per_commit"] == 1.0  # the data pages
            assert counted["syncs_per_commit"] == 2.0  # and the meta page, O_DSYNC
    assert not list(tmp_path.iterdir())  # the environments removed
