"""EVENT records -> the private replies of their owners (``event_of``,
``private_messages``); the public market data is made in ``gateway.mirror``."""

from collections import namedtuple

from exchange.orderstate import STATUS_NAMES
from exchange.records import (
    CANCEL_NAMES,
    CMD_CANCEL,
    CMD_MASS_CANCEL,
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
    REJ_NOT_FOUND,
    REJECT_NAMES,
    SHARD_COMMANDS,
    SIDE_BUY,
    SIDE_SELL,
    TRADE_AUCTION,
)
from gateway.protocol import (
    BOOK_REJECTS,
    ORDER_TYPE_NAMES,
    SIDE_NAMES,
    Ack,
    Cancelled,
    Fill,
    MassCancelled,
    OrderStatus,
    Reject,
    Replaced,
    Reply,
    Triggered,
)

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
    gives two fills, the taker's and the maker's; a reopening auction's
    (code TRADE_AUCTION), the buyer's (order_id) and the seller's
    (other_id), both ``liq`` "auction": both were resting, neither took the
    other's liquidity. A duplicate (EVF_DUPLICATE) goes to the retry's owner
    only, flagged.
    """
    dup = bool(e.flags & EVF_DUPLICATE)
    if e.kind == EV_ACCEPTED:
        return [(e.client, accepted_ack(cid, sym, e.order_id, e.seq, coid, e.flags))]
    if e.kind == EV_REJECTED:
        return [(e.client, book_reject(e.code, cid, coid, dup))]
    if e.kind == EV_TRADE:
        auction = e.code == TRADE_AUCTION
        taker = Fill(
            sym=sym,
            oid=e.order_id,
            seq=e.seq,
            idx=e.idx,
            side=SIDE_NAMES[e.side],
            px=e.price,
            qty=e.qty,
            leaves=e.leaves,
            liq="auction" if auction else "taker",
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
            liq="auction" if auction else "maker",
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
    CMD_EXPIRE, CMD_HALT or CMD_RESUME (the shard's own, req_id 0) answers no request.
    """
    if kind == CMD_MASS_CANCEL:
        return e.kind == EV_MASS_CANCELLED
    if kind in SHARD_COMMANDS:
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
