"""Pre-trade risk (gateway.risk): every check at, just below and just above its limit,
the per-client and per-symbol limits, the kill switch, replaces, and the exposure the
gateway keeps from the shards' events checked against real books (the kernel) on
random streams, including a burst of orders in flight from one client."""

import msgspec
import numpy as np
import pytest
from streams import random_batches, random_config, random_stream

from exchange import ordertable
from exchange.book import Book
from exchange.config import DEFAULT_TOML, InstrumentSection, parse_config
from exchange.records import (
    CMD_MASS_CANCEL,
    CMD_NEW,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REPLACED,
    EV_TRADE,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_NEWEST,
    TIF_GTC,
    TIF_IOC,
    commands,
    events,
)
from exchange.topology import offsets, symbols
from gateway.limits import limits_for
from gateway.positions import Positions
from gateway.protocol import (
    KILL_SWITCH,
    MAX_NOTIONAL,
    MAX_OPEN_ORDERS,
    MAX_ORDER_QTY,
    MAX_POSITION,
    PRICE_COLLAR,
)
from gateway.ratelimit import RateLimiter
from gateway.risk import T_LEAVES, T_QTY, Risk

# generous limits, but for the one a test is about
LIMITS = dict(
    max_order_qty=1_000,
    max_notional=1_000_000_000_000,
    price_collar_bps=1_000,
    max_open_orders=100,
    max_position=150,
)
DEFAULT_RISK = DEFAULT_TOML[DEFAULT_TOML.index("\n[risk]\n") + 1 :]
DEFAULT_RISK = DEFAULT_RISK[: DEFAULT_RISK.index("\n\n") + 1]  # the table, to its blank line


def make_config(extra: str = "", **limits):
    """The default config with [risk] = LIMITS updated by ``limits``, and ``extra`` TOML."""
    assert DEFAULT_TOML.count(DEFAULT_RISK) == 1
    risk = "[risk]\n" + "".join(f"{k} = {v}\n" for k, v in {**LIMITS, **limits}.items())
    return parse_config(DEFAULT_TOML.replace(DEFAULT_RISK, risk) + extra)


def make_risk(config=None) -> Risk:
    config = config or make_config()
    refs = [config.instrument(s).ref_price for s in symbols(config)]
    return Risk(config, Positions(symbols(config), refs))


def accepted(client, sym_index, side, qty, order_id, req_id=0, price=0) -> np.ndarray:
    ev = events(1)
    ev["kind"], ev["client"], ev["instrument"], ev["side"] = EV_ACCEPTED, client, sym_index, side
    ev["qty"] = ev["leaves"] = qty
    ev["order_id"], ev["req_id"], ev["price"], ev["seq"] = order_id, req_id, price, order_id
    return ev


def trade(taker, side, maker, px, qty, instrument=0) -> np.ndarray:
    ev = events(1)
    ev["kind"], ev["client"], ev["other_client"], ev["side"] = EV_TRADE, taker, maker, side
    ev["price"], ev["qty"], ev["instrument"] = px, qty, instrument
    return ev


PROBE = 1 << 62  # a req_id no test holds


def check(r: Risk, client: int, sym: str, side: int, qty: int, px: int | None):
    """The refusal the gateway's one call per NEW (``Risk.admit``) gives, or None; the
    probe holds nothing after it."""
    refusal = r.admit(PROBE, client, sym, side, qty, px)
    if refusal is None:
        r.release(PROBE)
    return refusal


def hold(r: Risk, req_id: int, client: int, sym: str, side: int, qty: int) -> None:
    """An order in flight as the gateway makes one: admitted at its reference price."""
    px = make_config().instrument(sym).ref_price
    assert r.admit(req_id, client, sym, side, qty, px) is None


def code(refusal):
    return None if refusal is None else refusal.code


# ------------------------------------------------------------ each limit


def test_max_order_qty_at_below_and_above():
    r = make_risk(make_config(max_order_qty=100))
    assert check(r, 1, "BOLT", SIDE_BUY, 99, 2_500) is None
    assert check(r, 1, "BOLT", SIDE_BUY, 100, 2_500) is None
    refused = check(r, 1, "BOLT", SIDE_BUY, 101, 2_500)
    assert refused.code == MAX_ORDER_QTY and refused.field == "$.qty"
    assert "qty 101" in refused.reason and "limit of 100" in refused.reason


