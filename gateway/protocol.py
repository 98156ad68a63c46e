"""The wire protocol between bots and the gateway; docs/PROTOCOL.md is its reference.

One ZeroMQ frame is one msgpack map, a msgspec Struct tagged by its ``t`` field.
Three tagged unions: ``Request`` (bot -> gateway, ROUTER), ``Reply`` (gateway ->
one bot, ROUTER) and ``MarketData`` (gateway -> everyone, PUB, topic = symbol).

Requests are strict (unknown fields, wrong types and out-of-range values are
refused) because a typo in an order must never trade. Replies and market data
are lenient to decode, so a newer gateway may add fields without breaking bots.

This module is the schema alone, with the error-code table ``ERROR_CODES``. Its
neighbours each hold one conversion: ``gateway.codec`` (frames <-> these Structs,
bundles), ``gateway.commands`` (a request -> a COMMAND record), and
``gateway.private_replies`` (EVENT records -> private replies); the public market
data is made in ``gateway.mirror``.
"""

from typing import Annotated, Literal

import msgspec

from exchange.records import (
    REJ_BAD_COMMAND,
    REJ_BOOK_FULL,
    REJ_CONFLICT,
    REJ_DISPLAY,
    REJ_DUPLICATE_ID,
    REJ_EXPIRY,
    REJ_EXPIRY_PASSED,
    REJ_HALTED,
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
    STATE_CONTINUOUS,
    STATE_HALTED,
    STATE_NAMES,
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
HALTED = "halted"
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
    HALTED: "the instrument is halted: it takes only orders that rest, and stops, until it reopens",
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
    REJ_HALTED: (
        HALTED,
        "$.tif",
        "the instrument is halted: a market, ioc or fok order cannot trade now; limit "
        "gtc/gtd/day orders and stops are taken and wait for the reopening auction",
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
# a book's trading state (STATE_* of exchange.records) by its name on the wire
TRADING_STATES = {STATE_NAMES[s]: s for s in (STATE_CONTINUOUS, STATE_HALTED)}

Side = Literal["buy", "sell"]
Tif = Literal["gtc", "ioc", "fok", "gtd", "day"]
OrderType = Literal["limit", "market", "stop", "stop_limit"]
Stp = Literal["none", "cancel_newest", "cancel_oldest", "cancel_both", "decrement"]
StateName = Literal["live", "filled", "cancelled", "rejected"]
# a Fill's liquidity: resting (maker), incoming (taker), or a reopening auction's trade,
# where both orders were resting and neither took the other's liquidity (auction)
Liquidity = Literal["maker", "taker", "auction"]

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
    liq: Liquidity
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
    # the book's trading state as of ``seq``: "continuous" or "halted" (a halted book may
    # be crossed); a gateway older than halts sends none
    state: str = STATE_NAMES[STATE_CONTINUOUS]


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
    state: str  # "open", "halted" (4.1d), or "unavailable" (its shard down, stalled or not synced)


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


class TradingState(_Out, tag="TS", kw_only=True):
    """The instrument's trading state changed (or was asked to and stayed): ``state``
    "halted" or "continuous"; a reopening's call auction traded ``qty`` at ``px`` (both
    0: it traded nothing, or this is a halt). The auction's prints are the first of the
    Trades message of the same ``seq``, published just before."""

    sym: str
    seq: int
    prev: int
    state: str
    px: int
    qty: int


MarketData = Trades | Depth | TopOfBook | TradingState
