"""The gateway owns only its own state: it maps and opens no shard's journal, a damaged
journal takes down only its own shard's instruments, and idempotency keys used on one
shard stay known to the others across gateway restarts (its store and the shards' syncs,
never the journals).

Real processes (``GatewayRig``): two shards, the gateway, CURVE clients. What the
gateway decided is read from its replies and its log (``gateway.log``); the shards'
journals and the gateway's store are read by the test only, to check what was placed
and what a checkpoint held.
"""

import contextlib
import json
import os
import subprocess
import time

import pytest
from gateway_harness import GatewayRig
from journal_stream import idem_entry

from exchange.engine import ShardEngine
from exchange.journal import Journal, JournalReader
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE
from exchange.shard import ShardLoop, StopFlag
from exchange.topology import event_ring, request_ring
from gateway.protocol import Ack, Fill, NewOrder, OrderStatus, Reject, Status
from gateway.store import Checkpoint, GatewayStore
from shm.consumer import Consumer
from shm.producer import Producer
from shm.ring import inspect_ring

pytestmark = pytest.mark.timeout(240)

ACME_PX = 10_000  # s0
BTC_PX = 6_000_000  # s1


@pytest.fixture
def rig(tmp_path):
    r = GatewayRig(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.close()


# ------------------------------------------------------------ helpers


def gateway_log(rig) -> list[dict]:
    """The gateway's JSON log lines so far (a line being written is left for later)."""
    path = rig.tmp / "gateway.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def wait_log(rig, after: int, timeout: float = 60.0, **fields) -> dict:
    """The first gateway log record past the first ``after`` records with ``fields``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in gateway_log(rig)[after:] if fields.items() <= r.items()]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no gateway log line with {fields}:\n{rig.logs()}")
        time.sleep(0.02)


def restart_gateway(rig) -> int:
    """Start the gateway; returns where its log starts (for ``wait_log``)."""
    mark = len(gateway_log(rig))
    rig.start_gateway()
    return mark


def loaded(rig, mark: int) -> dict:
    """The 'state loaded' line of the gateway started at ``mark``."""
    return wait_log(rig, mark, msg="state loaded")


def raw_reply(client, msg, timeout: float = 10.0):
    """Send ``msg`` once (no key added, no retry) and return its reply."""
    client.send(msg)
    reply = client.wait_reply(msg.cid, timeout)
    assert reply is not None, f"no reply to {msg}"
    return reply


def replies(client, cids, timeout: float = 30.0) -> tuple[dict, list]:
    """The replies to ``cids`` (by cid) and the other messages received meanwhile."""
    want, got, other = set(cids), {}, []
    deadline = time.monotonic() + timeout
    while want:
        msg = client.recv(max(0.0, deadline - time.monotonic()))
        assert msg is not None, f"{len(want)} replies missing"
        cid = getattr(msg, "cid", 0)
        if cid in want:
            want.discard(cid)
            got[cid] = msg
        else:
            other.append(msg)
    return got, other


def opened_paths(pid: int) -> tuple[set[str], set[str]]:
    """The files process ``pid`` maps (/proc/<pid>/maps) and holds open (/proc/<pid>/fd)."""
    maps = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                maps.add(parts[5].strip().removesuffix(" (deleted)"))
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            fds.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return maps, fds


def stored_key(rig, client: int, ik: int) -> bool:
    """Whether the gateway's store (its last checkpoint) holds the pair."""
    store = GatewayStore(str(rig.tmp / "gateway"), 1, readonly=True)
    try:
        return store.lookup(client, ik) is not None
    finally:
        store.close()


def stored_checkpoint(rig) -> Checkpoint:
    """The gateway store's last checkpoint."""
    store = GatewayStore(str(rig.tmp / "gateway"), 1, readonly=True)
    try:
        return store.checkpoint()
    finally:
        store.close()


def journaled_key(rig, shard: str, client: int, ik: int):
    """The shard journal's entry for the pair (None: never used there)."""
    with JournalReader(str(rig.tmp / "journal" / shard)) as j:
        return idem_entry(j, client, ik)


def trade_keyed(rig, base: int) -> dict[str, tuple[int, Ack]]:
    """Keyed trades on ACME (s0) and BTC-USD (s1) between clients 1 and 2; returns the
    last taker order per instrument: (its key, its Ack). ACME's is the last order sent."""
    maker, taker = rig.client(1), rig.client(2)
    last = {}
    for i in range(5):
        for n, (sym, px) in enumerate((("BTC-USD", BTC_PX), ("ACME", ACME_PX))):
            k = base + 10 * i + 2 * n
            assert isinstance(maker.new_order(sym, "sell", 2, px=px, ik=k), Ack)
            ack = taker.new_order(sym, "buy", 1, px=px, ik=k + 1)
            assert isinstance(ack, Ack), ack
            last[sym] = (k + 1, ack)
    maker.close()
    taker.close()
    return last


def wait_released(rig, shard: str, timeout: float = 30.0) -> None:
    """Until the shard has released every request written to it (it releases a batch
    after publishing its answers, so an answer can arrive a moment before)."""
    deadline = time.monotonic() + timeout
    while inspect_ring(rig.ns, request_ring(shard)).depth:
        assert time.monotonic() < deadline, f"{shard} keeps requests unreleased"
        time.sleep(0.01)


def damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    n = len(data)
    if how == "truncate":
        os.truncate(path, n // 3)
        return
    for i in range(n // 4, 3 * n // 4):  # the middle half, every bit flipped
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------ 1. no journal is opened


def test_the_gateway_maps_and_opens_no_journal_while_serving(rig):
    pid = rig.procs["gateway"].pid
    journal = os.path.realpath(rig.tmp / "journal")
    store = os.path.join(os.path.realpath(rig.tmp / "gateway"), "data.mdb")
    samples = []

    def sample(when: str) -> None:
        samples.append((when, *opened_paths(pid)))

    sample("before")
    maker, taker = rig.client(1), rig.client(2)
    ik = 1_000_000
    fills = acks = statuses = 0
    for rnd in range(10):
        sent = {maker: [], taker: []}
        for sym, px in (("ACME", ACME_PX), ("BTC-USD", BTC_PX)):
            for _ in range(8):
                for c, side, qty in ((maker, "sell", 2), (taker, "buy", 1)):
                    ik += 1
                    msg = NewOrder(cid=c.next_cid(), sym=sym, side=side, qty=qty, px=px, ik=ik)
                    sent[c].append(c.send(msg))
        sample(f"round {rnd}: orders in flight")
        asks = []
        for c, cids in sent.items():
            got, other = replies(c, cids)
            fills += sum(isinstance(m, Fill) for m in other)
            for msg in got.values():
                assert isinstance(msg, Ack), msg
                acks += 1
                if c is maker:
                    asks.append(c.send(Status(cid=c.next_cid(), sym=msg.sym, oid=msg.oid)))
        sample(f"round {rnd}: status requests in flight")
        got, other = replies(maker, asks)
        fills += sum(isinstance(m, Fill) for m in other)
        assert all(isinstance(m, OrderStatus) for m in got.values()), got
        statuses += len(got)
        sample(f"round {rnd}: answered")
    time.sleep(1.5)  # a checkpoint after the load
    sample("after")
    assert acks == 320 and statuses == 160 and fills > 0, (acks, statuses, fills)
    for when, maps, fds in samples:
        # the check can see what the gateway maps and holds: its own store
        assert store in maps and store in fds, (when, sorted(maps), sorted(fds))
        under = [p for p in maps | fds if p == journal or p.startswith(journal + os.sep)]
        assert not under, (when, under)
    assert rig.procs["gateway"].poll() is None


# ------------------------------------------------------------ 2. a damaged journal


# each stop with one damage by default (each damage is met at start-up alike); every
# pair in the long run
@pytest.mark.parametrize(
    ("stop", "how"),
    [
        ("sigterm", "truncate"),
        ("sigkill", "flip"),
        ("sigkill_after_checkpoint", "truncate"),
        pytest.param("sigterm", "flip", marks=pytest.mark.slow),
        pytest.param("sigkill", "truncate", marks=pytest.mark.slow),
        pytest.param("sigkill_after_checkpoint", "flip", marks=pytest.mark.slow),
    ],
)
def test_a_damaged_journal_takes_down_only_its_own_shard(rig, stop, how):
    """Everything stopped, s0's journal damaged, s0 fails to start: BTC-USD (s1) is
    served, ACME (s0) refused ``unavailable``, the gateway runs on.

    ``stop``: the gateway, then the shards, stopped with SIGTERM (a clean stop: its
    last checkpoint proves s0's tail), SIGKILLed within a few ms of ACME's last Ack
    (a checkpoint that proves it is unlikely: keys s0 alone could check are refused
    ``unavailable``, naming s0; either way what the gateway logged as uncertain
    decides), or SIGKILLed after a checkpoint taken while s0 was idle.

    Before the SIGTERM, and before the checkpoint of the last variant, the test waits
    until s0 has released the requests it answered: a checkpoint taken between the
    two does not prove s0's tail, clean stop or not (see
    ``test_a_clean_stop_right_after_an_answer_proves_the_shards_tail``)."""
    last = trade_keyed(rig, base=5_000)
    acme_ik, _ = last["ACME"]
    btc_ik, btc_ack = last["BTC-USD"]
    if stop == "sigterm":
        wait_released(rig, "s0")
        wait_released(rig, "s1")
        for name in ("gateway", "s0", "s1"):
            assert rig.stop(name) == 0, rig.logs()
    else:
        if stop == "sigkill_after_checkpoint":
            wait_released(rig, "s0")
            # an order on s1 makes the next checkpoint, taken with s0 idle
            ack = rig.client(4).new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=80_001)
            assert isinstance(ack, Ack), ack
            deadline = time.monotonic() + 30
            while not stored_key(rig, 4, 80_001):
                assert time.monotonic() < deadline, "no checkpoint after s0 fell idle"
                time.sleep(0.05)
        for name in ("gateway", "s0", "s1"):
            rig.kill(name)
    damage(rig.tmp / "journal" / "s0" / "data.mdb", how)
    s0 = rig.start_shard_unwatched("s0")
    try:
        code = s0.wait(120)
    except subprocess.TimeoutExpired:
        code = None
    # the scenario needs a shard that cannot run on its journal (a SIGBUS past the
    # truncated end; LMDB's MDB_CORRUPTED or a divergent replay for the flipped bits)
    assert code is not None and code != 0, f"s0 ran on its damaged journal:\n{rig.logs()}"
    rig.start_shard("s1")
    rig.wait_shard("s1")
    mark = restart_gateway(rig)
    serving = wait_log(rig, mark, msg="serving")
    state = loaded(rig, mark)
    s0_unknown = "s0" in state["uncertain"]
    assert set(state["uncertain"]) <= {"s0", "s1"}, state  # s1's, until it syncs
    if stop == "sigterm":  # a clean stop's checkpoint proves every tail
        assert state["uncertain"] == [], state
    elif stop == "sigkill_after_checkpoint":  # taken with s0 idle: its tail is proven
        assert not s0_unknown, state

    t0 = time.monotonic()
    c = rig.client(3, timeout=2.0, retries=0)  # no resend, no back-off: the first answer
    connect = time.monotonic() - t0
    if stop == "sigterm":  # at once: the BTC-USD order's round trip once s1 is synced
        # "serving" comes before the syncs' answers: an order sent between the two is
        # refused unavailable (a clean stop leaves no tail, so the sync is quick)
        synced = wait_log(rig, mark, msg="synced", shard="s1")
        t1 = time.monotonic()
        btc = c.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=90_001)
        round_trip = time.monotonic() - t1
        sync_took = synced["ts"] - serving["ts"]
        assert isinstance(btc, Ack), btc
        assert round_trip < 1.0 and sync_took < 5.0, (round_trip, sync_took, connect)
    else:
        wait_log(rig, mark, msg="synced", shard="s1")
        unkeyed = [
            raw_reply(c, NewOrder(cid=c.next_cid(), sym="BTC-USD", side="buy", qty=1, px=BTC_PX))
            for _ in range(3)
        ]
        assert all(isinstance(r, Ack) for r in unkeyed), unkeyed
        assert len({r.oid for r in unkeyed}) == 3
        fresh = c.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=90_001)
        if s0_unknown:  # a key s0 alone could have seen since the checkpoint
            assert isinstance(fresh, Reject), fresh
            assert (fresh.code, fresh.field) == ("unavailable", "$.ik"), fresh
            assert "s0" in fresh.reason and "s1" not in fresh.reason, fresh
            assert journaled_key(rig, "s1", 3, 90_001) is None
        else:
            assert isinstance(fresh, Ack), fresh

    # the ACME order: refused at once, s0 named
    t2 = time.monotonic()
    acme = c.new_order("ACME", "buy", 1, px=ACME_PX, ik=90_002)
    assert time.monotonic() - t2 < 1.0
    assert isinstance(acme, Reject) and acme.code == "unavailable", acme
    assert "s0" in acme.reason, acme

    # keys used before the stop: never a second order, never an order under ACME's key
    again = rig.client(2, timeout=2.0, retries=0)
    retry = again.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=btc_ik)
    assert isinstance(retry, Ack) and retry.dup, retry
    assert (retry.oid, retry.seq) == (btc_ack.oid, btc_ack.seq), (retry, btc_ack)
    assert journaled_key(rig, "s1", 2, btc_ik).order_id == btc_ack.oid
    elsewhere = again.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=acme_ik)
    assert isinstance(elsewhere, Reject), elsewhere
    if stop == "sigkill" and s0_unknown and not stored_key(rig, 2, acme_ik):
        # not in the checkpoint, and s0 cannot serve what it journaled after it
        assert (elsewhere.code, elsewhere.field) == ("unavailable", "$.ik"), elsewhere
        assert "s0" in elsewhere.reason, elsewhere
    else:  # the checkpoint holds it
        assert (elsewhere.code, elsewhere.field) == ("conflict", "$.ik"), elsewhere
        assert "ACME" in elsewhere.reason, elsewhere
    assert journaled_key(rig, "s1", 2, acme_ik) is None

    time.sleep(0.5)
    assert rig.procs["gateway"].poll() is None, rig.logs()
    assert s0.poll() is not None  # s0 stayed down throughout


