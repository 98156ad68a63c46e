"""A shard that makes no progress (SIGSTOP) on the requests waiting for it: reported
stalled by the gateway's log and `exchanged status`, its new requests refused
`unavailable` while other shards' are taken, nothing in its ring dropped; all
back to normal once it moves again."""

import json
import os
import signal
from pathlib import Path

import msgspec
import pytest
from daemon_harness import Daemon
from shm_helpers import wait_until

from daemon import cli
from exchange.topology import request_ring
from gateway.protocol import Ack, NewOrder, Reject
from shm.ring import inspect_ring

STALL_MS = 1_000


def configure(config):
    r = msgspec.structs.replace
    return r(config, gateway=r(config.gateway, stall_ms=STALL_MS))


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _status(daemon: Daemon, capsys, *extra) -> tuple[int, str]:
    code = cli.main(["status", "--config", str(daemon.path), *extra])
    return code, capsys.readouterr().out


@pytest.mark.timeout(300)
def test_a_stopped_shard_is_reported_stalled_and_refused_until_it_moves(daemon, capsys):
    daemon.start()
    client = daemon.client(1)
    s0 = None
    try:
        # the key table's reload may make the first order wait a retry or two
        assert isinstance(client.new_order("ACME", "buy", 1, px=9_000), Ack)
        client.retries = 0  # one frame per request from here on
        s0 = daemon.child_pid("s0")
        os.kill(s0, signal.SIGSTOP)
        wait_until(lambda: _state(s0) == "T", 10, "s0 stopped")

        ring = request_ring("s0")
        # the shard answers before it releases a request's slot: a stop between the two
        # leaves the acknowledged order counted in the ring's depth
        stopped_at = inspect_ring(daemon.ns, ring).depth
        waiting = client.send(
            NewOrder(cid=client.next_cid(), sym="ACME", side="buy", qty=1, px=9_005)
        )
        in_ring = stopped_at + 1
        wait_until(
            lambda: inspect_ring(daemon.ns, ring).depth == in_ring, 10, "the order in s0's ring"
        )
        daemon.wait_log('"msg": "shard stalled"', timeout=10 + STALL_MS / 1000)

        refused = client.new_order("ACME", "buy", 1, px=9_010)
        assert isinstance(refused, Reject) and refused.code == "unavailable", refused
        assert "shard s0" in refused.reason and "stalled" in refused.reason, refused
        took = float(refused.reason.split("for ")[-1].split(" s;")[0])
        assert took >= STALL_MS / 1000, refused.reason
        assert isinstance(client.new_order("BTC-USD", "buy", 1, px=5_000_000), Ack)
        assert inspect_ring(daemon.ns, ring).depth == in_ring  # the refused one never got there

        code, out = _status(daemon, capsys, "--json")
        doc = json.loads(out)
        shards = {p["name"]: p for p in doc["expected"]}
        assert code == 1 and not doc["all_up"] and doc["running"]
        assert shards["s0"]["state"] == "stalled", shards["s0"]
        assert shards["s0"]["stalled_seconds"] >= STALL_MS / 1000
        assert (shards["s1"]["state"], shards["s1"]["stalled_seconds"]) == ("up", None)
        code, out = _status(daemon, capsys)
        assert code == 1 and "not up: s0 (stalled " in out.splitlines()[0], out
        assert any(line.split()[:1] == ["s0"] and "stalled" in line for line in out.splitlines())

        os.kill(s0, signal.SIGCONT)
        answer = client.wait_reply(waiting, 10)
        assert isinstance(answer, Ack), answer  # what waited in the ring is answered
        daemon.wait_log('"msg": "shard progressing again"', timeout=10)
        assert isinstance(client.new_order("ACME", "buy", 1, px=9_015), Ack)
        code, out = _status(daemon, capsys, "--json")
        assert code == 0, out
        assert {p["name"]: p["state"] for p in json.loads(out)["expected"]}["s0"] == "up"
    finally:
        if s0 is not None:
            os.kill(s0, signal.SIGCONT)  # a stopped process would not die of SIGTERM
        client.close()
    log = daemon.log()
    assert log.count('"msg": "shard stalled"') == 1, "logged once per stall"
    assert log.count('"msg": "shard progressing again"') == 1
