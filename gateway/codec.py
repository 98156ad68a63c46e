"""The wire codec: one frame is one msgpack map (``gateway.protocol``'s Structs); requests
are decoded strictly (a ProtocolError names the field), replies leniently; bundles put
several replies in one frame."""

import re

import msgspec

from gateway.protocol import (
    INVALID,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    RESTING_TIFS,
    Heartbeat,
    MarketData,
    NewOrder,
    NewOrders,
    Order,
    ProtocolError,
    Replace,
    Reply,
    Request,
)

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