class HeldRequests:
    """A shard's request ring whose releases can be held back (``ShardLoop`` calls
    ``release`` after publishing a batch's answers)."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.hold = False
        self.held = 0

    def __getattr__(self, name):
        return getattr(self.consumer, name)

    def release(self, n: int) -> None:
        if self.hold:
            self.held += n
        else:
            self.consumer.release(n)

    def release_held(self) -> None:
        self.consumer.release(self.held)
        self.held = 0


def _shard_in_this_process(rig, name: str):
    """``name``'s shard loop run by the test, step by step (its process stopped first)."""
    index = rig.shards.index(name)
    books = [rig.config.instrument(s).book for s in rig.config.shards[index].instruments]
    journal = Journal(str(rig.tmp / "journal" / name), durability="os")
    engine = ShardEngine(index, books, journal)
    tail = engine.recover().tail_events
    requests = HeldRequests(Consumer(rig.ns, request_ring(name), COMMAND_DTYPE))
    events = Producer(rig.ns, event_ring(name), EVENT_DTYPE)
    loop = ShardLoop(engine, requests, events, rig.ns, StopFlag())
    loop.resume(tail)
    return loop, journal


def test_a_clean_stop_right_after_an_answer_proves_the_shards_tail(rig):
    """The moment a shard publishes a batch's answers and has not released the batch
    yet (``ShardLoop.step``), made to last: the test runs s0's loop itself. A
    checkpoint then found s0 not quiet, and the next gateway refused every keyed NEW
    while s0 was down: quiet is now "no pair held in flight on its instruments"."""
    assert rig.stop("s0") == 0, "s0 did not stop cleanly"
    mark = len(gateway_log(rig))
    loop, journal = _shard_in_this_process(rig, "s0")
    try:
        # s0 is back (another process): the gateway syncs it
        deadline = time.monotonic() + 30
        synced = {"msg": "synced", "shard": "s0"}.items()
        while not [r for r in gateway_log(rig)[mark:] if synced <= r.items()]:
            assert time.monotonic() < deadline, f"s0 not synced:\n{rig.logs()}"
            if not loop.step():
                time.sleep(0.005)
        c = rig.client(1)
        cid = c.send(NewOrder(cid=c.next_cid(), sym="ACME", side="buy", qty=1, px=8_100, ik=4242))
        loop.requests.hold = True
        while not loop.step():
            assert time.monotonic() < deadline, "the order never reached s0"
            time.sleep(0.001)
        ack = c.wait_reply(cid, 10)
        assert isinstance(ack, Ack), f"not acknowledged: {ack}"
        # answered, read by the gateway, not released
        assert inspect_ring(rig.ns, request_ring("s0")).depth == 1, "released"
        # a clean stop: every request answered and read
        assert rig.stop("gateway") == 0, "the gateway did not stop cleanly"
        loop.requests.release_held()
        cp = stored_checkpoint(rig)
    finally:
        loop.requests.consumer.close()
        loop.events.close()
        journal.close()
    # s0 does not come back (as with a damaged journal); s1 is up
    assert cp.clean, f"not a clean stop's checkpoint: {cp.shards}"
    mark = restart_gateway(rig)
    state = loaded(rig, mark)
    wait_log(rig, mark, msg="synced", shard="s1")
    fresh = rig.client(3, retries=0).new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=4343)
    # what happens: state["uncertain"] == ["s0"], and ``fresh`` is refused
    # unavailable: "idempotency key 4343 cannot be checked until shard(s) s0 serve..."
    assert state["uncertain"] == [], (cp.clean, cp.shards, state["uncertain"], fresh)
    assert isinstance(fresh, Ack), fresh


