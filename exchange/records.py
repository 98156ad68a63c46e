"""The record layouts every part of the exchange shares, and their codes.

A *command* is what the gateway asks a shard to do; an *event* is what a book
answers. Both are fixed-size numpy structured records so that they can travel
through shared-memory rings, be journaled to LMDB and be processed by the Numba
kernel without conversion. Field by field:

COMMAND_DTYPE (80 bytes, no padding)
    seq         int64   shard sequence number, assigned by the shard before the
                        kernel runs; strictly increasing within a shard
    order_id    int64   NEW: the exchange order id assigned by the shard;
                        CANCEL / REPLACE: the order to act on; MASS_CANCEL: 0
    price       int64   limit price in integer price units (a multiple of the
                        book's tick size); ignored for market orders
    qty         int64   NEW: order quantity; REPLACE: the new *total* quantity
                        (filled + open, as FIX OrderQty); a multiple of lot size
    req_id      uint64  the gateway's correlation id, copied into every event
                        the command causes (how replies find their request)
    idem_key    uint64  the client's idempotency key (0 = none); the kernel
                        ignores it, the journal indexes it
    client      uint32  the owner: the authenticated client id (never from a body)
    instrument  uint16  the instrument index inside the shard
    kind        uint8   CMD_NEW / CMD_CANCEL / CMD_REPLACE / CMD_MASS_CANCEL /
                        CMD_EXPIRE (EXPIRY below), CMD_HALT / CMD_RESUME (HALTS
                        below): these three made by the shard itself, never by
                        the gateway; control commands CMD_SYNC / CMD_STATUS
                        (see the end of this text)
    side        uint8   SIDE_BUY / SIDE_SELL (NEW only)
    tif         uint8   TIF_GTC / TIF_IOC / TIF_FOK / TIF_GTD / TIF_DAY (NEW only)
    ord_type    uint8   TYPE_LIMIT / TYPE_MARKET / TYPE_STOP / TYPE_STOP_LIMIT (NEW only)
    flags       uint8   FLAG_POST_ONLY (NEW only); FLAG_RETRY (a keyed NEW only: see
                        ``exchange.idempotency``; never reaches a book)
    stp         uint8   STP_* self-trade prevention mode of this order (NEW only)
    trigger_tick uint32 NEW of a stop or stop-limit, REPLACE of an untriggered
                        one: the trigger price in ticks (trigger price =
                        trigger_tick * the book's tick size); 0 otherwise
    display     int64   NEW of a limit GTC order: its display quantity, > 0 for
                        an iceberg (ICEBERGS below), 0 for an ordinary order;
                        REPLACE: the new display quantity, 0 = keep the order's
    expires     int64   NEW of a TIF_GTD / TIF_DAY order: its expiry, integer
                        nanoseconds since the Unix epoch (UTC), > 0; 0 for every
                        other NEW and for a REPLACE (it keeps the order's expiry);
                        CMD_EXPIRE: the time it brings, same unit (EXPIRY below)

EVENT_DTYPE (128 bytes)
    seq          int64  the seq of the command that caused the event
    req_id       uint64 the req_id of that command
    order_id     int64  the order concerned (TRADE: the taker / aggressor)
    other_id     int64  TRADE: the maker (resting) order (an auction's: the sell
                        order, HALTS); EXPIRED: the book's now after the command
                        (EXPIRY); otherwise 0
    price        int64  ACCEPTED/REPLACED: order price; TRADE: the maker's price
                        (an auction's: the auction price); DEPTH: the level's
                        price; CANCELLED: the order's price; TRIGGERED: the
                        trigger price; EXPIRED: 0; STATE: the auction price (0:
                        no auction trade)
    qty          int64  ACCEPTED/REPLACED: total order qty; TRADE: traded qty;
                        CANCELLED: qty removed from the book by this cancel;
                        DEPTH: total open qty at the level after the command;
                        MASS_CANCELLED / EXPIRED: the number of orders cancelled;
                        STATE: the quantity the auction traded
    leaves       int64  open qty of order_id after the event (CANCELLED: 0,
                        except an STP decrement's partial cancel); DEPTH: the
                        number of orders at the level
    other_leaves int64  TRADE: the maker's open qty after the trade (an
                        iceberg's: displayed part and reserve together);
                        EV_RESTING: the order's displayed part
    idem_key     uint64 the command's idempotency key (echoed for acks)
    client       uint32 owner of order_id (DEPTH: 0)
    other_client uint32 TRADE: owner of other_id (so the maker's fill reaches it)
    idx          uint32 the event's index among the events of its command;
                        (seq, idx) is strictly increasing in a shard's output
    instrument   uint16 instrument index inside the shard
    kind         uint8  EV_*
    side         uint8  side of order_id (DEPTH: side of the level)
    code         uint8  REJECTED: REJ_*; CANCELLED: CXL_* (CXL_EXPIRED: EXPIRY);
                        STATE: the book's trading state, STATE_* (HALTS);
                        TRADE: TRADE_AUCTION for a reopening auction's trade
                        (HALTS), 0 for continuous matching's; otherwise 0
                        (TRIGGERED: the order's ord_type, TYPE_STOP or
                        TYPE_STOP_LIMIT)
    flags        uint8  EVF_DUPLICATE: a private re-send of an earlier reply to an
                        identical retry under the same idempotency key (the seq
                        is the original one; nothing changed in the book);
                        EVF_REPLAY: history served to a CMD_SYNC, or its answer
    _pad         uint8[38] zero

Semantics of one command (the reference book and the kernel must both do
exactly this, event for event):

NEW
 1. Validation, first failure wins: kind/side/tif/ord_type/stp out of range,
    post-only on an order that is not TYPE_LIMIT, or a trigger_tick on an
    order that is not a stop -> REJ_BAD_COMMAND; qty <= 0 -> REJ_QTY;
    qty > max_qty -> REJ_QTY_MAX; qty % lot_size != 0 -> REJ_LOT; then, for
    limit and stop-limit orders only, price outside [min_price, max_price] ->
    REJ_PRICE_BAND; price % tick_size != 0 -> REJ_TICK; a display != 0 that
    is < 0, > qty or not a multiple of lot_size, or on an order that is not a
    limit order that rests (TIF_GTC, TIF_GTD or TIF_DAY) -> REJ_DISPLAY
    (ICEBERGS); for stops and
    stop-limits, a trigger price (trigger_tick * tick_size) outside
    [min_price, max_price] (trigger_tick 0 included) -> REJ_TRIGGER; an
    expiry that does not fit the tif (EXPIRY: expires != 0 on a tif other
    than GTD/DAY, expires <= 0 on a GTD/DAY, or a GTD/DAY market order) ->
    REJ_EXPIRY; an order
    id that is live already (an untriggered stop included) ->
    REJ_DUPLICATE_ID; post-only that would cross the best opposite price ->
    REJ_POST_ONLY; a stop whose trigger the last trade price has already
    reached (see STOPS) -> REJ_TRIGGER_REACHED; a GTD/DAY order whose expiry
    is <= the book's now (EXPIRY) -> REJ_EXPIRY_PASSED; while the book is
    halted, an order that could only trade now (a market order, IOC or FOK;
    not a stop of any kind, which waits) -> REJ_HALTED (HALTS); a limit order that
    rests (GTC, GTD, DAY) or a stop of
    any kind (the orders that take a slot) when the order pool has no free
    slot -> REJ_BOOK_FULL (checked before matching).
    A reject emits exactly one REJECTED event and changes nothing.
 2. ACCEPTED (price, qty = leaves = order qty). A stop or stop-limit stops
    here: it waits off the book (STOPS below); the steps after are what it
    does when it triggers.
 3. FOK only: if the quantity that could be filled now is less than qty ->
    CANCELLED(CXL_FOK, qty = order qty), nothing else happens. The fillable
    quantity is the sum of the open quantity of crossing resting orders in
    priority order, stopping at the first order of the same client unless the
    order's STP mode is STP_NONE (with icebergs resting, see ICEBERGS: a
    reserve counts at the levels taken whole).
 4. Matching, in price-time priority, while open qty > 0 and the best opposite
    level crosses (buy: level price <= limit; sell: >= limit; market: always).
    Against each resting order at the head of the best level (an iceberg:
    its displayed part, see ICEBERGS):
    - a different client, or STP_NONE: TRADE at the resting price, qty =
      min(both open quantities); a maker filled to 0 leaves the book.
    - same client, by the *aggressor's* STP mode:
      STP_CANCEL_NEWEST: CANCELLED(CXL_STP) of the aggressor's open qty; stop.
      STP_CANCEL_OLDEST: CANCELLED(CXL_STP) of the resting order; go on.
      STP_CANCEL_BOTH: CANCELLED(CXL_STP) of the resting order, then of the
        aggressor; stop.
      STP_DECREMENT: both decrease by d = min(both open quantities), no trade:
        CANCELLED(CXL_STP, qty = d, leaves = its open qty left) for the resting
        order, then the same for the aggressor. A CANCELLED with leaves > 0 is
        a partial cancel: the order lives on, its total qty reduced by d (so
        the decrement is never a fill). A resting order left above 0 keeps its
        place; an order at 0 is gone; an aggressor above 0 goes on matching.
 5. Remainder: a limit GTC, GTD or DAY order rests at the back of its level
    (no event: ACCEPTED said it; GTD/DAY with its expiry); IOC, FOK (cannot
    happen: pre-checked) and market orders -> CANCELLED(CXL_IOC, qty = open
    qty).
 6. Stops triggered by the command's trades run (STOPS below).
 7. DEPTH events, one per price level whose total changed during the command
    (the triggered stops' steps included), in the order the levels were first
    touched, carrying the final totals.

STOPS (TYPE_STOP: a market order once triggered; TYPE_STOP_LIMIT: a limit
    order at its price once triggered; both with their own tif and STP mode)
    The last trade price of a book is the price of its latest TRADE (none
    before the first). A buy stop is reached when the last trade price >= its
    trigger price, a sell stop when the last trade price <= it. An accepted
    stop waits off the book, invisible to matching, DEPTH, top and depth,
    holding a slot of the order pool; it is never reached while it waits
    (a stop reached on arrival is REJ_TRIGGER_REACHED, and every trade is
    followed by the triggering below).
    Triggering: once the command's own order is done (step 5, or a CANCEL,
    REPLACE or MASS_CANCEL finished), and again after each triggered stop,
    while some waiting stop is reached, the first one in trigger order is
    taken off: buy stops before sell stops; buy stops lowest trigger first,
    sell stops highest trigger first (the order a moving price reaches them
    in); at the same trigger, in arrival order (the seq of the NEW, or of the
    REPLACE that last moved it, see below). It emits TRIGGERED (order_id,
    client, side, price = the trigger price, qty = leaves = its qty, code =
    its ord_type), then runs steps 3 to 5 as a NEW of its market or limit
    type, tif and STP mode, at that moment: a stop-limit that rests joins the
    back of its level then (its time priority is the trigger's). Its events
    carry the seq, req_id and idem_key of the command whose trades triggered
    it. Each trade moves the last trade price, so a triggered stop's own
    trades may trigger more stops (a cascade), which run after it, in the
    same command.
    CANCEL and MASS_CANCEL take a waiting stop like a resting order:
    CANCELLED(CXL_USER, price = its limit price as given, qty = its qty);
    MASS_CANCEL cancels the client's waiting stops after its resting orders,
    in trigger order (buy stops, then sell stops). No DEPTH: no level changed.
    REPLACE of a waiting stop: price (stop-limit only), qty and trigger_tick
    are its new limit price, qty and trigger, validated in the order
    REJ_NOT_FOUND, REJ_QTY, REJ_QTY_MAX, REJ_LOT, (stop-limit:)
    REJ_PRICE_BAND, REJ_TICK, then REJ_DISPLAY (any display != 0: a stop is
    never an iceberg), REJ_TRIGGER, REJ_TRIGGER_REACHED; a
    reject leaves it untouched. Otherwise REPLACED(price, qty, leaves = qty):
    a stop never traded. It keeps its arrival rank if its trigger and price
    are unchanged and its qty did not grow; otherwise it goes behind the stops
    waiting at its (new) trigger. A replace of a stop never matches.
    A REPLACE of an order that is not a waiting stop (a triggered stop-limit
    resting in the book included) with trigger_tick != 0 -> REJ_TRIGGER.

ICEBERGS (a limit GTC order with display > 0: a displayed part and a reserve)
    An iceberg's open quantity (leaves) is its displayed part plus its
    reserve. Only displayed parts are seen: a level's total, in DEPTH, top()
    and depth(), is the sum of its orders' displayed parts (an ordinary order
    shows all its open quantity), its count the number of its orders (an
    iceberg counts once). The reserve is never seen but by its owner.
    Validation (NEW step 1, after REJ_TICK): display 0 is an ordinary order;
    display < 0, display > qty, display % lot_size != 0, or display > 0 on
    an order that is not TYPE_LIMIT with TIF_GTC (market, IOC, FOK, stop,
    stop-limit) -> REJ_DISPLAY. display == qty is an iceberg that shows all
    of itself (it refills only once a replace has grown it).
    Arriving: an iceberg is an ordinary aggressor, its whole qty matches
    (step 4). What rests shows min(display, leaves); the rest is its reserve.
    Matching (step 4) meets a resting iceberg's displayed part only: the
    TRADE's qty = min(aggressor's open qty, the displayed part); its
    other_leaves is the iceberg's whole open qty after it. When the displayed
    part is traded to 0 with a reserve left, the iceberg refills: it shows
    min(display, reserve), taken off the reserve, and moves to the back of
    its level's queue (the refill's time priority). The aggressor goes on
    with the order that was behind the iceberg, and meets the refilled part
    again after the others at that price, while it has quantity left and the
    level still crosses (so an aggressor that crosses a level and holds
    enough takes all of it, reserves included). A refill emits no event: it
    touches its level (a DEPTH for it follows, even when the total is back
    where it was), and the owner, who knows its display, reads its open qty
    in the TRADE.
    STP against a resting iceberg of the aggressor's client (the aggressor's
    mode, as in step 4): STP_CANCEL_NEWEST as for any order; STP_CANCEL_OLDEST
    and STP_CANCEL_BOTH cancel the iceberg whole (CANCELLED qty = its open
    qty, displayed part and reserve); STP_DECREMENT: d = min(aggressor's open
    qty, the iceberg's displayed part), taken off both as written in step 4
    (the iceberg's CANCELLED leaves = its whole open qty left); an iceberg
    whose displayed part is decremented to 0 with a reserve left refills and
    moves to the back, as after a trade.
    FOK (step 3): crossing levels in price priority; a level with no order
    of the aggressor's client (or any level, for STP_NONE) counts whole, its
    reserves included (the aggressor would meet every refill in turn); at the
    first level with an order of the same client, only the displayed parts
    of the orders ahead of the first such order count, and the sum stops
    there. Without icebergs this is the sum written in step 3.
    CANCEL, MASS_CANCEL, and STP cancels: CANCELLED qty = the whole open qty;
    the level loses the displayed part.
    REPLACE of an order in the book: display 0 keeps the order's display,
    display > 0 is its new one (an ordinary order becomes an iceberg; an
    iceberg never becomes an ordinary order, but display = qty shows it
    whole); validated after REJ_TICK: display < 0, display > qty or display
    % lot_size != 0 -> REJ_DISPLAY. It keeps its place if the price is the
    same, new_leaves <= old leaves and the display is unchanged (0 or the
    order's); the cut comes off the reserve first (displayed part =
    min(displayed part, new_leaves)). Otherwise (a new price, more open qty
    or a new display) it loses its place as written under REPLACE and rests
    showing min(display, what is left).
    Events: ACCEPTED, REPLACED, CANCELLED, TRADE (leaves, other_leaves) and
    STATUS carry whole quantities, displayed part and reserve together (what
    the owner has open and risks); DEPTH only displayed parts. A SYNC's
    EV_RESTING has leaves = the whole open qty and other_leaves = the
    displayed part (the part a copy of the levels adds up).

CANCEL: the order must be live and owned by the command's client, else
    REJECTED(REJ_NOT_FOUND). CANCELLED(CXL_USER, qty = open qty), then DEPTH.

REPLACE: the order must be live and owned by the client, else REJ_NOT_FOUND;
    expires must be 0, else REJ_EXPIRY (a replace keeps the order's tif and
    expiry, a waiting stop's too: EXPIRY); (for a waiting stop, see STOPS);
    trigger_tick must be 0, else REJ_TRIGGER;
    qty and price validated as for a limit NEW (REJ_QTY, REJ_QTY_MAX, REJ_LOT,
    REJ_PRICE_BAND, REJ_TICK), then the display (REJ_DISPLAY, ICEBERGS); a
    post-only order whose new price would cross -> REJ_POST_ONLY. Any reject
    leaves the order untouched. new_leaves = qty - filled. If new_leaves <= 0:
    CANCELLED(CXL_REPLACE, qty = old open qty).
    Otherwise REPLACED(price, qty, leaves = new_leaves); if the price is the
    same and new_leaves <= old leaves (and its display unchanged: ICEBERGS)
    the order keeps its place, else it leaves its level and is handled as an
    aggressor at the new price (step 4 with its own STP mode) and rests at
    the back with what is left. Then DEPTH.

EXPIRY (TIF_GTD: good till the time in expires; TIF_DAY: the same in the
    book, the gateway having set expires to the instrument's next session
    end; the tif is kept in the order for reports and the state hash)
    Time enters a book only as a command: CMD_EXPIRE(expires = ts) (kind,
    seq, instrument and expires; req_id, client and the rest 0), made and
    sequenced by the shard that owns the book and journaled like any other
    command, so a replay expires the same orders at the same seqs whatever
    the clock says then. Nothing in a book reads a clock.
    The book's now: the greatest ts of the EXPIREs it has processed (0
    before the first); it is book state (snapshots, the state hash).
    A GTD/DAY order (a limit order, a stop or a stop-limit; never a market
    order, nor IOC/FOK) carries its expiry from its NEW to its end: it is
    checked on arrival (REJ_EXPIRY, REJ_EXPIRY_PASSED: NEW step 1), a stop
    keeps it while it waits and after it triggers (a stop-limit that rests
    then rests with it), a REPLACE keeps it (place kept or not). So no live
    order ever has an expiry <= the book's now.
    CMD_EXPIRE(ts): ts <= 0 -> REJECTED(REJ_BAD_COMMAND), nothing changes.
    Otherwise now = max(now, ts); then every live order whose expiry is <=
    now is CANCELLED(CXL_EXPIRED, price = its price, qty = its whole open
    qty: an iceberg expires whole, displayed part and reserve), in this
    order: the bids from the best level outwards, then the asks from the
    best level outwards, each level in queue order, then the waiting stops
    in trigger order (buy stops lowest trigger first, then sell stops
    highest first, each trigger in arrival order): the order of MASS_CANCEL.
    Then one EXPIRED (qty = the number of orders expired, other_id = now,
    client, order_id and the rest 0: even an EXPIRE that expires nothing
    answers), then DEPTH for the levels that changed. It trades nothing, so
    it triggers no stop. An EXPIRE whose ts is not above now expires
    nothing more (everything at or before now is gone already) but is
    valid.

HALTS (a book's trading state: STATE_CONTINUOUS, the state of a new book, or
    STATE_HALTED)
    CMD_HALT and CMD_RESUME (kind, seq and instrument; the rest 0) are made,
    sequenced and journaled by the shard that owns the book, like CMD_EXPIRE:
    an operator asks the shard for them; the gateway never sends them.
    CMD_HALT: the book is halted (a halted book stays so); then one
    STATE(code = STATE_HALTED, price = qty = 0; order_id, client and the rest
    0). Nothing else changes: resting orders and waiting stops stay.
    While halted nothing trades: a NEW of a limit order that rests (GTC, GTD,
    DAY; icebergs included) is ACCEPTED and joins the back of its level
    without matching (step 4 is skipped), so the book may cross; a stop of
    any kind is accepted and waits as usual (no trade moves the last trade
    price, so none triggers); a market order, IOC or FOK -> REJ_HALTED
    (NEW step 1). Post-only is checked as usual (an order that would cross
    the best opposite price is refused). A REPLACE is validated as usual;
    one that loses its place rests at the back of its new level without
    matching. CANCEL, MASS_CANCEL and EXPIRE work as usual.
    CMD_RESUME of a halted book: the call auction, then the book is
    continuous again; then one STATE(code = STATE_CONTINUOUS, price = the
    auction price or 0, qty = the quantity it traded); stops the auction's
    trades reached then trigger as after any command (STOPS), then DEPTH.
    CMD_RESUME of a continuous book: only the STATE (price = qty = 0).
    The auction: when the best bid is at or above the best ask, the auction
    price P is, of every price from the best ask to the best bid on the
    tick grid, the one with the greatest executable quantity min(B(P),
    A(P)), where B(P) is the open quantity of the bids at or above P and
    A(P) the asks' at or below P (whole open quantities: icebergs' reserves
    count); ties go to the least surplus |B(P) - A(P)|, then to the price
    nearest the last trade price (when there is one), then to the lowest.
    Then, while the best bid is at or above P and the best ask at or below
    P: the head of the best bid level meets the head of the best ask level
    and they trade q = min(their shown parts) at P: TRADE(order_id = the
    bid, other_id = the ask, price = P, qty = q, leaves = the bid's open qty
    after, other_leaves = the ask's, client = the bid's, other_client = the
    ask's, side = SIDE_BUY, code = TRADE_AUCTION: neither is a taker). An
    order filled to 0 leaves the book; an iceberg whose shown part is gone
    with a reserve left refills and goes to the back of its level
    (ICEBERGS); a partly filled order keeps its place. Self-trade
    prevention does not apply in the auction (as on venues that apply it
    only to continuous matching): two orders of one client at P trade with
    each other. The book left is not crossed (at
    P, one side's orders that could trade are all filled, or the price
    would not have the greatest quantity). The last trade price becomes P.
    A book that is not crossed trades nothing (P = 0 in the STATE).
    The state is book state: snapshots and the state hash carry it.

MASS_CANCEL: every live order of the client in this book, from the best bid
    level outwards, then the best ask level outwards, each level in queue order,
    then its waiting stops (STOPS): CANCELLED(CXL_USER); then
    MASS_CANCELLED(client, qty = the number of orders cancelled, all else 0),
    so that even a mass cancel with nothing to cancel answers; then DEPTH. Never rejected.

All arithmetic is in int64; there are no floats and no clocks in a book.

Control commands are answered by the shard, never by a book: after the batch
they arrive in is committed and its events published, from the state that
batch left (L: the shard's last seq then). Their answers are never journaled
and carry the command's req_id, except the replayed events of a SYNC (they
are the journaled events, req_id and all). Answers are not history: a consumer
tells them by kind and flags, not by (seq, idx), which they repeat.

CMD_SYNC (order_id = after_seq; price = upto_seq, 0 or less: to the end):
    history served by its owner. First every journaled event with after_seq <
    seq <= min(L, upto_seq), in (seq, idx) order, exactly as journaled but
    flagged EVF_REPLAY; then one EV_RESTING per resting order of every book at
    L, book by book in instrument order (seq = L, req_id = the command's,
    order_id, client, side, price, qty = total, leaves, instrument, flags
    EVF_REPLAY, other_leaves = its displayed part: ICEBERGS), bids best
    first then asks, each level in queue order, then
    one per waiting stop in trigger order, the same fields (price: its limit
    price as given, leaves = qty, other_leaves 0: nothing of it is shown)
    with code = its ord_type (0 for the orders in the book); then one
    EV_TRADING per book, in instrument order (seq = L, req_id, instrument,
    code = the book's trading state at L, STATE_* (HALTS), flags
    EVF_REPLAY: what a copy of the book started from these records is
    missing); then one EV_SYNCED (seq = L, req_id, order_id = after_seq, qty = events replayed,
    leaves = EV_RESTING records, other_id = the lowest seq the shard can still
    replay after: its journal's ``pruned``, retention having taken the batches
    up to it out; an after_seq below it is answered from it on; flags
    EVF_REPLAY). One SYNC's answer is published in one piece, nothing else
    between its records, so the EV_SYNCED that ends it names the request the
    replayed events before it answer.
    With SYNCF_RETRANSMIT in the command's flags it is a retransmission: the
    same journaled events and EV_SYNCED, no EV_RESTING or EV_TRADING records,
    and every
    record flagged EVF_RETRANSMIT too (a gateway never takes them for history:
    they answer one client's request for market data it missed).
CMD_STATUS (order_id, client, instrument): one EV_STATUS (seq 0, req_id,
    order_id, instrument) carrying the journal's state of the order: client,
    side, price, qty, leaves, code = ST_* of exchange.orderstate, other_id =
    the seq of the last event that changed it, idem_key; code 0 (and nothing
    else) when the shard never saw the order.
"""