def test_max_notional_at_below_and_above_for_limit_and_market_orders():
    r = make_risk(make_config(max_notional=500_000, price_collar_bps=10_000))
    assert check(r, 1, "ACME", SIDE_BUY, 50, 10_000) is None  # 500_000: at the limit
    assert check(r, 1, "ACME", SIDE_BUY, 49, 10_000) is None
    refused = check(r, 1, "ACME", SIDE_SELL, 51, 10_000)
    assert refused.code == MAX_NOTIONAL and "= 510000" in refused.reason
    assert "limit of 500000" in refused.reason
    # a market order counts at its instrument's max_price (ACME: 20_000)
    assert check(r, 1, "ACME", SIDE_BUY, 25, None) is None
    refused = check(r, 1, "ACME", SIDE_BUY, 26, None)
    assert refused.code == MAX_NOTIONAL and "max_price" in refused.reason


def test_price_collar_in_bps_around_the_reference_then_the_last_trade():
    r = make_risk()
    # ACME's ref_price is 10_000; 1_000 bps = 1_000 either way
    for px in (11_000, 10_999, 9_000, 9_001, 10_000):
        assert check(r, 1, "ACME", SIDE_BUY, 1, px) is None, px
    for px in (11_001, 8_999):
        refused = check(r, 1, "ACME", SIDE_BUY, 1, px)
        assert refused.code == PRICE_COLLAR and refused.field == "$.px"
        assert "1001 away from 10000 (the reference price)" in refused.reason
    # a trade at 12_000 moves the reference: the collar is 1_200 around it
    r.positions.apply(trade(2, SIDE_BUY, 3, 12_000, 1))
    assert check(r, 1, "ACME", SIDE_SELL, 1, 13_200) is None
    assert check(r, 1, "ACME", SIDE_SELL, 1, 10_800) is None
    refused = check(r, 1, "ACME", SIDE_SELL, 1, 13_201)
    assert refused.code == PRICE_COLLAR and "(the last trade)" in refused.reason
    assert check(r, 1, "ACME", SIDE_SELL, 1, 10_799).code == PRICE_COLLAR
    # market orders have no px to collar
    assert check(r, 1, "ACME", SIDE_SELL, 1, None) is None


def test_price_collar_in_ticks_is_applied_too():
    r = make_risk(make_config(price_collar_ticks=5))
    # BOLT: ref 2_500, tick 5: 5 ticks = 25 (the 1_000 bps would allow 250)
    assert check(r, 1, "BOLT", SIDE_BUY, 10, 2_525) is None
    assert check(r, 1, "BOLT", SIDE_BUY, 10, 2_520) is None
    assert check(r, 1, "BOLT", SIDE_BUY, 10, 2_475) is None
    refused = check(r, 1, "BOLT", SIDE_BUY, 10, 2_530)
    assert refused.code == PRICE_COLLAR and "5 ticks = 25" in refused.reason


def test_max_open_orders_counts_live_and_in_flight_orders():
    r = make_risk(make_config(max_open_orders=3))
    hold(r, 1, 7, "ACME", SIDE_BUY, 1)
    r.apply(accepted(7, 0, SIDE_BUY, 1, order_id=100), shard=0)
    assert r.open_orders(7) == 2
    assert check(r, 7, "BTC-USD", SIDE_SELL, 1, 6_000_000) is None  # 2 < 3
    hold(r, 2, 7, "BTC-USD", SIDE_SELL, 1)
    refused = check(r, 7, "ETH-USD", SIDE_BUY, 1, 300_000)  # 3: at the limit, no more
    assert refused.code == MAX_OPEN_ORDERS and "3 orders" in refused.reason
    assert "limit is 3" in refused.reason
    r.release(2)  # answered
    assert check(r, 7, "ETH-USD", SIDE_BUY, 1, 300_000) is None
    r.release(1)  # its ACCEPTED came: the live order still counts
    assert r.open_orders(7) == 1


