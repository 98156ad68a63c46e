"""The matching kernel: Numba functions over the arrays of one instrument's book.

The semantics are specified in ``exchange.records``; this module implements them
over a structure of arrays (``BookState``):

- an order pool of ``capacity`` slots (``orders``, one row per slot, columns
  ``O_*``), free slots on a stack; a waiting stop holds a slot too;
- per side, a price ladder indexed by tick offset inside the band (``levels``,
  columns ``L_*``; bids at rows ``[0, levels)``, asks at ``[levels, 2 *
  levels)``), each level an intrusive doubly linked FIFO list of slots with its
  total shown quantity and order count;
- an iceberg's row keeps its display quantity and its hidden reserve
  (``O_HIDDEN``, 0 for every other order), so what it shows is leaves - hidden
  and a trade touches only leaves, as for any order; per side, ``meta`` counts
  the refills the resting icebergs' reserves can still make, which bounds the
  events an aggressor can cause (``_events_bound``);
- per side, a ladder of waiting stops by trigger tick (rows ``[2 * levels, 3 *
  levels)`` for buy stops, ``[3 * levels, 4 * levels)`` for sell stops, only
  L_HEAD and L_TAIL used), each a FIFO in arrival order, with the lowest buy
  trigger and the highest sell trigger in ``meta``: a book without stops pays
  one comparison per command for them;
- an open-addressing hash (linear probing, backward-shift deletion) from order
  id to slot, so cancels and replaces find their order in O(1) without a
  Python dict;
- ``meta``: counters, best levels and the book parameters.

Everything is deterministic: the same state and the same commands give the same
events byte for byte. ``process`` stops before a command whose worst case would
not fit in the events buffer, so the caller can flush and call again; nothing
is ever half-applied.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    CXL_EXPIRED,
    CXL_FOK,
    CXL_IOC,
    CXL_REPLACE,
    CXL_STP,
    CXL_USER,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_EXPIRED,
    EV_MASS_CANCELLED,
    EV_REJECTED,
    EV_REPLACED,
    EV_STATE,
    EV_TRADE,
    EV_TRIGGERED,
    FLAG_POST_ONLY,
    REJ_BAD_COMMAND,
    REJ_BOOK_FULL,
    REJ_DISPLAY,
    REJ_DUPLICATE_ID,
    REJ_EXPIRY,
    REJ_EXPIRY_PASSED,
    REJ_HALTED,
    REJ_LOT,
    REJ_NOT_FOUND,
    REJ_POST_ONLY,
    REJ_PRICE_BAND,
    REJ_QTY,
    REJ_QTY_MAX,
    REJ_TICK,
    REJ_TRIGGER,
    REJ_TRIGGER_REACHED,
    SIDE_BUY,
    SIDE_SELL,
    STATE_CONTINUOUS,
    STATE_HALTED,
    STP_CANCEL_BOTH,
    STP_CANCEL_OLDEST,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TRADE_AUCTION,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
)

# --- meta slots
M_LAST_SEQ = 0
M_FREE_TOP = 1  # number of free slots on the stack
M_BEST_BID = 2  # level index, -1 when the side is empty
M_BEST_ASK = 3
M_LIVE_BID = 4  # resting orders per side
M_LIVE_ASK = 5
M_STAMP = 6  # command counter, marks the levels a command touched
M_NTOUCH = 7  # levels touched by the current command
M_EV0 = 8  # index of the current command's first event
M_MIN_PRICE = 9
M_MAX_PRICE = 10
M_TICK = 11
M_LOT = 12
M_MAX_QTY = 13
M_CAPACITY = 14
M_LEVELS = 15
M_HMASK = 16
M_LAST_LEVEL = 17  # level of the last trade's price, -1 before the first trade
M_STOPS_BUY = 18  # waiting stops per side
M_STOPS_SELL = 19
M_STOP_BUY_MIN = 20  # lowest buy stop trigger level, M_LEVELS when there is none
M_STOP_SELL_MAX = 21  # highest sell stop trigger level, -1 when there is none
M_TURNS_BID = 22  # refills the resting icebergs of a side can still make: sum of
M_TURNS_ASK = 23  # ceil(hidden / display) (a refill takes at most display off hidden)
M_NOW = 24  # the greatest CMD_EXPIRE time processed (EXPIRY), 0 before the first
M_EXP_MIN = 25  # at most the earliest expiry of a live order (NO_EXPIRY: none): an
# EXPIRE before it has nothing to look for, and the shard asks for one only after it
M_HALTED = 26  # 1 while the book is halted (HALTS): nothing trades
META_SIZE = 27
NO_EXPIRY = (1 << 63) - 1

# Hot-path functions never allocate, so they are compiled without the Numba
# runtime: with it, every call that passes the state tuple increfs and decrefs
# each of its 20 arrays (measured: ~160 ns per call, against ~4 ns without).
hot = njit(cache=True, nogil=True, _nrt=False)
# Tiny helpers are inlined in Numba's IR so no call is made at all.
tiny = njit(cache=True, nogil=True, _nrt=False, inline="always")

# --- columns of the order pool: one row per slot, 16 words (two cache lines of a pool
# whose start is line-aligned), what matching reads of a maker in the first line, what
# taking an order out of its level reads in the second
O_ID = 0
O_CLIENT = 1
O_PRICE = 2
O_QTY = 3  # total quantity: filled + open (STP decrements reduce it)
O_LEAVES = 4  # open quantity
O_HIDDEN = 5  # an iceberg's reserve: the part of O_LEAVES not shown (0 for the others)
O_NEXT = 6  # next slot in the level's FIFO, -1 at the back
O_PREV = 7
O_SIDE = 8
O_LEVEL = 9  # tick offset of the price (a waiting stop: of its trigger): removing
# an order needs no division
O_DISPLAY = 10  # an iceberg's display quantity, 0 for an ordinary order
O_STP = 11
O_FLAGS = 12
O_TYPE = 13  # TYPE_STOP / TYPE_STOP_LIMIT while waiting; TYPE_LIMIT in the book
O_TIF = 14
O_EXPIRES = 15  # a GTD/DAY order's expiry (ns since the epoch), 0 for the others
O_COLS = 16  # the spare word holds the expiry

# --- columns of the price ladder (row = side * levels + tick offset)
L_HEAD = 0  # first slot of the FIFO, -1 when empty
L_TAIL = 1
L_QTY = 2  # total shown quantity (open quantity, an iceberg's reserve not included)
L_COUNT = 3  # number of orders
L_STAMP = 4  # M_STAMP of the last command that touched the level
L_COLS = 5

# --- columns of the order id hash
H_KEY = 0
H_VAL = 1  # slot, -1 for an empty entry

# Few arrays on purpose: every non-inlined call passes them all.
BookState = namedtuple("BookState", ["meta", "orders", "levels", "free", "touched", "htab"])


def line_aligned(shape) -> np.ndarray:
    """A zeroed int64 array whose data starts on a 64-byte cache line (numpy's own start
    16 bytes into one: a 16-word row of the order pool would then span three lines)."""
    n = int(np.prod(shape))
    buf = np.zeros(n + 8, np.int64)
    skip = (-buf.ctypes.data % 64) // 8
    return buf[skip : skip + n].reshape(shape)


def new_state(config) -> BookState:
    """Empty book arrays for a ``BookConfig``."""
    cap = config.capacity
    levels = config.levels
    hcap = 1 << max(4, (2 * cap - 1).bit_length())
    meta = np.zeros(META_SIZE, np.int64)
    meta[M_FREE_TOP] = cap
    meta[M_BEST_BID] = -1
    meta[M_BEST_ASK] = -1
    meta[M_MIN_PRICE] = config.min_price
    meta[M_MAX_PRICE] = config.max_price
    meta[M_TICK] = config.tick_size
    meta[M_LOT] = config.lot_size
    meta[M_MAX_QTY] = config.max_qty
    meta[M_CAPACITY] = cap
    meta[M_LEVELS] = levels
    meta[M_HMASK] = hcap - 1
    meta[M_LAST_LEVEL] = -1
    meta[M_STOP_BUY_MIN] = levels
    meta[M_STOP_SELL_MAX] = -1
    meta[M_EXP_MIN] = NO_EXPIRY
    orders = line_aligned((cap, O_COLS))
    orders[:, O_NEXT] = -1
    orders[:, O_PREV] = -1
    ladder = np.zeros((4 * levels, L_COLS), np.int64)
    ladder[:, L_HEAD] = -1
    ladder[:, L_TAIL] = -1
    htab = np.zeros((hcap, 2), np.int64)
    htab[:, H_VAL] = -1
    # every array is written once here, so no page fault lands on the hot path
    return BookState(
        meta=meta,
        orders=orders,
        levels=ladder,
        free=np.arange(cap - 1, -1, -1, dtype=np.int64),  # popped from the end: slot 0 first
        touched=np.full(2 * levels, -1, np.int64),
        htab=htab,
    )


# ---------------------------------------------------------------- order id hash


@tiny
def _home(key, mask):
    # Order ids are handed out in sequence, so the low bits (with the high bits
    # folded in, where a shard puts its prefix) keep neighbouring ids in
    # neighbouring slots: lookups stay in cache instead of missing at random.
    return (key ^ (key >> 32)) & mask


@tiny
def h_find(st, key):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while True:
        v = st.htab[i, H_VAL]
        if v < 0:
            return -1
        if st.htab[i, H_KEY] == key:
            return v
        i = (i + 1) & mask


@tiny
def _h_insert(st, key, slot):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while st.htab[i, H_VAL] >= 0:
        i = (i + 1) & mask
    st.htab[i, H_KEY] = key
    st.htab[i, H_VAL] = slot


@hot
def _h_delete(st, key):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while st.htab[i, H_KEY] != key or st.htab[i, H_VAL] < 0:
        i = (i + 1) & mask
    st.htab[i, H_VAL] = -1
    # backward shift: pull later entries of the probe chain into the hole
    j = i
    while True:
        j = (j + 1) & mask
        if st.htab[j, H_VAL] < 0:
            return
        k = _home(st.htab[j, H_KEY], mask)
        if i <= j:
            stays = i < k <= j
        else:
            stays = k > i or k <= j
        if not stays:
            st.htab[i, H_KEY] = st.htab[j, H_KEY]
            st.htab[i, H_VAL] = st.htab[j, H_VAL]
            st.htab[j, H_VAL] = -1
            i = j


# ---------------------------------------------------------------- levels


@tiny
def _price_of(st, lvl):
    return st.meta[M_MIN_PRICE] + lvl * st.meta[M_TICK]


@tiny
def _level_of(st, price):
    d = price - st.meta[M_MIN_PRICE]
    tick = st.meta[M_TICK]
    return d if tick == 1 else d // tick


@tiny
def _touch(st, li):
    if st.levels[li, L_STAMP] != st.meta[M_STAMP]:
        st.levels[li, L_STAMP] = st.meta[M_STAMP]
        st.touched[st.meta[M_NTOUCH]] = li
        st.meta[M_NTOUCH] += 1


@hot
def _next_bid(st, lvl):
    """Best bid level at or below ``lvl``, or -1."""
    while lvl >= 0 and st.levels[lvl, L_COUNT] == 0:
        lvl -= 1
    return lvl


@hot
def _next_ask(st, lvl):
    """Best ask level at or above ``lvl``, or -1."""
    levels = st.meta[M_LEVELS]
    while lvl < levels and st.levels[levels + lvl, L_COUNT] == 0:
        lvl += 1
    return lvl if lvl < levels else -1


@tiny
def _queue_append(st, o, li, lvl):
    """Put slot ``o`` at the back of level row ``li``'s queue (a price level's or a
    trigger level's: the same doubly linked list through the orders' rows)."""
    t = st.levels[li, L_TAIL]
    st.orders[o, O_LEVEL] = lvl
    st.orders[o, O_PREV] = t
    st.orders[o, O_NEXT] = -1
    if t >= 0:
        st.orders[t, O_NEXT] = o
    else:
        st.levels[li, L_HEAD] = o
    st.levels[li, L_TAIL] = o


@tiny
def _queue_remove(st, o, li):
    """Take slot ``o`` out of level row ``li``'s queue."""
    p = st.orders[o, O_PREV]
    n = st.orders[o, O_NEXT]
    if p >= 0:
        st.orders[p, O_NEXT] = n
    else:
        st.levels[li, L_HEAD] = n
    if n >= 0:
        st.orders[n, O_PREV] = p
    else:
        st.levels[li, L_TAIL] = p


