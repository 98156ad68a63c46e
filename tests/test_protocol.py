"""The wire protocol: schema round trips, hostile input, the documented example, and the
conversions between requests, COMMAND/EVENT records and messages, driven through the
reference book."""

import re
import typing
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import random_batches, random_config, random_stream

from exchange.bookconfig import BookConfig
from exchange.idempotency import shard_rejects
from exchange.orderstate import ST_LIVE, STATUS_NAMES
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    COMMAND_DTYPE,
    EV_DEPTH,
    EV_MASS_CANCELLED,
    EV_REJECTED,
    EV_STATE,
    EV_STATUS,
    EV_TRADE,
    EVF_DUPLICATE,
    FLAG_POST_ONLY,
    REJ_CONFLICT,
    REJ_EXPIRY_PASSED,
    REJECT_NAMES,
    SIDE_BUY,
    SIDE_SELL,
    STATE_NAMES,
    STP_DECREMENT,
    TIF_DAY,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TYPE_LIMIT,
    TYPE_MARKET,
    commands,
    events,
)
from exchange.reference import ReferenceBook
from gateway import codec as pc
from gateway import commands as pk
from gateway import mirror as gm
from gateway import private_replies as pr
from gateway import protocol as p

DOC = Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md"
INT64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1

LEVELS = [(10_000, 30, 2), (9_990, 5, 1)]
SAMPLES = {
    p.NewOrder: p.NewOrder(cid=1, sym="ACME", side="buy", qty=100, px=10_000),
    p.NewOrders: p.NewOrders(
        cid=U64_MAX,
        orders=[
            p.Order(sym="ACME", side="sell", qty=5, px=10_010, post_only=True, ik=U64_MAX),
            p.Order(sym="BOLT", side="buy", qty=10, ord_type="market", tif="fok", stp="none"),
        ],
    ),
    p.Cancel: p.Cancel(cid=2, sym="ACME", oid=INT64_MAX),
    p.Replace: p.Replace(cid=3, sym="ACME", oid=4, px=10_020, qty=50, display=10),
    p.MassCancel: p.MassCancel(cid=4),
    p.Status: p.Status(cid=5, sym="ETH-USD", oid=77),
    p.BookRequest: p.BookRequest(cid=6, sym="ACME", depth=100),
    p.Heartbeat: p.Heartbeat(cid=7, v=p.PROTOCOL_VERSION),
    p.PositionsRequest: p.PositionsRequest(cid=9, sym="ACME"),
    p.InstrumentsRequest: p.InstrumentsRequest(cid=11, sym="ACME"),
    p.Kill: p.Kill(cid=10),
    p.TradesRequest: p.TradesRequest(cid=11, sym="ACME", from_seq=5, to_seq=9),
    p.Ack: p.Ack(cid=1, sym="ACME", oid=42, seq=1234, coid="x-1", dup=True),
    p.Reject: p.Reject(cid=0, code="invalid", field="$.qty", reason="no", coid="c"),
    p.Fill: p.Fill(
        sym="ACME", oid=4, seq=9, idx=2, side="sell", px=10_000, qty=3, leaves=0, liq="maker"
    ),
    p.Cancelled: p.Cancelled(cid=0, sym="ACME", oid=4, seq=10, qty=7, reason="self_trade"),
    p.Replaced: p.Replaced(cid=3, sym="ACME", oid=4, seq=11, px=10_020, qty=50, leaves=20),
    p.Triggered: p.Triggered(sym="ACME", oid=4, seq=12, trigger=10_010, qty=5, type="stop"),
    p.OrderStatus: p.OrderStatus(
        cid=5, sym="ACME", oid=4, side="buy", px=1, qty=2, leaves=1, state="live", seq=3
    ),
    p.BookSnapshot: p.BookSnapshot(
        cid=6, sym="ACME", seq=12, bids=LEVELS, asks=LEVELS, state="halted"
    ),
    p.BatchAck: p.BatchAck(
        cid=8,
        results=[
            p.Ack(cid=8, sym="ACME", oid=5, seq=13),
            p.Reject(cid=8, code="not_found", field="$.sym", reason="no such symbol"),
        ],
    ),
    p.MassCancelled: p.MassCancelled(cid=4, sym=None, n=3),
    p.PositionReport: p.PositionReport(
        cid=9,
        cash=-2_000,
        killed=False,
        orders=1,
        positions=[
            p.Position(
                sym="ACME",
                pos=-3,
                cost=-30_000,
                realised=5,
                unrealised=-30,
                mark=10_010,
                volume=7,
                open_buy=0,
                open_sell=2,
                orders=1,
            )
        ],
    ),
    p.Instruments: p.Instruments(
        cid=11,
        version=INT64_MAX,
        instruments=[
            p.Instrument(
                sym="ACME",
                tick=1,
                lot=1,
                min_px=5_000,
                max_px=20_000,
                max_qty=100_000,
                ref_px=10_000,
                state="open",
            )
        ],
    ),
    p.Trades: p.Trades(sym="ACME", seq=14, prev=9, side="buy", prints=[(10_000, 3), (10_010, 1)]),
    p.TradesEnd: p.TradesEnd(cid=11, sym="ACME", from_seq=5, to_seq=9, count=1, last_seq=14),
    p.Depth: p.Depth(sym="ACME", seq=14, prev=0, bids=LEVELS, asks=LEVELS),
    p.TopOfBook: p.TopOfBook(
        sym="ACME", seq=14, prev=2, bid_px=9_990, bid_qty=5, ask_px=0, ask_qty=0
    ),
    p.TradingState: p.TradingState(
        sym="ACME", seq=15, prev=3, state="continuous", px=10_000, qty=40
    ),
}


def members(union) -> tuple:
    return typing.get_args(union)


# --- round trips


@pytest.mark.parametrize("cls", members(p.Request), ids=lambda c: c.__name__)
def test_every_request_round_trips(cls):
    msg = SAMPLES[cls]
    assert pc.decode_request(pc.encode(msg)) == msg


@pytest.mark.parametrize("cls", members(p.Reply), ids=lambda c: c.__name__)
def test_every_reply_round_trips(cls):
    msg = SAMPLES[cls]
    assert pc.decode_reply(pc.encode(msg)) == msg