def test_position_limit_counts_position_open_and_in_flight_orders_each_side():
    r = make_risk()
    r.positions.apply(trade(5, SIDE_BUY, 6, 10_000, 40))  # client 5: long 40
    r.apply(accepted(5, 0, SIDE_BUY, 30, order_id=1), shard=0)  # resting buy 30
    hold(r, 9, 5, "ACME", SIDE_BUY, 20)  # a buy of 20 in flight
    # 40 + 30 + 20 = 90: 60 more reach the long limit of 150
    assert check(r, 5, "ACME", SIDE_BUY, 60, 10_000) is None
    assert check(r, 5, "ACME", SIDE_BUY, 59, 10_000) is None
    refused = check(r, 5, "ACME", SIDE_BUY, 61, 10_000)
    assert refused.code == MAX_POSITION and refused.field == "$.qty"
    assert "to 151 (position 40 + open buys 30 + in flight 20 + 61)" in refused.reason
    assert "long limit of 150" in refused.reason
    # selling: 40 - 190 = -150 reaches the short limit; open buys do not count
    assert check(r, 5, "ACME", SIDE_SELL, 100, 10_000) is None
    hold(r, 10, 5, "ACME", SIDE_SELL, 90)
    assert check(r, 5, "ACME", SIDE_SELL, 100, 10_000) is None
    refused = check(r, 5, "ACME", SIDE_SELL, 101, 10_000)
    assert refused.code == MAX_POSITION and "to -151" in refused.reason
    assert "short limit of -150" in refused.reason
    # each instrument has its own limit
    assert check(r, 5, "BOLT", SIDE_BUY, 100, 2_500) is None
    r.release(9)
    assert check(r, 5, "ACME", SIDE_BUY, 80, 10_000) is None


def test_client_overrides_and_per_symbol_limits():
    config = make_config(
        "[risk.positions]\nETH-USD = 10\nBOLT = 500\n"
        "[[clients]]\nclient = 4\nmax_order_qty = 7\nmax_position = 20\n"
        "positions = { BOLT = 30 }\norders_per_second = 5\nstarting_cash = 1_000\n",
    )
    assert limits_for(config, 1).max_position == (150, 500, 150, 10)
    mine = limits_for(config, 4)
    # own positions entry, then [risk.positions], then own max_position
    assert mine.max_position == (20, 30, 20, 10)
    assert (mine.max_order_qty, mine.orders_per_second, mine.burst) == (7, 5, 200)
    assert (mine.starting_cash, limits_for(config, 1).starting_cash) == (1_000, 0)
    r = make_risk(config)
    assert check(r, 4, "ACME", SIDE_BUY, 8, 10_000).code == MAX_ORDER_QTY
    assert check(r, 1, "ACME", SIDE_BUY, 8, 10_000) is None
    assert check(r, 1, "ETH-USD", SIDE_BUY, 11, 300_000).code == MAX_POSITION
    assert check(r, 1, "ETH-USD", SIDE_BUY, 10, 300_000) is None
    r.positions.apply(trade(4, SIDE_SELL, 1, 2_500, 25, instrument=1))
    assert check(r, 4, "BOLT", SIDE_SELL, 6, 2_500).code == MAX_POSITION
    assert check(r, 4, "BOLT", SIDE_SELL, 5, 2_500) is None


def test_kill_switch_refuses_everything_until_lifted():
    r = make_risk()
    r.kill(3)
    refused = check(r, 3, "ACME", SIDE_BUY, 1, 10_000)
    assert refused.code == KILL_SWITCH and "exch unkill 3" in refused.reason
    assert check(r, 4, "ACME", SIDE_BUY, 1, 10_000) is None
    r.unkill(3)
    assert check(r, 3, "ACME", SIDE_BUY, 1, 10_000) is None