# ------------------------------------------------------------ 3. keys across restarts


def _acme_then_kill(
    rig, client: int, first_ik: int, when: str, kill_s0: bool = False
) -> tuple[int, Ack]:
    """A keyed ACME order acknowledged, then the gateway SIGKILLed (and s0 too with
    ``kill_s0``): once a checkpoint holds the key, or within a few ms of the Ack,
    before any checkpoint has it (a checkpoint that came in between: again, with the
    next key). Returns the key and the Ack."""
    for ik in range(first_ik, first_ik + 5):
        c = rig.client(client)
        ack = c.new_order("ACME", "buy", 1, px=8_100, ik=ik)
        assert isinstance(ack, Ack), ack
        if when == "after_checkpoint":
            deadline = time.monotonic() + 30
            while not stored_key(rig, client, ik):
                assert time.monotonic() < deadline, "no checkpoint with the key"
                time.sleep(0.05)
        rig.kill("gateway")
        c.close()
        if kill_s0:
            rig.kill("s0")
        if when == "after_checkpoint" or not stored_key(rig, client, ik):
            return ik, ack
        # a checkpoint came between the Ack and the kill: again, with another key
        if kill_s0:
            rig.start_shard("s0")
            rig.wait_shard("s0")
        restart_gateway(rig)
    raise AssertionError("a checkpoint came between every Ack and the kill")


