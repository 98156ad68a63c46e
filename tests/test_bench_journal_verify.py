"""The checksum cost benchmark on a tiny journal: it runs, folds, and reports sane
figures (no timing is asserted: the machine is shared)."""

import json

import pytest

from bench.journal_verify import main


@pytest.mark.timeout(240)
def test_a_tiny_run_reports_reads_lookups_and_folds(tmp_path, capsys):
    argv = ["--json", "--dir", str(tmp_path), "--commands", "6000", "--batch", "100"]
    assert main([*argv, "--merge-rows", "1000", "--lookups", "50", "--repeats", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "journal_verify" and out["commands"] == 6000
    assert out["records"] == 60 and out["record_mb"] > 0
    assert out["lookups"] == 50
    assert out["folds"] >= 2 and out["fold_rows"] == 1000
    timings = [v for k, v in out.items() if k.endswith(("_ms", "_us", "_median"))]
    assert len(timings) == 9 and all(t > 0 for t in timings)
    assert not list(tmp_path.iterdir())  # the journals removed