def test_replace_is_checked_for_what_it_adds():
    r = make_risk(make_config(max_order_qty=120))
    r.apply(accepted(5, 0, SIDE_BUY, 100, order_id=11), shard=0)
    # not this client's order, or not live: the shard will say not_found
    assert r.check_replace(6, "ACME", 11, 10_000, 100_000) is None
    assert r.check_replace(5, "ACME", 12, 10_000, 100_000) is None
    assert r.check_replace(5, "ACME", 11, 10_000, 121).code == MAX_ORDER_QTY
    assert r.check_replace(5, "ACME", 11, 12_000, 10).code == PRICE_COLLAR
    hold(r, 1, 5, "ACME", SIDE_BUY, 40)  # 100 open + 40 in flight: 10 to the limit
    assert r.check_replace(5, "ACME", 11, 10_000, 100) is None
    assert r.check_replace(5, "ACME", 11, 10_000, 110) is None
    assert r.check_replace(5, "ACME", 11, 10_000, 111).code == MAX_POSITION
    r.hold_replace(2, 5, "ACME", 11, 110)
    assert r.exposure(5, "ACME").buy == 150
    assert check(r, 5, "ACME", SIDE_BUY, 1, 10_000).code == MAX_POSITION
    rep = events(1)
    rep["kind"], rep["order_id"], rep["qty"], rep["leaves"] = EV_REPLACED, 11, 110, 110
    r.apply(rep, shard=0)
    r.release(2)
    assert r.exposure(5, "ACME") == (150, 0, 1)
    # a limit lowered below the exposure still lets a replace shrink it
    r.release(1)
    r.positions.apply(trade(5, SIDE_BUY, 6, 10_000, 45))
    assert r.check_replace(5, "ACME", 11, 10_000, 105) is None


# ------------------------------------------------------------ exposure from real books


def one_book_config(book_config):
    config = make_config()
    inst = InstrumentSection(symbol="ACME", ref_price=book_config.min_price, book=book_config)
    return msgspec.structs.replace(config, instruments=[inst, *config.instruments[1:]])


def book_truth(book: Book) -> dict:
    """client -> [open buy qty, open sell qty, orders], from the book's resting orders
    (an iceberg's whole open qty, its reserve included) and its waiting stops (risk
    counts a stop's exposure before it triggers)."""
    truth = {}
    rows = book.canonical_rows()[:, [0, 3, 5]].tolist() + book.stop_rows()[:, [0, 3, 4]].tolist()
    for side, client, leaves in rows:
        t = truth.setdefault(client, [0, 0, 0])
        t[side - 1] += leaves
        t[2] += 1
    return truth


def risk_view(r: Risk) -> dict:
    out = {}
    for client in r.slots.ids:
        e = r.exposure(client, "ACME")
        if e.orders or e.buy or e.sell:
            out[client] = [e.buy, e.sell, e.orders]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_exposure_follows_the_book_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    book_config = random_config(rng)
    book = Book(book_config)
    r = make_risk(one_book_config(book_config))
    cmds = random_stream(rng, book_config, 3_000, clients=4)
    cmds["instrument"] = 0
    kinds = set()
    for cut in random_batches(rng, len(cmds)):
        ev = book.process(cmds[cut])
        kinds.update(ev["kind"].tolist())
        r.apply(ev, shard=0)
        assert risk_view(r) == book_truth(book)
    assert {EV_ACCEPTED, EV_TRADE, EV_CANCELLED, EV_REPLACED} <= kinds
    icebergs = book.canonical_rows()
    hiding = icebergs[icebergs[:, 9] < icebergs[:, 5]]  # shown < leaves: a reserve
    # these seeds' books end with icebergs hiding a reserve, which the truth above counts
    assert seed not in (1, 3, 4, 5, 6, 7) or len(hiding)
    # the table holds exactly the book's orders, with their total and open qty
    # (waiting stops as a sync serves them: their qty open)
    stops = book.stop_rows()[:, [0, 5, 2, 3, 4, 4, 6, 6, 6, 4, 8, 9]]  # ..., tif, expires
    stops[:, 8] = 0  # no display
    rows = np.concatenate([book.canonical_rows(), stops])
    table = ordertable.live(r.table)
    assert sorted(table[:, 0].tolist()) == sorted(rows[:, 2].tolist())
    mine = {row[0]: (row[T_QTY], row[T_LEAVES]) for row in table.tolist()}
    assert mine == {oid: (qty, leaves) for _, _, oid, _, qty, leaves, *_ in rows.tolist()}
    # loaded from the book alone (a restarted gateway), the state is the same
    again = make_risk(one_book_config(book_config))
    again.load("ACME", rows)
    assert risk_view(again) == risk_view(r)