@pytest.mark.parametrize("n", [1, 2, 15, 16, 70_000])
def test_bundles_keep_every_message_in_order_within_the_size_limit(n):
    msgs = [
        p.Fill(sym="ACME", oid=i, seq=i, idx=0, side="buy", px=1, qty=1, leaves=0, liq="taker")
        for i in range(n)
    ]
    payloads = [pc.encode(m) for m in msgs]
    limit = 4096
    frames = pc.bundle_frames(payloads, limit)
    got = [m for frame, _ in frames for m in pc.decode_replies(frame)]
    assert got == msgs and sum(k for _, k in frames) == n
    assert all(len(f) <= limit + 5 or k == 1 for f, k in frames)
    if n == 1:
        assert frames == [(payloads[0], 1)]  # a lone message is a plain map
    huge = pc.bundle_frames(payloads, limit=10**9)
    assert len(huge) == 1 and pc.decode_replies(huge[0][0]) == msgs


@pytest.mark.parametrize("cls", members(p.MarketData), ids=lambda c: c.__name__)
def test_every_market_data_message_round_trips(cls):
    msg = SAMPLES[cls]
    assert pc.decode_market_data(pc.encode(msg)) == msg


def test_tags_are_short_and_unique_per_direction():
    for union in (p.Request, p.Reply, p.MarketData):
        tags = [cls.__struct_config__.tag for cls in members(union)]
        assert len(set(tags)) == len(tags)
        assert all(isinstance(t, str) and 1 <= len(t) <= 2 for t in tags)


def test_requests_omit_defaults_and_replies_carry_every_field():
    order = msgspec.msgpack.decode(pc.encode(p.NewOrder(cid=1, sym="A", side="buy", qty=1, px=1)))
    assert set(order) == {"t", "cid", "sym", "side", "qty", "px"}
    ack = msgspec.msgpack.decode(pc.encode(p.Ack(cid=1, sym="A", oid=1, seq=1)))
    assert set(ack) == {"t", "cid", "sym", "oid", "seq", "coid", "dup"}


def test_replies_tolerate_fields_added_later():
    newer = {"t": "A", "cid": 1, "sym": "A", "oid": 1, "seq": 1, "coid": "", "dup": False}
    newer["venue_ts"] = 123
    assert pc.decode_reply(msgspec.msgpack.encode(newer)).oid == 1


# --- hostile input


def order_map(**changes) -> dict:
    m = {"t": "N", "cid": 9, "sym": "ACME", "side": "buy", "qty": 10, "px": 10_000}
    m.update(changes)
    return {k: v for k, v in m.items() if v is not DROP}


DROP = object()


def refused(frame: bytes) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as err:
        pc.decode_request(frame)
    return err.value