import struct

import numpy as np

# --- command kinds
CMD_NEW = 1
CMD_CANCEL = 2
CMD_REPLACE = 3
CMD_MASS_CANCEL = 4
# Time, as a sequenced command the shard makes (EXPIRY in the text above)
CMD_EXPIRE = 7
# A book's trading state, as sequenced commands the shard makes (HALTS above)
CMD_HALT = 8
CMD_RESUME = 9
# the commands only a shard makes (a gateway never sends one: the shard refuses it)
SHARD_COMMANDS = (CMD_EXPIRE, CMD_HALT, CMD_RESUME)
# Control commands: questions to the shard about its own state, answered from
# what it holds (its books, its journal) on its event ring. Never sequenced,
# never journaled, never seen by a book. See "Control commands" below.
CMD_SYNC = 5
CMD_STATUS = 6

# --- sides (index 0 = bids, 1 = asks in the kernel's arrays is SIDE - 1)
SIDE_BUY = 1
SIDE_SELL = 2

# --- time in force
TIF_GTC = 0
TIF_IOC = 1
TIF_FOK = 2
# good till the command's expires (ns since the epoch); DAY: till the instrument's
# session end, which the gateway writes in expires (a GTD to the book)
TIF_GTD = 3
TIF_DAY = 4

# --- order types
TYPE_LIMIT = 0
TYPE_MARKET = 1
# stops wait off the book until the last trade price reaches their trigger
TYPE_STOP = 2  # then a market order
TYPE_STOP_LIMIT = 3  # then a limit order at its price

