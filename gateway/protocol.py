"""The wire protocol between bots and the gateway; docs/PROTOCOL.md is its reference.

One ZeroMQ frame is one msgpack map, a msgspec Struct tagged by its ``t`` field.
Three tagged unions: ``Request`` (bot -> gateway, ROUTER), ``Reply`` (gateway ->
one bot, ROUTER) and ``MarketData`` (gateway -> everyone, PUB, topic = symbol).

Requests are strict (unknown fields, wrong types and out-of-range values are
refused) because a typo in an order must never trade. Replies and market data
are lenient to decode, so a newer gateway may add fields without breaking bots.

Besides the schema this module holds the pure conversions at the gateway's two
edges: a decoded request + the instrument's ``BookConfig`` -> a COMMAND record's
fields (``new_order_command`` ...), and EVENT records -> private replies
(``event_of``, ``private_messages``); the public market data is made in
``gateway.mirror``. The error-code table is ``ERROR_CODES``.
"""

import re
import struct
from collections import namedtuple
from typing import Annotated, Literal

import msgspec
import numpy as np

from exchange.bookconfig import BookConfig
from exchange.orderstate import STATUS_NAMES
from exchange.records import (
    CANCEL_NAMES,
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_STATUS,
    COMMAND_DTYPE,
    CXL_REPLACE,
    CXL_USER,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_MASS_CANCELLED,
    EV_REJECTED,
    EV_REPLACED,
    EV_TRADE,
    EV_TRIGGERED,
    EVENT_FIELDS,
    EVF_DUPLICATE,
    FLAG_POST_ONLY,
    REJ_BAD_COMMAND,
    REJ_BOOK_FULL,
    REJ_CONFLICT,
    REJ_DISPLAY,
    REJ_DUPLICATE_ID,
    REJ_EXPIRY,
    REJ_EXPIRY_PASSED,
    REJ_KEY_EXPIRED,
    REJ_LOT,
    REJ_NOT_FOUND,
    REJ_POST_ONLY,
    REJ_PRICE_BAND,
    REJ_QTY,
    REJ_QTY_MAX,
    REJ_TICK,
    REJ_TRIGGER,
    REJ_TRIGGER_REACHED,
    REJECT_NAMES,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST,
    STP_CANCEL_OLDEST,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
MAX_BATCH = 256
MAX_SYMBOL_LEN = 32
MAX_COID_LEN = 36  # a UUID in text form fits
DEFAULT_DEPTH = 5
MAX_DEPTH = 100
# a TradesRequest spans at most this many seqs (to_seq - from_seq < it)
MAX_RETRANSMIT_SEQS = 100_000
INT64_MAX = (1 << 63) - 1

# --- stable error codes (Reject.code)
INVALID = "invalid"
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
RATE_LIMITED = "rate_limited"
BUSY = "busy"
UNAVAILABLE = "unavailable"
# the gateway's pre-trade risk refusals, one code per limit (gateway/risk.py)
KILL_SWITCH = "kill_switch"
MAX_ORDER_QTY = "max_order_qty"
MAX_NOTIONAL = "max_notional"
PRICE_COLLAR = "price_collar"
MAX_OPEN_ORDERS = "max_open_orders"
MAX_POSITION = "max_position"

ERROR_CODES = {
    INVALID: "a field is missing, malformed, out of range or not allowed here; `field` names it",
    UNAUTHENTICATED: "the connection has no client id (its CURVE key is not registered)",
    FORBIDDEN: "the client may not do this (instrument or action not permitted)",
    NOT_FOUND: "no such instrument, or no live order with this oid that is yours",
    CONFLICT: "the idempotency key was used before for a different request",
    RATE_LIMITED: "too many requests: the client's rate limit is exhausted; slow down",
    BUSY: "the exchange cannot take it now (queue or book full); retry later, unchanged",
    UNAVAILABLE: "the shard holding the instrument is down; retry after it is back",
    KILL_SWITCH: "the client is blocked by the kill switch until an operator lifts it",
    MAX_ORDER_QTY: "qty is above the client's max order quantity",
    MAX_NOTIONAL: "qty x px is above the client's max notional",
    PRICE_COLLAR: "px is too far from the reference price (the last trade)",
    MAX_OPEN_ORDERS: "the client has its max number of orders open or in flight",
    MAX_POSITION: "filling this and every open order could breach a position limit",
}

# book-level reject (EV_REJECTED.code) -> (error code, field, explanation); the
# reason sent is "<REJECT_NAMES token>: <explanation>"
BOOK_REJECTS = {
    REJ_BAD_COMMAND: (INVALID, "$", "the command is malformed"),
    REJ_QTY: (INVALID, "$.qty", "qty must be > 0"),
    REJ_QTY_MAX: (INVALID, "$.qty", "qty is above the instrument's max_qty"),
    REJ_LOT: (INVALID, "$.qty", "qty is not a multiple of the instrument's lot size"),
    REJ_PRICE_BAND: (INVALID, "$.px", "px is outside the instrument's price band"),
    REJ_TICK: (INVALID, "$.px", "px is not a multiple of the instrument's tick size"),
    REJ_DUPLICATE_ID: (CONFLICT, "$", "the exchange order id is live already"),
    REJ_POST_ONLY: (INVALID, "$.px", "a post-only order at this px would take liquidity"),
    REJ_BOOK_FULL: (BUSY, "$", "the book has no room for another resting order"),
    REJ_NOT_FOUND: (NOT_FOUND, "$.oid", "no live order with this oid is yours on this symbol"),
    REJ_CONFLICT: (CONFLICT, "$.ik", "this idempotency key was used for a different request"),
    REJ_TRIGGER: (
        INVALID,
        "$.trigger",
        "a stop's trigger must be in the price band (a replace of a waiting stop restates "
        "it), and only a waiting stop takes one",
    ),
    REJ_TRIGGER_REACHED: (
        INVALID,
        "$.trigger",
        "the last trade price has already reached this trigger (buy: last >= trigger, "
        "sell: last <= trigger)",
    ),
    REJ_DISPLAY: (
        INVALID,
        "$.display",
        "an iceberg's display must be a multiple of the lot size and at most its qty, on a "
        "limit gtc order only (a waiting stop takes none)",
    ),
    REJ_EXPIRY: (
        INVALID,
        "$.expire_at",
        "only a gtd order takes an expire_at (ns since the epoch, > 0), and it needs one; "
        "a market order never rests, so takes neither gtd nor day",
    ),
    REJ_EXPIRY_PASSED: (
        INVALID,
        "$.expire_at",
        "the order's expiry is at or before the instrument's last expiry time: it would "
        "expire at once",
    ),
    REJ_KEY_EXPIRED: (
        CONFLICT,
        "$.ik",
        "this idempotency key was used for an order older than its shard's retained "
        "history: the original's answer is no longer kept, and no new order was made",
    ),
}
assert BOOK_REJECTS.keys() == REJECT_NAMES.keys()

SIDES = {"buy": SIDE_BUY, "sell": SIDE_SELL}
TIFS = {"gtc": TIF_GTC, "ioc": TIF_IOC, "fok": TIF_FOK, "gtd": TIF_GTD, "day": TIF_DAY}
RESTING_TIFS = ("gtc", "gtd", "day")  # a limit order with one of these rests
ORDER_TYPES = {
    "limit": TYPE_LIMIT,
    "market": TYPE_MARKET,
    "stop": TYPE_STOP,
    "stop_limit": TYPE_STOP_LIMIT,
}
ORDER_TYPE_NAMES = {v: k for k, v in ORDER_TYPES.items()}
STP_MODES = {
    "none": STP_NONE,
    "cancel_newest": STP_CANCEL_NEWEST,
    "cancel_oldest": STP_CANCEL_OLDEST,
    "cancel_both": STP_CANCEL_BOTH,
    "decrement": STP_DECREMENT,
}
SIDE_NAMES = {v: k for k, v in SIDES.items()}

Side = Literal["buy", "sell"]
Tif = Literal["gtc", "ioc", "fok", "gtd", "day"]
OrderType = Literal["limit", "market", "stop", "stop_limit"]
Stp = Literal["none", "cancel_newest", "cancel_oldest", "cancel_both", "decrement"]
StateName = Literal["live", "filled", "cancelled", "rejected"]

Cid = Annotated[int, msgspec.Meta(ge=1)]  # uint64: msgpack cannot carry more
U64 = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SYMBOL_LEN)]
ClientOrderId = Annotated[str, msgspec.Meta(max_length=MAX_COID_LEN)]
Level = tuple[int, int, int]  # price, total qty, number of orders


