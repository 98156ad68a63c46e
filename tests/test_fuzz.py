"""Fuzz suite against the whole daemon (``exchanged run``): one client sends hostile
requests while two others hold live orders on every instrument.

Two kinds of cases (10,000 in the default run, 100,000 with ``-m slow``):

- unaddressed: ``test_gateway_fuzz.hostile_frames`` (random bytes, truncated and
  corrupted requests, nesting bombs, multi-frame and oversized messages...):
  the cid is often unreadable, so only "one Reject per message" is checked;
- addressed: well-formed frames, each with its own cid, that the exchange must
  refuse: unknown instruments; other clients' live order ids (cancel, replace,
  status, on their instrument and on another); negative, zero, huge and
  non-integer quantities and prices, and off the instrument's grid; every field
  of every request given a wrong type, or left out; unknown tags and fields
  (``client`` among them); batches whose every order is refused. Each gets
  exactly one reply, under its cid, with the expected error code (and field).

Afterwards: the gateway is the process it was before (never restarted), the
books hold exactly the orders they held before (a refused cancel or replace of
someone else's order does reach its shard and is journaled, taking a seq; so
the books are compared by their canonical rows, and every event journaled
during the fuzz must be a REJECTED), the gateway's view of every book is
unchanged, and the victims can still trade.
"""

import random

import msgspec
import pytest
from daemon_harness import Daemon
from test_gateway_fuzz import WRONG_VALUES, hostile_frames, run_frames

from exchange import topology
from exchange.config import dump_config
from exchange.engine import ShardEngine
from exchange.journal import JournalReader
from exchange.records import EV_REJECTED
from exchange.statehash import hash_canonical
from gateway.codec import decode_request
from gateway.protocol import (
    INVALID,
    NOT_FOUND,
    Ack,
    BatchAck,
    BookSnapshot,
    MassCancelled,
    ProtocolError,
    Reject,
)

CASES = 10_000
SLOW_CASES = 100_000
UNADDRESSED_SHARE = 0.3
WINDOW = 400
VICTIMS = (1, 2)
FUZZER = 3
RESTING_PER_SYMBOL = 5  # per victim
ALIASES = ["acme", "ACME ", " ACME", "ACMEX", "BTC", "BTC_USD", "ETH-USDT", "X", "Z" * 32]
REQUIRED = {
    "N": ["sym", "side", "qty"],
    "B": ["orders"],
    "C": ["sym", "oid"],
    "R": ["sym", "oid", "px", "qty"],
    "S": ["sym", "oid"],
    "K": ["sym"],
    "H": ["v"],
}
NUMBERS = [-1, 0, -(1 << 63), 1 << 63, (1 << 64) - 1, 1.5, 1e30, float("nan"), "10", True, None]


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    r = msgspec.structs.replace
    # no rate limit: every refusal must be the one the case is about
    d.config = r(d.config, rate=r(d.config.rate, orders_per_second=10**9, burst=10**9))
    d.path.write_text(dump_config(d.config))
    try:
        d.start()
        yield d
    finally:
        d.close()


# ------------------------------------------------------------ the victims' orders


def place_victims(daemon: Daemon) -> dict[str, list[dict]]:
    """Resting orders of the victims on every instrument: sym -> [{oid, px, qty, client}]."""
    out = {}
    for client in VICTIMS:
        c = daemon.client(client)
        for inst in daemon.config.instruments:
            b = inst.book
            for k in range(RESTING_PER_SYMBOL):
                side = "buy" if (k + client) % 2 else "sell"
                ticks = 10 + k + 20 * client
                px = inst.ref_price + (-ticks if side == "buy" else ticks) * b.tick_size
                qty = b.lot_size * (k + 1)
                ack = c.new_order(inst.symbol, side, qty, px=px)
                assert isinstance(ack, Ack), ack
                rest = {"oid": ack.oid, "px": px, "qty": qty, "client": client}
                out.setdefault(inst.symbol, []).append(rest)
        c.close()
    return out


def book_views(daemon: Daemon) -> dict:
    c = daemon.client(VICTIMS[0])
    try:
        views = {i.symbol: c.book(i.symbol, depth=100) for i in daemon.config.instruments}
    finally:
        c.close()
    assert all(isinstance(v, BookSnapshot) for v in views.values()), views
    return {s: (v.bids, v.asks) for s, v in views.items()}


def shard_books(daemon: Daemon) -> dict[str, tuple[int, list[str]]]:
    """Per shard: (last seq, hash of each book's resting orders), from a fresh replay."""
    out = {}
    for index, shard in enumerate(daemon.config.shards):
        books = [daemon.config.instrument(s).book for s in shard.instruments]
        with JournalReader(f"{daemon.config.journal.dir}/{shard.name}") as j:
            engine = ShardEngine(index, books, j)
            engine.recover(use_snapshot=False)
            rows = [
                hash_canonical(0, b.last_price, b.canonical_rows(), b.stop_rows())
                for b in engine.books
            ]
            out[shard.name] = (engine.last_seq, rows)
    return out


