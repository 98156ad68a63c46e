"""The chaos checks catch what they are for: real journals (written by ShardEngine) and
bot records, clean and then broken one promise at a time."""

import copy

import msgspec
import pytest
from chaos_check import check

from exchange.config import DEFAULT_TOML, parse_config
from exchange.engine import ShardEngine
from exchange.journal import Journal
from exchange.records import CMD_NEW, EV_TRADE, SIDE_BUY, SIDE_SELL, commands

MAKER, TAKER = 11, 12


@pytest.fixture
def config(tmp_path):
    cfg = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    return r(cfg, journal=r(cfg.journal, dir=str(tmp_path / "journal"), durability="os"))


def _news(*specs) -> "commands":
    """specs: (instrument, client, side, price, qty, idem key)"""
    cmds = commands(len(specs))
    for c, (inst, client, side, px, qty, ik) in zip(cmds, specs, strict=True):
        c["kind"], c["instrument"], c["client"] = CMD_NEW, inst, client
        c["side"], c["price"], c["qty"], c["idem_key"] = side, px, qty, ik
    return cmds


def _record(client: int) -> dict:
    return {
        "client": client,
        "orders": {},
        "acks": [],
        "rejects": [],
        "cancelled": [],
        "fills": [],
        "sent": 0,
        "retries": 0,
        "retryable": 0,
        "reconnects": 1,
        "skipped": 0,
        "unanswered": [],
    }


@pytest.fixture
def traded(config):
    """s0: the maker sells 5 ACME at 10,000, the taker buys 3 of them; s1: one resting order.
    Returns the two bots' records as they would have written them (ack instant 10.0)."""
    records = {MAKER: _record(MAKER), TAKER: _record(TAKER)}
    streams = {
        "s0": [
            _news((0, MAKER, SIDE_SELL, 10_000, 5, 101)),
            _news((0, TAKER, SIDE_BUY, 10_000, 3, 201)),
        ],
        "s1": [_news((0, MAKER, SIDE_BUY, 6_000_000, 1, 102))],
    }
    for index, shard in enumerate(config.shards):
        books = [config.instrument(s).book for s in shard.instruments]
        with Journal(f"{config.journal.dir}/{shard.name}", durability="os") as j:
            engine = ShardEngine(index, books, j, snapshot_every=1)
            for cmds in streams[shard.name]:
                ev = engine.apply(cmds).events
                for e in ev[ev["kind"] == 1]:  # ACCEPTED
                    sym = shard.instruments[e["instrument"]]
                    ack = [1, int(e["idem_key"]), sym, int(e["order_id"]), int(e["seq"]), False]
                    records[int(e["client"])]["acks"].append(ack + [10.0])
                for e in ev[ev["kind"] == 3]:  # TRADE: each side's fill
                    sym = shard.instruments[e["instrument"]]
                    seq, idx, px, qty = int(e["seq"]), int(e["idx"]), int(e["price"]), int(e["qty"])
                    records[int(e["client"])]["fills"].append(
                        [sym, seq, idx, int(e["order_id"]), "buy", px, qty, 0, False]
                    )
                    records[int(e["other_client"])]["fills"].append(
                        [sym, seq, idx, int(e["other_id"]), "sell", px, qty, 2, False]
                    )
    return list(records.values())


KILLS = [(5.0, "s0"), (6.0, "gateway")]


def test_a_clean_run_has_no_violation(config, traded):
    report = check(config, traded, KILLS)
    assert report.violations == []
    assert (report.acks, report.trades, report.fills_seen, report.kills) == (3, 1, 2, 2)


def _broken(records, change):
    out = copy.deepcopy(records)
    change(out[0])
    return out


