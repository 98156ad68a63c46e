"""Pre-trade risk: each client's exposure, and the checks an order must pass before it
is routed to a shard.

The state is the gateway's alone (it owns the client's session; no locks):

- every live order of every client, from the shards' events: an order table
  (``exchange.ordertable``) with its client row, instrument, side, total qty
  and open qty, and per (client row, instrument, side) the open quantity;
- what was sent and not answered yet: ``admit`` holds a NEW that passes, and
  ``hold_replace`` the qty a REPLACE adds, the moment it is queued for a shard;
  ``release`` forgets it when its answer comes (or it was never written); so
  many orders in flight at once are all counted, whichever connection of the client sent them;
- the clients blocked by the kill switch.

``apply`` folds a batch of EVENT records into the order table in one Numba
call: ACCEPTED adds an order, TRADE and CANCELLED take their qty off (an order
at 0 leaves), a partial CANCELLED (an STP decrement) also shrinks its total,
REPLACED sets its new total and open qty. Duplicate re-sends change nothing.

``admit`` (``admit_run`` for a run of NEWs) answers None or a ``Refusal``, first
found, in this order:
kill switch, max order qty, max notional (qty x px; a market order at its
instrument's max_price), price collar (the distance of a limit px from the
reference price: the last trade, before any the configured ref_price), max
open orders (live + in flight, over every instrument), position limit
counting the worst case of open orders: position + open buys + in-flight buys
+ qty <= limit for a buy, position - open sells - in-flight sells - qty >=
-limit for a sell. ``check_replace`` applies the same rules to a Replace
(the position check only when it adds quantity). Rate limits are checked
before, by ``gateway.ratelimit``.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from exchange import ordertable
from exchange.config import Config
from exchange.records import (
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REPLACED,
    EV_TRADE,
    EVF_DUPLICATE,
    SIDE_BUY,
    SIDE_SELL,
)
from exchange.topology import offsets, symbols
from gateway.limits import Limits, LimitTable
from gateway.positions import F_POS, Positions
from gateway.protocol import (
    KILL_SWITCH,
    MAX_NOTIONAL,
    MAX_OPEN_ORDERS,
    MAX_ORDER_QTY,
    MAX_POSITION,
    PRICE_COLLAR,
)
from gateway.slots import Slots, grown

# order table columns (0 is the order id)
T_ROW = 1
T_INST = 2
T_SIDE = 3  # 0 buy, 1 sell
T_QTY = 4  # total: filled + open (an STP decrement shrinks it)
T_LEAVES = 5
T_COLUMNS = 6


class Refusal(NamedTuple):
    code: str  # a stable error code of gateway.protocol.ERROR_CODES
    field: str
    reason: str  # names the limit and the numbers


class Exposure(NamedTuple):
    """What a client has open in one instrument (live + in flight)."""

    buy: int
    sell: int
    orders: int  # live only


@njit(cache=True)
def _take_off(table, open_qty, live, live_at, oid, leaves, qty, shrink):
    """An order's open qty down to ``leaves``; 1 if that took it off the table."""
    i = ordertable.find(table, oid)
    if i < 0:
        return 0
    r, inst, s = table[i, T_ROW], table[i, T_INST], table[i, T_SIDE]
    open_qty[r, inst, s] -= table[i, T_LEAVES] - leaves
    if leaves <= 0:
        ordertable.remove(table, i)
        live[r] -= 1
        live_at[r, inst] -= 1
        return 1
    table[i, T_LEAVES] = leaves
    if shrink:
        table[i, T_QTY] -= qty
    return 0


