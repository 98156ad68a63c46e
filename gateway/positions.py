"""Positions and P&L per client and instrument, and each client's cash, from fills.

The state is numpy arrays indexed by client row (``gateway.slots``) and
instrument number (``exchange.topology.symbols``); ``apply`` folds a batch of
EVENT records into them with one Numba call. Only TRADE events count, never a
duplicate re-send (EVF_DUPLICATE). Per (client, instrument), ``acct[row, inst]``:

F_POS        net position in quantity units (+ long, - short)
F_COST       cost basis of the open position, signed like it: what the open
             units cost (long) or brought in (short), in price x quantity units
F_REALISED   realised P&L
F_VOLUME     quantity traded, both sides
F_PEAK_LONG  the largest position ever held, and F_PEAK_SHORT the largest short
             (as a positive number): what ``exch journal verify`` holds against
             the position limits

``cash[row]`` is the cash the fills moved: a sale brings px x qty, a purchase
costs it; a client's cash is its starting cash plus that. ``last_px[inst]`` is
the last trade price (0: none yet), and ``marks`` the same with the configured
reference price before the first trade (the price collar's reference).

Average cost is cost / position. A fill that reduces a position realises what
the closed units fetched minus their share of the cost basis, ``basis x closed
// |position|`` in integers (toward zero), so a position closed in full takes its
whole basis with it. Hence, exactly and at every moment, realised P&L = cash
moved by this instrument's fills + cost basis: for a flat position the
realised P&L is the cash it made. Unrealised P&L at a mark price m is
``position x m - cost``.

``replay`` rebuilds the state from journal batches (the journals are the source
of truth: ``exch positions`` starts there). The gateway never reads a journal: it
keeps the state in its checkpoint (``export``/``restore``, ``gateway.store``) and
folds in the trades its shards serve it after that.
"""

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from numba import njit

from exchange.records import EV_TRADE, EVF_DUPLICATE, SIDE_BUY
from gateway.slots import Slots, grown

F_POS = 0
F_COST = 1
F_REALISED = 2
F_VOLUME = 3
F_PEAK_LONG = 4
F_PEAK_SHORT = 5
F_COUNT = 6
REPLAY_CHUNK = 1 << 16  # trades gathered across journal batches per Numba call


class Standing(NamedTuple):
    """One client's position in one instrument."""

    sym: str
    pos: int
    cost: int
    realised: int
    unrealised: int  # at ``mark``
    mark: int  # the last trade price, before any: the instrument's ref_price
    volume: int