@tiny
def _turns(hidden, display):
    """The refills a reserve of ``hidden`` can still make."""
    return (hidden + display - 1) // display


@tiny
def _link_tail(st, o, s, lvl):
    """Append slot ``o`` at the back of level ``lvl`` of side index ``s`` (an iceberg
    shows min(display, leaves) of itself from then on)."""
    li = s * st.meta[M_LEVELS] + lvl
    _queue_append(st, o, li, lvl)
    st.levels[li, L_COUNT] += 1
    leaves = st.orders[o, O_LEAVES]
    d = st.orders[o, O_DISPLAY]
    if d > 0:
        hidden = leaves - d if leaves > d else 0
        st.orders[o, O_HIDDEN] = hidden
        st.meta[M_TURNS_BID + s] += _turns(hidden, d)
        leaves -= hidden
    st.levels[li, L_QTY] += leaves
    st.meta[M_LIVE_BID + s] += 1
    _touch(st, li)
    if s == 0:
        if lvl > st.meta[M_BEST_BID]:
            st.meta[M_BEST_BID] = lvl
    elif st.meta[M_BEST_ASK] < 0 or lvl < st.meta[M_BEST_ASK]:
        st.meta[M_BEST_ASK] = lvl


@tiny
def _unlink(st, o):
    """Take slot ``o`` out of its level (its open qty leaves the level total)."""
    s = st.orders[o, O_SIDE] - 1
    lvl = st.orders[o, O_LEVEL]
    li = s * st.meta[M_LEVELS] + lvl
    _queue_remove(st, o, li)
    st.levels[li, L_COUNT] -= 1
    hidden = st.orders[o, O_HIDDEN]
    st.levels[li, L_QTY] -= st.orders[o, O_LEAVES] - hidden
    if hidden > 0:
        st.meta[M_TURNS_BID + s] -= _turns(hidden, st.orders[o, O_DISPLAY])
    st.meta[M_LIVE_BID + s] -= 1
    _touch(st, li)
    if st.levels[li, L_COUNT] == 0:
        if s == 0:
            if lvl == st.meta[M_BEST_BID]:
                st.meta[M_BEST_BID] = _next_bid(st, lvl - 1)
        elif lvl == st.meta[M_BEST_ASK]:
            st.meta[M_BEST_ASK] = _next_ask(st, lvl + 1)