@njit(cache=True)
def fold(table, open_qty, live, live_at, events, rows, offset, entries):
    """One shard's events, in order; ``rows[k]``: the client row of ACCEPTED event k.
    Returns the table's ``entries`` after them."""
    for k in range(events.shape[0]):
        e = events[k]
        if e.flags & EVF_DUPLICATE:
            continue
        kind = e.kind
        if kind == EV_ACCEPTED:
            if e.leaves <= 0 or ordertable.find(table, e.order_id) >= 0:
                continue
            i = ordertable.insert(table, e.order_id)
            r, inst, s = rows[k], offset + e.instrument, e.side - 1
            table[i, T_ROW] = r
            table[i, T_INST] = inst
            table[i, T_SIDE] = s
            table[i, T_QTY] = e.qty
            table[i, T_LEAVES] = e.leaves
            open_qty[r, inst, s] += e.leaves
            live[r] += 1
            live_at[r, inst] += 1
            entries += 1
        elif kind == EV_TRADE:
            entries -= _take_off(table, open_qty, live, live_at, e.order_id, e.leaves, e.qty, 0)
            entries -= _take_off(
                table, open_qty, live, live_at, e.other_id, e.other_leaves, e.qty, 0
            )
        elif kind == EV_CANCELLED:
            entries -= _take_off(table, open_qty, live, live_at, e.order_id, e.leaves, e.qty, 1)
        elif kind == EV_REPLACED:
            i = ordertable.find(table, e.order_id)
            if i >= 0:
                r, inst, s = table[i, T_ROW], table[i, T_INST], table[i, T_SIDE]
                open_qty[r, inst, s] += e.leaves - table[i, T_LEAVES]
                table[i, T_QTY] = e.qty
                table[i, T_LEAVES] = e.leaves
    return entries


@njit(cache=True)
def load(table, open_qty, live, live_at, inst, rows, sides, ids, qty, leaves, entries):
    """Resting orders of one instrument (a book recovered from a journal); returns the
    table's ``entries`` after them."""
    for k in range(ids.shape[0]):
        if ordertable.find(table, ids[k]) >= 0:
            continue
        i = ordertable.insert(table, ids[k])
        r, s = rows[k], sides[k] - 1
        table[i, T_ROW] = r
        table[i, T_INST] = inst
        table[i, T_SIDE] = s
        table[i, T_QTY] = qty[k]
        table[i, T_LEAVES] = leaves[k]
        open_qty[r, inst, s] += leaves[k]
        live[r] += 1
        live_at[r, inst] += 1
        entries += 1
    return entries


@njit(cache=True)
def drop(table, open_qty, live, live_at, ids, entries):
    """Take orders ``ids`` off the table (those it has); returns its ``entries`` after."""
    for k in range(ids.shape[0]):
        i = ordertable.find(table, ids[k])
        if i < 0:
            continue
        r, inst, s = table[i, T_ROW], table[i, T_INST], table[i, T_SIDE]
        open_qty[r, inst, s] -= table[i, T_LEAVES]
        live[r] -= 1
        live_at[r, inst] -= 1
        ordertable.remove(table, i)
        entries -= 1
    return entries


# per client row, the limits the batch pass reads (``caps``)
C_QTY, C_NOTIONAL, C_BPS, C_TICKS, C_OPEN, C_KILLED, C_EXACT = range(7)
C_COLUMNS = 7
FITS = 1 << 62  # a limit below this, times anything the pass multiplies it by, fits int64


@njit(cache=True)
def admit_pass(
    i, rows, insts, sides, qtys, pxs, skip, caps, max_pos, max_price, tick, marks,
    live, open_qty, acct, flight, held_at,
):  # fmt: skip
    """``Risk._rules`` and the hold of each NEW from ``i`` on, in order, while
    every order passes; returns the index of the first one it leaves to Python (one
    that breaks a limit, or of a row whose limits are too large for int64 products:
    not ``C_EXACT``), or the number of orders. ``skip``: orders not checked (retries,
    refused before). ``held_at[k]``: the flight column order k holds (-1:
    none). ``pxs`` 0: a market order."""
    orders = flight.shape[1] - 1
    n = rows.shape[0]
    while i < n:
        if skip[i]:
            i += 1
            continue
        r, inst, s, qty, px = rows[i], insts[i], sides[i], qtys[i], pxs[i]
        if caps[r, C_KILLED] or not caps[r, C_EXACT] or qty > caps[r, C_QTY]:
            return i
        at = max_price[inst] if px == 0 else px
        if qty > caps[r, C_NOTIONAL] // at:  # qty * at > max_notional, with no product
            return i
        if px != 0:
            ref = marks[inst]
            away = px - ref if px > ref else ref - px
            ticks = caps[r, C_TICKS] * tick[inst]
            if away > ref * caps[r, C_BPS] // 10_000 or (ticks != 0 and away > ticks):
                return i
        if live[r] + flight[r, orders] >= caps[r, C_OPEN]:
            return i
        k = 2 * inst + s
        held = open_qty[r, inst, s] + flight[r, k]
        pos = acct[r, inst, F_POS]
        if s == 0:
            if pos + held + qty > max_pos[r, inst]:
                return i
        elif pos - held - qty < -max_pos[r, inst]:
            return i
        flight[r, k] += qty
        flight[r, orders] += 1
        held_at[i] = k
        i += 1
    return n


