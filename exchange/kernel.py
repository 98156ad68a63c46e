"""The matching kernel: Numba functions over the arrays of one instrument's book.

The semantics are specified in ``exchange.records``; this module implements them
over a structure of arrays (``BookState``):

- an order pool of ``capacity`` slots (``o_*`` arrays), free slots on a stack;
- per side, a price ladder indexed by tick offset inside the band (``l_*``
  arrays, side 0 = bids at ``[0, levels)``, side 1 = asks at
  ``[levels, 2 * levels)``), each level an intrusive doubly linked FIFO list of
  slots with its total open quantity and order count;
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
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CXL_FOK,
    CXL_IOC,
    CXL_REPLACE,
    CXL_STP,
    CXL_USER,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_REJECTED,
    EV_REPLACED,
    EV_TRADE,
    FLAG_POST_ONLY,
    REJ_BAD_COMMAND,
    REJ_BOOK_FULL,
    REJ_DUPLICATE_ID,
    REJ_LOT,
    REJ_NOT_FOUND,
    REJ_POST_ONLY,
    REJ_PRICE_BAND,
    REJ_QTY,
    REJ_QTY_MAX,
    REJ_TICK,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_OLDEST,
    STP_DECREMENT,
    STP_NONE,
    TIF_FOK,
    TIF_GTC,
    TYPE_MARKET,
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
META_SIZE = 17

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)

BookState = namedtuple(
    "BookState",
    [
        "meta",
        "o_id",
        "o_client",
        "o_side",
        "o_price",
        "o_qty",
        "o_leaves",
        "o_stp",
        "o_flags",
        "o_next",
        "o_prev",
        "free",
        "l_head",
        "l_tail",
        "l_qty",
        "l_count",
        "l_stamp",
        "touched",
        "h_key",
        "h_val",
    ],
)


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
    return BookState(
        meta=meta,
        o_id=np.zeros(cap, np.int64),
        o_client=np.zeros(cap, np.int64),
        o_side=np.zeros(cap, np.int8),
        o_price=np.zeros(cap, np.int64),
        o_qty=np.zeros(cap, np.int64),
        o_leaves=np.zeros(cap, np.int64),
        o_stp=np.zeros(cap, np.int8),
        o_flags=np.zeros(cap, np.int8),
        o_next=np.full(cap, -1, np.int32),
        o_prev=np.full(cap, -1, np.int32),
        # popped from the end: slot 0 is used first
        free=np.arange(cap - 1, -1, -1, dtype=np.int32),
        l_head=np.full(2 * levels, -1, np.int32),
        l_tail=np.full(2 * levels, -1, np.int32),
        l_qty=np.zeros(2 * levels, np.int64),
        l_count=np.zeros(2 * levels, np.int64),
        l_stamp=np.zeros(2 * levels, np.int64),
        touched=np.zeros(2 * levels, np.int64),
        h_key=np.zeros(hcap, np.int64),
        h_val=np.full(hcap, -1, np.int32),
    )


# ---------------------------------------------------------------- order id hash


@njit(cache=True, inline="always")
def _home(key, mask):
    return np.int64((np.uint64(key) * _HASH_MUL) >> np.uint64(32)) & mask


@njit(cache=True)
def h_find(st, key):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while True:
        v = st.h_val[i]
        if v < 0:
            return -1
        if st.h_key[i] == key:
            return v
        i = (i + 1) & mask


@njit(cache=True)
def _h_insert(st, key, slot):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while st.h_val[i] >= 0:
        i = (i + 1) & mask
    st.h_key[i] = key
    st.h_val[i] = slot


@njit(cache=True)
def _h_delete(st, key):
    mask = st.meta[M_HMASK]
    i = _home(key, mask)
    while st.h_key[i] != key or st.h_val[i] < 0:
        i = (i + 1) & mask
    st.h_val[i] = -1
    # backward shift: pull later entries of the probe chain into the hole
    j = i
    while True:
        j = (j + 1) & mask
        if st.h_val[j] < 0:
            return
        k = _home(st.h_key[j], mask)
        if i <= j:
            stays = i < k <= j
        else:
            stays = k > i or k <= j
        if not stays:
            st.h_key[i] = st.h_key[j]
            st.h_val[i] = st.h_val[j]
            st.h_val[j] = -1
            i = j


# ---------------------------------------------------------------- levels


@njit(cache=True, inline="always")
def _price_of(st, lvl):
    return st.meta[M_MIN_PRICE] + lvl * st.meta[M_TICK]


@njit(cache=True, inline="always")
def _level_of(st, price):
    return (price - st.meta[M_MIN_PRICE]) // st.meta[M_TICK]


@njit(cache=True, inline="always")
def _touch(st, li):
    if st.l_stamp[li] != st.meta[M_STAMP]:
        st.l_stamp[li] = st.meta[M_STAMP]
        st.touched[st.meta[M_NTOUCH]] = li
        st.meta[M_NTOUCH] += 1


@njit(cache=True)
def _next_bid(st, lvl):
    """Best bid level at or below ``lvl``, or -1."""
    while lvl >= 0 and st.l_count[lvl] == 0:
        lvl -= 1
    return lvl


@njit(cache=True)
def _next_ask(st, lvl):
    """Best ask level at or above ``lvl``, or -1."""
    levels = st.meta[M_LEVELS]
    while lvl < levels and st.l_count[levels + lvl] == 0:
        lvl += 1
    return lvl if lvl < levels else -1


@njit(cache=True)
def _link_tail(st, o, s, lvl):
    """Append slot ``o`` at the back of level ``lvl`` of side index ``s``."""
    li = s * st.meta[M_LEVELS] + lvl
    t = st.l_tail[li]
    st.o_prev[o] = t
    st.o_next[o] = -1
    if t >= 0:
        st.o_next[t] = o
    else:
        st.l_head[li] = o
    st.l_tail[li] = o
    st.l_count[li] += 1
    st.l_qty[li] += st.o_leaves[o]
    _touch(st, li)
    if s == 0:
        if lvl > st.meta[M_BEST_BID]:
            st.meta[M_BEST_BID] = lvl
    elif st.meta[M_BEST_ASK] < 0 or lvl < st.meta[M_BEST_ASK]:
        st.meta[M_BEST_ASK] = lvl


@njit(cache=True)
def _unlink(st, o):
    """Take slot ``o`` out of its level (its open qty leaves the level total)."""
    s = st.o_side[o] - 1
    lvl = _level_of(st, st.o_price[o])
    li = s * st.meta[M_LEVELS] + lvl
    p = st.o_prev[o]
    n = st.o_next[o]
    if p >= 0:
        st.o_next[p] = n
    else:
        st.l_head[li] = n
    if n >= 0:
        st.o_prev[n] = p
    else:
        st.l_tail[li] = p
    st.l_count[li] -= 1
    st.l_qty[li] -= st.o_leaves[o]
    _touch(st, li)
    if st.l_count[li] == 0:
        if s == 0:
            if lvl == st.meta[M_BEST_BID]:
                st.meta[M_BEST_BID] = _next_bid(st, lvl - 1)
        elif lvl == st.meta[M_BEST_ASK]:
            st.meta[M_BEST_ASK] = _next_ask(st, lvl + 1)


@njit(cache=True)
def _alloc(st, order_id, client, side, price, qty, leaves, stp, flags):
    top = st.meta[M_FREE_TOP] - 1
    st.meta[M_FREE_TOP] = top
    o = st.free[top]
    st.o_id[o] = order_id
    st.o_client[o] = client
    st.o_side[o] = side
    st.o_price[o] = price
    st.o_qty[o] = qty
    st.o_leaves[o] = leaves
    st.o_stp[o] = stp
    st.o_flags[o] = flags
    _h_insert(st, order_id, o)
    st.meta[M_LIVE_BID + side - 1] += 1
    return o


@njit(cache=True)
def _release(st, o):
    _h_delete(st, st.o_id[o])
    st.meta[M_LIVE_BID + st.o_side[o] - 1] -= 1
    st.free[st.meta[M_FREE_TOP]] = o
    st.meta[M_FREE_TOP] += 1


# ---------------------------------------------------------------- events


@njit(cache=True)
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


@njit(cache=True)
def _reject(st, ev, n, c, code):
    return _emit(
        st, ev, n, c, EV_REJECTED, c.order_id, 0, c.price, c.qty, 0, 0, c.client, 0, c.side, code
    )


@njit(cache=True)
def _cancel_event(st, ev, n, c, o, qty, reason):
    return _emit(
        st,
        ev,
        n,
        c,
        EV_CANCELLED,
        st.o_id[o],
        0,
        st.o_price[o],
        qty,
        0,
        0,
        st.o_client[o],
        0,
        st.o_side[o],
        reason,
    )


@njit(cache=True)
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
            st.l_qty[li],
            st.l_count[li],
            0,
            0,
            0,
            s + 1,
            0,
        )
    return n


# ---------------------------------------------------------------- matching


@njit(cache=True, inline="always")
def _crosses(s, level_price, limit, market):
    if market:
        return True
    if s == 0:
        return level_price <= limit
    return level_price >= limit


@njit(cache=True)
def _fillable(st, s, limit, market, client, stp, qty):
    """True when an aggressor of side index ``s`` could fill ``qty`` now (FOK)."""
    levels = st.meta[M_LEVELS]
    opp = 1 - s
    lvl = st.meta[M_BEST_ASK] if s == 0 else st.meta[M_BEST_BID]
    avail = 0
    while lvl >= 0 and lvl < levels:
        li = opp * levels + lvl
        if st.l_count[li] > 0:
            if not _crosses(s, _price_of(st, lvl), limit, market):
                return False
            o = st.l_head[li]
            while o >= 0:
                if stp != STP_NONE and st.o_client[o] == client:
                    return False
                avail += st.o_leaves[o]
                if avail >= qty:
                    return True
                o = st.o_next[o]
        lvl = lvl + 1 if s == 0 else lvl - 1
    return False


@njit(cache=True)
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
        o = st.l_head[li]
        while o >= 0 and leaves > 0:
            nxt = st.o_next[o]
            mleaves = st.o_leaves[o]
            if stp != STP_NONE and st.o_client[o] == client:
                if stp == STP_CANCEL_OLDEST:
                    n = _cancel_event(st, ev, n, c, o, mleaves, CXL_STP)
                    _unlink(st, o)
                    _release(st, o)
                elif stp == STP_DECREMENT:
                    d = min(leaves, mleaves)
                    if d == mleaves:
                        n = _cancel_event(st, ev, n, c, o, d, CXL_STP)
                        _unlink(st, o)
                        _release(st, o)
                    else:
                        st.o_leaves[o] = mleaves - d
                        st.o_qty[o] -= d
                        st.l_qty[li] -= d
                        _touch(st, li)
                    leaves -= d
                    tqty -= d
                    if leaves == 0:
                        n = _emit(
                            st,
                            ev,
                            n,
                            c,
                            EV_CANCELLED,
                            order_id,
                            0,
                            limit,
                            d,
                            0,
                            0,
                            client,
                            0,
                            side,
                            CXL_STP,
                        )
                        return n, tqty, 0, True
                else:
                    if stp == STP_CANCEL_BOTH:
                        n = _cancel_event(st, ev, n, c, o, mleaves, CXL_STP)
                        _unlink(st, o)
                        _release(st, o)
                    n = _emit(
                        st,
                        ev,
                        n,
                        c,
                        EV_CANCELLED,
                        order_id,
                        0,
                        limit,
                        leaves,
                        0,
                        0,
                        client,
                        0,
                        side,
                        CXL_STP,
                    )
                    return n, tqty, 0, True
            else:
                q = min(leaves, mleaves)
                leaves -= q
                mleaves -= q
                n = _emit(
                    st,
                    ev,
                    n,
                    c,
                    EV_TRADE,
                    order_id,
                    st.o_id[o],
                    lprice,
                    q,
                    leaves,
                    mleaves,
                    client,
                    st.o_client[o],
                    side,
                    0,
                )
                if mleaves == 0:
                    # o_leaves still holds q, so _unlink takes it out of the level total
                    _unlink(st, o)
                    _release(st, o)
                else:
                    st.o_leaves[o] = mleaves
                    st.l_qty[li] -= q
                    _touch(st, li)
            o = nxt
    return n, tqty, leaves, False


# ---------------------------------------------------------------- commands


@njit(cache=True)
def _bad_new(c):
    if c.side != SIDE_BUY and c.side != SIDE_SELL:
        return True
    if c.tif > TIF_FOK or c.ord_type > TYPE_MARKET or c.stp > STP_DECREMENT:
        return True
    if c.flags & ~FLAG_POST_ONLY:
        return True
    return c.ord_type == TYPE_MARKET and c.flags & FLAG_POST_ONLY != 0


@njit(cache=True)
def _qty_code(st, qty):
    if qty <= 0:
        return REJ_QTY
    if qty > st.meta[M_MAX_QTY]:
        return REJ_QTY_MAX
    if qty % st.meta[M_LOT] != 0:
        return REJ_LOT
    return 0


@njit(cache=True)
def _price_code(st, price):
    if price < st.meta[M_MIN_PRICE] or price > st.meta[M_MAX_PRICE]:
        return REJ_PRICE_BAND
    if price % st.meta[M_TICK] != 0:
        return REJ_TICK
    return 0


@njit(cache=True)
def _would_take(st, s, price):
    if s == 0:
        b = st.meta[M_BEST_ASK]
        return b >= 0 and _price_of(st, b) <= price
    b = st.meta[M_BEST_BID]
    return b >= 0 and _price_of(st, b) >= price


@njit(cache=True)
def _new(st, ev, n, c):
    if _bad_new(c):
        return _reject(st, ev, n, c, REJ_BAD_COMMAND)
    code = _qty_code(st, c.qty)
    market = c.ord_type == TYPE_MARKET
    if code == 0 and not market:
        code = _price_code(st, c.price)
    if code != 0:
        return _reject(st, ev, n, c, code)
    if h_find(st, c.order_id) >= 0:
        return _reject(st, ev, n, c, REJ_DUPLICATE_ID)
    s = c.side - 1
    if c.flags & FLAG_POST_ONLY and _would_take(st, s, c.price):
        return _reject(st, ev, n, c, REJ_POST_ONLY)
    rests = not market and c.tif == TIF_GTC
    if rests and st.meta[M_FREE_TOP] == 0:
        return _reject(st, ev, n, c, REJ_BOOK_FULL)
    n = _emit(
        st, ev, n, c, EV_ACCEPTED, c.order_id, 0, c.price, c.qty, c.qty, 0, c.client, 0, c.side, 0
    )
    if c.tif == TIF_FOK and not _fillable(st, s, c.price, market, c.client, c.stp, c.qty):
        return _emit(
            st,
            ev,
            n,
            c,
            EV_CANCELLED,
            c.order_id,
            0,
            c.price,
            c.qty,
            0,
            0,
            c.client,
            0,
            c.side,
            CXL_FOK,
        )
    n, tqty, leaves, killed = _match(
        st, ev, n, c, c.order_id, c.client, c.side, c.price, market, c.stp, c.qty, c.qty
    )
    if killed or leaves == 0:
        return n
    if rests:
        o = _alloc(st, c.order_id, c.client, c.side, c.price, tqty, leaves, c.stp, c.flags)
        _link_tail(st, o, s, _level_of(st, c.price))
        return n
    return _emit(
        st,
        ev,
        n,
        c,
        EV_CANCELLED,
        c.order_id,
        0,
        c.price,
        leaves,
        0,
        0,
        c.client,
        0,
        c.side,
        CXL_IOC,
    )


@njit(cache=True)
def _owned_slot(st, c):
    o = h_find(st, c.order_id)
    if o < 0 or st.o_client[o] != c.client:
        return -1
    return o


@njit(cache=True)
def _cancel(st, ev, n, c):
    o = _owned_slot(st, c)
    if o < 0:
        return _reject(st, ev, n, c, REJ_NOT_FOUND)
    n = _cancel_event(st, ev, n, c, o, st.o_leaves[o], CXL_USER)
    _unlink(st, o)
    _release(st, o)
    return n


@njit(cache=True)
def _replace(st, ev, n, c):
    o = _owned_slot(st, c)
    if o < 0:
        return _reject(st, ev, n, c, REJ_NOT_FOUND)
    code = _qty_code(st, c.qty)
    if code == 0:
        code = _price_code(st, c.price)
    side = st.o_side[o]
    s = side - 1
    if code == 0 and st.o_flags[o] & FLAG_POST_ONLY and _would_take(st, s, c.price):
        code = REJ_POST_ONLY
    if code != 0:
        return _reject(st, ev, n, c, code)
    old_leaves = st.o_leaves[o]
    new_leaves = c.qty - (st.o_qty[o] - old_leaves)
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
    if c.price == st.o_price[o] and new_leaves <= old_leaves:
        if new_leaves != old_leaves:
            li = s * st.meta[M_LEVELS] + _level_of(st, c.price)
            st.l_qty[li] -= old_leaves - new_leaves
            _touch(st, li)
            st.o_leaves[o] = new_leaves
        st.o_qty[o] = c.qty
        return n
    _unlink(st, o)
    n, tqty, leaves, killed = _match(
        st, ev, n, c, c.order_id, c.client, side, c.price, False, st.o_stp[o], c.qty, new_leaves
    )
    if killed or leaves == 0:
        st.o_leaves[o] = 0
        _release(st, o)
        return n
    st.o_price[o] = c.price
    st.o_qty[o] = tqty
    st.o_leaves[o] = leaves
    _link_tail(st, o, s, _level_of(st, c.price))
    return n


@njit(cache=True)
def _mass_cancel(st, ev, n, c):
    levels = st.meta[M_LEVELS]
    for s in range(2):
        lvl = st.meta[M_BEST_BID] if s == 0 else st.meta[M_BEST_ASK]
        step = -1 if s == 0 else 1
        while 0 <= lvl < levels and st.meta[M_LIVE_BID + s] > 0:
            o = st.l_head[s * levels + lvl]
            while o >= 0:
                nxt = st.o_next[o]
                if st.o_client[o] == c.client:
                    n = _cancel_event(st, ev, n, c, o, st.o_leaves[o], CXL_USER)
                    _unlink(st, o)
                    _release(st, o)
                o = nxt
            lvl += step
    return n


@njit(cache=True)
def _reserve(st, c):
    """Events the command can write at most (it must fit before it starts)."""
    if c.kind == CMD_NEW or c.kind == CMD_REPLACE:
        # Each resting order the aggressor meets costs one trade or cancel event,
        # and maybe one level; each meeting takes at least a lot off the
        # aggressor, except STP cancel-oldest, which can meet every own order.
        side = c.side
        stp = c.stp
        if c.kind == CMD_REPLACE:
            o = h_find(st, c.order_id)
            if o < 0:
                return 4
            side = st.o_side[o]
            stp = st.o_stp[o]
        bound = st.meta[M_LIVE_ASK] if side == SIDE_BUY else st.meta[M_LIVE_BID]
        if stp != STP_CANCEL_OLDEST and c.qty > 0:
            bound = min(bound, c.qty // st.meta[M_LOT] + 1)
        return 2 * bound + 8
    if c.kind == CMD_MASS_CANCEL:
        return 2 * (st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK]) + 4
    return 4


@njit(cache=True)
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
        need = _reserve(st, c)
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
        else:
            n = _reject(st, ev, n, c, REJ_BAD_COMMAND)
        n = _emit_depth(st, ev, n, c)
        st.meta[M_LAST_SEQ] = c.seq
    return cmds.shape[0] - start, n, 0


# ---------------------------------------------------------------- queries


@njit(cache=True)
def canonical_rows(st):
    """Resting orders as int64 rows, see ``exchange.statehash``."""
    levels = st.meta[M_LEVELS]
    out = np.empty((st.meta[M_LIVE_BID] + st.meta[M_LIVE_ASK], 8), np.int64)
    r = 0
    for s in range(2):
        lvl = st.meta[M_BEST_BID] if s == 0 else st.meta[M_BEST_ASK]
        step = -1 if s == 0 else 1
        while 0 <= lvl < levels and r < out.shape[0]:
            o = st.l_head[s * levels + lvl]
            while o >= 0:
                out[r, 0] = st.o_side[o]
                out[r, 1] = st.o_price[o]
                out[r, 2] = st.o_id[o]
                out[r, 3] = st.o_client[o]
                out[r, 4] = st.o_qty[o]
                out[r, 5] = st.o_leaves[o]
                out[r, 6] = st.o_stp[o]
                out[r, 7] = st.o_flags[o]
                r += 1
                o = st.o_next[o]
            lvl += step
            if s == 0 and r >= st.meta[M_LIVE_BID]:
                break
    return out[:r]


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
        if st.l_count[li] > 0:
            out[k, 0] = _price_of(st, lvl)
            out[k, 1] = st.l_qty[li]
            out[k, 2] = st.l_count[li]
            k += 1
        lvl += step
    return out[:k]