class ProtocolError(Exception):
    """A request the gateway refuses: ``reject()`` is the reply that says why."""

    def __init__(self, code: str, reason: str, field: str = "$", cid: int = 0):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code} at {field}: {reason}")
        self.code = code
        self.reason = reason
        self.field = field
        self.cid = cid

    def reject(self, cid: int | None = None, coid: str = "") -> "Reject":
        """The Reject reply; ``cid`` defaults to the one salvaged from the request."""
        return Reject(
            cid=self.cid if cid is None else cid,
            code=self.code,
            field=self.field,
            reason=self.reason,
            coid=coid,
        )


# --- requests: strict, and fields at their default may be left out


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _Request(_Strict, tag_field="t", omit_defaults=True):
    pass


class Order(_Strict, omit_defaults=True, kw_only=True):
    """One order's fields: the body of NewOrder, and an item of NewOrders."""

    sym: Symbol
    side: Side
    qty: Positive
    px: Positive | None = None
    tif: Tif = "gtc"
    ord_type: OrderType = msgspec.field(default="limit", name="type")
    trigger: Positive | None = None  # stop, stop_limit: the trigger price
    # an iceberg (a limit order that rests: gtc, gtd, day): the qty shown in the book at a
    # time, the rest in reserve
    display: Positive | None = None
    # gtd only (and required): when the order expires, ns since the Unix epoch (UTC); a
    # day order expires at its instrument's session end, which the gateway sets
    expire_at: Positive | None = None
    post_only: bool = False
    stp: Stp = "cancel_newest"
    coid: ClientOrderId = ""
    ik: U64 = 0


