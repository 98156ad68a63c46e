"""The whole daemon as `exchanged run`: supervisor, shards, gateway, a real client over CURVE."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from daemon_harness import REPO

from exchange.config import DEFAULT_TOML, dump_config
from exchange.journal import JournalReader
from gateway.client import order
from gateway.protocol import Ack, BatchAck, Fill, Reject
from shm.ring import inspect_ring


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(240)
def test_trade_kill_a_shard_keep_trading_stop_clean(daemon):
    daemon.start()
    maker, taker = daemon.client(1), daemon.client(2)
    acked = []
    try:
        sell = maker.new_order("ACME", "sell", 10, px=10_000)
        assert isinstance(sell, Ack), sell
        buy = taker.new_order("ACME", "buy", 4, px=10_000)
        assert isinstance(buy, Ack), buy
        acked += [sell.oid, buy.oid]
        fills = [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
        assert [(f.oid, f.qty, f.leaves) for f in fills] == [(sell.oid, 4, 6)]

        # SIGKILL the shard of ACME: the supervisor restarts it, it recovers
        shard = daemon.child_pid("s0")
        os.kill(shard, signal.SIGKILL)
        daemon.wait_log('"msg": "child exited; restarting"')
        daemon.wait_log('"msg": "running", "seq": 2', count=1)
        deadline = time.monotonic() + 60
        while True:  # the first orders after the kill may meet the restart
            again = taker.new_order("ACME", "buy", 6, px=10_000)
            if isinstance(again, Ack) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert isinstance(again, Ack), again
        acked.append(again.oid)
        status = maker.status("ACME", sell.oid)
        assert (status.leaves, status.state) == (0, "filled"), status
    finally:
        maker.close()
        taker.close()
    children = _children_of(daemon.proc.pid)
    assert daemon.stop() == 0, daemon.log()[-3000:]
    # nothing left behind: no process, no shared memory, every ack journaled
    assert not [p for p in children if os.path.exists(f"/proc/{p}")]
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"exch.{daemon.ns}.")]
    with JournalReader(str(Path(daemon.config.journal.dir) / "s0")) as j:
        for oid in acked:
            assert j.order(oid) is not None, oid


@pytest.mark.timeout(60)
def test_bad_config_is_one_clear_error_before_anything_starts(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_TOML.replace('durability = "fsync"', 'durability = "sometimes"'))
    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "journal.durability" in out.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.timeout(240)
def test_a_reject_is_findable_in_the_logs_by_its_cid(daemon):
    daemon.start()
    bot = daemon.client(3)
    try:
        reply = bot.new_order("BOLT", "buy", 10, px=2_502)  # BOLT's tick is 5
        off_tick = [order("BOLT", "buy", 10, px=2_501 + i, coid=f"o{i}") for i in range(3)]
        batch = bot.new_orders([*off_tick, order("NOPE", "buy", 1, px=1)])
    finally:
        bot.close()
    assert isinstance(reply, Reject) and reply.field == "$.px", reply
    assert isinstance(batch, BatchAck), batch

    def logged(cid):
        lines = [json.loads(x) for x in daemon.log().splitlines() if x.startswith("{")]
        return [x for x in lines if x["msg"] == "rejected" and x["cid"] == cid]

    deadline = time.monotonic() + 10  # the gateway logs right after it replies
    while not logged(batch.cid) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = logged(reply.cid)
    assert found and found[0]["code"] == reply.code and found[0]["role"] == "gateway"
    # a batch's refusals: a line per code, with how many orders and the first of them
    lines = sorted(logged(batch.cid), key=lambda x: x["code"])
    assert [(x["code"], x["orders"], x["coid"]) for x in lines] == [
        ("invalid", 3, "o0"),
        ("not_found", 1, ""),
    ]
    assert daemon.stop() == 0


@pytest.mark.timeout(240)
def test_a_spinning_gateway_and_shard_trade_and_never_ring_a_doorbell(daemon):
    """``wait = "spin"`` for the gateway and s0, s1 left asleep (on this shared machine
    three spinners would take every core): orders trade through both shards; no ring
    between spinners ever had a sleep announced or a bell rung, while the sleeping
    shard's request ring did (the counts count); SIGTERM stops the spinners."""
    r = msgspec.structs.replace
    cfg = daemon.config
    shards = [r(cfg.shards[0], wait="spin"), cfg.shards[1]]
    daemon.config = r(cfg, gateway=r(cfg.gateway, wait="spin"), shards=shards)
    daemon.path.write_text(dump_config(daemon.config))
    daemon.start()
    assert '"msg": "running", "seq": 0, "skipped_requests": 0, "wait": "spin"' in daemon.log()
    assert '"wait": "spin"' in next(x for x in daemon.log().splitlines() if '"serving"' in x)
    maker, taker = daemon.client(1), daemon.client(2)
    try:
        for sym, px in (("ACME", 10_000), ("BTC-USD", 6_000_000)):
            sell = maker.new_order(sym, "sell", 10, px=px)
            assert isinstance(sell, Ack), sell
            for _ in range(5):
                buy = taker.new_order(sym, "buy", 2, px=px)
                assert isinstance(buy, Ack), buy
            fills = [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
            assert [(f.qty, f.leaves) for f in fills] == [(2, 8), (2, 6), (2, 4), (2, 2), (2, 0)]
    finally:
        maker.close()
        taker.close()
    rings = {name: inspect_ring(daemon.ns, name) for name in ("s0-req", "s0-evt", "s1-evt")}
    for name, ring in rings.items():
        assert ring.published > 0, name
        assert (ring.consumer_sleeps, ring.data_rings) == (0, 0), ring
        assert (ring.producer_sleeps, ring.space_rings) == (0, 0), ring
    asleep = inspect_ring(daemon.ns, "s1-req")
    assert asleep.consumer_sleeps > 0 and asleep.data_rings > 0, asleep
    assert daemon.stop() == 0, daemon.log()[-3000:]