def events_after(daemon: Daemon, seqs: dict[str, int]) -> list[int]:
    """The kinds of every event journaled after ``seqs`` (per shard)."""
    kinds = []
    for shard in daemon.config.shards:
        with JournalReader(f"{daemon.config.journal.dir}/{shard.name}") as j:
            for _, events in j.iter_batches(seqs[shard.name]):
                kinds += events["kind"].tolist()
    return kinds


# ------------------------------------------------------------ addressed cases


def _decodes(req: dict) -> bool:
    """Whether ``req`` (given a cid) passes the protocol's own checks."""
    try:
        decode_request(msgspec.msgpack.encode({**req, "cid": 1}))
    except ProtocolError:
        return False
    return True


class Cases:
    """Addressed cases: (frame, expected code, expected field or None, batch size or 0)."""

    def __init__(self, rng: random.Random, config, victims: dict[str, list[dict]]):
        self.rng = rng
        self.config = config
        self.victims = victims
        self.syms = [i.symbol for i in config.instruments]
        self.shard_of = {sym: shard for sym, (shard, _) in topology.routes(config).items()}
        self.cases = []

    def add(self, req: dict, code: str, field: str | None = None, batch: int = 0) -> None:
        req["cid"] = len(self.cases) + 1
        self.cases.append((msgspec.msgpack.encode(req), code, field, batch))

    def valid_order(self, sym: str | None = None) -> dict:
        """A well-formed order far from the market (never sent like this)."""
        inst = self.config.instrument(sym or self.rng.choice(self.syms))
        b = inst.book
        return {"sym": inst.symbol, "side": "buy", "qty": b.lot_size, "px": b.min_price}

    def victim(self) -> tuple[str, dict]:
        sym = self.rng.choice(self.syms)
        return sym, self.rng.choice(self.victims[sym])

    # one generator per family; each adds one case

    def unknown_instrument(self) -> None:
        sym = self.rng.choice(ALIASES)
        _, v = self.victim()
        req = self.rng.choice(
            [
                {"t": "N", **self.valid_order(), "sym": sym},
                {"t": "C", "sym": sym, "oid": v["oid"]},
                {"t": "R", "sym": sym, "oid": v["oid"], "px": v["px"], "qty": v["qty"]},
                {"t": "S", "sym": sym, "oid": v["oid"]},
                {"t": "K", "sym": sym},
                {"t": "M", "sym": sym},
            ]
        )
        self.add(req, NOT_FOUND, "$.sym")

    def foreign_order(self) -> None:
        """Someone else's live order: on its instrument, or named on another shard's."""
        sym, v = self.victim()
        if self.rng.random() < 0.3:
            sym = self.rng.choice([s for s in self.syms if self.shard_of[s] != self.shard_of[sym]])
        req = self.rng.choice(
            [
                {"t": "C", "sym": sym, "oid": v["oid"]},
                {"t": "R", "sym": sym, "oid": v["oid"], "px": v["px"], "qty": v["qty"]},
                {"t": "S", "sym": sym, "oid": v["oid"]},
            ]
        )
        self.add(req, NOT_FOUND, "$.oid")

    def bad_number(self) -> None:
        """qty, px or an iceberg's display negative, zero, huge, not an integer, or off the
        instrument's grid (a display: above qty, or off the lot)."""
        rng = self.rng
        order = self.valid_order()
        b = self.config.instrument(order["sym"]).book
        name = rng.choice(["qty", "px", "display"])
        # a display left out (None) is an ordinary order: not a bad number
        numbers = [n for n in NUMBERS if n is not None] if name == "display" else NUMBERS
        off_grid = {
            "qty": [b.max_qty + b.lot_size, b.lot_size + 1 if b.lot_size > 1 else b.max_qty + 1],
            "px": [b.min_price - b.tick_size, b.max_price + b.tick_size]
            + ([b.min_price + 1] if b.tick_size > 1 else []),
            "display": [order["qty"] + b.lot_size] + ([1] if b.lot_size > 1 else []),
        }
        value = rng.choice(numbers + off_grid[name])
        if rng.random() < 0.3:
            sym, v = self.victim()  # a replace: values are checked before the order is looked for
            req = {"t": "R", "sym": sym, "oid": v["oid"], "px": v["px"], "qty": v["qty"]}
            b = self.config.instrument(sym).book
            off_grid = {
                "qty": [b.max_qty + b.lot_size],
                "px": [b.max_price + b.tick_size],
                "display": [v["qty"] + b.lot_size],
            }
            value = rng.choice(numbers + off_grid[name])
        else:
            req = {"t": "N", **order}
        req[name] = value
        if value is None and name == "px" and req["t"] == "N":
            field = None  # a limit order without a price: invalid, named as the rule says
        else:
            field = f"$.{name}"
        self.add(req, INVALID, field)

    def wrong_type(self) -> None:
        t = self.rng.choice(list(REQUIRED))
        req = self.well_formed(t)
        key = self.rng.choice([k for k in req if k != "t"])
        req[key] = self.rng.choice(WRONG_VALUES)
        if not _decodes(req):
            self.add(req, INVALID)

    def missing_field(self) -> None:
        t = self.rng.choice(list(REQUIRED))
        req = self.well_formed(t)
        req.pop(self.rng.choice(REQUIRED[t]))
        self.add(req, INVALID)

    def unknown_tag_or_field(self) -> None:
        if self.rng.random() < 0.5:
            tag = self.rng.choice(["A", "J", "F", "Z", "n", "NN", "", "BA", 1, None])
            self.add({**self.well_formed("N"), "t": tag}, INVALID)
        else:
            req = self.well_formed(self.rng.choice(list(REQUIRED)))
            req[self.rng.choice(["client", "user", "owner", "T", "seq"])] = 2
            self.add(req, INVALID)

    def refused_batch(self) -> None:
        """Every order of the batch refused on its own: unknown instrument or off the grid."""
        orders = []
        for _ in range(self.rng.randrange(1, 40)):
            o = self.valid_order()
            if self.rng.random() < 0.5:
                o["sym"] = self.rng.choice(ALIASES)
            else:
                o["px"] = self.config.instrument(o["sym"]).book.max_price + 10**6
            orders.append(o)
        self.add({"t": "B", "orders": orders}, "batch", None, len(orders))

    def well_formed(self, t: str) -> dict:
        _, v = self.victim()
        sym = self.rng.choice(self.syms)
        return {
            "N": lambda: {"t": "N", **self.valid_order()},
            "B": lambda: {"t": "B", "orders": [self.valid_order(), self.valid_order()]},
            "C": lambda: {"t": "C", "sym": sym, "oid": v["oid"]},
            "R": lambda: {"t": "R", "sym": sym, "oid": v["oid"], "px": v["px"], "qty": v["qty"]},
            "S": lambda: {"t": "S", "sym": sym, "oid": v["oid"]},
            "K": lambda: {"t": "K", "sym": sym, "depth": 5},
            "H": lambda: {"t": "H", "v": 1},
        }[t]()

    def make(self, n: int) -> list:
        families = [
            self.unknown_instrument,
            self.foreign_order,
            self.bad_number,
            self.bad_number,
            self.wrong_type,
            self.missing_field,
            self.unknown_tag_or_field,
            self.refused_batch,
        ]
        while len(self.cases) < n:
            self.rng.choice(families)()
        return self.cases