class Risk:
    def __init__(self, config: Config, positions: Positions):
        self.symbols = symbols(config)
        if positions.symbols != self.symbols:
            raise ValueError("the positions must number the instruments as the risk state does")
        self.index = {sym: i for i, sym in enumerate(self.symbols)}
        self.offsets = offsets(config)
        books = [config.instrument(sym).book for sym in self.symbols]
        self.max_price = [b.max_price for b in books]
        self.tick = [b.tick_size for b in books]
        self.positions = positions
        self.slots: Slots = positions.slots
        self.limits = LimitTable(config)
        n = len(self.symbols)
        self.table = ordertable.new_table(T_COLUMNS)
        # per client row, from the events (the Numba fold)
        self.open_qty = np.zeros((0, n, 2), np.int64)  # live orders' open qty
        self.live = np.zeros(0, np.int64)  # live orders
        self.live_at = np.zeros((0, n), np.int64)  # live orders per instrument
        # per client row, in flight: [qty of instrument i side s at 2i + s..., NEW orders]
        self.flight = np.zeros((0, 2 * n + 1), np.int64)
        self._orders = 2 * n  # the flight column of NEW orders
        # per client row, its limits as the batch pass reads them (``C_*``), and its
        # position limit per instrument
        self.caps = np.zeros((0, C_COLUMNS), np.int64)
        self.max_pos = np.zeros((0, n), np.int64)
        self._max_price = np.array(self.max_price, np.int64)
        self._tick = np.array(self.tick, np.int64)
        self._entries = 0  # live orders in the table (how full it is)
        self._accounts: dict[int, tuple[int, Limits]] = {}  # client -> (row, limits)
        # req_id -> (row, 2 x instrument + side index, qty, 1 for a NEW / 0)
        self._held: dict[int, tuple[int, int, int, int]] = {}
        self.killed: set[int] = set()

    def _account(self, client: int) -> tuple[int, Limits]:
        account = self._accounts.get(client)
        if account is None:
            row, lim = account = self._accounts[client] = (
                self.slots.row(client),
                self.limits(client),
            )
            self._fit()
            caps = (lim.max_order_qty, lim.max_notional, lim.collar_bps, lim.collar_ticks)
            big = max(self.max_price + self.tick + [1])
            exact = all(0 <= v < FITS // big for v in caps) and all(
                0 <= v < FITS for v in (lim.max_open_orders, *lim.max_position)
            )
            if exact:
                self.caps[row, :C_KILLED] = (*caps, lim.max_open_orders)
                self.max_pos[row] = lim.max_position
            self.caps[row, C_KILLED] = client in self.killed
            self.caps[row, C_EXACT] = exact
        return account

    def _fit(self) -> None:
        rows = len(self.slots)
        if rows > len(self.live):
            self.open_qty = grown(self.open_qty, rows)
            self.live = grown(self.live, rows)
            self.live_at = grown(self.live_at, rows)
            self.flight = grown(self.flight, rows)
            self.caps = grown(self.caps, rows)
            self.max_pos = grown(self.max_pos, rows)
        self.positions.fit()

    def _side(self, side: int) -> int:
        """The side's index (0 buy, 1 sell)."""
        if side != SIDE_BUY and side != SIDE_SELL:
            raise ValueError(f"side must be SIDE_BUY or SIDE_SELL, got {side!r}")
        return side - 1

    def _inst(self, sym: str) -> int:
        inst = self.index.get(sym)
        if inst is None:
            raise ValueError(f"no instrument {sym!r} in the config")
        return inst

    def _live_row(self, client: int, sym: str, oid: int) -> int:
        """The order table's entry of ``oid`` if it is ``client``'s live order on ``sym``,
        else -1."""
        row, inst = self._account(client)[0], self._inst(sym)
        i = ordertable.find(self.table, oid)
        if i < 0 or self.table[i, T_ROW] != row or self.table[i, T_INST] != inst:
            return -1
        return i

    # ------------------------------------------------------------ checks

    def admit(
        self, req_id: int, client: int, sym: str, side: int, qty: int, px: int | None
    ) -> Refusal | None:
        """The checks (the module's docstring), and the NEW held in flight until
        ``release(req_id)`` when it passes: the gateway's one call per NEW."""
        inst = self.index.get(sym)
        account = self._accounts.get(client)
        if inst is None or account is None or (side != SIDE_BUY and side != SIDE_SELL):
            inst, account = self._inst(sym), self._account(client)  # raise, or a new client
            self._side(side)
        row, lim = account
        s = side - 1
        refusal = self._rules(client, row, lim, inst, s, qty, px, qty, True)
        if refusal is None:
            if req_id in self._held:
                raise ValueError(f"req_id {req_id} is held already")
            k = 2 * inst + s
            self._held[req_id] = (row, k, qty, 1)
            self.flight[row, k] += qty
            self.flight[row, self._orders] += 1
        return refusal

    def admit_run(
        self,
        req_ids: list[int],
        clients: list[int],
        insts: np.ndarray,
        sides: np.ndarray,
        qtys: np.ndarray,
        pxs: np.ndarray,
        skip: np.ndarray,
    ) -> list[tuple[int, Refusal]]:
        """``admit`` of each NEW of a run, in order (``skip``: not checked): the Numba
        pass (``admit_pass``) takes the orders while they pass; an order it stops at is
        ``admit``'s, with the state as the orders before it left it (so a refusal's
        numbers are the same as one order at a time). Returns the refusals, by index;
        ``sides`` SIDE_BUY/SIDE_SELL, ``pxs`` 0 for a market order."""
        n = len(clients)
        accounts = {c: self._account(c) for c in dict.fromkeys(clients)}  # rows as met
        rows = np.array([accounts[c][0] for c in clients], np.int64)
        sides = sides.astype(np.int64) - 1
        qtys, pxs = qtys.astype(np.int64), pxs.astype(np.int64)
        marks = np.array(self.positions.marks, np.int64)
        held_at = np.full(n, -1, np.int64)
        refusals = []
        i = 0
        while True:
            i = admit_pass(
                i, rows, insts, sides, qtys, pxs, skip, self.caps, self.max_pos,
                self._max_price, self._tick, marks, self.live, self.open_qty,
                self.positions.acct, self.flight, held_at,
            )  # fmt: skip
            if i == n:
                break
            px = int(pxs[i]) or None
            refusal = self.admit(
                req_ids[i], clients[i], self.symbols[insts[i]], int(sides[i]) + 1, int(qtys[i]), px
            )
            if refusal is not None:
                refusals.append((i, refusal))
            i += 1
        done = np.flatnonzero(held_at >= 0).tolist()
        if done:
            ks, qs, rs = held_at.tolist(), qtys.tolist(), rows.tolist()
            self._held.update((req_ids[j], (rs[j], ks[j], qs[j], 1)) for j in done)
        return refusals

    def check_replace(self, client: int, sym: str, oid: int, px: int, qty: int) -> Refusal | None:
        """Whether a Replace of order ``oid`` to (px, total qty) may go to its shard. An
        order that is not this client's live order on ``sym`` passes: the shard answers
        not_found. The position rule counts only what it adds (none: the replace passes
        it even over a limit lowered since)."""
        i = self._live_row(client, sym, oid)
        if i < 0:
            return None
        row, lim = self._account(client)
        added = qty - int(self.table[i, T_QTY])
        s = int(self.table[i, T_SIDE])
        return self._rules(client, row, lim, self.index[sym], s, qty, px, added, False)

    def _rules(
        self, client: int, row: int, lim: Limits, inst: int, s: int, qty: int, px, adds, new
    ) -> Refusal | None:
        """The checks in order, each a comparison or two (the refusals are made apart):
        ``adds`` is the qty the position rule counts, ``new`` a NEW (one more order)."""
        if client in self.killed:
            return self._killed(client)
        if qty > lim.max_order_qty:
            return Refusal(
                MAX_ORDER_QTY,
                "$.qty",
                f"max_order_qty: qty {qty} is above the limit of {lim.max_order_qty}",
            )
        at = self.max_price[inst] if px is None else px
        if qty * at > lim.max_notional:
            return self._too_much(qty, px, at, lim)
        if px is not None:
            ref = self.positions.marks[inst]
            away = px - ref if px > ref else ref - px
            ticks = lim.collar_ticks * self.tick[inst]
            if away > ref * lim.collar_bps // 10_000 or (ticks and away > ticks):
                return self._off_collar(inst, px, ref, away, lim)
        if new:
            # .item(): a Python int, cheaper to add and compare than a numpy scalar
            orders = self.live.item(row) + self.flight.item(row, self._orders)
            if orders >= lim.max_open_orders:
                return Refusal(
                    MAX_OPEN_ORDERS,
                    "$",
                    f"max_open_orders: {orders} orders are open or in flight, the limit is "
                    f"{lim.max_open_orders}; cancel some first",
                )
        if adds > 0:
            limit = lim.max_position[inst]
            pos = self.positions.acct.item(row, inst, F_POS)
            held = self.open_qty.item(row, inst, s) + self.flight.item(row, 2 * inst + s)
            if s == 0:
                over = pos + held + adds > limit
            else:
                over = pos - held - adds < -limit
            if over:
                return self._position_refusal(row, inst, s, adds, limit)
        return None

    def _killed(self, client: int) -> Refusal:
        return Refusal(
            KILL_SWITCH,
            "$",
            f"kill_switch: client {client} is blocked by the kill switch; its orders were "
            f"cancelled and new ones are refused until an operator lifts it "
            f"(exch unkill {client})",
        )

    def _too_much(self, qty: int, px, at: int, lim: Limits) -> Refusal:
        priced = f"px {px}" if px is not None else f"{at} (the max_price: a market order's worst)"
        return Refusal(
            MAX_NOTIONAL,
            "$.qty",
            f"max_notional: qty {qty} x {priced} = {qty * at} is above the limit of "
            f"{lim.max_notional}",
        )

    def _off_collar(self, inst: int, px: int, ref: int, away: int, lim: Limits) -> Refusal:
        wide = ref * lim.collar_bps // 10_000
        if away > wide:
            width = f"{lim.collar_bps} bps = {wide}"
        else:
            width = f"{lim.collar_ticks} ticks = {lim.collar_ticks * self.tick[inst]}"
        source = "the last trade" if self.positions.last_px[inst] else "the reference price"
        return Refusal(
            PRICE_COLLAR,
            "$.px",
            f"price_collar: px {px} is {away} away from {ref} ({source}); the collar is {width}",
        )

    def _position_refusal(self, row: int, inst: int, s: int, qty: int, limit: int) -> Refusal:
        pos = int(self.positions.acct[row, inst, F_POS])
        flight = self.flight.item(row, 2 * inst + s)
        live = int(self.open_qty[row, inst, s])
        sym = self.symbols[inst]
        if s == 0:
            worst = pos + live + flight + qty
            what = (
                f"buying {qty} could take the {sym} position to {worst} (position {pos} + "
                f"open buys {live} + in flight {flight} + {qty}), above the long limit of {limit}"
            )
        else:
            worst = pos - live - flight - qty
            what = (
                f"selling {qty} could take the {sym} position to {worst} (position {pos} - "
                f"open sells {live} - in flight {flight} - {qty}), below the short limit of "
                f"-{limit}"
            )
        return Refusal(MAX_POSITION, "$.qty", f"max_position: {what}")

    # ------------------------------------------------------------ in flight

    def hold_replace(self, req_id: int, client: int, sym: str, oid: int, qty: int) -> None:
        """Count what a queued Replace adds to its order (nothing if it is not the client's
        live order on ``sym``, or adds no quantity) until ``release(req_id)``."""
        i = self._live_row(client, sym, oid)
        if i < 0:
            return
        added = qty - int(self.table[i, T_QTY])
        if added > 0:
            row, inst, s = self.table[i, T_ROW : T_SIDE + 1].tolist()
            self._hold_row(req_id, row, inst, s, added, 0)

    def _hold_row(self, req_id: int, row: int, inst: int, s: int, qty: int, orders: int) -> None:
        if req_id in self._held:
            raise ValueError(f"req_id {req_id} is held already")
        k = 2 * inst + s
        self._held[req_id] = (row, k, qty, orders)
        self.flight[row, k] += qty
        self.flight[row, self._orders] += orders

    def release(self, req_id: int) -> None:
        """The request was answered (or never written): stop counting it. Harmless for a
        req_id that holds nothing."""
        held = self._held.pop(req_id, None)
        if held is not None:
            row, k, qty, orders = held
            self.flight[row, k] -= qty
            self.flight[row, self._orders] -= orders

    def release_answered(self, events: np.ndarray) -> None:
        """Release the requests a batch of EVENT records answers: a command's first event
        (idx 0) answers it, whatever its kind."""
        if not self._held:
            return
        pop = self._held.pop
        held = [pop(r, None) for r in events["req_id"][events["idx"] == 0].tolist()]
        held = [h for h in held if h is not None]
        if held:
            rows, ks, qtys, orders = np.array(held, np.int64).T
            np.subtract.at(self.flight, (rows, ks), qtys)
            np.subtract.at(self.flight[:, self._orders], rows, orders)

    def in_flight(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------ events

    def apply(self, events: np.ndarray, shard: int) -> None:
        """Fold a batch of EVENT records of shard number ``shard`` in (then ``release_answered`` it:
        in this order, no order is ever counted neither live nor in flight)."""
        accepted = np.flatnonzero(events["kind"] == EV_ACCEPTED)
        rows = np.full(len(events), -1, np.int64)
        if len(accepted):
            rows[accepted] = self.slots.rows(events["client"][accepted])
            self._fit()
            self._room(len(accepted))
        self._entries = fold(
            self.table,
            self.open_qty,
            self.live,
            self.live_at,
            events,
            rows,
            self.offsets[shard],
            self._entries,
        )

    def _room(self, more: int) -> None:
        """A table that stays at most half full with ``more`` orders in it."""
        if 2 * (self._entries + more) > len(self.table):
            self.table = ordertable.fit(self.table, self._entries + more)

    def reset(self, shard: int, resting: list[np.ndarray]) -> None:
        """The live orders of shard number ``shard``'s instruments replaced by its books'
        resting orders (one ``load`` array per instrument): what the shard served when
        the gateway synced with it. In-flight requests are counted apart, unchanged."""
        first = self.offsets[shard]
        rows = ordertable.live(self.table)
        inst = rows[:, T_INST]
        gone = rows[(inst >= first) & (inst < first + len(resting)), 0]
        self._entries = drop(
            self.table, self.open_qty, self.live, self.live_at, gone, self._entries
        )
        for i, orders in enumerate(resting):
            self.load(self.symbols[first + i], orders)

    def load(self, sym: str, resting: np.ndarray) -> None:
        """A book's resting orders, as ``Book.canonical_rows()`` gives them (side, price,
        order id, client, qty, leaves, ...)."""
        inst = self._inst(sym)
        rows = self.slots.rows(resting[:, 3])
        self._fit()
        self._room(len(resting))
        self._entries = load(
            self.table,
            self.open_qty,
            self.live,
            self.live_at,
            inst,
            rows,
            resting[:, 0],
            resting[:, 2],
            resting[:, 4],
            resting[:, 5],
            self._entries,
        )

    # ------------------------------------------------------------ queries and the kill switch

    def live_orders(self) -> int:
        """Live orders of every client."""
        return self._entries

    def exposure(self, client: int, sym: str) -> Exposure:
        row, inst = self.slots.find(client), self._inst(sym)
        if row is None or row >= len(self.flight):
            return Exposure(0, 0, 0)
        buy, sell = self.open_qty[row, inst].tolist()
        flight = self.flight[row].tolist()
        return Exposure(
            buy + flight[2 * inst], sell + flight[2 * inst + 1], int(self.live_at[row, inst])
        )

    def open_orders(self, client: int) -> int:
        """Live orders, and NEW orders in flight."""
        row = self.slots.find(client)
        if row is None or row >= len(self.flight):
            return 0
        return int(self.live[row] + self.flight[row, self._orders])

    def exposed_on(self, client: int) -> list[str]:
        """The symbols where the client has live orders or orders in flight."""
        row = self.slots.find(client)
        if row is None or row >= len(self.flight):
            return []
        flight = self.flight[row].tolist()
        live = self.live_at[row].tolist()
        return [
            sym
            for i, sym in enumerate(self.symbols)
            if live[i] or flight[2 * i] or flight[2 * i + 1]
        ]

    def kill(self, client: int) -> None:
        self.killed.add(client)
        self._caps_killed(client)

    def unkill(self, client: int) -> None:
        self.killed.discard(client)
        self._caps_killed(client)

    def _caps_killed(self, client: int) -> None:
        """The batch pass's copy of the block (an account made later reads ``killed``)."""
        account = self._accounts.get(client)
        if account is not None:
            self.caps[account[0], C_KILLED] = client in self.killed