# --- EV_TRADE.code: a reopening auction's trade (HALTS); 0 is continuous matching's
TRADE_AUCTION = 1

# --- a book's trading state (EV_STATE.code)
STATE_CONTINUOUS = 1
STATE_HALTED = 2

# --- flags
FLAG_POST_ONLY = 1
# Set by the gateway on a keyed NEW whose (client, key) pair it knows an accepted
# order used on this instrument: the shard answers it as a retry of that order, or
# REJ_KEY_EXPIRED once retention took the pair's entry out; it never makes an order.
# Not part of the request's fingerprint.
FLAG_RETRY = 2

# --- self-trade prevention modes (the aggressor's mode applies)
STP_NONE = 0
STP_CANCEL_NEWEST = 1
STP_CANCEL_OLDEST = 2
STP_CANCEL_BOTH = 3
STP_DECREMENT = 4

# --- event kinds
EV_ACCEPTED = 1
EV_REJECTED = 2
EV_TRADE = 3
EV_CANCELLED = 4
EV_REPLACED = 5
EV_DEPTH = 6
EV_MASS_CANCELLED = 7
# A waiting stop reached by the last trade price: it enters now (code: its ord_type)
EV_TRIGGERED = 11
# The end of a CMD_EXPIRE's cancels: qty = orders expired, other_id = the book's now
EV_EXPIRED = 12
# The answer to a CMD_HALT / CMD_RESUME: code = the state now, price and qty the auction's
EV_STATE = 13
# Answers to control commands (not history: never journaled)
EV_RESTING = 8
EV_SYNCED = 9
EV_STATUS = 10
EV_TRADING = 14  # a book's trading state in a CMD_SYNC's answer (code: STATE_*)
# the records of a CMD_SYNC's answer that are not the journal's events: never history
SYNC_ANSWERS = (EV_RESTING, EV_TRADING, EV_SYNCED)