@pytest.mark.parametrize("seed", range(4))
def test_a_burst_in_flight_from_one_client_never_breaches_its_position_limit(seed):
    """Client 1 (limit 150 each way) fires orders from several connections before any
    answer comes back; client 2 (no practical limit) makes a market. Batches of what
    was sent reach the book in random cuts, their events come back and are folded."""
    rng = np.random.default_rng(seed)
    config = make_config(
        "[[clients]]\nclient = 2\nmax_open_orders = 100_000\nmax_position = 10_000_000\n",
        max_open_orders=40,
    )
    r = make_risk(config)
    book = Book(config.instrument("ACME").book)
    seq, req, refused, peak = 0, 0, 0, 0
    for _ in range(60):
        sent = []
        for _ in range(int(rng.integers(5, 40))):  # several connections, all client 1
            client = 1 if rng.random() < 0.7 else 2
            side = int(rng.choice([SIDE_BUY, SIDE_SELL]))
            qty = int(rng.integers(1, 60))
            px = int(10_000 + rng.integers(-20, 21))
            tif = TIF_IOC if client == 1 and rng.random() < 0.3 else TIF_GTC
            req += 1
            if r.admit(req, client, "ACME", side, qty, px) is not None:  # check + reserve
                refused += 1
                continue
            sent.append((req, client, side, qty, px, tif))
        for cut in random_batches(rng, len(sent), 8):
            start, stop = cut.start, cut.stop
            part = sent[start:stop]
            cmds = commands(len(part))
            fields = ("req_id", "client", "side", "qty", "price", "tif")
            for f, values in zip(fields, zip(*part, strict=True), strict=True):
                cmds[f] = values
            cmds["seq"] = cmds["order_id"] = np.arange(seq + 1, seq + 1 + len(part))
            cmds["kind"], cmds["stp"] = CMD_NEW, STP_CANCEL_NEWEST
            seq += len(part)
            ev = book.process(cmds)
            r.positions.apply(ev)
            r.apply(ev, shard=0)
            r.release_answered(ev)
            pos = r.positions.position(1, 0)
            peak = max(peak, abs(pos))
            e = r.exposure(1, "ACME")
            assert pos + e.buy <= 150 and pos - e.sell >= -150
        if rng.random() < 0.2:  # client 2 pulls its quotes now and then
            r.apply(book.process(mass_cancel(seq := seq + 1, 2)), shard=0)
    assert r.in_flight() == 0
    assert refused > 0 and peak > 100  # the limit was pressed, and held


def mass_cancel(seq: int, client: int) -> np.ndarray:
    cmds = commands(1)
    cmds["seq"], cmds["client"], cmds["kind"], cmds["req_id"] = seq, client, CMD_MASS_CANCEL, 0
    return cmds


# ------------------------------------------------------------ bad input


def test_bad_input_is_refused_and_changes_nothing():
    r = make_risk()
    with pytest.raises(ValueError, match="no instrument 'NOPE'"):
        check(r, 1, "NOPE", SIDE_BUY, 1, 10_000)
    with pytest.raises(ValueError, match="side must be"):
        check(r, 1, "ACME", 3, 1, 10_000)
    hold(r, 5, 1, "ACME", SIDE_BUY, 10)
    with pytest.raises(ValueError, match="req_id 5 is held already"):
        hold(r, 5, 1, "ACME", SIDE_BUY, 99)
    assert r.exposure(1, "ACME").buy == 10 and r.open_orders(1) == 1
    r.release(5)
    r.release(5)  # twice: nothing more
    assert r.exposure(1, "ACME").buy == 0 and r.open_orders(1) == 0
    with pytest.raises(ValueError, match="client id"):
        hold(r, 6, 0, "ACME", SIDE_BUY, 1)
    assert r.in_flight() == 0
    assert offsets(make_config()) == [0, 2]