@pytest.mark.parametrize(
    "broken, change",
    [
        # an ack of an order that is not journaled; of one on another instrument
        ({"acked"}, lambda r: r["acks"].append([9, 555, "ACME", 77, 9, False, 10.0])),
        ({"acked"}, lambda r: r["acks"].append([9, 101, "BOLT", r["acks"][0][3], 1, False, 10.0])),
        # the maker's key acked again, as the taker's order
        (
            {"acked", "one order per key"},
            lambda r: r["acks"].append([*r["acks"][0][:3], 2, 2, True, 10.0]),
        ),
        # an order sent as an iceberg showing 2, journaled as an ordinary one
        (
            {"acked"},
            lambda r: r["orders"].__setitem__("101", ["ACME", "sell", 10_000, 5, "gtc", 2]),
        ),
        # a fill at a (seq, idx) with no trade; a trade's fill with another quantity
        ({"fills"}, lambda r: r["fills"].append(["ACME", 2, 0, 1, "sell", 10_000, 4, 1, False])),
        ({"fills"}, lambda r: r["fills"][0].__setitem__(6, 2)),
        ({"answers"}, lambda r: r["unanswered"].append(3)),
        ({"answers"}, lambda r: r["rejects"].append([4, "new", "conflict", "$.ik", "x", 9.0])),
        ({"kept trading"}, lambda r: [a.__setitem__(6, 1.0) for a in r["acks"]]),
        ({"kept trading"}, lambda r: r.__setitem__("reconnects", 0)),
    ],
)
def test_each_broken_promise_is_a_violation(config, traded, broken, change):
    report = check(config, _broken(traded, change), KILLS)
    assert set(report.counts) == broken, report.violations


def test_a_key_with_orders_in_two_shards_is_a_violation(config, traded):
    shard = config.shards[1]
    with Journal(f"{config.journal.dir}/{shard.name}", durability="os") as j:
        engine = ShardEngine(1, [config.instrument(s).book for s in shard.instruments], j)
        engine.recover()
        engine.apply(_news((0, MAKER, SIDE_SELL, 6_000_100, 1, 101)))  # s0 has key 101
    report = check(config, traded, KILLS)
    assert set(report.counts) == {"one order per key"}, report.violations


def test_a_snapshot_that_is_not_the_replayed_state_is_a_violation(config, traded):
    with Journal(f"{config.journal.dir}/s1", durability="os") as j:
        blob = msgspec.msgpack.decode(j.latest_snapshot()[1])
        blob["hashes"] = ["0" * 32 for _ in blob["hashes"]]
        j.write_snapshot(j.last_seq, msgspec.msgpack.encode(blob))
    report = check(config, traded, KILLS)
    # exch journal verify sees it too: a snapshot that does not restore as recorded
    assert set(report.counts) == {"journal", "state hash"}, report.violations


def _reuse(r, answer="conflict", acks=(), retryable=("unavailable",)) -> None:
    """The maker's key 101 (its ACME order) reused on BTC-USD."""
    oid = r["acks"][0][3]
    r.setdefault("reuses", []).append(
        {
            "cid": 7,
            "ik": 101,
            "sym": "BTC-USD",
            "orig_sym": "ACME",
            "orig_oid": oid,
            "t": 11.0,
            "retryable": list(retryable),
            "answer": answer,
            "acks": list(acks),
        }
    )


def test_a_reuse_answered_conflict_is_counted(config, traded):
    _reuse(traded[0])
    report = check(config, traded, KILLS)
    assert report.violations == []
    assert (report.reuses, report.reuse_conflicts, report.reuse_unavailable) == (1, 1, 1)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: _reuse(r, answer="ack", acks=[[2**40 | 9, 9, False, 12.0]]),
        lambda r: _reuse(r, answer="conflict", acks=[[2**40 | 9, 9, True, 12.0]]),  # late
        lambda r: _reuse(r, answer=None),
        lambda r: _reuse(r, answer="invalid"),
    ],
)
def test_a_reuse_not_answered_conflict_is_a_violation(config, traded, change):
    report = check(config, _broken(traded, change), KILLS)
    assert set(report.counts) == {"reuses"}, report.violations


