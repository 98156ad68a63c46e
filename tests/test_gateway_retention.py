"""Journal retention seen through a real gateway and real shards: a retransmission that
reaches before what a shard's journal keeps, a gateway whose saved state is older than
a shard's history (and the way back), a retry of a keyed order whose batch was pruned.

The shards keep RETAIN commands and snapshot every SNAPSHOT_EVERY, so a few dozen
orders make s0 prune (once a second, between batches); the tests wait for the prune
the journal says is due (``settled``), never for a time."""

import shutil
import time

import msgspec
import pytest
from gateway_harness import GatewayRig, wait_notices

from exchange.config import dump_config
from exchange.journal import HistoryPruned, JournalReader
from gateway.client import order
from gateway.protocol import Ack, BatchAck, Fill, OrderStatus, Reject, TradesEnd

pytestmark = pytest.mark.timeout(120)

RETAIN = 20
SNAPSHOT_EVERY = 10
PRUNED_SYNC = "the shard's journal no longer holds the history after the gateway's watermark"


def retaining(rig: GatewayRig) -> GatewayRig:
    r = msgspec.structs.replace
    cfg = rig.config
    rig.config = r(
        cfg,
        journal=r(cfg.journal, retain_commands=RETAIN),
        snapshot=r(cfg.snapshot, every_commands=SNAPSHOT_EVERY),
    )
    rig.config_path.write_text(dump_config(rig.config))
    return rig


@pytest.fixture
def rig(tmp_path):
    r = retaining(GatewayRig(tmp_path))
    try:
        r.start()
        yield r
    finally:
        r.close()


def crosses(maker, taker, sym: str, px: int, n: int) -> list[int]:
    """``n`` trades of 1 on ``sym``, each a resting sell and a buy taking it; the buys'
    seqs (a trade's seq)."""
    seqs = []
    for _ in range(n):
        assert isinstance(maker.new_order(sym, "sell", 1, px=px), Ack)
        ack = taker.new_order(sym, "buy", 1, px=px)
        assert isinstance(ack, Ack), ack
        seqs.append(ack.seq)
    return seqs