def check_replies(cases: list, replies: list) -> None:
    by_cid = {}
    for r in replies:
        assert r.cid not in by_cid, f"two replies to cid {r.cid}: {by_cid[r.cid]} and {r}"
        by_cid[r.cid] = r
    for cid, (frame, code, field, batch) in enumerate(cases, 1):
        got = by_cid.get(cid)
        request = msgspec.msgpack.decode(frame)
        if batch:
            assert isinstance(got, BatchAck) and len(got.results) == batch, (request, got)
            assert all(isinstance(x, Reject) for x in got.results), (request, got)
            continue
        assert isinstance(got, Reject), (request, got)
        assert got.code == code, (request, got)
        assert field is None or got.field == field, (request, got)


# ------------------------------------------------------------ the run


def fuzz(daemon: Daemon, n: int, seed: int) -> None:
    rng = random.Random(seed)
    victims = place_victims(daemon)
    gateway = daemon.child_pid("gateway")
    before, views = shard_books(daemon), book_views(daemon)
    fuzzer = daemon.client(FUZZER)
    try:
        unaddressed = hostile_frames(rng.randrange(1 << 32), int(n * UNADDRESSED_SHARE))
        replies = run_frames(fuzzer.socket, unaddressed)
        assert len(replies) == len(unaddressed)
        assert all(isinstance(r, Reject) for r in replies), [
            r for r in replies if not isinstance(r, Reject)
        ][:3]
        cases = Cases(rng, daemon.config, victims).make(n - len(unaddressed))
        replies = run_frames(fuzzer.socket, [[frame] for frame, *_ in cases])
        check_replies(cases, replies)
        assert not fuzzer.socket.poll(200)  # nothing more: one reply per request
    finally:
        fuzzer.close()
    print(f"fuzz: {len(unaddressed)} unaddressed and {len(cases)} addressed cases, all refused")

    assert daemon.child_pid("gateway") == gateway
    assert all(c["restarts"] == 0 for c in daemon.status()["children"])
    assert book_views(daemon) == views
    after = shard_books(daemon)
    assert {s: rows for s, (_, rows) in after.items()} == {s: r for s, (_, r) in before.items()}
    assert set(events_after(daemon, {s: seq for s, (seq, _) in before.items()})) <= {EV_REJECTED}
    c = daemon.client(VICTIMS[1])
    try:
        sym = daemon.config.instruments[0].symbol
        ack = c.new_order(sym, "buy", 1, px=daemon.config.instruments[0].book.min_price)
        assert isinstance(ack, Ack), ack
        done = c.mass_cancel()
        assert isinstance(done, MassCancelled) and done.n == 1 + RESTING_PER_SYMBOL * len(
            daemon.config.instruments
        ), done
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_ten_thousand_cases_against_the_daemon(daemon):
    fuzz(daemon, CASES, seed=20261122)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_hundred_thousand_cases_against_the_daemon(daemon):
    fuzz(daemon, SLOW_CASES, seed=random.randrange(1 << 32))
