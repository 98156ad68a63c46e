"""Order state rows: the final state, after a batch, of every order the batch touched.

The journal keeps an ``ORDER_DTYPE`` row per order so that tools and the gateway
can answer "what happened to my order" without replaying (each batch logs the
rows it changed; ``exchange.journal`` merges the log into a table, with
``PendingRows`` as the writer's index of the log). The rows are derived from
the batch's events alone, in event order:

ACCEPTED      the whole row (price, qty, leaves = qty, idem key from the event), live
REJECTED      of a NEW command: a rejected row built from the command (leaves 0);
              of a CANCEL / REPLACE, or REJ_DUPLICATE_ID: nothing (the order named
              in the event is someone else's live order, left untouched)
TRADE         the taker's leaves (``leaves``), the maker's leaves (``other_leaves``);
              filled at 0, else live
CANCELLED     leaves from the event, cancelled
REPLACED      price, qty and leaves from the event, live
DEPTH         nothing

An order that the batch touched without creating (a resting maker, a cancel)
keeps the total qty and idem key of its previous row: ``derive`` marks those
rows and ``merge_prior`` fills them in from the rows already journaled.

A CANCELLED with leaves > 0 (an STP decrement's partial cancel) keeps the order
live and takes its qty off the order's total. TRIGGERED changes nothing (the
stop was live and stays live); a triggered stop whose only events in a batch
are its trades as the taker keeps the price of its previous row; so does every
order whose only events in a batch are trades (a reopening auction trades the
resting orders at its own price, not theirs).
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from exchange.records import (
    CMD_NEW,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_REPLACED,
    EV_TRADE,
    REJ_DUPLICATE_ID,
)

# an order id is its shard's index << ORDER_ID_SHARD_SHIFT | the seq of its NEW
ORDER_ID_SHARD_SHIFT = 40  # 2**40 sequence numbers per shard before ids would collide
ORDER_ID_SEQ_MASK = (1 << ORDER_ID_SHARD_SHIFT) - 1
ST_LIVE = 1
ST_FILLED = 2
ST_CANCELLED = 3
ST_REJECTED = 4
STATUS_NAMES = {
    ST_LIVE: "live",
    ST_FILLED: "filled",
    ST_CANCELLED: "cancelled",
    ST_REJECTED: "rejected",
}

# what a derived row still needs from the order's previous row
HAS_ALL = 0
NEEDS_QTY_AND_KEY = 1
NEEDS_KEY = 2  # a REPLACED in the batch already gave the new total qty

_ROLE_OWN = 0  # the event's order_id
_ROLE_MAKER = 1  # the event's other_id (TRADE)

_NO_ID = np.iinfo(np.int64).min  # marks a free slot of the id index
_ID_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: odd, so ids map 1:1 mod 2**k

ORDER_DTYPE = np.dtype(
    [
        ("order_id", "<i8"),
        ("price", "<i8"),
        ("qty", "<i8"),
        ("leaves", "<i8"),
        ("idem_key", "<u8"),
        ("last_seq", "<i8"),
        ("client", "<u4"),
        ("instrument", "<u2"),
        ("side", "u1"),
        ("status", "u1"),
    ]
)
assert ORDER_DTYPE.itemsize == 56


class OrderState(NamedTuple):
    order_id: int
    instrument: int
    client: int
    side: int
    price: int
    qty: int
    leaves: int
    status: str
    idem_key: int
    last_seq: int

    @classmethod
    def from_row(cls, row) -> "OrderState":
        return cls(
            order_id=int(row["order_id"]),
            instrument=int(row["instrument"]),
            client=int(row["client"]),
            side=int(row["side"]),
            price=int(row["price"]),
            qty=int(row["qty"]),
            leaves=int(row["leaves"]),
            status=STATUS_NAMES[int(row["status"])],
            idem_key=int(row["idem_key"]),
            last_seq=int(row["last_seq"]),
        )


@njit(cache=True)
def _touches(cmds, events, t_oid, t_ev, t_role):
    """List (order id, event index, role) for every event that changes an order."""
    n = 0
    ci = 0
    for i in range(events.shape[0]):
        e = events[i]
        k = e.kind
        if k in (EV_ACCEPTED, EV_CANCELLED, EV_REPLACED):
            t_oid[n] = e.order_id
            t_ev[n] = i
            t_role[n] = _ROLE_OWN
            n += 1
        elif k == EV_TRADE:
            t_oid[n] = e.order_id
            t_ev[n] = i
            t_role[n] = _ROLE_OWN
            t_oid[n + 1] = e.other_id
            t_ev[n + 1] = i
            t_role[n + 1] = _ROLE_MAKER
            n += 2
        elif k == EV_REJECTED and e.code != REJ_DUPLICATE_ID:
            # events come in seq order, so the command pointer only moves forward
            while cmds[ci].seq < e.seq:
                ci += 1
            if cmds[ci].kind == CMD_NEW:
                t_oid[n] = cmds[ci].order_id
                t_ev[n] = i
                t_role[n] = _ROLE_OWN
                n += 1
    return n


@njit(cache=True)
def _apply(cmds, e, role, r, need):
    """Fold one event into order row ``r``; returns the row's new need flag."""
    r.last_seq = e.seq
    r.instrument = e.instrument
    k = e.kind
    if k == EV_ACCEPTED:
        r.price = e.price
        r.qty = e.qty
        r.leaves = e.leaves
        r.idem_key = e.idem_key
        r.client = e.client
        r.side = e.side
        r.status = ST_LIVE
        return HAS_ALL
    if k == EV_REJECTED:
        c = cmds[np.searchsorted(cmds.seq, e.seq)]
        r.price = c.price
        r.qty = c.qty
        r.leaves = 0
        r.idem_key = c.idem_key
        r.client = c.client
        r.side = c.side
        r.status = ST_REJECTED
        return HAS_ALL
    if k == EV_TRADE:
        if role == _ROLE_MAKER:
            # no price from a trade: a reopening auction's prints at its own price, not
            # the resting orders' (a row with none takes its previous row's)
            r.leaves = e.other_leaves
            r.client = e.other_client
            r.side = 3 - e.side
        else:
            r.leaves = e.leaves
            r.client = e.client
            r.side = e.side
        r.status = ST_FILLED if r.leaves == 0 else ST_LIVE
        return need
    if k == EV_CANCELLED:
        r.price = e.price
        r.leaves = e.leaves
        r.client = e.client
        r.side = e.side
        if e.leaves > 0:
            # an STP decrement's partial cancel: the order lives on with a
            # smaller total (while the total is not known yet this builds up
            # the delta that merge_prior adds to the previous row's)
            r.qty -= e.qty
            r.status = ST_LIVE
        else:
            r.status = ST_CANCELLED
        return need
    # EV_REPLACED
    r.price = e.price
    r.qty = e.qty
    r.leaves = e.leaves
    r.client = e.client
    r.side = e.side
    r.status = ST_LIVE
    return NEEDS_KEY if need == NEEDS_QTY_AND_KEY else need


def zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """``np.zeros(n, dtype)`` for a structured dtype, several times faster on small n
    (numpy's own goes through the fields)."""
    return np.frombuffer(bytearray(n * dtype.itemsize), dtype)


@njit(cache=True)
def _derive(cmds, events, out, need):
    """Fill ``out`` and ``need``; returns (rows, how many of them need a previous row)."""
    m = 2 * events.shape[0]
    t_oid = np.empty(m, np.int64)
    t_ev = np.empty(m, np.int64)
    t_role = np.empty(m, np.uint8)
    n = _touches(cmds, events, t_oid, t_ev, t_role)
    # stable: an order's touches stay in event order
    order = np.argsort(t_oid[:n], kind="mergesort")
    rows = 0
    needing = 0
    j = 0
    while j < n:
        oid = t_oid[order[j]]
        r = out[rows]
        r.order_id = oid
        flag = NEEDS_QTY_AND_KEY
        while j < n and t_oid[order[j]] == oid:
            t = order[j]
            flag = _apply(cmds, events[t_ev[t]], t_role[t], r, flag)
            j += 1
        need[rows] = flag
        if flag != HAS_ALL:
            needing += 1
        rows += 1
    return rows, needing


def derive(cmds: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows (sorted by order id) for every order the batch changed, their need flags,
    and how many rows need their previous row (``merge_prior``).

    ``cmds`` are the batch's commands in seq order, ``events`` exactly their
    events in (seq, idx) order (the journal checks both before calling).
    """
    out = zeros(2 * len(events), ORDER_DTYPE)
    need = np.zeros(2 * len(events), np.uint8)
    n, needing = _derive(cmds, events, out, need)
    return out[:n], need[:n], needing


@njit(cache=True)
def _merge_one(r, flag, prior):
    r.idem_key = prior.idem_key
    if flag == NEEDS_QTY_AND_KEY:
        # such a row holds the batch's decrements (0 or less) in qty until now
        r.qty += prior.qty
        if r.price == 0:
            # no event of the batch gave its price: the order only traded (a trade
            # carries no order's price: a reopening auction's is its own; a cancel
            # and a replace carry the order's)
            r.price = prior.price


@njit(cache=True)
def _merge_prior(rows, need, idx, prior):
    for j in range(idx.shape[0]):
        _merge_one(rows[idx[j]], need[idx[j]], prior[j])


def merge_prior(rows: np.ndarray, need: np.ndarray, idx: np.ndarray, prior: np.ndarray) -> None:
    """Fill in, in place, what ``rows[idx]`` (flagged in ``need``) keep from their
    previous rows ``prior`` (in ``idx`` order)."""
    _merge_prior(rows, need, np.ascontiguousarray(idx, np.int64), prior)


@njit(cache=True)
def _index_put(keys, vals, ids, first):
    """Index ``ids[i]`` at position ``first + i`` (later wins); returns how many ids were new."""
    mask = keys.shape[0] - 1
    new = 0
    for i in range(ids.shape[0]):
        k = ids[i]
        h = (k * _ID_MUL) & mask
        while keys[h] != k and keys[h] != _NO_ID:
            h = (h + 1) & mask
        if keys[h] == _NO_ID:
            keys[h] = k
            new += 1
        vals[h] = first + i
    return new


@njit(cache=True)
def _append(log, n, keys, vals, rows):
    """Rows into the log after its first ``n``, each indexed; returns how many ids were new."""
    for i in range(rows.shape[0]):
        log[n + i] = rows[i]
    return _index_put(keys, vals, rows.order_id, n)


@njit(cache=True)
def _index_at(keys, vals, k):
    """Position of id ``k``'s latest row, -1 if it has none."""
    mask = keys.shape[0] - 1
    h = (k * _ID_MUL) & mask
    while keys[h] != k and keys[h] != _NO_ID:
        h = (h + 1) & mask
    return vals[h] if keys[h] == k else -1


@njit(cache=True)
def _merge_logged(rows, need, log, keys, vals, missing):
    """Merge the rows that need a previous row with the log's; returns how many are
    not in the log (their indices in ``missing``)."""
    m = 0
    for i in range(rows.shape[0]):
        if need[i] == HAS_ALL:
            continue
        at = _index_at(keys, vals, rows[i].order_id)
        if at < 0:
            missing[m] = i
            m += 1
        else:
            _merge_one(rows[i], need[i], log[at])
    return m


def take_rows(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``rows[idx]`` for ORDER_DTYPE rows, as whole 56-byte records.

    Fancy indexing a structured array copies field by field, ~20 times slower.
    """
    words = rows.view(np.int64).reshape(-1, ORDER_DTYPE.itemsize // 8)
    return np.take(words, idx, axis=0).view(ORDER_DTYPE).reshape(-1)


class PendingRows:
    """The writer's index of order rows logged since the last merge into the orders table.

    Rows go in batch after batch into one numpy buffer; an open-addressing
    index (order id -> position of its latest row, at most half full) finds
    the latest row of an order without a Python object per order.
    """

    def __init__(self):
        self._rows = np.zeros(1024, ORDER_DTYPE)
        self._n = 0
        self._keys = np.full(4096, _NO_ID, np.int64)
        self._vals = np.zeros(4096, np.int64)
        self._ids = 0
        self.batches = 0

    @property
    def rows(self) -> int:
        """Rows logged (an order touched in several batches counts once per batch)."""
        return self._n

    def add(self, rows: np.ndarray) -> None:
        end = self._n + len(rows)
        if end > len(self._rows):
            grown = zeros(max(end, 2 * len(self._rows)), ORDER_DTYPE)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
        if 2 * (self._ids + len(rows)) > len(self._keys):
            size = len(self._keys)
            while 2 * (self._ids + len(rows)) > size:
                size *= 2
            self._keys = np.full(size, _NO_ID, np.int64)
            self._vals = np.zeros(size, np.int64)
            self._ids = _index_put(self._keys, self._vals, self._rows["order_id"][: self._n], 0)
        self._ids += _append(self._rows, self._n, self._keys, self._vals, rows)
        self._n = end
        self.batches += 1

    def merge_into(self, rows: np.ndarray, need: np.ndarray) -> np.ndarray:
        """``merge_prior`` of ``rows`` with the latest logged rows; returns the indices
        of the rows that need a previous row the log does not have."""
        missing = np.empty(len(rows), np.int64)
        m = _merge_logged(rows, need, self._rows, self._keys, self._vals, missing)
        return missing[:m]

    def find(self, order_id: int):
        """The latest logged row of the order (a record of the buffer), None if none."""
        at = _index_at(self._keys, self._vals, order_id)
        return None if at < 0 else self._rows[at]

    def latest(self, newer: np.ndarray) -> np.ndarray:
        """The latest row of every order, ``newer`` rows winning, sorted by order id."""
        # the index already knows each order's latest logged row
        rows = np.concatenate([take_rows(self._rows, self._vals[self._keys != _NO_ID]), newer])
        rows = take_rows(rows, np.argsort(rows["order_id"], kind="stable"))
        ids = rows["order_id"]
        # of an id there twice, the second is from ``newer``
        last = np.ones(len(ids), bool)
        last[:-1] = ids[1:] != ids[:-1]
        return take_rows(rows, np.flatnonzero(last))

    def clear(self) -> None:
        self._n = 0
        self._keys.fill(_NO_ID)
        self._ids = 0
        self.batches = 0