class NewOrder(Order, tag="N", tag_field="t", kw_only=True):
    cid: Cid


class NewOrders(_Request, tag="B", kw_only=True):
    cid: Cid
    orders: Annotated[list[Order], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class Cancel(_Request, tag="C", kw_only=True):
    cid: Cid
    sym: Symbol
    oid: Positive


class Replace(_Request, tag="R", kw_only=True):
    cid: Cid
    sym: Symbol
    oid: Positive
    px: Positive
    qty: Positive
    trigger: Positive | None = None  # a waiting stop's new trigger (required for one)
    # an order in the book: its new display qty (an iceberg's, or it becomes one); none: kept
    display: Positive | None = None


class MassCancel(_Request, tag="M", kw_only=True):
    cid: Cid
    sym: Symbol | None = None


class Status(_Request, tag="S", kw_only=True):
    cid: Cid
    sym: Symbol
    oid: Positive


class BookRequest(_Request, tag="K", kw_only=True):
    cid: Cid
    sym: Symbol
    depth: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEPTH)] = DEFAULT_DEPTH


class TradesRequest(_Request, tag="TQ", kw_only=True):
    """A retransmission: the symbol's Trades messages of seqs from_seq..to_seq again,
    from its shard's journal, to this connection (each with ``retx`` true), then a
    TradesEnd."""

    cid: Cid
    sym: Symbol
    from_seq: Positive
    to_seq: Positive


class Heartbeat(_Request, tag="H", kw_only=True):
    """A request, and its own reply (the gateway answers with its version).

    ``cod`` arms cancel on disconnect for the sending client until a Heartbeat
    without it; the reply echoes it. ``bundle``: this connection takes several
    messages in one frame (a msgpack array of them, ``decode_replies``) until a
    Heartbeat without it; the reply echoes it.
    """

    cid: Cid
    v: int
    cod: bool = False
    bundle: bool = False


class PositionsRequest(_Request, tag="PQ", kw_only=True):
    """Where the client stands: cash, and per instrument position, P&L and open orders."""

    cid: Cid
    sym: Symbol | None = None


class InstrumentsRequest(_Request, tag="IQ", kw_only=True):
    """The instruments and their trading parameters (the venue's reference data)."""

    cid: Cid
    sym: Symbol | None = None


class Kill(_Request, tag="KL", kw_only=True):
    """The panic button: cancel all of the client's orders and block it (kill switch)."""

    cid: Cid


Request = (
    NewOrder
    | NewOrders
    | Cancel
    | Replace
    | MassCancel
    | Status
    | BookRequest
    | Heartbeat
    | PositionsRequest
    | InstrumentsRequest
    | Kill
    | TradesRequest
)


# --- replies and market data: every field always present; unknown fields ignored