@hot
def _stop_link(st, o, s, lvl):
    """Append slot ``o`` behind the stops of side index ``s`` waiting at trigger level ``lvl``."""
    li = (2 + s) * st.meta[M_LEVELS] + lvl
    _queue_append(st, o, li, lvl)
    st.meta[M_STOPS_BUY + s] += 1
    if s == 0:
        st.meta[M_STOP_BUY_MIN] = min(st.meta[M_STOP_BUY_MIN], lvl)
    else:
        st.meta[M_STOP_SELL_MAX] = max(st.meta[M_STOP_SELL_MAX], lvl)


@hot
def _stop_unlink(st, o):
    """Take waiting stop ``o`` out of its trigger level."""
    s = st.orders[o, O_SIDE] - 1
    lvl = st.orders[o, O_LEVEL]
    levels = st.meta[M_LEVELS]
    base = (2 + s) * levels
    li = base + lvl
    _queue_remove(st, o, li)
    st.meta[M_STOPS_BUY + s] -= 1
    if st.levels[li, L_HEAD] >= 0:
        return
    if s == 0 and lvl == st.meta[M_STOP_BUY_MIN]:
        # the side's count ends the scan when no stop is left
        while st.meta[M_STOPS_BUY] > 0 and st.levels[base + lvl, L_HEAD] < 0:
            lvl += 1
        st.meta[M_STOP_BUY_MIN] = lvl if st.meta[M_STOPS_BUY] > 0 else levels
    elif s == 1 and lvl == st.meta[M_STOP_SELL_MAX]:
        while st.meta[M_STOPS_SELL] > 0 and st.levels[base + lvl, L_HEAD] < 0:
            lvl -= 1
        st.meta[M_STOP_SELL_MAX] = lvl if st.meta[M_STOPS_SELL] > 0 else -1


@hot
def _refill(st, o, s, li, leaves, taken):
    """Iceberg ``o`` of side index ``s`` at level row ``li``, whose shown part (``taken``)
    was just traded or decremented away, with ``leaves`` > 0 open, all of it hidden:
    it shows min(display, leaves) from its reserve and moves to the back of its queue."""
    d = st.orders[o, O_DISPLAY]
    shown = d if leaves > d else leaves
    st.orders[o, O_LEAVES] = leaves
    st.orders[o, O_HIDDEN] = leaves - shown
    st.meta[M_TURNS_BID + s] -= 1
    st.levels[li, L_QTY] += shown - taken
    _queue_remove(st, o, li)
    _queue_append(st, o, li, st.orders[o, O_LEVEL])
    _touch(st, li)


@tiny
def _reduce(st, o, s, li, left, hidden, q):
    """Resting order ``o`` of side index ``s`` at level row ``li`` has had ``q`` of its
    shown part taken (a trade), ``left`` open after it, ``hidden`` of which its reserve:
    it leaves the book at 0, refills when its shown part is gone, else shows less."""
    if left == 0:
        # O_LEAVES still holds q, so _unlink takes it out of the level total
        _unlink(st, o)
        _release(st, o)
    elif left == hidden:
        _refill(st, o, s, li, left, q)
    else:
        st.orders[o, O_LEAVES] = left
        st.levels[li, L_QTY] -= q
        _touch(st, li)


@tiny
def _waiting(st, o):
    return st.orders[o, O_TYPE] >= TYPE_STOP


@tiny
def _alloc(st, order_id, client, side, price, qty, leaves, stp, flags, display):
    top = st.meta[M_FREE_TOP] - 1
    st.meta[M_FREE_TOP] = top
    o = st.free[top]
    st.orders[o, O_ID] = order_id
    st.orders[o, O_CLIENT] = client
    st.orders[o, O_SIDE] = side
    st.orders[o, O_PRICE] = price
    st.orders[o, O_QTY] = qty
    st.orders[o, O_LEAVES] = leaves
    st.orders[o, O_STP] = stp
    st.orders[o, O_FLAGS] = flags
    st.orders[o, O_TYPE] = TYPE_LIMIT
    st.orders[o, O_TIF] = TIF_GTC
    st.orders[o, O_DISPLAY] = display
    st.orders[o, O_HIDDEN] = 0
    st.orders[o, O_EXPIRES] = 0
    _h_insert(st, order_id, o)
    return o


@tiny
def _set_expiry(st, o, tif, expires):
    """The tif and expiry a new order keeps to its end (EXPIRY)."""
    st.orders[o, O_TIF] = tif
    if expires > 0:
        st.orders[o, O_EXPIRES] = expires
        if expires < st.meta[M_EXP_MIN]:
            st.meta[M_EXP_MIN] = expires


@tiny
def _release(st, o):
    _h_delete(st, st.orders[o, O_ID])
    st.free[st.meta[M_FREE_TOP]] = o
    st.meta[M_FREE_TOP] += 1


# ---------------------------------------------------------------- events


@tiny
def _emit(
    st,
    ev,
    n,
    c,
    kind,
    order_id,
    other_id,
    price,
    qty,
    leaves,
    other_leaves,
    client,
    other_client,
    side,
    code,
):
    e = ev[n]
    e.seq = c.seq
    e.req_id = c.req_id
    e.order_id = order_id
    e.other_id = other_id
    e.price = price
    e.qty = qty
    e.leaves = leaves
    e.other_leaves = other_leaves
    e.idem_key = c.idem_key
    e.client = client
    e.other_client = other_client
    e.idx = n - st.meta[M_EV0]
    e.instrument = c.instrument
    e.kind = kind
    e.side = side
    e.code = code
    e.flags = 0
    return n + 1


@tiny
def _reject(st, ev, n, c, code):
    return _emit(
        st, ev, n, c, EV_REJECTED, c.order_id, 0, c.price, c.qty, 0, 0, c.client, 0, c.side, code
    )


@tiny
def _cancel_event(st, ev, n, c, o, qty, reason, leaves=0):
    return _emit(
        st,
        ev,
        n,
        c,
        EV_CANCELLED,
        st.orders[o, O_ID],
        0,
        st.orders[o, O_PRICE],
        qty,
        leaves,
        0,
        st.orders[o, O_CLIENT],
        0,
        st.orders[o, O_SIDE],
        reason,
    )