def settled(rig: GatewayRig, shard: str = "s0", timeout: float = 30) -> int:
    """Wait until the shard has pruned everything retention lets it take (its latest
    snapshot and last RETAIN commands bound it); the seq it pruned up to."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.05)
        try:
            with JournalReader(str(rig.tmp / "journal" / shard)) as j:
                pruned = j.pruned
                snap = j.latest_snapshot()
                bound = min(j.last_seq - RETAIN, snap[0] if snap else 0)
                ends = [int(c["seq"][-1]) for c, _ in j.iter_batches(pruned) if len(c)]
        except HistoryPruned:  # pruned further while it was read
            continue
        due = max([e for e in ends if e <= bound], default=pruned)
        if pruned > 0 and pruned == due:
            return pruned
        assert time.monotonic() < deadline, f"pruned {pruned}, due {due}:\n{rig.logs()}"


def wait_log(rig: GatewayRig, text: str, count: int, timeout: float = 60) -> None:
    log = rig.tmp / "gateway.log"
    rig._wait(lambda: log.read_text().count(text) >= count, timeout, repr(text))


def restart_gateway(rig: GatewayRig, synced: int) -> None:
    """Start the gateway; wait until it has logged ``synced`` syncs in all (this run's
    included)."""
    rig.start_gateway()
    wait_log(rig, '"msg": "synced"', synced)


def test_a_retransmission_before_what_the_shard_keeps_is_refused_naming_the_first_kept(rig):
    maker, taker = rig.client(1), rig.client(2)
    seqs = crosses(maker, taker, "ACME", 10_000, 30)
    kept = settled(rig)
    assert seqs[0] <= kept < seqs[-1]  # some prints gone, some kept

    for start in (1, seqs[0], kept):
        got, r = taker.trades("ACME", start, seqs[-1])
        assert got == [] and isinstance(r, Reject), r
        assert (r.code, r.field) == ("not_found", "$.from_seq")
        assert r.reason == (
            f"the history of ACME up to seq {kept} is no longer kept (journal retention): "
            f"ask from_seq {kept + 1} or later"
        )
    # from the first seq kept on: every print still kept, as the feed made them
    got, end = taker.trades("ACME", kept + 1, seqs[-1])
    assert isinstance(end, TradesEnd), end
    want = [s for s in seqs if s > kept]
    assert [m.seq for m in got] == want and end.count == len(want)
    assert [m.prev for m in got] == [0, *want[:-1]]
    assert all(m.retx and m.prints == [(10_000, 1)] for m in got)
    # another shard's history, never pruned, is served whole
    btc = rig.config.instrument("BTC-USD").ref_price
    btc_seqs = crosses(maker, taker, "BTC-USD", btc, 2)
    got, end = taker.trades("BTC-USD", 1, btc_seqs[-1])
    assert [m.seq for m in got] == btc_seqs and end.count == 2


def test_a_gateway_state_older_than_a_shards_history_keeps_that_shard_unavailable(rig):
    state = rig.tmp / "gateway"  # topology.gateway_state_dir(Config): beside the journals
    maker, taker = rig.client(1), rig.client(2, retries=0)
    crosses(maker, taker, "ACME", 10_000, 1)
    assert rig.stop("gateway") == 0
    shutil.copytree(state, rig.tmp / "gateway.old")  # a copy of the stopped gateway's state
    restart_gateway(rig, synced=4)
    crosses(maker, taker, "ACME", 10_000, 30)
    settled(rig)
    positions = taker.positions()
    assert rig.stop("gateway") == 0
    shutil.copytree(state, rig.tmp / "gateway.recent")

    # the gateway started on the old state: s0 pruned what it had not read
    shutil.rmtree(state)
    shutil.copytree(rig.tmp / "gateway.old", state)
    for run in (1, 2):  # and again on the state that run saved: it does not forget
        restart_gateway(rig, synced=4 + 2 * run)
        # logged as the sync is answered, before its "synced"
        lines = [x for x in (rig.tmp / "gateway.log").read_text().splitlines() if PRUNED_SYNC in x]
        assert len(lines) == run, rig.logs()
        line = lines[-1]
        assert '"shard": "s0"' in line and "restore the gateway's state" in line
        for sym in ("ACME", "BOLT"):
            r = taker.new_order(sym, "buy", 1, px=10_000)
            assert isinstance(r, Reject) and r.code == "unavailable", r
            assert "older than the history" in r.reason and "s0" in r.reason, r.reason
        _, r = taker.trades("ACME", 1, 10)
        assert isinstance(r, Reject) and r.code == "unavailable", r
        # the other shard trades
        btc = rig.config.instrument("BTC-USD").ref_price
        crosses(maker, taker, "BTC-USD", btc, 1)
        assert rig.stop("gateway") == 0

    # the way out: a state the shard's history still reaches (the shards replay the rest)
    shutil.rmtree(state)
    shutil.copytree(rig.tmp / "gateway.recent", state)
    restart_gateway(rig, synced=10)
    assert (rig.tmp / "gateway.log").read_text().count(PRUNED_SYNC) == 2
    crosses(maker, taker, "ACME", 10_000, 1)
    now = {p.sym: p.pos for p in taker.positions().positions}
    before = {p.sym: p.pos for p in positions.positions}
    assert now["ACME"] == before["ACME"] + 1 == 32
    assert now["BTC-USD"] == 2


def test_a_retry_of_a_keyed_order_whose_batch_was_pruned_is_refused_and_makes_nothing(rig):
    maker, taker = rig.client(1), rig.client(2)
    assert isinstance(maker.new_order("ACME", "sell", 1, px=9_000), Ack)
    ack = taker.new_order("ACME", "buy", 2, px=9_000, ik=77)
    assert isinstance(ack, Ack) and not ack.dup, ack
    [fill] = wait_notices(taker, 1, Fill)
    assert (fill.oid, fill.qty, fill.dup) == (ack.oid, 1, False)
    crosses(maker, rig.client(3), "ACME", 10_000, 30)
    assert settled(rig) >= ack.seq

    # the shard's key went with the batch; the gateway still knows the key was used
    again = taker.new_order("ACME", "buy", 2, px=9_000, ik=77, coid="retry")
    assert isinstance(again, Reject), again
    assert (again.code, again.field, again.coid) == ("conflict", "$.ik", "retry")
    assert again.reason.startswith("idempotency_key_expired: ")
    status = taker.status("ACME", ack.oid)
    assert isinstance(status, OrderStatus) and (status.leaves, status.state) == (1, "live")
    assert not [m for m in taker.notices() if isinstance(m, Fill)]
    book = maker.book("ACME")
    assert [tuple(level) for level in book.bids] == [(9_000, 1, 1)]  # nothing new
    # the same inside a batch long enough to go through the stages as a run
    orders = [order("ACME", "buy", 1, px=8_000 + i) for i in range(19)]
    orders.insert(7, order("ACME", "buy", 2, px=9_000, ik=77))
    reply = taker.new_orders(orders)
    assert isinstance(reply, BatchAck), reply
    refused = [(i, r) for i, r in enumerate(reply.results) if isinstance(r, Reject)]
    assert [(i, r.code, r.reason.split(":")[0]) for i, r in refused] == [
        (7, "conflict", "idempotency_key_expired")
    ]
    taker.mass_cancel("ACME")