@njit(cache=True)
def _fill(acct, cash, row, inst, px, d):
    """Client ``row`` buys (d > 0) or sells (-d) |d| at ``px``."""
    a = acct[row, inst]
    cash[row] -= d * px
    q = d if d > 0 else -d
    a[F_VOLUME] += q
    pos = a[F_POS]
    if pos == 0 or (pos > 0) == (d > 0):
        a[F_COST] += d * px
        pos += d
    else:
        held = pos if pos > 0 else -pos
        closing = q if q < held else held
        basis = a[F_COST] if a[F_COST] >= 0 else -a[F_COST]
        # basis * closing // held without the product (it may not fit in 64 bits)
        share = (basis // held) * closing + (basis % held) * closing // held
        removed = share if a[F_COST] >= 0 else -share
        sign = 1 if pos > 0 else -1
        a[F_REALISED] += sign * closing * px - removed
        a[F_COST] -= removed
        pos -= sign * closing
        rest = q - closing
        if rest > 0:  # the fill went through flat: the rest opens the other way
            step = rest if d > 0 else -rest
            a[F_COST] += step * px
            pos += step
    a[F_POS] = pos
    if pos > a[F_PEAK_LONG]:
        a[F_PEAK_LONG] = pos
    if -pos > a[F_PEAK_SHORT]:
        a[F_PEAK_SHORT] = -pos


@njit(cache=True)
def apply_trades(acct, cash, last_px, buyer, seller, inst, price, qty):
    """Trades in order: ``buyer``/``seller`` rows, instrument numbers, prices, quantities."""
    for k in range(qty.shape[0]):
        _fill(acct, cash, buyer[k], inst[k], price[k], qty[k])
        _fill(acct, cash, seller[k], inst[k], price[k], -qty[k])
        last_px[inst[k]] = price[k]


def trades_of(events: np.ndarray) -> np.ndarray:
    """The TRADE events of a batch that are history (not duplicate re-sends)."""
    return events[(events["kind"] == EV_TRADE) & (events["flags"] & EVF_DUPLICATE == 0)]


class Positions:
    def __init__(self, symbols: list[str], ref_prices: list[int], slots: Slots | None = None):
        if len(symbols) != len(ref_prices):
            raise ValueError(f"{len(symbols)} symbols but {len(ref_prices)} reference prices")
        self.symbols = list(symbols)
        self.ref_prices = np.array(ref_prices, np.int64)
        self.slots = slots if slots is not None else Slots()
        n = len(symbols)
        self.acct = np.zeros((0, n, F_COUNT), np.int64)
        self.cash = np.zeros(0, np.int64)
        self.last_px = np.zeros(n, np.int64)
        self.marks = list(ref_prices)  # ``mark`` of each instrument, for the price collar

    def fit(self) -> None:
        """Room for every row of the slots (the risk checks read positions by row)."""
        rows = len(self.slots)
        self.acct = grown(self.acct, rows)
        self.cash = grown(self.cash, rows)

    def apply(self, events: np.ndarray, offset: int = 0) -> int:
        """Fold a batch of one shard's EVENT records in; ``offset`` is the number of the
        shard's first instrument. Returns the number of trades taken."""
        if not (events["kind"] == EV_TRADE).any():  # most batches: cheap to say so
            return 0
        trades = trades_of(events)
        if len(trades):
            self._apply_trades(trades, offset)
        return len(trades)

    def _apply_trades(self, trades: np.ndarray, offset: int) -> None:
        inst = trades["instrument"].astype(np.int64) + offset
        if len(trades) and not 0 <= inst.min() <= inst.max() < len(self.symbols):
            raise ValueError(
                f"a trade of instrument number {int(inst.max())} or {int(inst.min())}: "
                f"there are {len(self.symbols)} (check the shard offset {offset})"
            )
        buys = trades["side"] == SIDE_BUY
        taker = self.slots.rows(trades["client"])
        maker = self.slots.rows(trades["other_client"])
        self.fit()
        apply_trades(
            self.acct,
            self.cash,
            self.last_px,
            np.where(buys, taker, maker),
            np.where(buys, maker, taker),
            inst,
            trades["price"].astype(np.int64),
            trades["qty"].astype(np.int64),
        )
        self.marks = np.where(self.last_px, self.last_px, self.ref_prices).tolist()

    def replay(self, batches: Iterable[tuple[np.ndarray, np.ndarray]], offset: int = 0) -> int:
        """Fold in every trade of one shard's journal batches ((commands, events) pairs,
        in order); returns how many. Trades are gathered across batches, so a journal of
        many small batches costs few Numba calls."""
        pending, held, total = [], 0, 0
        for _, events in batches:
            trades = trades_of(events)
            if len(trades):
                pending.append(trades)
                held += len(trades)
            if held >= REPLAY_CHUNK:
                self._apply_trades(np.concatenate(pending), offset)
                total += held
                pending, held = [], 0
        if pending:
            self._apply_trades(np.concatenate(pending), offset)
            total += held
        return total

    def export(self) -> tuple[list[int], bytes, bytes, bytes]:
        """The state as (client ids in row order, acct, cash, last_px bytes), for the
        gateway's checkpoint (``gateway.store``)."""
        rows = len(self.slots)
        self.fit()
        return (
            list(self.slots.ids),
            self.acct[:rows].tobytes(),
            self.cash[:rows].tobytes(),
            self.last_px.tobytes(),
        )

    def restore(self, clients: list[int], acct: bytes, cash: bytes, last_px: bytes) -> None:
        """Start from an ``export`` (before any client has a row)."""
        if len(self.slots):
            raise ValueError("restore needs positions with no client rows yet")
        for client in clients:
            self.slots.row(client)
        self.fit()
        n = len(clients)
        self.acct[:n] = np.frombuffer(acct, np.int64).reshape(n, len(self.symbols), F_COUNT)
        self.cash[:n] = np.frombuffer(cash, np.int64)
        self.last_px[:] = np.frombuffer(last_px, np.int64)
        self.marks = np.where(self.last_px, self.last_px, self.ref_prices).tolist()

    # ------------------------------------------------------------ queries

    def mark(self, inst: int) -> int:
        """The last trade price, or the reference price before the first trade."""
        return self.marks[inst]

    def position(self, client: int, inst: int) -> int:
        row = self.slots.find(client)
        return 0 if row is None or row >= len(self.acct) else int(self.acct[row, inst, F_POS])

    def cash_moved(self, client: int) -> int:
        row = self.slots.find(client)
        return 0 if row is None or row >= len(self.cash) else int(self.cash[row])

    def standing(self, client: int, inst: int) -> Standing:
        row = self.slots.find(client)
        if row is None or row >= len(self.acct):
            pos = cost = realised = volume = 0
        else:
            pos, cost, realised, volume = self.acct[row, inst, :F_PEAK_LONG].tolist()
        mark = self.mark(inst)
        return Standing(self.symbols[inst], pos, cost, realised, pos * mark - cost, mark, volume)

    def traded(self, client: int) -> list[int]:
        """The instruments the client ever traded."""
        row = self.slots.find(client)
        if row is None or row >= len(self.acct):
            return []
        return np.flatnonzero(self.acct[row, :, F_VOLUME]).tolist()