@tiny
def _aggressor_cancelled(st, ev, n, c, order_id, price, qty, leaves, client, side, reason):
    """CANCELLED of the order a command is working (not resting: no slot to read)."""
    return _emit(
        st, ev, n, c, EV_CANCELLED, order_id, 0, price, qty, leaves, 0, client, 0, side, reason
    )


@hot
def _emit_depth(st, ev, n, c):
    levels = st.meta[M_LEVELS]
    for k in range(st.meta[M_NTOUCH]):
        li = st.touched[k]
        s = li // levels
        n = _emit(
            st,
            ev,
            n,
            c,
            EV_DEPTH,
            0,
            0,
            _price_of(st, li - s * levels),
            st.levels[li, L_QTY],
            st.levels[li, L_COUNT],
            0,
            0,
            0,
            s + 1,
            0,
        )
    return n


# ---------------------------------------------------------------- matching


@tiny
def _crosses(s, level_price, limit, market):
    if market:
        return True
    if s == 0:
        return level_price <= limit
    return level_price >= limit


@hot
def _fillable(st, s, limit, market, client, stp, qty):
    """True when an aggressor of side index ``s`` could fill ``qty`` now (FOK): the shown
    parts ahead of the first order of its client (unless STP_NONE); a level without one
    counts whole, icebergs' reserves included (the aggressor would meet every refill)."""
    levels = st.meta[M_LEVELS]
    opp = 1 - s
    lvl = st.meta[M_BEST_ASK] if s == 0 else st.meta[M_BEST_BID]
    avail = 0
    while lvl >= 0 and lvl < levels:
        li = opp * levels + lvl
        if st.levels[li, L_COUNT] > 0:
            if not _crosses(s, _price_of(st, lvl), limit, market):
                return False
            o = st.levels[li, L_HEAD]
            hidden = 0
            while o >= 0:
                if stp != STP_NONE and st.orders[o, O_CLIENT] == client:
                    return False
                h = st.orders[o, O_HIDDEN]
                avail += st.orders[o, O_LEAVES] - h
                if avail >= qty:
                    return True
                hidden += h
                o = st.orders[o, O_NEXT]
            avail += hidden
            if avail >= qty:
                return True
        lvl = lvl + 1 if s == 0 else lvl - 1
    return False


@hot
def _match(st, ev, n, c, order_id, client, side, limit, market, stp, tqty, leaves):
    """Match an aggressor against the opposite side.

    Returns (n, total qty, open qty, killed): ``killed`` when STP cancelled the
    aggressor (its CANCELLED event is already written).
    """
    levels = st.meta[M_LEVELS]
    s = side - 1
    opp = 1 - s
    while leaves > 0:
        lvl = st.meta[M_BEST_ASK] if s == 0 else st.meta[M_BEST_BID]
        if lvl < 0:
            break
        lprice = _price_of(st, lvl)
        if not _crosses(s, lprice, limit, market):
            break
        li = opp * levels + lvl
        o = st.levels[li, L_HEAD]
        while o >= 0 and leaves > 0:
            # an iceberg that refills moves behind nxt: the aggressor meets it again later
            nxt = st.orders[o, O_NEXT]
            mleaves = st.orders[o, O_LEAVES]
            mhidden = st.orders[o, O_HIDDEN]
            if stp != STP_NONE and st.orders[o, O_CLIENT] == client:
                if stp == STP_CANCEL_OLDEST:
                    n = _cancel_event(st, ev, n, c, o, mleaves, CXL_STP)
                    _unlink(st, o)
                    _release(st, o)
                elif stp == STP_DECREMENT:
                    d = min(leaves, mleaves - mhidden)
                    n = _cancel_event(st, ev, n, c, o, d, CXL_STP, mleaves - d)
                    if d == mleaves:
                        _unlink(st, o)
                        _release(st, o)
                    elif mleaves - d == mhidden:
                        st.orders[o, O_QTY] -= d
                        _refill(st, o, opp, li, mhidden, d)
                    else:
                        st.orders[o, O_LEAVES] = mleaves - d
                        st.orders[o, O_QTY] -= d
                        st.levels[li, L_QTY] -= d
                        _touch(st, li)
                    leaves -= d
                    tqty -= d
                    n = _aggressor_cancelled(
                        st, ev, n, c, order_id, limit, d, leaves, client, side, CXL_STP
                    )
                    if leaves == 0:
                        return n, tqty, 0, True
                else:
                    if stp == STP_CANCEL_BOTH:
                        n = _cancel_event(st, ev, n, c, o, mleaves, CXL_STP)
                        _unlink(st, o)
                        _release(st, o)
                    n = _aggressor_cancelled(
                        st, ev, n, c, order_id, limit, leaves, 0, client, side, CXL_STP
                    )
                    return n, tqty, 0, True
            else:
                q = min(leaves, mleaves - mhidden)
                leaves -= q
                mleaves -= q
                st.meta[M_LAST_LEVEL] = lvl
                n = _emit(
                    st,
                    ev,
                    n,
                    c,
                    EV_TRADE,
                    order_id,
                    st.orders[o, O_ID],
                    lprice,
                    q,
                    leaves,
                    mleaves,
                    client,
                    st.orders[o, O_CLIENT],
                    side,
                    0,
                )
                _reduce(st, o, opp, li, mleaves, mhidden, q)
            o = nxt
    return n, tqty, leaves, False


# ---------------------------------------------------------------- commands


@tiny
def _bad_new(c):
    if c.side != SIDE_BUY and c.side != SIDE_SELL:
        return True
    if c.tif > TIF_DAY or c.ord_type > TYPE_STOP_LIMIT or c.stp > STP_DECREMENT:
        return True
    if c.flags & ~FLAG_POST_ONLY:
        return True
    if c.trigger_tick != 0 and c.ord_type < TYPE_STOP:
        return True
    return c.ord_type != TYPE_LIMIT and c.flags & FLAG_POST_ONLY != 0


@tiny
def _qty_code(st, qty):
    if qty <= 0:
        return REJ_QTY
    if qty > st.meta[M_MAX_QTY]:
        return REJ_QTY_MAX
    lot = st.meta[M_LOT]
    if lot != 1 and qty % lot != 0:  # a 64-bit division is tens of cycles: skip it when it can
        return REJ_LOT
    return 0


@tiny
def _price_code(st, price):
    if price < st.meta[M_MIN_PRICE] or price > st.meta[M_MAX_PRICE]:
        return REJ_PRICE_BAND
    if _price_of(st, _level_of(st, price)) != price:
        return REJ_TICK
    return 0


@tiny
def _display_code(st, display, qty):
    """REJ_DISPLAY for a display quantity (not 0) that is negative, above qty or off
    the lot, else 0."""
    if display < 0 or display > qty:
        return REJ_DISPLAY
    lot = st.meta[M_LOT]
    if lot != 1 and display % lot != 0:
        return REJ_DISPLAY
    return 0