@pytest.mark.parametrize("when", ["after_checkpoint", "before_checkpoint"])
def test_a_key_used_on_one_shard_is_a_conflict_on_another_after_a_gateway_crash(rig, when):
    ik, first = _acme_then_kill(rig, 1, 777_000, when)
    mark = restart_gateway(rig)
    state = loaded(rig, mark)
    if when == "before_checkpoint":  # s0 consumed the order after the last checkpoint
        assert "s0" in state["uncertain"], state
    wait_log(rig, mark, msg="synced", shard="s0")
    wait_log(rig, mark, msg="synced", shard="s1")
    c = rig.client(1, retries=0)
    _conflict_there_original_here(rig, c, ik, first)


def _conflict_there_original_here(rig, c, ik: int, first: Ack) -> None:
    """The pair of ``first`` (an ACME Ack) is a conflict on BTC-USD, and its identical
    retry on ACME gets ``first`` again; s1's journal never has it."""
    other = c.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=ik)
    assert isinstance(other, Reject), other
    assert (other.code, other.field) == ("conflict", "$.ik") and "ACME" in other.reason, other
    retry = c.new_order("ACME", "buy", 1, px=8_100, ik=ik)
    assert isinstance(retry, Ack) and retry.dup, retry
    assert (retry.oid, retry.seq) == (first.oid, first.seq), (retry, first)
    assert journaled_key(rig, "s1", 1, ik) is None