# --- event flags
EVF_DUPLICATE = 1
# A journaled event published again to answer a CMD_SYNC, or a record of the
# sync's answer (EV_RESTING, EV_SYNCED): history being served, not happening.
# A consumer never answers a request or sends a notice for it.
EVF_REPLAY = 2
# Set, with EVF_REPLAY, on every record of the answer to a retransmission (a CMD_SYNC
# with SYNCF_RETRANSMIT): not history to fold, only what a client asked to see again.
EVF_RETRANSMIT = 4

# --- CMD_SYNC flags
SYNCF_RETRANSMIT = 1

# --- reject codes (EV_REJECTED.code)
REJ_BAD_COMMAND = 1
REJ_QTY = 2
REJ_QTY_MAX = 3
REJ_LOT = 4
REJ_PRICE_BAND = 5
REJ_TICK = 6
REJ_DUPLICATE_ID = 7
REJ_POST_ONLY = 8
REJ_BOOK_FULL = 9
REJ_NOT_FOUND = 10
# Raised by the shard, not the book: the (client, idempotency key) pair was used
# before for a different request.
REJ_CONFLICT = 11
REJ_TRIGGER = 12
REJ_TRIGGER_REACHED = 13
# Raised by the shard, not the book: a retry (FLAG_RETRY) under a pair whose entry
# retention took out with the original's batch: the original's answer is gone.
REJ_KEY_EXPIRED = 14
REJ_DISPLAY = 15
REJ_EXPIRY = 16
REJ_EXPIRY_PASSED = 17
# A market, IOC or FOK order while the book is halted (HALTS)
REJ_HALTED = 18