@tiny
def _trigger_level(st, c):
    """The trigger level of a stop command, -1 when its trigger is outside the band."""
    trigger = np.int64(c.trigger_tick) * st.meta[M_TICK]
    if trigger < st.meta[M_MIN_PRICE] or trigger > st.meta[M_MAX_PRICE]:
        return -1
    return _level_of(st, trigger)


@tiny
def _reached(st, s, lvl):
    """Whether the last trade price reaches a stop of side index ``s`` at trigger level ``lvl``."""
    last = st.meta[M_LAST_LEVEL]
    if last < 0:
        return False
    return last >= lvl if s == 0 else last <= lvl


@tiny
def _would_take(st, s, price):
    if s == 0:
        b = st.meta[M_BEST_ASK]
        return b >= 0 and _price_of(st, b) <= price
    b = st.meta[M_BEST_BID]
    return b >= 0 and _price_of(st, b) >= price


@tiny
def _rests(tif):
    return tif != TIF_IOC and tif != TIF_FOK


@tiny
def _expiry_code(c):
    """REJ_EXPIRY for an expiry that does not fit the NEW's tif and type, else 0."""
    dated = c.tif == TIF_GTD or c.tif == TIF_DAY
    if not dated:
        return REJ_EXPIRY if c.expires != 0 else 0
    if c.expires <= 0 or c.ord_type == TYPE_MARKET:
        return REJ_EXPIRY
    return 0


@hot
def _new(st, ev, n, c):
    if _bad_new(c):
        return _reject(st, ev, n, c, REJ_BAD_COMMAND)
    code = _qty_code(st, c.qty)
    market = c.ord_type == TYPE_MARKET or c.ord_type == TYPE_STOP
    if code == 0 and not market:
        code = _price_code(st, c.price)
    if code == 0 and c.display != 0:
        code = _display_code(st, c.display, c.qty)
        if c.ord_type != TYPE_LIMIT or not _rests(c.tif):
            code = REJ_DISPLAY
    stop = c.ord_type >= TYPE_STOP
    tlvl = -1
    if code == 0 and stop:
        tlvl = _trigger_level(st, c)
        if tlvl < 0:
            code = REJ_TRIGGER
    if code == 0:
        code = _expiry_code(c)
    if code != 0:
        return _reject(st, ev, n, c, code)
    if h_find(st, c.order_id) >= 0:
        return _reject(st, ev, n, c, REJ_DUPLICATE_ID)
    s = c.side - 1
    if c.flags & FLAG_POST_ONLY and _would_take(st, s, c.price):
        return _reject(st, ev, n, c, REJ_POST_ONLY)
    if stop and _reached(st, s, tlvl):
        return _reject(st, ev, n, c, REJ_TRIGGER_REACHED)
    if c.expires > 0 and c.expires <= st.meta[M_NOW]:
        return _reject(st, ev, n, c, REJ_EXPIRY_PASSED)
    rests = not market and _rests(c.tif)
    if st.meta[M_HALTED] and not stop and not rests:
        return _reject(st, ev, n, c, REJ_HALTED)
    if (rests or stop) and st.meta[M_FREE_TOP] == 0:
        return _reject(st, ev, n, c, REJ_BOOK_FULL)
    n = _emit(
        st, ev, n, c, EV_ACCEPTED, c.order_id, 0, c.price, c.qty, c.qty, 0, c.client, 0, c.side, 0
    )
    if stop:
        o = _alloc(st, c.order_id, c.client, c.side, c.price, c.qty, c.qty, c.stp, c.flags, 0)
        st.orders[o, O_TYPE] = c.ord_type
        _set_expiry(st, o, c.tif, c.expires)
        _stop_link(st, o, s, tlvl)
        return n
    if st.meta[M_HALTED]:  # nothing matches (HALTS): an order that gets here rests
        tqty, leaves, killed = c.qty, c.qty, False
    else:
        if c.tif == TIF_FOK and not _fillable(st, s, c.price, market, c.client, c.stp, c.qty):
            return _aggressor_cancelled(
                st, ev, n, c, c.order_id, c.price, c.qty, 0, c.client, c.side, CXL_FOK
            )
        n, tqty, leaves, killed = _match(
            st, ev, n, c, c.order_id, c.client, c.side, c.price, market, c.stp, c.qty, c.qty
        )
    if killed or leaves == 0:
        return n
    if rests:
        o = _alloc(
            st, c.order_id, c.client, c.side, c.price, tqty, leaves, c.stp, c.flags, c.display
        )
        _set_expiry(st, o, c.tif, c.expires)
        _link_tail(st, o, s, _level_of(st, c.price))
        return n
    return _aggressor_cancelled(
        st, ev, n, c, c.order_id, c.price, leaves, 0, c.client, c.side, CXL_IOC
    )


@tiny
def _owned_slot(st, c):
    o = h_find(st, c.order_id)
    if o < 0 or st.orders[o, O_CLIENT] != c.client:
        return -1
    return o


@hot
def _cancel(st, ev, n, c):
    o = _owned_slot(st, c)
    if o < 0:
        return _reject(st, ev, n, c, REJ_NOT_FOUND)
    n = _cancel_event(st, ev, n, c, o, st.orders[o, O_LEAVES], CXL_USER)
    if _waiting(st, o):
        _stop_unlink(st, o)
    else:
        _unlink(st, o)
    _release(st, o)
    return n


@hot
def _replace_stop(st, ev, n, c, o):
    """REPLACE of a waiting stop: new limit price, qty and trigger; it never matches."""
    code = _qty_code(st, c.qty)
    if code == 0 and st.orders[o, O_TYPE] == TYPE_STOP_LIMIT:
        code = _price_code(st, c.price)
    if code == 0 and c.display != 0:
        code = REJ_DISPLAY  # a stop is never an iceberg
    tlvl = -1
    if code == 0:
        tlvl = _trigger_level(st, c)
        if tlvl < 0:
            code = REJ_TRIGGER
    side = st.orders[o, O_SIDE]
    s = side - 1
    if code == 0 and _reached(st, s, tlvl):
        code = REJ_TRIGGER_REACHED
    if code != 0:
        return _reject(st, ev, n, c, code)
    n = _emit(
        st, ev, n, c, EV_REPLACED, c.order_id, 0, c.price, c.qty, c.qty, 0, c.client, 0, side, 0
    )
    keeps = (
        tlvl == st.orders[o, O_LEVEL]
        and c.price == st.orders[o, O_PRICE]
        and c.qty <= st.orders[o, O_QTY]
    )
    if not keeps:
        _stop_unlink(st, o)
        _stop_link(st, o, s, tlvl)
    st.orders[o, O_PRICE] = c.price
    st.orders[o, O_QTY] = c.qty
    st.orders[o, O_LEAVES] = c.qty
    return n