class _Out(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    pass


class Ack(_Out, tag="A", kw_only=True):
    cid: int
    sym: str
    oid: int
    seq: int
    coid: str = ""
    dup: bool = False


class Reject(_Out, tag="J", kw_only=True):
    cid: int
    code: str
    field: str
    reason: str
    coid: str = ""
    dup: bool = False


class Fill(_Out, tag="F", kw_only=True):
    sym: str
    oid: int
    seq: int
    idx: int
    side: Side
    px: int
    qty: int
    leaves: int
    liq: Literal["maker", "taker"]
    dup: bool = False


class Cancelled(_Out, tag="X", kw_only=True):
    cid: int
    sym: str
    oid: int
    seq: int
    qty: int
    reason: str
    leaves: int = 0  # > 0: an STP decrement shrank the order, which stays in the book
    dup: bool = False


class Triggered(_Out, tag="TG", kw_only=True):
    """A waiting stop of yours was reached: it enters the book now (its fills follow)."""

    sym: str
    oid: int
    seq: int
    trigger: int
    qty: int
    type: str  # "stop" or "stop_limit"
    dup: bool = False


class Replaced(_Out, tag="P", kw_only=True):
    cid: int
    sym: str
    oid: int
    seq: int
    px: int
    qty: int
    leaves: int


class OrderStatus(_Out, tag="O", kw_only=True):
    cid: int
    sym: str
    oid: int
    side: Side
    px: int
    qty: int
    leaves: int
    state: StateName
    seq: int


class BookSnapshot(_Out, tag="K", kw_only=True):
    cid: int
    sym: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class BatchAck(_Out, tag="BA", kw_only=True):
    cid: int
    results: list[Ack | Reject]


class MassCancelled(_Out, tag="MC", kw_only=True):
    cid: int
    sym: str | None
    n: int


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's line of a PositionReport (not a message of its own)."""

    sym: str
    pos: int
    cost: int
    realised: int
    unrealised: int
    mark: int
    volume: int
    open_buy: int
    open_sell: int
    orders: int


class PositionReport(_Out, tag="PR", kw_only=True):
    cid: int
    cash: int
    killed: bool
    orders: int
    positions: list[Position]


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's line of an Instruments reply (not a message of its own)."""

    sym: str
    tick: int  # a px is a multiple of it
    lot: int  # a qty is a multiple of it
    min_px: int  # the price band: a limit px outside [min_px, max_px] is refused
    max_px: int
    max_qty: int  # the book's largest order quantity
    ref_px: int  # the price collar's reference now: the last trade, before any ref_price
    state: str  # "open", or "unavailable" (its shard down, stalled or not synced)


class Trades(_Out, tag="T", kw_only=True):
    """One command's prints: market data, or (``retx``) a retransmission's reply."""

    sym: str
    seq: int
    prev: int
    side: Side
    prints: list[tuple[int, int]]
    retx: bool = False


class TradesEnd(_Out, tag="TE", kw_only=True):
    """The end of a retransmission: ``count`` Trades sent; ``last_seq``: the shard's
    last seq when it answered (nothing after it was retransmitted)."""

    cid: int
    sym: str
    from_seq: int
    to_seq: int
    count: int
    last_seq: int


class Instruments(_Out, tag="IR", kw_only=True):
    cid: int
    # a number that changes whenever a static parameter of an instrument (all but
    # ref_px and state) changes or one is added or removed: cache by it
    version: int
    instruments: list[Instrument]


Reply = (
    Ack
    | Reject
    | Fill
    | Cancelled
    | Replaced
    | Triggered
    | OrderStatus
    | BookSnapshot
    | BatchAck
    | MassCancelled
    | Heartbeat
    | PositionReport
    | Instruments
    | Trades
    | TradesEnd
)


class Depth(_Out, tag="D", kw_only=True):
    sym: str
    seq: int
    prev: int
    bids: list[Level]
    asks: list[Level]


class TopOfBook(_Out, tag="Q", kw_only=True):
    sym: str
    seq: int
    prev: int
    bid_px: int
    bid_qty: int
    ask_px: int
    ask_qty: int


MarketData = Trades | Depth | TopOfBook

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_replies_decoder = msgspec.msgpack.Decoder(Reply | list[Reply])
# a bundle frame is at most this big (unless one message alone is bigger)
MAX_BUNDLE_BYTES = 1 << 16
_market_decoder = msgspec.msgpack.Decoder(MarketData)


class _CidOnly(msgspec.Struct):
    cid: int = 0


_cid_decoder = msgspec.msgpack.Decoder(_CidOnly)


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode_reply(buf: bytes) -> Reply:
    return _reply_decoder.decode(buf)


def decode_replies(buf: bytes) -> list[Reply]:
    """The messages of a reply frame: one (a map), or a bundle (an array of them)."""
    out = _replies_decoder.decode(buf)
    return out if type(out) is list else [out]


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def bundle_frames(payloads: list[bytes], limit: int = MAX_BUNDLE_BYTES) -> list[tuple[bytes, int]]:
    """Encoded messages, in order, as (frame, messages in it): each frame a msgpack
    array of consecutive ones up to ``limit`` bytes; a lone message is its own frame."""
    out = []
    start, size = 0, 0
    for i, p in enumerate(payloads):
        if i > start and size + len(p) > limit:
            out.append(_bundle(payloads[start:i]))
            start, size = i, 0
        size += len(p)
    out.append(_bundle(payloads[start:]))
    return out


def _bundle(payloads: list[bytes]) -> tuple[bytes, int]:
    if len(payloads) == 1:
        return payloads[0], 1
    return _array_head(len(payloads)) + b"".join(payloads), len(payloads)


def decode_market_data(buf: bytes) -> MarketData:
    return _market_decoder.decode(buf)


def decode_request(buf: bytes) -> Request:
    """The request in ``buf``, or ProtocolError(invalid, reason, field): never anything else.

    The error carries the request's cid when one can be read from the frame, so
    that even a malformed request gets its one reply.
    """
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError(
            INVALID,
            f"frame of {len(buf)} bytes is larger than {MAX_FRAME_BYTES} bytes",
            "$",
            salvage_cid(buf),
        )
    try:
        msg = _request_decoder.decode(buf)
    except msgspec.ValidationError as e:
        raise _validation_error(str(e), salvage_cid(buf)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as e:
        raise ProtocolError(INVALID, f"not a msgpack message: {e}") from None
    if isinstance(msg, NewOrder):
        _check_order(msg, "$", msg.cid)
    elif isinstance(msg, NewOrders):
        for i, order in enumerate(msg.orders):
            _check_order(order, f"$.orders[{i}]", msg.cid)
    elif isinstance(msg, Replace) and msg.display is not None and msg.display > msg.qty:
        raise ProtocolError(
            INVALID, "display must be at most qty (the new total)", "$.display", msg.cid
        )
    elif isinstance(msg, Heartbeat) and msg.v != PROTOCOL_VERSION:
        raise ProtocolError(
            INVALID,
            f"protocol version {msg.v} is not supported; this gateway speaks {PROTOCOL_VERSION}",
            "$.v",
            msg.cid,
        )
    return msg


_AT = re.compile(r" - at `([^`]*)`(?: in `([^`]*)`)?$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def _validation_error(text: str, cid: int) -> ProtocolError:
    """msgspec's message as the reason, its path (made to name the field) as the field."""
    at = _AT.search(text)
    # "... - at `key` in `$`" is about a map key of the object at `$`
    path = "$" if at is None else (at.group(2) or at.group(1))
    named = _NAMED_FIELD.search(text)
    if named:
        path = f"{path}.{named.group(1)}"
    return ProtocolError(INVALID, text, path, cid)


def salvage_cid(buf: bytes) -> int:
    """The cid of a request that cannot be served, if the frame holds a readable one, else 0.

    First as a request's map (fast); failing that, as any msgpack map at all, so a map
    with a key that is not a string (``{1: 2, "cid": 7}``) still gives its cid."""
    try:
        cid = _cid_decoder.decode(buf).cid
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        try:
            m = msgspec.msgpack.decode(buf)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, TypeError):
            return 0  # TypeError: a map key msgpack allows and Python cannot hash
        cid = m.get("cid") if isinstance(m, dict) else None
    return cid if type(cid) is int and 0 < cid < 1 << 64 else 0  # not a bool


def _check_order(order: Order, at: str, cid: int) -> None:
    """The rules between fields that a schema cannot say."""
    kind = order.ord_type
    if (order.tif == "gtd") != (order.expire_at is not None):
        raise ProtocolError(
            INVALID,
            "a gtd order needs an expire_at (ns since the epoch), and only a gtd order takes "
            "one (a day order's is its instrument's session end)",
            f"{at}.expire_at",
            cid,
        )
    if order.display is not None:
        if kind != "limit" or order.tif not in RESTING_TIFS:
            raise ProtocolError(
                INVALID,
                f"only a limit gtc, gtd or day order can be an iceberg (display), not a "
                f"{order.tif} {kind} order",
                f"{at}.display",
                cid,
            )
        if order.display > order.qty:
            raise ProtocolError(INVALID, "display must be at most qty", f"{at}.display", cid)
    if kind == "stop" or kind == "stop_limit":
        if order.trigger is None:
            raise ProtocolError(INVALID, f"a {kind} order needs a trigger", f"{at}.trigger", cid)
        if order.post_only:
            raise ProtocolError(
                INVALID, f"a {kind} order cannot be post-only", f"{at}.post_only", cid
            )
    elif order.trigger is not None:
        raise ProtocolError(
            INVALID, f"a {kind} order takes no trigger (stop, stop_limit do)", f"{at}.trigger", cid
        )
    if kind == "market" or kind == "stop":
        if order.px is not None:
            raise ProtocolError(INVALID, f"a {kind} order takes no px", f"{at}.px", cid)
        if order.post_only:
            raise ProtocolError(
                INVALID, "a market order cannot be post-only", f"{at}.post_only", cid
            )
        if order.tif in RESTING_TIFS:
            raise ProtocolError(
                INVALID,
                f"a {kind} order never rests (a market order once triggered): tif must be "
                "ioc or fok",
                f"{at}.tif",
                cid,
            )
    elif order.px is None:
        raise ProtocolError(INVALID, f"a {kind} order needs a px", f"{at}.px", cid)


# --- requests -> COMMAND records


# COMMAND_DTYPE, field by field: packing a record is several times cheaper than
# numpy's conversion of a tuple, and the gateway makes one per order
_RECORD = struct.Struct("<qqqqQQIHBBBBBBIqq")
assert COMMAND_DTYPE.names == (
    *("seq", "order_id", "price", "qty", "req_id", "idem_key", "client", "instrument"),
    *("kind", "side", "tif", "ord_type", "flags", "stp", "trigger_tick", "display", "expires"),
)
assert _RECORD.size == COMMAND_DTYPE.itemsize
assert np.frombuffer(_RECORD.pack(*range(1, 18)), COMMAND_DTYPE)[0].tolist() == tuple(range(1, 18))
# a trigger travels in ticks in 32 bits (records.COMMAND_DTYPE)
MAX_TRIGGER_TICK = (1 << 32) - 1


def _command(
    *,
    order_id=0,
    price=0,
    qty=0,
    req_id=0,
    idem_key=0,
    client=0,
    instrument=0,
    kind=0,
    side=0,
    tif=0,
    ord_type=0,
    flags=0,
    stp=0,
    trigger_tick=0,
    display=0,
    expires=0,
) -> bytes:
    """A COMMAND record's 80 bytes (``np.frombuffer(b, COMMAND_DTYPE)`` reads it); seq 0."""
    return _RECORD.pack(
        0,
        order_id,
        price,
        qty,
        req_id,
        idem_key,
        client,
        instrument,
        kind,
        side,
        tif,
        ord_type,
        flags,
        stp,
        trigger_tick,
        display,
        expires,
    )


def trigger_off_grid(trigger: int, book: BookConfig) -> bool:
    """Whether a trigger price is outside the band, off the tick, or too far to travel."""
    return (
        not book.min_price <= trigger <= book.max_price
        or trigger % book.tick_size != 0
        or trigger // book.tick_size > MAX_TRIGGER_TICK
    )


def _trigger_tick(trigger: int | None, book: BookConfig) -> int:
    """The trigger price in ticks, as a command carries it (0: none), grid-checked."""
    if trigger is None:
        return 0
    if trigger_off_grid(trigger, book):
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_TRIGGER]}: trigger {trigger} must be a multiple of the tick "
            f"size {book.tick_size} in the price band [{book.min_price}, {book.max_price}] "
            f"(at most {MAX_TRIGGER_TICK} ticks)",
            "$.trigger",
        )
    return trigger // book.tick_size


