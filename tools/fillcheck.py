"""Fills against order quantities, event by event: the Numba half of ``exch journal verify``.

A journal's events are folded, batch after batch, into a table of the live
orders (order id -> total qty, filled qty). Every event that touches an order
is checked against it:

- ACCEPTED creates an order with leaves = qty; its id must not be live already;
- a TRADE fills both the taker and the maker: both must be live, the traded qty
  positive, and after it, for each of them, filled <= qty (no overfill) and the
  event's leaves = qty - filled; an order at 0 leaves the table;
- a CANCELLED must name a live order; a full cancel removes exactly the open qty,
  a partial one (an STP decrement, leaves > 0) takes its qty off the order's total;
- a REPLACED sets the new total qty; its leaves must be qty - filled, above 0.

So an order is never filled beyond its quantity, never filled once it is gone,
and what every event says is left agrees with the fills before it.

The table is ``exchange.ordertable``'s (open addressing, linear probing,
backward-shift deletion) with columns id, qty, filled; ``fit`` grows it before
a batch so it never runs past half full. Problems are written to a ``(n, 3)`` array of
(P_* code, event index in the batch, order id); ``scan`` counts them all and
stores as many as fit.
"""

import numpy as np
from numba import njit

from exchange import ordertable
from exchange.ordertable import find, insert, remove
from exchange.records import EV_ACCEPTED, EV_CANCELLED, EV_REPLACED, EV_TRADE

T_ID = 0  # ordertable's id column
T_QTY = 1  # total quantity (filled + open), as the last ACCEPTED/REPLACED/decrement set it
T_FILLED = 2
T_COLS = 3

P_LIVE_ALREADY = 1  # ACCEPTED for an order id that is live
P_NOT_LIVE = 2  # a TRADE, CANCELLED or REPLACED names an order that is not live
P_OVERFILL = 3  # fills above the order's quantity
P_LEAVES = 4  # the event's leaves disagree with qty - filled
P_TRADE_QTY = 5  # a trade of qty <= 0
P_CANCEL_QTY = 6  # a full cancel removed other than the open qty
PROBLEM_NAMES = {
    P_LIVE_ALREADY: "accepted an order id that is live already",
    P_NOT_LIVE: "names an order that is not live (never accepted, or already filled/cancelled)",
    P_OVERFILL: "fills exceed the order's quantity",
    P_LEAVES: "the leaves in the event disagree with qty - filled",
    P_TRADE_QTY: "a trade of zero or negative quantity",
    P_CANCEL_QTY: "a full cancel removed other than the order's open quantity",
}

# scan's totals (out array)
S_TRADES = 0
S_TRADED_QTY = 1
S_ACCEPTED = 2
S_LIVE = 3
S_PROBLEMS = 4
S_SIZE = 5


def new_table() -> np.ndarray:
    return ordertable.new_table(T_COLS)


def fit(table: np.ndarray, live: int, events: np.ndarray) -> np.ndarray:
    """``table``, or a larger copy, with room for every order a batch could add."""
    return ordertable.fit(table, live + int((events["kind"] == EV_ACCEPTED).sum()))


@njit(cache=True)
def _problem(problems, totals, code, at, oid):
    n = totals[S_PROBLEMS]
    if n < problems.shape[0]:
        problems[n, 0] = code
        problems[n, 1] = at
        problems[n, 2] = oid
    totals[S_PROBLEMS] = n + 1


@njit(cache=True)
def _fill(table, problems, totals, at, oid, qty, leaves):
    i = find(table, oid)
    if i < 0:
        _problem(problems, totals, P_NOT_LIVE, at, oid)
        return
    filled = table[i, T_FILLED] + qty
    table[i, T_FILLED] = filled
    if filled > table[i, T_QTY]:
        _problem(problems, totals, P_OVERFILL, at, oid)
    if leaves != table[i, T_QTY] - filled:
        _problem(problems, totals, P_LEAVES, at, oid)
    if leaves <= 0:
        remove(table, i)
        totals[S_LIVE] -= 1


@njit(cache=True)
def scan(table, events, problems, totals):
    """Fold one batch's events into ``table``; counts go to ``totals`` (S_*).

    ``totals[S_PROBLEMS]`` counts every problem; the first ``len(problems)``
    since it was last zeroed are in ``problems``.
    """
    for at in range(events.shape[0]):
        e = events[at]
        k = e.kind
        if k == EV_ACCEPTED:
            totals[S_ACCEPTED] += 1
            if find(table, e.order_id) >= 0:
                _problem(problems, totals, P_LIVE_ALREADY, at, e.order_id)
                continue
            if e.leaves != e.qty:
                _problem(problems, totals, P_LEAVES, at, e.order_id)
            i = insert(table, e.order_id)
            table[i, T_QTY] = e.qty
            table[i, T_FILLED] = 0
            totals[S_LIVE] += 1
        elif k == EV_TRADE:
            totals[S_TRADES] += 1
            totals[S_TRADED_QTY] += e.qty
            if e.qty <= 0:
                _problem(problems, totals, P_TRADE_QTY, at, e.order_id)
            _fill(table, problems, totals, at, e.order_id, e.qty, e.leaves)
            _fill(table, problems, totals, at, e.other_id, e.qty, e.other_leaves)
        elif k == EV_REPLACED:
            i = find(table, e.order_id)
            if i < 0:
                _problem(problems, totals, P_NOT_LIVE, at, e.order_id)
                continue
            table[i, T_QTY] = e.qty
            left = e.qty - table[i, T_FILLED]
            if left <= 0 or e.leaves != left:
                _problem(problems, totals, P_LEAVES, at, e.order_id)
        elif k == EV_CANCELLED:
            i = find(table, e.order_id)
            if i < 0:
                _problem(problems, totals, P_NOT_LIVE, at, e.order_id)
                continue
            if e.leaves > 0:
                # an STP decrement's partial cancel: the order lives on, smaller (never a fill)
                table[i, T_QTY] -= e.qty
                if e.leaves != table[i, T_QTY] - table[i, T_FILLED]:
                    _problem(problems, totals, P_LEAVES, at, e.order_id)
                continue
            if e.leaves < 0:
                _problem(problems, totals, P_LEAVES, at, e.order_id)
            elif e.qty != table[i, T_QTY] - table[i, T_FILLED]:
                _problem(problems, totals, P_CANCEL_QTY, at, e.order_id)
            remove(table, i)
            totals[S_LIVE] -= 1