@hot
def _replace(st, ev, n, c):
    o = _owned_slot(st, c)
    if o < 0:
        return _reject(st, ev, n, c, REJ_NOT_FOUND)
    if c.expires != 0:
        return _reject(st, ev, n, c, REJ_EXPIRY)  # a replace keeps the order's expiry
    if _waiting(st, o):
        return _replace_stop(st, ev, n, c, o)
    if c.trigger_tick != 0:
        return _reject(st, ev, n, c, REJ_TRIGGER)
    code = _qty_code(st, c.qty)
    if code == 0:
        code = _price_code(st, c.price)
    if code == 0 and c.display != 0:
        code = _display_code(st, c.display, c.qty)
    side = st.orders[o, O_SIDE]
    s = side - 1
    if code == 0 and st.orders[o, O_FLAGS] & FLAG_POST_ONLY and _would_take(st, s, c.price):
        code = REJ_POST_ONLY
    if code != 0:
        return _reject(st, ev, n, c, code)
    old_leaves = st.orders[o, O_LEAVES]
    new_leaves = c.qty - (st.orders[o, O_QTY] - old_leaves)
    if new_leaves <= 0:
        n = _cancel_event(st, ev, n, c, o, old_leaves, CXL_REPLACE)
        _unlink(st, o)
        _release(st, o)
        return n
    n = _emit(
        st,
        ev,
        n,
        c,
        EV_REPLACED,
        c.order_id,
        0,
        c.price,
        c.qty,
        new_leaves,
        0,
        c.client,
        0,
        side,
        0,
    )
    d = st.orders[o, O_DISPLAY]
    same_display = c.display == 0 or c.display == d
    if c.price == st.orders[o, O_PRICE] and new_leaves <= old_leaves and same_display:
        # the cut comes off an iceberg's reserve first
        hidden = st.orders[o, O_HIDDEN]
        cut = old_leaves - new_leaves
        if hidden > 0:
            left = hidden - cut if hidden > cut else 0
            st.meta[M_TURNS_BID + s] += _turns(left, d) - _turns(hidden, d)
            st.orders[o, O_HIDDEN] = left
            cut -= hidden - left
        if cut != 0:
            li = s * st.meta[M_LEVELS] + _level_of(st, c.price)
            st.levels[li, L_QTY] -= cut
            _touch(st, li)
        st.orders[o, O_LEAVES] = new_leaves
        st.orders[o, O_QTY] = c.qty
        return n
    _unlink(st, o)
    if c.display != 0:
        st.orders[o, O_DISPLAY] = c.display
    if st.meta[M_HALTED]:  # it rests at its new place without matching (HALTS)
        tqty, leaves, killed = c.qty, new_leaves, False
    else:
        n, tqty, leaves, killed = _match(
            st,
            ev,
            n,
            c,
            c.order_id,
            c.client,
            side,
            c.price,
            False,
            st.orders[o, O_STP],
            c.qty,
            new_leaves,
        )
    if killed or leaves == 0:
        st.orders[o, O_LEAVES] = 0
        _release(st, o)
        return n
    st.orders[o, O_PRICE] = c.price
    st.orders[o, O_QTY] = tqty
    st.orders[o, O_LEAVES] = leaves
    _link_tail(st, o, s, _level_of(st, c.price))
    return n


@hot
def _sweep(st, ev, n, c, client, now, reason):
    """Cancel (``reason``) every live order of ``client`` (when > 0) or whose expiry is at
    or before ``now`` (when > 0), in MASS_CANCEL's order: the bids from the best level
    down, the asks from the best level up, each in queue order, then the buy stops from
    the lowest trigger, the sell stops from the highest. Each queue is walked only as
    far as its last order (its count at the start), never to the end of the price
    range. Returns (n, orders cancelled, the earliest expiry of the orders kept)."""
    levels = st.meta[M_LEVELS]
    cancelled = 0
    earliest = NO_EXPIRY
    for q in range(4):  # bids, asks, buy stops, sell stops: rows q * levels + level
        if q == 0:
            lvl, step, left = st.meta[M_BEST_BID], -1, st.meta[M_LIVE_BID]
        elif q == 1:
            lvl, step, left = st.meta[M_BEST_ASK], 1, st.meta[M_LIVE_ASK]
        elif q == 2:
            lvl, step, left = st.meta[M_STOP_BUY_MIN], 1, st.meta[M_STOPS_BUY]
        else:
            lvl, step, left = st.meta[M_STOP_SELL_MAX], -1, st.meta[M_STOPS_SELL]
        while left > 0 and 0 <= lvl < levels:
            o = st.levels[q * levels + lvl, L_HEAD]
            while o >= 0:
                nxt = st.orders[o, O_NEXT]
                left -= 1
                x = st.orders[o, O_EXPIRES]
                if (client > 0 and st.orders[o, O_CLIENT] == client) or (0 < x <= now):
                    n = _cancel_event(st, ev, n, c, o, st.orders[o, O_LEAVES], reason)
                    if q < 2:
                        _unlink(st, o)
                    else:
                        _stop_unlink(st, o)
                    _release(st, o)
                    cancelled += 1
                elif 0 < x < earliest:
                    earliest = x
                o = nxt
            lvl += step
    return n, cancelled, earliest


@hot
def _mass_cancel(st, ev, n, c):
    n, cancelled, _ = _sweep(st, ev, n, c, c.client, 0, CXL_USER)
    return _emit(st, ev, n, c, EV_MASS_CANCELLED, 0, 0, 0, cancelled, 0, 0, c.client, 0, 0, 0)


@hot
def _expire(st, ev, n, c):
    """CMD_EXPIRE (EXPIRY): the book's now moves to the command's time, and every live
    order whose expiry is at or before it is cancelled, in MASS_CANCEL's order."""
    if c.expires <= 0:
        return _reject(st, ev, n, c, REJ_BAD_COMMAND)
    if c.expires > st.meta[M_NOW]:
        st.meta[M_NOW] = c.expires
    now = st.meta[M_NOW]
    expired = 0
    if st.meta[M_EXP_MIN] <= now:
        n, expired, st.meta[M_EXP_MIN] = _sweep(st, ev, n, c, 0, now, CXL_EXPIRED)
    return _emit(st, ev, n, c, EV_EXPIRED, 0, now, 0, expired, 0, 0, 0, 0, 0, 0)


@hot
def _level_open(st, li):
    """The whole open quantity of level row ``li``, icebergs' reserves included."""
    q = 0
    o = st.levels[li, L_HEAD]
    while o >= 0:
        q += st.orders[o, O_LEAVES]
        o = st.orders[o, O_NEXT]
    return q


@hot
def _auction_level(st):
    """The level of the auction price (HALTS), -1 when the book is not crossed: of the
    levels from the best ask to the best bid, the one with the greatest executable
    quantity, then the least surplus, then the nearest the last trade, then the lowest."""
    bb = st.meta[M_BEST_BID]
    ba = st.meta[M_BEST_ASK]
    if bb < 0 or ba < 0 or bb < ba:
        return -1
    levels = st.meta[M_LEVELS]
    last = st.meta[M_LAST_LEVEL]
    buy = 0  # the bids at or above the level looked at
    for lvl in range(ba, bb + 1):
        if st.levels[lvl, L_COUNT] > 0:
            buy += _level_open(st, lvl)
    sell = 0  # the asks at or below it
    best = -1
    best_qty = -1
    best_surplus = 0
    best_dist = 0
    for lvl in range(ba, bb + 1):
        if st.levels[levels + lvl, L_COUNT] > 0:
            sell += _level_open(st, levels + lvl)
        qty = min(buy, sell)
        surplus = abs(buy - sell)
        dist = abs(lvl - last) if last >= 0 else 0
        if qty > best_qty or (
            qty == best_qty
            and (surplus < best_surplus or (surplus == best_surplus and dist < best_dist))
        ):
            best, best_qty, best_surplus, best_dist = lvl, qty, surplus, dist
        if st.levels[lvl, L_COUNT] > 0:
            buy -= _level_open(st, lvl)
    return best


