"""A decoded request + its instrument's ``BookConfig`` -> a COMMAND record's fields: the
gateway's edge into the shards (``new_order_command`` ...).

The grid checks here (max qty, lot, price band, tick, display, trigger) are also the
book's (``exchange.kernel``, REJ_*), on purpose: the book's are its invariant, holding
for every command whoever wrote it (a replayed journal, any ring writer); the gateway's
refuse a bad order before it costs a sequence number and a journal write, and name the
field (``$.orders[3].px``), which a book's reject code cannot. Both read the same
``BookConfig``; tests/test_protocol.py holds them to the same answers."""

from exchange.bookconfig import BookConfig
from exchange.records import (
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_STATUS,
    COMMAND_STRUCT,
    FLAG_POST_ONLY,
    REJ_DISPLAY,
    REJ_LOT,
    REJ_PRICE_BAND,
    REJ_QTY_MAX,
    REJ_TICK,
    REJ_TRIGGER,
    REJECT_NAMES,
)
from gateway.protocol import (
    INVALID,
    ORDER_TYPES,
    SIDES,
    STP_MODES,
    TIFS,
    Cancel,
    Order,
    ProtocolError,
    Replace,
    Status,
)

# --- requests -> COMMAND records


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
    return COMMAND_STRUCT.pack(
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
    return COMMAND_STRUCT.pack(
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