def _check_qty(qty: int, book: BookConfig) -> None:
    if qty > book.max_qty:
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_QTY_MAX]}: qty {qty} is above the instrument's max_qty "
            f"{book.max_qty}",
            "$.qty",
        )
    if qty % book.lot_size:
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_LOT]}: qty {qty} is not a multiple of the lot size {book.lot_size}",
            "$.qty",
        )


def _display(display: int | None, book: BookConfig) -> int:
    """The display qty as a command carries it (0: none), checked against the lot."""
    if display is None:
        return 0
    if display % book.lot_size:
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_DISPLAY]}: display {display} is not a multiple of the lot size "
            f"{book.lot_size}",
            "$.display",
        )
    return display


def _check_px(px: int, book: BookConfig) -> None:
    if not book.min_price <= px <= book.max_price:
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_PRICE_BAND]}: px {px} is outside the price band "
            f"[{book.min_price}, {book.max_price}]",
            "$.px",
        )
    if px % book.tick_size:
        raise ProtocolError(
            INVALID,
            f"{REJECT_NAMES[REJ_TICK]}: px {px} is not a multiple of the tick size "
            f"{book.tick_size}",
            "$.px",
        )


def new_order_command(
    order: Order,
    book: BookConfig,
    *,
    client: int,
    instrument: int,
    req_id: int,
    day_end: int | None = None,
) -> bytes:
    """The NEW command for a decoded order, after the instrument's grid checks.

    Raises ProtocolError(invalid) naming ``$.qty``, ``$.px``, ``$.trigger`` or
    ``$.display`` (relative to the order) when the order is off the lot/tick grid,
    above max_qty or outside the band, and ``$.tif`` for a day order on an instrument
    without a session end. ``day_end``: a day order's expiry (the instrument's next
    session end, ``exchange.config.next_session_end``), None when it has none. The
    shard fills in seq and order_id.
    """
    expires = order.expire_at or 0
    if order.tif == "day":
        if day_end is None:
            raise ProtocolError(
                INVALID,
                "day: the instrument has no session end (session_end in its config); "
                "use gtd with an expire_at",
                "$.tif",
            )
        expires = day_end
    qty, px = order.qty, order.px
    # the checks inline, their messages only on failure: this is the gateway's hot path
    if qty > book.max_qty or qty % book.lot_size:
        _check_qty(qty, book)
    if px is None:
        px = 0
    elif not book.min_price <= px <= book.max_price or px % book.tick_size:
        _check_px(px, book)
    return _RECORD.pack(
        *(0, 0, px, qty, req_id, order.ik, client, instrument, CMD_NEW, SIDES[order.side]),
        *(TIFS[order.tif], ORDER_TYPES[order.ord_type], FLAG_POST_ONLY * order.post_only),
        STP_MODES[order.stp],
        _trigger_tick(order.trigger, book),
        _display(order.display, book),
        expires,
    )