def test_a_client_of_its_own_rate_limit_gets_its_own_bucket():
    config = make_config("[[clients]]\nclient = 4\norders_per_second = 5\nburst = 2\n")
    mine = limits_for(config, 4)
    own = {4: (mine.orders_per_second, mine.burst)}
    limiter = RateLimiter(config.rate.orders_per_second, config.rate.burst, own)
    assert limiter.limits(4) == (5, 2) and limiter.limits(3) == (1_000, 200)
    assert limiter.take(4, 3, now=0.0) == 2  # its burst, then nothing
    assert limiter.take(4, 1, now=0.1) == 0
    assert limiter.take(4, 1, now=0.2) == 1  # 5/s: one token in 0.2 s
    assert limiter.take(3, 300, now=0.0) == 200  # the default's burst
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(10, 5, {4: (0, 1)})


@pytest.mark.parametrize("seed", range(6))
def test_a_run_through_the_batch_pass_is_admitted_as_one_order_at_a_time(seed):
    """``admit_run`` (the Numba pass, and ``admit`` where it stops) against ``admit`` of
    each order in turn: the same refusals, word for word, and the same state, on random
    runs that hit every limit (a client blocked, one whose limits are too large for the
    pass, market orders, retries skipped), with fills and answers between the runs."""
    rng = np.random.default_rng(seed)
    config = make_config(
        "[[clients]]\nclient = 3\nmax_order_qty = 40\nmax_position = 60\nmax_open_orders = 9\n"
        "[[clients]]\nclient = 4\nmax_notional = 9_000_000_000_000_000_000\n"
        "[[clients]]\nclient = 2\nmax_notional = 50_000_000\n",
        max_position=120,
        max_open_orders=30,
        price_collar_ticks=400,
    )
    syms = symbols(config)
    books = [config.instrument(s).book for s in syms]
    one, run = make_risk(config), make_risk(config)
    for r in (one, run):
        r.kill(5)
    req_id = 0
    for _ in range(40):
        n = int(rng.integers(1, 50))
        clients = rng.choice([1, 2, 3, 4, 5], n).tolist()
        insts = rng.integers(0, len(syms), n)
        sides = rng.choice([SIDE_BUY, SIDE_SELL], n)
        qtys = rng.integers(1, 60, n)
        refs = [config.instrument(syms[i]).ref_price for i in insts.tolist()]
        ticks = [books[i].tick_size * int(rng.integers(-900, 900)) for i in insts.tolist()]
        pxs = np.array(
            [0 if rng.random() < 0.15 else r + t for r, t in zip(refs, ticks, strict=True)],
            np.int64,
        )
        skip = rng.random(n) < 0.1
        req_ids = list(range(req_id + 1, req_id + n + 1))
        req_id += n
        expected = []
        for j in range(n):
            if skip[j]:
                continue
            px = int(pxs[j]) or None
            got = one.admit(req_ids[j], clients[j], syms[insts[j]], int(sides[j]), int(qtys[j]), px)
            if got is not None:
                expected.append((j, got))
        assert run.admit_run(req_ids, clients, insts, sides, qtys, pxs, skip) == expected
        assert in_flight(run) == in_flight(one)
        # some answered (accepted: live now), and a trade that moves a position and a mark
        done = [k for k in req_ids if k in one._held and rng.random() < 0.5]
        px = config.instrument(syms[0]).ref_price + int(rng.integers(-50, 50))
        traded = int(rng.integers(1, 30))
        for r in (one, run):
            for k in done:
                row, col, qty, _ = r._held[k]
                ev = accepted(r.slots.ids[row], col // 2, SIDE_BUY + col % 2, qty, k, k)
                r.apply(ev, 0)
                r.release(k)
            r.positions.apply(trade(1, SIDE_BUY, 2, px, traded))
        assert in_flight(run) == in_flight(one)


def in_flight(r: Risk) -> tuple[dict, dict]:
    """What is in flight, by client (the rows are numbered as clients are met)."""
    ids = r.slots.ids
    flight = {ids[row]: r.flight[row].tolist() for row in range(len(ids))}
    reserved = {k: (ids[row], *rest) for k, (row, *rest) in r._held.items()}
    return flight, reserved