@hot
def _auction(st, ev, n, c):
    """The reopening call auction (HALTS): the heads of the best bid and ask levels
    trade at the auction price while both reach it. Returns (n, price, qty traded)."""
    p = _auction_level(st)
    if p < 0:
        return n, 0, 0
    levels = st.meta[M_LEVELS]
    price = _price_of(st, p)
    traded = 0
    while st.meta[M_BEST_BID] >= p and 0 <= st.meta[M_BEST_ASK] <= p:
        bli = st.meta[M_BEST_BID]
        ali = levels + st.meta[M_BEST_ASK]
        b = st.levels[bli, L_HEAD]
        a = st.levels[ali, L_HEAD]
        bleaves = st.orders[b, O_LEAVES]
        bhidden = st.orders[b, O_HIDDEN]
        aleaves = st.orders[a, O_LEAVES]
        ahidden = st.orders[a, O_HIDDEN]
        q = min(bleaves - bhidden, aleaves - ahidden)
        n = _emit(
            st,
            ev,
            n,
            c,
            EV_TRADE,
            st.orders[b, O_ID],
            st.orders[a, O_ID],
            price,
            q,
            bleaves - q,
            aleaves - q,
            st.orders[b, O_CLIENT],
            st.orders[a, O_CLIENT],
            SIDE_BUY,
            TRADE_AUCTION,
        )
        _reduce(st, b, 0, bli, bleaves - q, bhidden, q)
        _reduce(st, a, 1, ali, aleaves - q, ahidden, q)
        traded += q
    st.meta[M_LAST_LEVEL] = p
    return n, price, traded


@hot
def _halt(st, ev, n, c):
    st.meta[M_HALTED] = 1
    return _emit(st, ev, n, c, EV_STATE, 0, 0, 0, 0, 0, 0, 0, 0, 0, STATE_HALTED)


@hot
def _resume(st, ev, n, c):
    """CMD_RESUME (HALTS): a halted book's call auction, then continuous trading."""
    price = 0
    traded = 0
    if st.meta[M_HALTED]:
        st.meta[M_HALTED] = 0
        n, price, traded = _auction(st, ev, n, c)
    return _emit(st, ev, n, c, EV_STATE, 0, 0, price, traded, 0, 0, 0, 0, 0, STATE_CONTINUOUS)


@hot
def _run_triggered(st, ev, n, c, o):
    """Waiting stop ``o``, just taken off its trigger level, enters as a market or
    limit order (steps 3 to 5 of a NEW) on the command ``c`` whose trades reached it."""
    oid = st.orders[o, O_ID]
    client = st.orders[o, O_CLIENT]
    side = st.orders[o, O_SIDE]
    price = st.orders[o, O_PRICE]
    qty = st.orders[o, O_LEAVES]
    stp = st.orders[o, O_STP]
    tif = st.orders[o, O_TIF]
    kind = st.orders[o, O_TYPE]
    market = kind == TYPE_STOP
    n = _emit(
        st,
        ev,
        n,
        c,
        EV_TRIGGERED,
        oid,
        0,
        _price_of(st, st.orders[o, O_LEVEL]),
        qty,
        qty,
        0,
        client,
        0,
        side,
        kind,
    )
    if tif == TIF_FOK and not _fillable(st, side - 1, price, market, client, stp, qty):
        _release(st, o)
        return _aggressor_cancelled(st, ev, n, c, oid, price, qty, 0, client, side, CXL_FOK)
    n, tqty, leaves, killed = _match(st, ev, n, c, oid, client, side, price, market, stp, qty, qty)
    if killed or leaves == 0:
        _release(st, o)
        return n
    if not market and _rests(tif):
        st.orders[o, O_TYPE] = TYPE_LIMIT
        st.orders[o, O_QTY] = tqty
        st.orders[o, O_LEAVES] = leaves
        _link_tail(st, o, side - 1, _level_of(st, price))
        return n
    _release(st, o)
    return _aggressor_cancelled(st, ev, n, c, oid, price, leaves, 0, client, side, CXL_IOC)


@hot
def _trigger_stops(st, ev, n, c):
    """Run every waiting stop the last trade price reaches, one at a time in trigger
    order (buy stops lowest trigger first, then sell stops highest first; FIFO at a
    trigger), checking again after each: its own trades may reach more."""
    levels = st.meta[M_LEVELS]
    while st.meta[M_LAST_LEVEL] >= 0:
        if st.meta[M_STOP_BUY_MIN] <= st.meta[M_LAST_LEVEL]:
            o = st.levels[2 * levels + st.meta[M_STOP_BUY_MIN], L_HEAD]
        elif st.meta[M_STOP_SELL_MAX] >= st.meta[M_LAST_LEVEL]:
            o = st.levels[3 * levels + st.meta[M_STOP_SELL_MAX], L_HEAD]
        else:
            return n
        _stop_unlink(st, o)
        n = _run_triggered(st, ev, n, c, o)
    return n


@tiny
def _own_turns(st, c):
    """The refills the command's own order could make once it rests as an iceberg."""
    d = c.display
    if c.kind == CMD_REPLACE and d == 0:
        o = h_find(st, c.order_id)
        if o >= 0:
            d = st.orders[o, O_DISPLAY]
    if d <= 0 or c.qty <= 0:
        return 0
    return c.qty // d + 1


