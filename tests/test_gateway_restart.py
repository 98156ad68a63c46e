"""A gateway that restarts while its requests wait in a shard's ring (the shard is
busy, or stopped): the idempotency keys those requests hold stay held. A shard whose
gateway is stopped expires nothing until it is back: no event waits unread."""

import time

import pytest
from gateway_harness import GatewayRig

from exchange.topology import event_ring, request_ring
from gateway.protocol import Ack, NewOrder
from shm.ring import inspect_ring

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig(tmp_path):
    r = GatewayRig(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.close()


def test_a_key_waiting_in_a_ring_across_a_gateway_restart_is_a_conflict_elsewhere(rig):
    before = rig.last_seqs()
    # the gateway's start-up SYNC released first: the depth below must be the order's
    deadline = time.monotonic() + 10
    while inspect_ring(rig.ns, request_ring("s0")).depth:
        assert time.monotonic() < deadline, "s0 never released the gateway's SYNC"
        time.sleep(0.01)
    rig.pause("s0")  # ACME's shard: the order waits in its request ring
    try:
        c = rig.client(1)
        c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=1, px=8_100, ik=777))
        deadline = time.monotonic() + 10
        while inspect_ring(rig.ns, request_ring("s0")).depth < 1:
            assert time.monotonic() < deadline, "the order never reached s0's ring"
            time.sleep(0.01)
        rig.kill("gateway")  # a crash: the new gateway's ledger starts empty
        rig.start_gateway()
        c = rig.client(1)
        other = c.new_order("BTC-USD", "buy", 1, px=6_000_000, ik=777)
        assert (other.code, other.field) == ("conflict", "$.ik") and "ACME" in other.reason
    finally:
        rig.resume("s0")
    # s0 places the ACME order (its answer went to the dead gateway's connection);
    # once it is answered, the key is found in s0's journal instead
    deadline = time.monotonic() + 10
    while rig.last_seqs()["s0"] == before["s0"]:
        assert time.monotonic() < deadline, "s0 never took the order"
        time.sleep(0.01)
    again = c.new_order("ETH-USD", "buy", 1, px=290_000, ik=777)
    assert again.code == "conflict" and "ACME" in again.reason
    assert isinstance(c.new_order("BTC-USD", "buy", 1, px=6_000_000, ik=778), Ack)
    assert rig.last_seqs()["s1"] == before["s1"] + 1  # only the order with key 778


def test_orders_due_while_the_gateway_is_stopped_expire_first_once_it_is_back(rig):
    c = rig.client(1)
    at = time.time_ns() + 1_000_000_000
    ack = c.new_order("ACME", "buy", 5, px=9_001, tif="gtd", expire_at=at)
    assert isinstance(ack, Ack)
    c.close()
    assert rig.stop("gateway") == 0
    journaled = rig.last_seqs()["s0"]
    # due, and two of s0's ticks (every second) later: s0 has sequenced nothing, and
    # its event ring holds nothing nobody reads (at a shutdown, the rings are released)
    while time.time_ns() < at + 2_500_000_000:
        time.sleep(0.1)
    assert rig.last_seqs()["s0"] == journaled
    assert inspect_ring(rig.ns, event_ring("s0")).depth == 0
    rig.start_gateway()
    c = rig.client(1)
    gone = c.status("ACME", ack.oid)
    assert (gone.state, gone.leaves) == ("cancelled", 0), gone
    # the EXPIRE came before anything the new gateway sent
    later = c.new_order("ACME", "buy", 5, px=9_001)
    assert isinstance(later, Ack) and gone.seq == journaled + 1 < later.seq, (gone, later)