# --- cancel reasons (EV_CANCELLED.code)
CXL_USER = 1
CXL_IOC = 2
CXL_FOK = 3
CXL_STP = 4
CXL_REPLACE = 5
CXL_EXPIRED = 6

REJECT_NAMES = {
    REJ_BAD_COMMAND: "bad_command",
    REJ_QTY: "qty_not_positive",
    REJ_QTY_MAX: "qty_above_max",
    REJ_LOT: "qty_off_lot",
    REJ_PRICE_BAND: "price_outside_band",
    REJ_TICK: "price_off_tick",
    REJ_DUPLICATE_ID: "duplicate_order_id",
    REJ_POST_ONLY: "post_only_would_take",
    REJ_BOOK_FULL: "book_full",
    REJ_NOT_FOUND: "order_not_found",
    REJ_CONFLICT: "idempotency_conflict",
    REJ_TRIGGER: "trigger_invalid",
    REJ_TRIGGER_REACHED: "trigger_already_reached",
    REJ_KEY_EXPIRED: "idempotency_key_expired",
    REJ_DISPLAY: "display_invalid",
    REJ_EXPIRY: "expiry_invalid",
    REJ_EXPIRY_PASSED: "expiry_passed",
    REJ_HALTED: "instrument_halted",
}
CANCEL_NAMES = {
    CXL_USER: "user",
    CXL_IOC: "ioc_remainder",
    CXL_FOK: "fok_unfilled",
    CXL_STP: "self_trade",
    CXL_REPLACE: "replaced_to_zero",
    CXL_EXPIRED: "expired",
}
EVENT_NAMES = {
    EV_ACCEPTED: "accepted",
    EV_REJECTED: "rejected",
    EV_TRADE: "trade",
    EV_CANCELLED: "cancelled",
    EV_REPLACED: "replaced",
    EV_DEPTH: "depth",
    EV_MASS_CANCELLED: "mass_cancelled",
    EV_RESTING: "resting",
    EV_SYNCED: "synced",
    EV_STATUS: "status",
    EV_TRIGGERED: "triggered",
    EV_EXPIRED: "expired",
    EV_STATE: "state",
    EV_TRADING: "trading",
}
STATE_NAMES = {STATE_CONTINUOUS: "continuous", STATE_HALTED: "halted"}