def replace_command(
    msg: Replace, book: BookConfig, *, client: int, instrument: int, req_id: int
) -> bytes:
    """The REPLACE command (qty is the new total, as the book expects), grid-checked."""
    _check_qty(msg.qty, book)
    _check_px(msg.px, book)
    return _command(
        order_id=msg.oid,
        price=msg.px,
        qty=msg.qty,
        req_id=req_id,
        client=client,
        instrument=instrument,
        kind=CMD_REPLACE,
        trigger_tick=_trigger_tick(msg.trigger, book),
        display=_display(msg.display, book),
    )


def cancel_command(msg: Cancel, *, client: int, instrument: int, req_id: int) -> bytes:
    return _command(
        order_id=msg.oid, req_id=req_id, client=client, instrument=instrument, kind=CMD_CANCEL
    )


def status_command(msg: Status, *, client: int, instrument: int, req_id: int) -> bytes:
    """A STATUS control command: the shard answers it from its journal (EV_STATUS)."""
    return _command(
        order_id=msg.oid, req_id=req_id, client=client, instrument=instrument, kind=CMD_STATUS
    )


def mass_cancel_command(*, client: int, instrument: int, req_id: int) -> bytes:
    """One instrument's MASS_CANCEL; a MassCancel without sym needs one per instrument."""
    return _command(req_id=req_id, client=client, instrument=instrument, kind=CMD_MASS_CANCEL)


