"""``exch order`` and ``exch cancel``: one request from the shell, its answer, then the
notices (fills, cancels, triggered stops) that arrive within a short wait.

For people at a terminal; bots use ``gateway.client`` directly. The request is
checked by the gateway like any other: a bad one comes back as a ``Reject``
naming the field and the rule, and nothing happens.
"""

import msgspec

from gateway.client import Client
from gateway.protocol import (
    Ack,
    BatchAck,
    Cancelled,
    Fill,
    MassCancelled,
    Reject,
    Replaced,
    Triggered,
)


def describe(msg) -> str:
    """One line for a person."""
    dup = " (a retry: the original answer)" if getattr(msg, "dup", False) else ""
    if isinstance(msg, Ack):
        coid = f" coid {msg.coid}" if msg.coid else ""
        return f"accepted: {msg.sym} order {msg.oid} at seq {msg.seq}{coid}{dup}"
    if isinstance(msg, Reject):
        return f"rejected ({msg.code}) {msg.field}: {msg.reason}{dup}"
    if isinstance(msg, Fill):
        return (
            f"fill: {msg.sym} order {msg.oid} {msg.side} {msg.qty} @ {msg.px}, "
            f"leaves {msg.leaves} ({msg.liq}, seq {msg.seq}){dup}"
        )
    if isinstance(msg, Cancelled):
        return f"cancelled: {msg.sym} order {msg.oid}, {msg.qty} off the book ({msg.reason}){dup}"
    if isinstance(msg, Replaced):
        return f"replaced: {msg.sym} order {msg.oid} now {msg.qty} @ {msg.px}, leaves {msg.leaves}"
    if isinstance(msg, Triggered):
        return (
            f"triggered: {msg.sym} {msg.type} order {msg.oid} ({msg.qty}) at trigger "
            f"{msg.trigger}, seq {msg.seq}{dup}"
        )
    if isinstance(msg, MassCancelled):
        return f"mass cancel: {msg.n} order(s) cancelled on {msg.sym or 'every symbol'}"
    if isinstance(msg, BatchAck):
        return "\n".join(describe(r) for r in msg.results)
    return repr(msg)


def to_doc(msg) -> dict:
    return msgspec.to_builtins(msg)


def exchange_one(client: Client, send, wait: float) -> tuple[object, list]:
    """``send()``'s reply and the notices within ``wait`` seconds after it."""
    reply = send()
    return reply, client.notices(timeout=wait)


def place(client: Client, sym: str, side: str, qty: int, px: int | None, wait: float, **fields):
    return exchange_one(client, lambda: client.new_order(sym, side, qty, px, **fields), wait)


def cancel(client: Client, sym: str | None, oid: int | None, wait: float):
    if oid is None:
        return exchange_one(client, lambda: client.mass_cancel(sym), wait)
    return exchange_one(client, lambda: client.cancel(sym, oid), wait)
