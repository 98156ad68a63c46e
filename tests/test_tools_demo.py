"""``exch demo``: the daemon, a maker and a taker as real processes; trades happen, the
price moves, everything stops cleanly and the journals verify."""

import json
import os

import pytest
from daemon_harness import Daemon

from tools import cli


@pytest.fixture
def config(tmp_path):
    d = Daemon(tmp_path)  # its config only: unique namespace and ports; the demo starts it
    try:
        yield d
    finally:
        d.close()


@pytest.mark.timeout(240)
def test_the_bots_trade_and_the_book_moves(config, tmp_path, capsys):
    argv = ["demo", "--config", str(config.path), "--dir", str(tmp_path / "demo"), "--json"]
    assert cli.main([*argv, "--seconds", "6"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["exit_codes"] == {"taker": 0, "maker": 0, "daemon": 0}
    assert summary["trades"] > 0 and summary["volume"] >= summary["trades"]
    assert summary["high"] > summary["low"]  # the price moved
    book = summary["book"]
    assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
    # the daemon stopped cleanly: no ring or counter block is left
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{config.ns}.")]
    assert cli.main(["journal", "verify", "--config", str(config.path), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["ok"] and verified["shards"][0]["trades"] >= summary["trades"]
    # the maker cancelled its quotes when it stopped
    assert verified["shards"][0]["live_orders"] == 0