# --- EVENT records -> private replies

Event = namedtuple("Event", EVENT_FIELDS)


_EVENT_WIDTH = len(EVENT_FIELDS)  # the record's fields; its padding comes after them


def event_of(row: tuple) -> Event:
    """An EVENT record as a named tuple of Python ints, the form the conversions below
    take, from its row in ``records.tolist()`` (one ``tolist`` makes every record a
    tuple of Python ints: a NumPy call per field, or a NumPy scalar per value, costs
    10-20 times more)."""
    return Event._make(row[:_EVENT_WIDTH])


def book_reject(code: int, cid: int, coid: str = "", dup: bool = False) -> Reject:
    """The Reject for a book-level reject code (EV_REJECTED.code)."""
    error, field, text = BOOK_REJECTS[code]
    reason = f"{REJECT_NAMES[code]}: {text}"
    return Reject(cid=cid, code=error, field=field, reason=reason, coid=coid, dup=dup)


def private_messages(
    e: Event, sym: str, kind: int, cid: int, coid: str = ""
) -> list[tuple[int, Reply]]:
    """(client id, message) for each private message one event causes.

    ``kind`` (CMD_*), ``cid`` and ``coid`` describe the request behind the event
    (the gateway finds it by the event's req_id). They decide which message is
    that request's one reply, carrying ``cid``: ACCEPTED and REJECTED answer a
    NEW, CANCELLED(user) a CANCEL, REPLACED or CANCELLED(replaced_to_zero) a
    REPLACE. Everything else is a notice with cid 0: fills, IOC/FOK/STP cancels,
    the cancels of a mass cancel. MASS_CANCELLED answers a MASS_CANCEL (one
    instrument's part of it: the gateway sums the parts of a fan-out). A TRADE
    gives two fills, the taker's and the maker's. A duplicate (EVF_DUPLICATE)
    goes to the retry's owner only, flagged.
    """
    dup = bool(e.flags & EVF_DUPLICATE)
    if e.kind == EV_ACCEPTED:
        return [(e.client, accepted_ack(cid, sym, e.order_id, e.seq, coid, e.flags))]
    if e.kind == EV_REJECTED:
        return [(e.client, book_reject(e.code, cid, coid, dup))]
    if e.kind == EV_TRADE:
        taker = Fill(
            sym=sym,
            oid=e.order_id,
            seq=e.seq,
            idx=e.idx,
            side=SIDE_NAMES[e.side],
            px=e.price,
            qty=e.qty,
            leaves=e.leaves,
            liq="taker",
            dup=dup,
        )
        if dup:
            return [(e.client, taker)]
        maker = Fill(
            sym=sym,
            oid=e.other_id,
            seq=e.seq,
            idx=e.idx,
            side=SIDE_NAMES[SIDE_BUY + SIDE_SELL - e.side],
            px=e.price,
            qty=e.qty,
            leaves=e.other_leaves,
            liq="maker",
        )
        return [(e.client, taker), (e.other_client, maker)]
    if e.kind == EV_CANCELLED:
        answers = (e.code == CXL_USER and kind == CMD_CANCEL) or e.code == CXL_REPLACE
        msg = Cancelled(
            cid=cid if answers else 0,
            sym=sym,
            oid=e.order_id,
            seq=e.seq,
            qty=e.qty,
            reason=CANCEL_NAMES[e.code],
            leaves=e.leaves,
            dup=dup,
        )
        return [(e.client, msg)]
    if e.kind == EV_TRIGGERED:
        msg = Triggered(
            sym=sym,
            oid=e.order_id,
            seq=e.seq,
            trigger=e.price,
            qty=e.qty,
            type=ORDER_TYPE_NAMES[e.code],
            dup=dup,
        )
        return [(e.client, msg)]
    if e.kind == EV_REPLACED:
        msg = Replaced(
            cid=cid, sym=sym, oid=e.order_id, seq=e.seq, px=e.price, qty=e.qty, leaves=e.leaves
        )
        return [(e.client, msg)]
    if e.kind == EV_MASS_CANCELLED:
        return [(e.client, MassCancelled(cid=cid, sym=sym, n=e.qty))]
    return []