def test_a_journaled_reuse_is_a_violation(config, traded):
    """The reuse became an order on s1: the journals say so, whatever the bot was told."""
    shard = config.shards[1]
    with Journal(f"{config.journal.dir}/{shard.name}", durability="os") as j:
        engine = ShardEngine(1, [config.instrument(s).book for s in shard.instruments], j)
        engine.recover()
        engine.apply(_news((0, MAKER, SIDE_SELL, 6_000_100, 1, 101)))
    report = check(config, _broken(traded, _reuse), KILLS)
    assert set(report.counts) == {"one order per key", "reuses"}, report.violations
    assert report.counts["reuses"] == 1


def test_victims_are_counted_by_kind(config, traded):
    kills = [(1.0, "s0"), (2.0, "s1"), (3.0, "gateway"), (4.0, "supervisor"), (5.0, "all")]
    report = check(config, traded, kills)
    assert report.violations == []
    counts = (report.shard_kills, report.gateway_kills, report.supervisor_kills, report.all_kills)
    assert counts == (2, 1, 1, 1)
    assert "2 shard, 1 gateway, 1 supervisor, 1 all" in report.summary()


def test_a_supervisor_kill_means_every_bot_reconnected(config, traded):
    broken = _broken(traded, lambda r: r.__setitem__("reconnects", 0))
    report = check(config, broken, [(5.0, "s0"), (6.0, "supervisor")])
    assert set(report.counts) == {"kept trading"}, report.violations
    assert not check(config, broken, [(5.0, "s0")]).violations


def _s0(config):
    shard = config.shards[0]
    books = [config.instrument(s).book for s in shard.instruments]
    return books, f"{config.journal.dir}/{shard.name}"


def test_a_halt_and_its_reopening_auction_are_counted(config, traded):
    """s0 halts ACME, the maker's sell and the taker's buy cross while it is halted, the
    resume's auction trades them: no violation, one halt, one auction trade."""
    books, path = _s0(config)
    with Journal(path, durability="os") as j:
        engine = ShardEngine(0, books, j)
        engine.recover()
        engine.apply(commands(0), halted={0})
        engine.apply(
            _news((0, MAKER, SIDE_SELL, 10_000, 2, 103), (0, TAKER, SIDE_BUY, 10_010, 2, 203))
        )
        ev = engine.apply(commands(0), halted=()).events
    [trade] = ev[ev["kind"] == EV_TRADE]
    assert trade["price"] == 10_000  # the price nearest the last trade (10,000)
    maker, taker = traded
    for r, oid, side in ((taker, "order_id", "buy"), (maker, "other_id", "sell")):
        r["fills"].append(
            [
                "ACME",
                int(trade["seq"]),
                int(trade["idx"]),
                int(trade[oid]),
                side,
                10_000,
                2,
                0,
                False,
            ]
        )
    report = check(config, traded, KILLS)
    assert report.violations == [] and (report.halts, report.auction_trades) == (1, 1)


def test_a_trade_on_a_halted_instrument_is_a_violation(config, traded, tmp_path):
    """A journal whose halted book traded (written by hand: no book does it)."""
    books, path = _s0(config)
    with Journal(path, durability="os") as j:
        engine = ShardEngine(0, books, j)
        engine.recover()
        engine.apply(commands(0), halted={0})
        last = engine.last_seq
    # the same orders through a continuous book whose seqs continue the halted one's
    with Journal(str(tmp_path / "scratch"), durability="os") as scratch:
        other = ShardEngine(0, books, scratch)
        for _ in range(last):
            other.apply(_news((1, MAKER, SIDE_BUY, 100, 1, 0)))
        other.apply(
            _news((0, MAKER, SIDE_SELL, 10_000, 2, 103), (0, TAKER, SIDE_BUY, 10_010, 2, 203))
        )
        cmds, events = [(c.copy(), e.copy()) for c, e in scratch.iter_batches(last)][0]
    assert (events["kind"] == EV_TRADE).any()
    with Journal(path, durability="os") as j:
        j.write_batch(cmds, events)
    report = check(config, traded, KILLS)
    assert "halts" in report.counts, report.violations