def _padded(fields, itemsize):
    """A packed dtype padded to ``itemsize`` with a zero ``_pad`` byte array.

    The padding is a real field (not a gap, and not a void field, which Numba
    rejects) so that numpy copies and concatenations carry its zeros along:
    with a gap they leave those bytes uninitialised, and records would not be
    the same byte for byte.
    """
    used = sum(np.dtype(f).itemsize for _, f in fields)
    assert used <= itemsize
    if used == itemsize:
        return np.dtype(fields)
    return np.dtype([*fields, ("_pad", "u1", (itemsize - used,))])


COMMAND_DTYPE = _padded(
    [
        ("seq", "<i8"),
        ("order_id", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
        ("req_id", "<u8"),
        ("idem_key", "<u8"),
        ("client", "<u4"),
        ("instrument", "<u2"),
        ("kind", "u1"),
        ("side", "u1"),
        ("tif", "u1"),
        ("ord_type", "u1"),
        ("flags", "u1"),
        ("stp", "u1"),
        ("trigger_tick", "<u4"),
        ("display", "<i8"),
        ("expires", "<i8"),
    ],
    80,
)
# COMMAND_DTYPE as a struct, its fields in their order: packing one record with it is
# several times cheaper than numpy's conversion of a tuple (the gateway packs one per
# order), and a command's ``tolist()`` row unpacks in this order (exchange.idempotency)
COMMAND_STRUCT = struct.Struct("<qqqqQQIHBBBBBBIqq")
assert COMMAND_STRUCT.size == COMMAND_DTYPE.itemsize
assert np.frombuffer(COMMAND_STRUCT.pack(*range(1, 18)), COMMAND_DTYPE)[0].tolist() == tuple(
    range(1, 18)
)

EVENT_DTYPE = _padded(
    [
        ("seq", "<i8"),
        ("req_id", "<u8"),
        ("order_id", "<i8"),
        ("other_id", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
        ("leaves", "<i8"),
        ("other_leaves", "<i8"),
        ("idem_key", "<u8"),
        ("client", "<u4"),
        ("other_client", "<u4"),
        ("idx", "<u4"),
        ("instrument", "<u2"),
        ("kind", "u1"),
        ("side", "u1"),
        ("code", "u1"),
        ("flags", "u1"),
    ],
    128,
)

# the named fields, without the padding
COMMAND_FIELDS = tuple(n for n in COMMAND_DTYPE.names if n != "_pad")
EVENT_FIELDS = tuple(n for n in EVENT_DTYPE.names if n != "_pad")

assert COMMAND_DTYPE.itemsize == 80
assert EVENT_DTYPE.itemsize == 128


def commands(n: int) -> np.ndarray:
    """A zeroed array of n commands."""
    return np.zeros(n, dtype=COMMAND_DTYPE)


def events(n: int) -> np.ndarray:
    """A zeroed array of n events."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def copy_records(a: np.ndarray) -> np.ndarray:
    """A writable copy of a record array, made from its bytes (numpy's own copy and
    views of a structured dtype go field by field: many times slower on a few records)."""
    return np.frombuffer(bytearray(a.tobytes()), a.dtype)


def join_records(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Record arrays joined as bytes (np.concatenate promotes structured fields: slow)."""
    if not parts:
        return np.zeros(0, dtype)
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(dtype)


def check_commands(cmds: np.ndarray, last_seq: int) -> None:
    """Refuse a batch a book must not apply: not a 1-d COMMAND_DTYPE array, or
    seqs that are not strictly increasing above ``last_seq``. Raises
    TypeError/ValueError naming the first offending command."""
    if not isinstance(cmds, np.ndarray) or cmds.dtype != COMMAND_DTYPE:
        got = cmds.dtype if isinstance(cmds, np.ndarray) else type(cmds).__name__
        raise TypeError(f"commands must be a numpy array of COMMAND_DTYPE, got {got}")
    if cmds.ndim != 1:
        raise ValueError(f"commands must be a 1-d array, got shape {cmds.shape}")
    if len(cmds) == 0:
        return
    seq = cmds["seq"]
    if seq[0] <= last_seq:
        raise ValueError(
            f"command seq {seq[0]} (index 0) is not above the last processed seq {last_seq}"
        )
    bad = np.flatnonzero(np.diff(seq) <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(
            f"command seqs must be strictly increasing: seq {seq[i]} at index {i} "
            f"follows {seq[i - 1]}"
        )