def accepted_ack(cid: int, sym: str, order_id: int, seq: int, coid: str, flags: int) -> Ack:
    """The Ack an ACCEPTED event makes (its order id, seq and flags)."""
    return Ack(cid=cid, sym=sym, oid=order_id, seq=seq, coid=coid, dup=bool(flags & EVF_DUPLICATE))


def answers_request(e: Event, kind: int) -> bool:
    """Whether ``e`` is the one reply to its command, of kind ``kind`` (CMD_*).

    A command's first event (idx 0) answers it: ACCEPTED or REJECTED for a NEW,
    CANCELLED or REJECTED for a CANCEL, REPLACED, CANCELLED or REJECTED for a
    REPLACE; a shard's own rejects (seq 0) and duplicate re-sends keep that
    index. A MASS_CANCEL's cancels come first and its MASS_CANCELLED last. A
    CMD_EXPIRE (the shard's own, req_id 0) answers no request.
    """
    if kind == CMD_MASS_CANCEL:
        return e.kind == EV_MASS_CANCELLED
    if kind == CMD_EXPIRE:
        return False  # the shard's own command: no request behind it
    return e.idx == 0


def order_status(e: Event, sym: str, cid: int, client: int) -> OrderStatus | Reject:
    """The reply to a Status request from its shard's answer (EV_STATUS: the journal's
    state of the order; code 0 when the shard never saw it).

    Someone else's order is "not found", exactly like a missing one, so that a
    client cannot probe other clients' order ids.
    """
    if e.code == 0 or e.client != client:
        return book_reject(REJ_NOT_FOUND, cid)
    return OrderStatus(
        cid=cid,
        sym=sym,
        oid=e.order_id,
        side=SIDE_NAMES[e.side],
        px=e.price,
        qty=e.qty,
        leaves=e.leaves,
        state=STATUS_NAMES[e.code],
        seq=e.other_id,
    )