HOSTILE = {
    "qty as str": (order_map(qty="10"), "$.qty", "Expected `int`, got `str`"),
    "px as float": (order_map(px=1.5), "$.px", "got `float`"),
    "side unknown": (order_map(side="BUY"), "$.side", "Invalid enum value 'BUY'"),
    "post_only as int": (order_map(post_only=1), "$.post_only", "Expected `bool`"),
    "sym as int": (order_map(sym=5), "$.sym", "Expected `str`"),
    "sym empty": (order_map(sym=""), "$.sym", "length >= 1"),
    "cid zero": (order_map(cid=0), "$.cid", ">= 1"),
    "cid negative": (order_map(cid=-1), "$.cid", ">= 1"),
    "negative qty": (order_map(qty=-10), "$.qty", ">= 1"),
    "zero qty": (order_map(qty=0), "$.qty", ">= 1"),
    "negative px": (order_map(px=-1), "$.px", ">= 1"),
    "negative ik": (order_map(ik=-1), "$.ik", ">= 0"),
    "huge qty": (order_map(qty=INT64_MAX + 1), "$.qty", f"<= {INT64_MAX}"),
    "huge px": (order_map(px=U64_MAX), "$.px", f"<= {INT64_MAX}"),
    "huge oid": ({"t": "C", "cid": 9, "sym": "A", "oid": INT64_MAX + 1}, "$.oid", "<="),
    "unknown tag": (order_map(t="Z"), "$.t", "Invalid value 'Z'"),
    "tag as int": (order_map(t=1), "$.t", "Expected `str`"),
    "no tag": (order_map(t=DROP), "$.t", "missing required field `t`"),
    "missing qty": (order_map(qty=DROP), "$.qty", "missing required field `qty`"),
    "missing oid": ({"t": "C", "cid": 9, "sym": "A"}, "$.oid", "missing required field `oid`"),
    "extra field": (order_map(price=1), "$.price", "unknown field `price`"),
    "extra field in a batch": (
        {"t": "B", "cid": 9, "orders": [{"sym": "A", "side": "buy", "qty": 1, "px": 1, "x": 0}]},
        "$.orders[0].x",
        "unknown field `x`",
    ),
    "tagged order in a batch": (
        {"t": "B", "cid": 9, "orders": [order_map()]},
        "$.orders[0].t",
        "unknown field `t`",
    ),
    "empty batch": ({"t": "B", "cid": 9, "orders": []}, "$.orders", "length >= 1"),
    "batch too long": (
        {"t": "B", "cid": 9, "orders": [order_map(t=DROP, cid=DROP)] * (p.MAX_BATCH + 1)},
        "$.orders",
        f"length <= {p.MAX_BATCH}",
    ),
    "coid too long": (order_map(coid="x" * 37), "$.coid", "length <= 36"),
    "depth too deep": ({"t": "K", "cid": 9, "sym": "A", "depth": 101}, "$.depth", "<= 100"),
    "not a map": ([1, 2, 3], "$", "Expected `object`, got `array`"),
    "nil": (None, "$", "Expected `object`, got `None`"),
    "int keys": ({1: 2}, "$", "Expected `str`, got `int`"),
    "market order with px": (
        order_map(type="market", tif="ioc"),
        "$.px",
        "a market order takes no px",
    ),
    "post-only market order": (
        order_map(type="market", tif="ioc", px=DROP, post_only=True),
        "$.post_only",
        "cannot be post-only",
    ),
    "resting market order": (
        order_map(type="market", px=DROP),
        "$.tif",
        "tif must be ioc or fok",
    ),
    "limit order without px": (order_map(px=DROP), "$.px", "a limit order needs a px"),
    "limit order with nil px": (order_map(px=None), "$.px", "a limit order needs a px"),
    "nil coid": (order_map(coid=None), "$.coid", "Expected `str`, got `None`"),
    "bad order inside a batch": (
        {"t": "B", "cid": 9, "orders": [order_map(t=DROP, cid=DROP)] * 3 + [{"sym": "A"}]},
        "$.orders[3].side",
        "missing required field `side`",
    ),
    "market px inside a batch": (
        {"t": "B", "cid": 9, "orders": [order_map(t=DROP, cid=DROP, type="market", tif="ioc")]},
        "$.orders[0].px",
        "a market order takes no px",
    ),
    "other protocol version": ({"t": "H", "cid": 9, "v": 2}, "$.v", "speaks 1"),
    "zero display": (order_map(display=0), "$.display", ">= 1"),
    "display above qty": (order_map(display=15), "$.display", "at most qty"),
    "ioc iceberg": (
        order_map(display=5, tif="ioc"),
        "$.display",
        "only a limit gtc, gtd or day order",
    ),
    "market iceberg": (
        order_map(display=5, type="market", tif="ioc", px=DROP),
        "$.display",
        "only a limit gtc, gtd or day order",
    ),
    "stop-limit iceberg": (
        order_map(display=5, type="stop_limit", trigger=10_010),
        "$.display",
        "only a limit gtc, gtd or day order",
    ),
    "iceberg inside a batch": (
        {"t": "B", "cid": 9, "orders": [order_map(t=DROP, cid=DROP, display=11)]},
        "$.orders[0].display",
        "at most qty",
    ),
    "replace display above qty": (
        {"t": "R", "cid": 9, "sym": "A", "oid": 1, "px": 1, "qty": 5, "display": 6},
        "$.display",
        "at most qty",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_request_is_refused_naming_the_field(case):
    value, field, text = HOSTILE[case]
    err = refused(msgspec.msgpack.encode(value))
    assert (err.code, err.field) == ("invalid", field)
    assert text in err.reason
    cid = value.get("cid") if isinstance(value, dict) else None
    assert err.cid == (cid if isinstance(cid, int) and cid > 0 else 0)


def test_reject_for_a_malformed_request_carries_its_cid():
    err = refused(msgspec.msgpack.encode(order_map(cid=77, qty="10")))
    reject = err.reject(coid="mine")
    assert reject == p.Reject(
        cid=77,
        code="invalid",
        field="$.qty",
        reason="Expected `int`, got `str` - at `$.qty`",
        coid="mine",
    )
    assert pc.decode_reply(pc.encode(reject)) == reject


def test_every_truncation_is_refused():
    frame = pc.encode(SAMPLES[p.NewOrders])
    for n in range(len(frame)):
        err = refused(frame[:n])
        assert (err.code, err.field) == ("invalid", "$")


def test_oversize_frame_is_refused_before_decoding():
    frame = msgspec.msgpack.encode(order_map(coid="x" * p.MAX_FRAME_BYTES))
    err = refused(frame)
    assert (err.code, err.field) == ("invalid", "$")
    assert f"larger than {p.MAX_FRAME_BYTES} bytes" in err.reason


def test_nesting_bombs_and_bad_utf8_are_refused():
    deep = b"\x81\xa3cid" + b"\x91" * 100_000 + b"\x01"
    assert refused(deep).code == "invalid"
    bad_utf8 = msgspec.msgpack.encode(order_map(sym="ACME")).replace(b"ACME", b"AC\xff\xfe")
    assert refused(bad_utf8).field in ("$", "$.sym")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_protocol_error(data):
    try:
        msg = pc.decode_request(data)
    except p.ProtocolError as e:
        assert e.code == "invalid" and e.field.startswith("$")
    else:
        assert isinstance(msg, members(p.Request))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=U64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["N", "B", "C", "H", "buy", "limit", "market", "ioc"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["t", "cid", "sym", "side", "qty", "px", "orders", "v", "x"])
            | st.text(),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgpack_values)
def test_random_msgpack_only_ever_raises_protocol_error(value):
    try:
        msg = pc.decode_request(msgspec.msgpack.encode(value))
    except p.ProtocolError as e:
        assert e.code == "invalid" and e.field.startswith("$")
        assert 0 <= e.cid <= U64_MAX
    else:
        assert isinstance(msg, members(p.Request))


def test_protocol_error_takes_only_known_codes():
    with pytest.raises(ValueError, match="unknown error code"):
        p.ProtocolError("oops", "reason")


# --- the document


def doc_text() -> str:
    return DOC.read_text()


def hex_bytes(block: str) -> bytes:
    """The bytes of an annotated hex block: everything before each `#`."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in block.splitlines()))


def test_worked_example_in_the_doc_is_what_the_encoder_produces():
    section = doc_text().split("## 9. Worked example", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"```json\n(.*?)```(?:(?!```json).)*?```hex\n(.*?)```", section, re.S)
    assert len(pairs) == 2, "the doc shows a request and its reply, each as JSON then hex"
    (req_json, req_hex), (rep_json, rep_hex) = pairs
    request = msgspec.json.decode(req_json, type=p.Request)
    assert isinstance(request, p.NewOrder)
    assert pc.encode(request) == hex_bytes(req_hex)
    assert pc.decode_request(hex_bytes(req_hex)) == request
    reply = msgspec.json.decode(rep_json, type=p.Reply)
    assert isinstance(reply, p.Ack)
    assert pc.encode(reply) == hex_bytes(rep_hex)


def test_doc_error_table_lists_exactly_the_codes():
    section = doc_text().split("## 5. Error codes", 1)[1]
    tables = re.findall(r"((?:^\|.*\|\n)+)", section, re.M)
    codes = [row.split("|")[1].strip().strip("`") for row in tables[0].splitlines()[2:]]
    assert codes == list(p.ERROR_CODES)
    tokens = {}
    for row in tables[1].splitlines()[2:]:
        token, code, field = (c.strip().strip("`") for c in row.split("|")[1:4])
        tokens[token] = (code, field)
    assert tokens == {
        REJECT_NAMES[c]: (code, field) for c, (code, field, _) in p.BOOK_REJECTS.items()
    }


def test_doc_request_table_has_every_request_tag():
    section = doc_text().split("## 4. Requests and replies", 1)[1].split("### 4.1", 1)[0]
    documented = set(re.findall(r"^\| `\w+`[^|]*\| `(\w+)` \|", section, re.M))
    assert documented == {cls.__struct_config__.tag for cls in members(p.Request)}


# --- requests -> COMMAND records

BOOK = BookConfig(min_price=5_000, max_price=20_000, tick_size=10, lot_size=5, max_qty=1_000)


def store(record: bytes) -> np.void:
    return np.frombuffer(record, COMMAND_DTYPE)[0]


def test_new_order_command_fills_every_field():
    order = p.NewOrder(
        cid=1,
        sym="ACME",
        side="sell",
        qty=15,
        px=10_010,
        tif="ioc",
        post_only=True,
        stp="decrement",
        ik=99,
    )
    c = store(pk.new_order_command(order, BOOK, client=3, instrument=1, req_id=1 << 63))
    assert (c["kind"], c["side"], c["tif"], c["flags"], c["stp"]) == (
        CMD_NEW,
        SIDE_SELL,
        TIF_IOC,
        FLAG_POST_ONLY,
        STP_DECREMENT,
    )
    assert (c["price"], c["qty"], c["idem_key"], c["client"], c["instrument"]) == (
        10_010,
        15,
        99,
        3,
        1,
    )
    assert (c["req_id"], c["seq"], c["order_id"]) == (1 << 63, 0, 0)


def test_market_order_command_has_no_price():
    order = p.Order(sym="ACME", side="buy", qty=5, ord_type="market", tif="fok")
    c = store(pk.new_order_command(order, BOOK, client=1, instrument=0, req_id=1))
    assert (c["ord_type"], c["price"]) == (TYPE_MARKET, 0)


GRID = {
    "above max qty": (dict(qty=1_005), "$.qty", "qty_above_max: qty 1005 is above"),
    "off the lot": (dict(qty=7), "$.qty", "qty_off_lot: qty 7 is not a multiple of the lot size 5"),
    "below the band": (dict(px=4_990), "$.px", "price_outside_band: px 4990"),
    "above the band": (dict(px=20_010), "$.px", "[5000, 20000]"),
    "off the tick": (dict(px=10_005), "$.px", "price_off_tick: px 10005"),
    "display off the lot": (dict(display=3), "$.display", "display_invalid: display 3 is not"),
}


@pytest.mark.parametrize("case", GRID)
def test_off_grid_order_is_refused_naming_the_field(case):
    change, field, text = GRID[case]
    order = p.Order(**{"sym": "ACME", "side": "buy", "qty": 10, "px": 10_000, **change})
    with pytest.raises(p.ProtocolError) as err:
        pk.new_order_command(order, BOOK, client=1, instrument=0, req_id=1)
    assert (err.value.code, err.value.field) == ("invalid", field)
    assert text in err.value.reason
    replace = p.Replace(cid=1, sym="ACME", oid=1, px=order.px, qty=order.qty, display=order.display)
    with pytest.raises(p.ProtocolError) as err:
        pk.replace_command(replace, BOOK, client=1, instrument=0, req_id=1)
    assert err.value.field == field


@pytest.mark.parametrize("case", GRID)
def test_a_book_refuses_an_off_grid_order_as_the_gateway_does(case, book_classes):
    """The grid checks are both the gateway's and the book's (gateway/commands.py says
    why): the same order, written to a book directly, is refused for the same rule."""
    change, _, _ = GRID[case]
    order = p.Order(**{"sym": "ACME", "side": "buy", "qty": 10, "px": 10_000, **change})
    with pytest.raises(p.ProtocolError) as err:
        pk.new_order_command(order, BOOK, client=1, instrument=0, req_id=1)
    cmd = np.zeros(1, COMMAND_DTYPE)
    fields = dict(seq=1, order_id=1, req_id=1, client=1, kind=CMD_NEW, side=SIDE_BUY)
    fields |= dict(tif=TIF_GTC, ord_type=TYPE_LIMIT, qty=order.qty, price=order.px)
    for name, value in (fields | dict(display=order.display or 0)).items():
        cmd[name] = value
    for cls in book_classes:
        events = cls(BOOK).process(cmd)
        assert events[0]["kind"] == EV_REJECTED, (cls, events)
        assert err.value.reason.startswith(REJECT_NAMES[int(events[0]["code"])] + ":"), cls


def test_an_iceberg_command_carries_its_display():
    order = p.Order(sym="ACME", side="buy", qty=20, px=10_000, display=5)
    assert (
        store(pk.new_order_command(order, BOOK, client=1, instrument=0, req_id=1))["display"] == 5
    )
    plain = p.Order(sym="ACME", side="buy", qty=20, px=10_000)
    assert (
        store(pk.new_order_command(plain, BOOK, client=1, instrument=0, req_id=1))["display"] == 0
    )
    for display, want in ((None, 0), (10, 10)):  # none: the order keeps its own
        msg = p.Replace(cid=1, sym="ACME", oid=1, px=10_000, qty=20, display=display)
        assert store(pk.replace_command(msg, BOOK, client=1, instrument=0, req_id=1))[
            "display"
        ] == (want)


def test_gtd_and_day_commands_carry_their_expiry_and_refusals_name_the_field():
    at = 1_800_000_000 * 10**9
    order = p.Order(sym="ACME", side="buy", qty=20, px=10_000, tif="gtd", expire_at=at)
    rec = store(pk.new_order_command(order, BOOK, client=1, instrument=0, req_id=1))
    assert (rec["tif"], rec["expires"]) == (TIF_GTD, at)
    day = p.Order(sym="ACME", side="buy", qty=20, px=10_000, tif="day")
    rec = store(pk.new_order_command(day, BOOK, client=1, instrument=0, req_id=1, day_end=at))
    assert (rec["tif"], rec["expires"]) == (TIF_DAY, at)
    with pytest.raises(p.ProtocolError) as err:  # an instrument without a session end
        pk.new_order_command(day, BOOK, client=1, instrument=0, req_id=1)
    assert (err.value.code, err.value.field) == ("invalid", "$.tif")
    plain = p.Order(sym="ACME", side="buy", qty=20, px=10_000)
    assert (
        store(pk.new_order_command(plain, BOOK, client=1, instrument=0, req_id=1))["expires"] == 0
    )
    base = {"t": "N", "cid": 3, "sym": "ACME", "side": "buy", "qty": 5, "px": 10_000}
    for extra, field in (
        ({"tif": "gtd"}, "$.expire_at"),
        ({"expire_at": at}, "$.expire_at"),
        ({"tif": "ioc", "expire_at": at}, "$.expire_at"),
        ({"tif": "day", "expire_at": at}, "$.expire_at"),
        ({"tif": "gtd", "expire_at": 0}, "$.expire_at"),
        ({"tif": "day", "type": "market", "px": None}, "$.tif"),
    ):
        frame = {k: v for k, v in {**base, **extra}.items() if v is not None}
        with pytest.raises(p.ProtocolError) as err:
            pc.decode_request(msgspec.msgpack.encode(frame))
        assert (err.value.code, err.value.field) == ("invalid", field), extra
    ok = pc.decode_request(msgspec.msgpack.encode({**base, "tif": "gtd", "expire_at": at}))
    assert (ok.tif, ok.expire_at) == ("gtd", at)
    reject = pr.book_reject(REJ_EXPIRY_PASSED, 3)
    assert (reject.field, reject.reason.split(":")[0]) == ("$.expire_at", "expiry_passed")


def test_cancel_replace_and_mass_cancel_commands():
    r = store(
        pk.replace_command(
            p.Replace(cid=1, sym="A", oid=8, px=10_020, qty=25),
            BOOK,
            client=2,
            instrument=3,
            req_id=4,
        )
    )
    assert (r["kind"], r["order_id"], r["price"], r["qty"], r["client"]) == (
        CMD_REPLACE,
        8,
        10_020,
        25,
        2,
    )
    c = store(pk.cancel_command(p.Cancel(cid=1, sym="A", oid=8), client=2, instrument=3, req_id=5))
    assert (c["kind"], c["order_id"], c["client"], c["instrument"], c["req_id"]) == (
        CMD_CANCEL,
        8,
        2,
        3,
        5,
    )
    m = store(pk.mass_cancel_command(client=2, instrument=3, req_id=6))
    assert (m["kind"], m["order_id"], m["client"], m["instrument"]) == (CMD_MASS_CANCEL, 0, 2, 3)


# --- a small shard: requests -> commands -> the reference book -> messages


class Shard:
    """One instrument: commands built from requests, run by the reference book."""

    def __init__(self, book: BookConfig = BOOK, depth: int = p.DEFAULT_DEPTH):
        self.config = book
        self.book = ReferenceBook(book)
        self.mirror = gm.BookMirror("ACME", book, depth)
        self.seq = 100
        self.next_oid = 1
        self.requests = {0: (0, 0, "")}  # req_id -> (kind, cid, coid); 0: the shard's own

    def run(self, client: int, msg):
        """(private messages as (client, message), market data) of one request."""
        req_id = len(self.requests) + 1
        if isinstance(msg, p.NewOrder):
            t = pk.new_order_command(msg, self.config, client=client, instrument=0, req_id=req_id)
            coid = msg.coid
        elif isinstance(msg, p.Replace):
            t = pk.replace_command(msg, self.config, client=client, instrument=0, req_id=req_id)
            coid = ""
        elif isinstance(msg, p.Cancel):
            t = pk.cancel_command(msg, client=client, instrument=0, req_id=req_id)
            coid = ""
        else:
            t = pk.mass_cancel_command(client=client, instrument=0, req_id=req_id)
            coid = ""
        cmds = commands(1)
        cmds[0] = store(t)
        self.seq += 7  # the shard's other instruments take the numbers in between
        cmds["seq"] = self.seq
        if cmds["kind"][0] == CMD_NEW:
            cmds["order_id"] = self.next_oid
            self.next_oid += 1
        self.requests[req_id] = (int(cmds["kind"][0]), msg.cid, coid)
        events = self.book.process(cmds)
        return self.private(events), gm.market_data(events, [self.mirror]), events

    def shards_own(self, kind: int):
        """A command the shard makes itself (CMD_HALT, CMD_RESUME: req_id 0), as ``run``."""
        cmds = commands(1)
        self.seq += 7
        cmds["seq"], cmds["kind"] = self.seq, kind
        events = self.book.process(cmds)
        return self.private(events), gm.market_data(events, [self.mirror]), events

    def private(self, events):
        out = []
        for e in map(pr.event_of, events.tolist()):
            kind, cid, coid = self.requests[e.req_id]
            out += pr.private_messages(e, "ACME", kind, cid, coid)
        return out


def limit(cid, side, qty, px, **kw):
    return p.NewOrder(cid=cid, sym="ACME", side=side, qty=qty, px=px, **kw)


def test_accepted_order_is_acked_with_order_id_and_seq():
    shard = Shard()
    private, public, _ = shard.run(1, limit(11, "sell", 100, 10_000, coid="s-1"))
    assert private == [(1, p.Ack(cid=11, sym="ACME", oid=1, seq=107, coid="s-1"))]
    assert public == [
        p.Depth(sym="ACME", seq=107, prev=0, bids=[], asks=[(10_000, 100, 1)]),
        p.TopOfBook(sym="ACME", seq=107, prev=0, bid_px=0, bid_qty=0, ask_px=10_000, ask_qty=100),
    ]


def test_trade_gives_each_side_its_fill_and_an_ioc_remainder_notice():
    shard = Shard()
    shard.run(1, limit(11, "sell", 100, 10_000))
    shard.run(1, limit(12, "sell", 50, 10_010))
    private, public, _ = shard.run(2, limit(21, "buy", 150, 10_000, tif="ioc", coid="b"))
    assert private == [
        (2, p.Ack(cid=21, sym="ACME", oid=3, seq=121, coid="b")),
        (
            2,
            p.Fill(
                sym="ACME",
                oid=3,
                seq=121,
                idx=1,
                side="buy",
                px=10_000,
                qty=100,
                leaves=50,
                liq="taker",
            ),
        ),
        (
            1,
            p.Fill(
                sym="ACME",
                oid=1,
                seq=121,
                idx=1,
                side="sell",
                px=10_000,
                qty=100,
                leaves=0,
                liq="maker",
            ),
        ),
        (2, p.Cancelled(cid=0, sym="ACME", oid=3, seq=121, qty=50, reason="ioc_remainder")),
    ]
    # seq 114 added a level behind the best ask: it changed Depth but not TopOfBook
    assert public == [
        p.Trades(sym="ACME", seq=121, prev=0, side="buy", prints=[(10_000, 100)]),
        p.Depth(sym="ACME", seq=121, prev=114, bids=[], asks=[(10_010, 50, 1)]),
        p.TopOfBook(sym="ACME", seq=121, prev=107, bid_px=0, bid_qty=0, ask_px=10_010, ask_qty=50),
    ]


def test_post_only_that_would_take_is_rejected_on_px():
    shard = Shard()
    shard.run(1, limit(11, "sell", 100, 10_000))
    private, public, _ = shard.run(2, limit(21, "buy", 5, 10_000, post_only=True, coid="po"))
    [(client, reject)] = private
    assert client == 2
    assert (reject.cid, reject.code, reject.field, reject.coid) == (21, "invalid", "$.px", "po")
    assert reject.reason.startswith("post_only_would_take: ")
    assert public == []


def test_cancel_is_answered_by_cancelled_with_its_cid():
    shard = Shard()
    shard.run(1, limit(11, "buy", 100, 9_000))
    private, public, _ = shard.run(1, p.Cancel(cid=12, sym="ACME", oid=1))
    assert private == [(1, p.Cancelled(cid=12, sym="ACME", oid=1, seq=114, qty=100, reason="user"))]
    assert [type(m) for m in public] == [p.Depth, p.TopOfBook]
    private, _, _ = shard.run(2, p.Cancel(cid=13, sym="ACME", oid=1))
    [(client, reject)] = private
    assert (client, reject.cid, reject.code, reject.field) == (2, 13, "not_found", "$.oid")


def test_someone_elses_order_cannot_be_cancelled():
    shard = Shard()
    shard.run(1, limit(11, "buy", 100, 9_000))
    [(client, reject)], public, _ = shard.run(2, p.Cancel(cid=21, sym="ACME", oid=1))
    assert (client, reject.code, reject.reason.split(":")[0]) == (2, "not_found", "order_not_found")
    assert public == []


def test_replace_is_answered_by_replaced_and_to_zero_by_cancelled():
    shard = Shard()
    shard.run(1, limit(11, "sell", 100, 10_000))
    shard.run(2, limit(21, "buy", 40, 10_000))
    private, public, _ = shard.run(1, p.Replace(cid=12, sym="ACME", oid=1, px=10_000, qty=70))
    assert private == [
        (1, p.Replaced(cid=12, sym="ACME", oid=1, seq=121, px=10_000, qty=70, leaves=30))
    ]
    assert public[0] == p.Depth(sym="ACME", seq=121, prev=114, bids=[], asks=[(10_000, 30, 1)])
    private, _, _ = shard.run(1, p.Replace(cid=13, sym="ACME", oid=1, px=10_000, qty=40))
    assert private == [
        (1, p.Cancelled(cid=13, sym="ACME", oid=1, seq=128, qty=30, reason="replaced_to_zero"))
    ]


def test_mass_cancel_gives_notices_without_cid_then_its_reply():
    shard = Shard()
    shard.run(1, limit(11, "buy", 10, 9_000))
    shard.run(1, limit(12, "sell", 10, 11_000))
    shard.run(2, limit(21, "sell", 10, 12_000))
    private, public, events = shard.run(1, p.MassCancel(cid=13))
    assert private == [
        (1, p.Cancelled(cid=0, sym="ACME", oid=1, seq=128, qty=10, reason="user")),
        (1, p.Cancelled(cid=0, sym="ACME", oid=2, seq=128, qty=10, reason="user")),
        (1, p.MassCancelled(cid=13, sym="ACME", n=2)),
    ]
    rows = [pr.event_of(r) for r in events.tolist()]
    assert [pr.answers_request(e, CMD_MASS_CANCEL) for e in rows] == [
        e.kind == EV_MASS_CANCELLED for e in rows
    ]
    assert public[-1] == p.TopOfBook(
        sym="ACME", seq=128, prev=114, bid_px=0, bid_qty=0, ask_px=12_000, ask_qty=10
    )


def test_self_trade_cancel_is_a_notice_to_the_owner():
    shard = Shard()
    shard.run(1, limit(11, "sell", 10, 10_000))
    private, public, _ = shard.run(1, limit(12, "buy", 10, 10_000, stp="cancel_oldest"))
    assert private == [
        (1, p.Ack(cid=12, sym="ACME", oid=2, seq=114)),
        (1, p.Cancelled(cid=0, sym="ACME", oid=1, seq=114, qty=10, reason="self_trade")),
    ]
    assert not any(isinstance(m, p.Trades) for m in public)


def test_duplicate_resend_goes_to_the_retry_owner_only_and_is_not_public():
    shard = Shard()
    shard.run(1, limit(11, "sell", 100, 10_000))
    _, _, events = shard.run(2, limit(21, "buy", 40, 10_000, ik=5))
    # what exchange.idempotency.resend sends for an identical retry: DEPTH left out, flagged
    resent = events[events["kind"] != EV_DEPTH].copy()
    resent["flags"] |= EVF_DUPLICATE
    rows = [pr.event_of(r) for r in resent.tolist()]
    private = [m for e in rows for m in pr.private_messages(e, "ACME", CMD_NEW, 22)]
    assert private == [
        (2, p.Ack(cid=22, sym="ACME", oid=2, seq=114, dup=True)),
        (
            2,
            p.Fill(
                sym="ACME",
                oid=2,
                seq=114,
                idx=1,
                side="buy",
                px=10_000,
                qty=40,
                leaves=0,
                liq="taker",
                dup=True,
            ),
        ),
    ]
    assert gm.market_data(resent, [shard.mirror]) == []


def test_idempotency_conflict_is_rejected_on_ik_and_is_not_public():
    shard = Shard()
    cmd = commands(1)
    cmd[0] = store(
        pk.new_order_command(
            limit(31, "buy", 5, 9_000, ik=5), BOOK, client=2, instrument=0, req_id=1
        )
    )
    conflict = shard_rejects(cmd, REJ_CONFLICT)
    [e] = [pr.event_of(r) for r in conflict.tolist()]
    [(client, reject)] = pr.private_messages(e, "ACME", CMD_NEW, 31, "c")
    assert (client, reject.cid, reject.code, reject.field, reject.coid) == (
        2,
        31,
        "conflict",
        "$.ik",
        "c",
    )
    assert reject.reason.startswith("idempotency_conflict: ")
    assert gm.market_data(conflict, [shard.mirror]) == []


def test_depth_messages_only_when_the_top_levels_change():
    shard = Shard(depth=1)
    shard.run(1, limit(11, "buy", 10, 9_000))
    _, public, _ = shard.run(1, limit(12, "buy", 10, 8_990))  # below the shown depth
    assert public == []
    _, public, _ = shard.run(1, limit(13, "buy", 10, 9_000))
    assert public == [
        p.Depth(sym="ACME", seq=121, prev=107, bids=[(9_000, 20, 2)], asks=[]),
        p.TopOfBook(sym="ACME", seq=121, prev=107, bid_px=9_000, bid_qty=20, ask_px=0, ask_qty=0),
    ]
    assert shard.mirror.book(cid=5, depth=3) == p.BookSnapshot(
        cid=5, sym="ACME", seq=121, bids=[(9_000, 20, 2), (8_990, 10, 1)], asks=[]
    )


def test_order_status_answers_the_owner_only():
    ev = events(1)
    ev["kind"], ev["req_id"], ev["order_id"], ev["client"] = EV_STATUS, 9, 4, 7
    ev["side"], ev["price"], ev["qty"], ev["leaves"] = SIDE_BUY, 9_000, 10, 6
    ev["code"], ev["other_id"] = ST_LIVE, 33
    [e] = [pr.event_of(r) for r in ev.tolist()]
    assert pr.order_status(e, "ACME", cid=3, client=7) == p.OrderStatus(
        cid=3, sym="ACME", oid=4, side="buy", px=9_000, qty=10, leaves=6, state="live", seq=33
    )
    ev["code"] = 0  # the shard never saw it
    [unknown] = [pr.event_of(r) for r in ev.tolist()]
    for other in (
        pr.order_status(e, "ACME", cid=3, client=8),
        pr.order_status(unknown, "ACME", cid=3, client=7),
    ):
        assert (other.cid, other.code, other.field) == (3, "not_found", "$.oid")
    assert set(typing.get_args(p.StateName)) == set(STATUS_NAMES.values())


def check_random_stream(seed: int, n: int) -> None:
    """Every event of a random stream, run in random batches, converted to messages: each
    command gets exactly one reply, from the event ``answers_request`` picks, fills pair
    up, the feeds chain, and what the public feed shows always equals the book."""
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    stream = random_stream(rng, config, n)
    stream["instrument"] = 0
    stream["req_id"] = np.arange(1, n + 1)  # the gateway's ids; cid = req_id here
    # an EXPIRE, a HALT or a RESUME is the shard's own (req_id 0): nobody asked, nothing
    # answers it
    stream["req_id"][np.isin(stream["kind"], (CMD_EXPIRE, CMD_HALT, CMD_RESUME))] = 0
    kinds = dict(zip(stream["req_id"].tolist(), stream["kind"].tolist(), strict=False))
    book = ReferenceBook(config)
    depth = int(rng.integers(1, 6))
    mirror = gm.BookMirror("X", config, depth)
    prev = {}
    shown_depth, shown_top = ([], []), (0, 0, 0, 0)
    for batch in random_batches(rng, n, max_batch=50):
        events = book.process(stream[batch])
        rows = [pr.event_of(r) for r in events.tolist()]
        private = [m for e in rows for m in pr.private_messages(e, "X", kinds[e.req_id], e.req_id)]
        replies = Counter(m.cid for _, m in private if getattr(m, "cid", 0))
        asked = [r for r in stream["req_id"][batch].tolist() if r]
        for req_id in asked:
            assert replies.pop(req_id, 0) == 1
        assert not replies
        answering = [e.req_id for e in rows if pr.answers_request(e, kinds[e.req_id])]
        assert answering == asked
        fills = [m for _, m in private if isinstance(m, p.Fill)]
        taker = [(f.seq, f.idx, f.qty) for f in fills if f.liq == "taker"]
        assert taker == [(f.seq, f.idx, f.qty) for f in fills if f.liq == "maker"]
        # an auction's trade fills its buyer, then its seller, both "auction"
        auction = [(f.seq, f.idx, f.qty, f.side) for f in fills if f.liq == "auction"]
        assert auction[0::2] == [(s, i, q, "buy") for s, i, q, _ in auction[1::2]]
        assert all(side == "sell" for *_, side in auction[1::2])
        for e in rows:
            if e.kind == EV_STATE:  # what a resume's auction traded: its STATE's qty
                assert sum(q for s, _, q, _ in auction[0::2] if s == e.seq) == e.qty
        assert len(taker) + len(auction) // 2 == sum(e.kind == EV_TRADE for e in rows)
        for msg in gm.market_data(events, [mirror]):
            assert msg.prev == prev.get(type(msg), 0) < msg.seq
            prev[type(msg)] = msg.seq
            if isinstance(msg, p.Depth):
                shown_depth = (msg.bids, msg.asks)
            elif isinstance(msg, p.TopOfBook):
                shown_top = (msg.bid_px, msg.bid_qty, msg.ask_px, msg.ask_qty)
            elif isinstance(msg, p.TradingState):
                [e] = [e for e in rows if e.seq == msg.seq and e.kind == EV_STATE]
                assert (msg.state, msg.px, msg.qty) == (STATE_NAMES[e.code], e.price, e.qty)
            else:
                trades = [e for e in rows if e.seq == msg.seq and e.kind == EV_TRADE]
                assert msg.prints == [(e.price, e.qty) for e in trades]
        assert shown_depth == book.depth(depth)
        assert shown_top == book.top()
        assert mirror.book(0, 10_000) == p.BookSnapshot(
            cid=0,
            sym="X",
            seq=mirror.seq,
            bids=book.depth(10_000)[0],
            asks=book.depth(10_000)[1],
            state="halted" if book.halted else "continuous",
        )


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_convert_consistently(seed):
    check_random_stream(seed, 1_500)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_random_streams_convert_consistently_long(seed):
    check_random_stream(seed, 20_000)


def test_a_drained_batch_publishes_its_trades_then_the_state_it_leaves():
    """Market data is made per drained batch: each command's Trades, then one Depth and
    one TopOfBook carrying the seq of the batch's last command."""
    book = ReferenceBook(BOOK)
    mirror = gm.BookMirror("ACME", BOOK, depth=2)
    cmds = commands(4)
    for i, (client, msg) in enumerate(
        [
            (1, limit(1, "sell", 10, 10_010)),
            (1, limit(2, "sell", 10, 10_020)),
            (2, limit(3, "buy", 5, 10_010)),
            (2, limit(4, "buy", 10, 10_020)),
        ]
    ):
        cmds[i] = store(pk.new_order_command(msg, BOOK, client=client, instrument=0, req_id=i + 1))
    cmds["seq"] = [10, 11, 12, 13]
    cmds["order_id"] = [1, 2, 3, 4]
    out = gm.market_data(book.process(cmds), [mirror])
    assert out == [
        p.Trades(sym="ACME", seq=12, prev=0, side="buy", prints=[(10_010, 5)]),
        p.Trades(sym="ACME", seq=13, prev=12, side="buy", prints=[(10_010, 5), (10_020, 5)]),
        p.Depth(sym="ACME", seq=13, prev=0, bids=[], asks=[(10_020, 5, 1)]),
        p.TopOfBook(sym="ACME", seq=13, prev=0, bid_px=0, bid_qty=0, ask_px=10_020, ask_qty=5),
    ]
    assert gm.market_data(book.process(cmds[:0]), [mirror]) == []


def test_the_iceberg_example_of_the_doc():
    """PROTOCOL.md 4.1b: the book and feed show the shown part; the owner's fills the
    whole; the refill goes behind and meets the buy again."""
    shard = Shard(BookConfig(min_price=5_000, max_price=20_000, max_qty=1_000))
    shard.run(2, limit(1, "sell", 3, 10_001))
    _, public, _ = shard.run(1, limit(8, "sell", 10, 10_001, display=4))
    assert public[0] == p.Depth(sym="ACME", seq=114, prev=107, bids=[], asks=[(10_001, 7, 2)])
    private, public, _ = shard.run(3, limit(9, "buy", 9, 10_001))
    mine = [m for client, m in private if client == 1]
    assert [(m.oid, m.idx, m.qty, m.leaves, m.liq) for m in mine] == [
        (2, 2, 4, 6, "maker"),
        (2, 3, 2, 4, "maker"),
    ]
    assert public[:2] == [
        p.Trades(
            sym="ACME",
            seq=121,
            prev=0,
            side="buy",
            prints=[(10_001, 3), (10_001, 4), (10_001, 2)],
        ),
        p.Depth(sym="ACME", seq=121, prev=114, bids=[], asks=[(10_001, 2, 1)]),
    ]
    assert shard.mirror.book(cid=1, depth=5).asks == [(10_001, 2, 1)]


def test_a_mirror_loaded_from_resting_orders_serves_them_and_ignores_what_it_has_seen():
    book = ReferenceBook(BOOK)
    cmds = commands(3)
    for i, msg in enumerate(
        [limit(1, "buy", 5, 9_990), limit(2, "buy", 10, 9_990), limit(3, "sell", 5, 10_100)]
    ):
        cmds[i] = store(pk.new_order_command(msg, BOOK, client=1, instrument=0, req_id=i + 1))
    cmds["seq"] = cmds["order_id"] = [1, 2, 3]
    events = book.process(cmds)
    mirror = gm.BookMirror("ACME", BOOK)
    rows = book.canonical_rows()
    mirror.load_resting(3, rows[:, 0], rows[:, 1], rows[:, 9])  # shown
    assert mirror.book(cid=4, depth=5) == p.BookSnapshot(
        cid=4, sym="ACME", seq=3, bids=[(9_990, 15, 2)], asks=[(10_100, 5, 1)]
    )
    assert gm.market_data(events, [mirror]) == []  # a restarted shard's repeated tail


def test_the_halt_example_of_the_doc():
    """PROTOCOL.md 4.1d, message for message: the halt, a refused ioc, orders resting
    crossed, the snapshot saying halted, the reopening auction's fills, prints and
    state, run through the reference book."""
    section = doc_text().split("### 4.1d", 1)[1].split("\n### ", 1)[0]
    lines = [
        ln for block in re.findall(r"```json\n(.*?)```", section, re.S) for ln in block.splitlines()
    ]
    documented = []
    for line in lines:
        tag = msgspec.json.decode(line)["t"]
        union = p.Request if tag == "N" else p.MarketData if tag in ("TS", "D", "Q") else p.Reply
        documented.append(msgspec.json.decode(line, type=union))
    [request] = [m for m in documented if isinstance(m, p.NewOrder)]
    assert request == limit(12, "buy", 4, 10_002)

    shard = Shard(BookConfig(min_price=5_000, max_price=20_000, max_qty=1_000))
    seen = []  # client 1's and client 4's private messages, and the feed

    def at(seq: int, step) -> None:
        shard.seq = shard.next_oid = seq
        shard.seq -= 7  # what ``run`` adds
        private, public, _ = step()
        seen.extend(m for client, m in private if client in (1, 4))
        seen.extend(public)

    at(40, lambda: shard.shards_own(CMD_HALT))
    at(41, lambda: shard.run(4, limit(11, "buy", 1, 10_005, tif="ioc")))
    at(42, lambda: shard.run(2, limit(1, "sell", 3, 10_000)))
    at(43, lambda: shard.run(3, limit(2, "sell", 2, 10_002)))
    at(44, lambda: shard.run(1, request))
    seen.append(shard.mirror.book(cid=13, depth=5))
    at(45, lambda: shard.shards_own(CMD_RESUME))
    shown = [m for m in documented if not isinstance(m, p.NewOrder)]
    assert len(shown) == 8 and all(m in seen for m in shown), [m for m in shown if m not in seen]
    fills = [m for m in seen if isinstance(m, p.Fill)]
    assert fills == [m for m in shown if isinstance(m, p.Fill)]  # all of client 1's