@pytest.mark.parametrize("when", ["after_checkpoint", "before_checkpoint"])
def test_a_key_stays_held_while_its_shard_is_down_across_a_gateway_crash(rig, when):
    ik, first = _acme_then_kill(rig, 1, 888_000, when, kill_s0=True)
    mark = restart_gateway(rig)  # s0 is down
    state = loaded(rig, mark)
    wait_log(rig, mark, msg="synced", shard="s1")
    c = rig.client(1, retries=0)
    for _ in range(3):  # not once placed on BTC-USD while s0 is down
        other = c.new_order("BTC-USD", "buy", 1, px=BTC_PX, ik=ik)
        assert isinstance(other, Reject), other
        if when == "after_checkpoint":  # the checkpoint has the key
            assert other.code == "conflict" and "ACME" in other.reason, other
        else:  # only s0's journal has it
            assert "s0" in state["uncertain"], state
            assert (other.code, other.field) == ("unavailable", "$.ik"), other
            assert "s0" in other.reason, other
        time.sleep(0.3)
    down = c.new_order("ACME", "buy", 1, px=8_100, ik=ik)
    assert isinstance(down, Reject) and down.code == "unavailable", down
    assert "s0" in down.reason, down

    before = len(gateway_log(rig))
    rig.start_shard("s0")
    rig.wait_shard("s0")
    wait_log(rig, before, msg="synced", shard="s0")
    _conflict_there_original_here(rig, c, ik, first)