@hot
def _events_bound(st, c):
    """Events the command can write at most (it must fit before it starts)."""
    stops = st.meta[M_STOPS_BUY] + st.meta[M_STOPS_SELL]
    if stops > 0:
        # Triggered stops aggress too. Every meeting of an aggressor (the command's
        # order or a stop) with a resting order (at most two events and a level) ends
        # with one of them gone: a resting order (those there now, or a stop that
        # rested after triggering) or an aggressor, or with an iceberg's refill (those
        # resting now, or the command's own order resting as one); and each aggressor
        # writes at most two more events (its ACCEPTED/REPLACED/TRIGGERED and a cancel)
        # and a level.
        live = st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK]
        if c.kind == CMD_MASS_CANCEL or c.kind == CMD_EXPIRE:
            return 2 * (live + stops) + 4
        turns = st.meta[M_TURNS_BID] + st.meta[M_TURNS_ASK] + _own_turns(st, c)
        return 3 * (live + 2 * stops + 1 + turns) + 3 * (stops + 1) + 8
    if c.kind == CMD_NEW or c.kind == CMD_REPLACE:
        # Each resting order the aggressor meets costs at most two events (a
        # trade, a cancel, or an STP decrement's two partial cancels) and maybe
        # one level; each meeting takes a resting order away, or an iceberg's shown
        # part (a refill: at most the opposite side's turns), or ends the aggressor;
        # and each meeting takes at least a lot off the aggressor, except STP
        # cancel-oldest, which can meet every own order.
        side = c.side
        stp = c.stp
        if c.kind == CMD_REPLACE:
            o = h_find(st, c.order_id)
            if o < 0:
                return 4
            side = st.orders[o, O_SIDE]
            stp = st.orders[o, O_STP]
        if side == SIDE_BUY:
            bound = st.meta[M_LIVE_ASK] + st.meta[M_TURNS_ASK]
        else:
            bound = st.meta[M_LIVE_BID] + st.meta[M_TURNS_BID]
        if stp != STP_CANCEL_OLDEST and c.qty > 0:
            bound = min(bound, c.qty // st.meta[M_LOT] + 1)
        return 3 * bound + 8
    if c.kind == CMD_MASS_CANCEL or c.kind == CMD_EXPIRE:
        return 2 * (st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK]) + 4
    if c.kind == CMD_RESUME:
        # each meeting of the auction (a trade and at most two levels) takes a resting
        # order away or an iceberg's shown part
        live = st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK]
        return 3 * (live + st.meta[M_TURNS_BID] + st.meta[M_TURNS_ASK]) + 4
    return 4


@hot
def process(st, cmds, start, ev):
    """Apply ``cmds[start:]`` in order, writing their events into ``ev``.

    Returns ``(done, n_events, need)``: how many commands were applied and how
    many events were written. It stops early before a command whose worst case
    does not fit in what is left of ``ev``; ``need`` > 0 says the very first
    command did not fit in an empty buffer of this size (grow it and retry).
    """
    n = 0
    cap = ev.shape[0]
    for i in range(start, cmds.shape[0]):
        c = cmds[i]
        need = _events_bound(st, c)
        if cap - n < need:
            return i - start, n, need if i == start else 0
        st.meta[M_STAMP] += 1
        st.meta[M_NTOUCH] = 0
        st.meta[M_EV0] = n
        k = c.kind
        if k == CMD_NEW:
            n = _new(st, ev, n, c)
        elif k == CMD_CANCEL:
            n = _cancel(st, ev, n, c)
        elif k == CMD_REPLACE:
            n = _replace(st, ev, n, c)
        elif k == CMD_MASS_CANCEL:
            n = _mass_cancel(st, ev, n, c)
        elif k == CMD_EXPIRE:
            n = _expire(st, ev, n, c)
        elif k == CMD_HALT:
            n = _halt(st, ev, n, c)
        elif k == CMD_RESUME:
            n = _resume(st, ev, n, c)
        else:
            n = _reject(st, ev, n, c, REJ_BAD_COMMAND)
        if st.meta[M_STOPS_BUY] + st.meta[M_STOPS_SELL] > 0:
            n = _trigger_stops(st, ev, n, c)
        n = _emit_depth(st, ev, n, c)
        st.meta[M_LAST_SEQ] = c.seq
    return cmds.shape[0] - start, n, 0


# ---------------------------------------------------------------- queries


@njit(cache=True)
def canonical_rows(st):
    """Resting orders as int64 rows, see ``exchange.statehash``."""
    levels = st.meta[M_LEVELS]
    out = np.empty((st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK], 12), np.int64)
    r = 0
    for s in range(2):
        lvl = st.meta[M_BEST_BID] if s == 0 else st.meta[M_BEST_ASK]
        step = -1 if s == 0 else 1
        while 0 <= lvl < levels and r < out.shape[0]:
            o = st.levels[s * levels + lvl, L_HEAD]
            while o >= 0:
                out[r, 0] = st.orders[o, O_SIDE]
                out[r, 1] = st.orders[o, O_PRICE]
                out[r, 2] = st.orders[o, O_ID]
                out[r, 3] = st.orders[o, O_CLIENT]
                out[r, 4] = st.orders[o, O_QTY]
                out[r, 5] = st.orders[o, O_LEAVES]
                out[r, 6] = st.orders[o, O_STP]
                out[r, 7] = st.orders[o, O_FLAGS]
                out[r, 8] = st.orders[o, O_DISPLAY]
                out[r, 9] = st.orders[o, O_LEAVES] - st.orders[o, O_HIDDEN]
                out[r, 10] = st.orders[o, O_TIF]
                out[r, 11] = st.orders[o, O_EXPIRES]
                r += 1
                o = st.orders[o, O_NEXT]
            lvl += step
            if s == 0 and r >= st.meta[M_LIVE_BID]:
                break
    return out[:r]


@njit(cache=True)
def stop_rows(st):
    """Waiting stops as int64 rows, see ``exchange.statehash``: in trigger order."""
    levels = st.meta[M_LEVELS]
    out = np.empty((st.meta[M_STOPS_BUY] + st.meta[M_STOPS_SELL], 10), np.int64)
    r = 0
    for s in range(2):
        lvl = st.meta[M_STOP_BUY_MIN] if s == 0 else st.meta[M_STOP_SELL_MAX]
        step = 1 if s == 0 else -1
        end = st.meta[M_STOPS_BUY] if s == 0 else out.shape[0]
        while 0 <= lvl < levels and r < end:
            o = st.levels[(2 + s) * levels + lvl, L_HEAD]
            while o >= 0:
                out[r, 0] = st.orders[o, O_SIDE]
                out[r, 1] = _price_of(st, lvl)
                out[r, 2] = st.orders[o, O_ID]
                out[r, 3] = st.orders[o, O_CLIENT]
                out[r, 4] = st.orders[o, O_QTY]
                out[r, 5] = st.orders[o, O_PRICE]
                out[r, 6] = st.orders[o, O_STP]
                out[r, 7] = st.orders[o, O_TYPE]
                out[r, 8] = st.orders[o, O_TIF]
                out[r, 9] = st.orders[o, O_EXPIRES]
                r += 1
                o = st.orders[o, O_NEXT]
            lvl += step
    return out[:r]


@njit(cache=True)
def last_price(st):
    """The last trade's price, 0 before the first trade."""
    lvl = st.meta[M_LAST_LEVEL]
    return _price_of(st, lvl) if lvl >= 0 else 0


@njit(cache=True)
def depth(st, side, nlevels):
    """Up to ``nlevels`` (price, qty, count) rows of a side (SIDE_*), best first."""
    levels = st.meta[M_LEVELS]
    s = side - 1
    out = np.zeros((nlevels, 3), np.int64)
    lvl = st.meta[M_BEST_BID] if s == 0 else st.meta[M_BEST_ASK]
    step = -1 if s == 0 else 1
    k = 0
    while k < nlevels and 0 <= lvl < levels:
        li = s * levels + lvl
        if st.levels[li, L_COUNT] > 0:
            out[k, 0] = _price_of(st, lvl)
            out[k, 1] = st.levels[li, L_QTY]
            out[k, 2] = st.levels[li, L_COUNT]
            k += 1
        lvl += step
    return out[:k]
