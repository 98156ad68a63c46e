"""The inbound stage after admission: a command's routing and its instrument's grid.

A command goes to the shard holding its instrument, which must be known
(``not_found``), on a shard the gateway is synced with (``live``: the shard is up
and caught up, ``ShardLink.ready``, looked at every tick) and that is not stalled
(``watch``); an order id must be one of that shard's. Then the COMMAND record is
made, a NEW's and a REPLACE's after the instrument's grid checks (lot, tick,
band, max qty: ``gateway.protocol``). A ticket the kill switch's sweep routed
itself (to every live shard, stalled or not) is not routed again.

State: the instruments' routes, and per shard whether it is live; how long a shard
has been stalled is its link's (``ShardLink.idle``).
"""

import time

import numpy as np

from exchange import logs
from exchange.config import next_session_end
from exchange.engine import order_id_shard
from exchange.records import (
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    COMMAND_DTYPE,
    FLAG_POST_ONLY,
    REJ_NOT_FOUND,
    REJECT_NAMES,
    STATE_HALTED,
)
from gateway.commands import (
    MAX_TRIGGER_TICK,
    cancel_command,
    mass_cancel_command,
    new_order_command,
    replace_command,
    status_command,
)
from gateway.counters import GatewayCounters
from gateway.protocol import (
    BOOK_REJECTS,
    NOT_FOUND,
    ORDER_TYPES,
    SIDES,
    STP_MODES,
    TIFS,
    UNAVAILABLE,
    ProtocolError,
)
from gateway.shardlink import ShardLink
from gateway.ticket import Run, Ticket


class Checks:
    def __init__(self, links: list[ShardLink], stall_after: float, count: GatewayCounters):
        self.routes = {
            sym: (link, i, link.books[i]) for link in links for i, sym in enumerate(link.syms)
        }
        # sym -> its session end (ns after midnight UTC), for the instruments that have one
        self.session_ends = {
            sym: end
            for link in links
            for sym, end in zip(link.syms, link.session_ends, strict=True)
            if end is not None
        }
        self.clock = time.time_ns  # read for DAY orders only: their expiry
        self.live = {link.index: False for link in links}  # ``ShardLink.ready``, per tick
        self.stall_after = stall_after
        self.count = count
        self.links = links
        # a run's routes: sym -> (link, number on its shard, global instrument number),
        # and the grid of each global instrument number, as arrays
        self.numbers = {
            sym: (link, i, link.offset + i) for link in links for i, sym in enumerate(link.syms)
        }
        books = [b for link in links for b in link.books]
        self.grid = {
            f: np.array([getattr(b, f) for b in books], np.int64)
            for f in ("max_qty", "lot_size", "min_price", "max_price", "tick_size")
        }

    def route(self, sym: str) -> tuple[ShardLink, int, object]:
        """The instrument's (link, number on its shard, book config), if it takes requests."""
        route = self.routes.get(sym)
        if route is None:
            raise ProtocolError(NOT_FOUND, f"no instrument {sym!r}", "$.sym")
        link = route[0]
        if not self.live[link.index] and link.diverged:
            raise ProtocolError(
                UNAVAILABLE, f"shard {link.name} holding {sym} is not served: {link.why}"
            )
        if not self.live[link.index]:
            raise ProtocolError(
                UNAVAILABLE,
                f"shard {link.name} holding {sym} is down or not synced yet; retry later, "
                "unchanged",
            )
        if link.idle >= self.stall_after:
            raise ProtocolError(
                UNAVAILABLE,
                f"shard {link.name} holding {sym} is stalled: no progress on the requests "
                f"waiting for it for {link.idle:.1f} s; retry later, unchanged",
            )
        return route

    def day_end(self, sym: str) -> int | None:
        """A DAY order's expiry on ``sym``: its next session end after now (None: it has
        none, and DAY orders are refused on it)."""
        end = self.session_ends.get(sym)
        return None if end is None else next_session_end(self.clock(), end)

    def serving(self, sym: str) -> bool:
        """Whether the instrument takes requests now (its shard live and not stalled)."""
        return self._takes(self.routes[sym][0])

    def halted(self, sym: str) -> bool:
        """Whether the instrument's book is halted, as its shard last said (the mirror's
        trading state)."""
        link, inst = self.routes[sym][:2]
        return link.mirrors[inst].state == STATE_HALTED

    def _takes(self, link: ShardLink) -> bool:
        return self.live[link.index] and link.idle < self.stall_after

    def take(self, t: Ticket) -> None:
        kind, client, req_id = t.p.kind, t.client, t.req_id
        if kind == CMD_NEW:  # most commands: its own path
            t.link, inst, book = self.route(t.sym)
            t.inst = inst
            t.cmd = new_order_command(
                t.msg,
                book,
                client=client,
                instrument=inst,
                req_id=req_id,
                day_end=self.day_end(t.sym) if t.msg.tif == "day" else None,
            )
            return
        if t.link is None:
            t.link, t.inst, book = self.route(t.sym)
        else:
            book = None  # routed by the kill switch's sweep: a mass cancel
        link, inst = t.link, t.inst
        if kind == CMD_MASS_CANCEL:
            t.cmd = mass_cancel_command(client=client, instrument=inst, req_id=req_id)
            return
        if order_id_shard(t.msg.oid) != link.index:
            # an order id of another shard is not on this instrument: not found, here
            _, field, text = BOOK_REJECTS[REJ_NOT_FOUND]
            raise ProtocolError(NOT_FOUND, f"{REJECT_NAMES[REJ_NOT_FOUND]}: {text}", field)
        if kind == CMD_CANCEL:
            t.cmd = cancel_command(t.msg, client=client, instrument=inst, req_id=req_id)
        elif kind == CMD_REPLACE:
            t.cmd = replace_command(t.msg, book, client=client, instrument=inst, req_id=req_id)
        else:
            t.cmd = status_command(t.msg, client=client, instrument=inst, req_id=req_id)

    def undo(self, t: Ticket) -> None:
        """Nothing is held for a routed command."""

    def take_run(self, run: Run) -> None:
        """``take`` of each NEW of a run: routed one by one, the grid checked and the
        COMMAND records made over the run's columns; a ticket that fails goes through
        ``take``, which raises its refusal."""
        serving = {link.index: self._takes(link) for link in self.links}
        numbers, tickets, refused = self.numbers, run.tickets, run.refused
        at, g, shard, routed = [], [], [], []
        for i, t in enumerate(tickets):
            if i in refused:
                continue
            r = numbers.get(t.sym)
            if r is None or not serving[r[0].index]:
                self._refuse(run, i)
                continue
            t.link, t.inst = r[0], r[1]
            at.append(i)
            g.append(r[2])
            shard.append(r[0].index)
            routed.append(t.msg)
        gi = np.array(g, np.int64)
        qty = np.array([o.qty for o in routed], np.int64)
        px = np.array([o.px or 0 for o in routed], np.int64)  # 0: a market order
        grid = self.grid
        off = (qty > grid["max_qty"][gi]) | (qty % grid["lot_size"][gi] != 0)
        priced = px != 0
        off |= priced & (
            (px < grid["min_price"][gi])
            | (px > grid["max_price"][gi])
            | (px % grid["tick_size"][gi] != 0)
        )
        trigger = np.array([o.trigger or 0 for o in routed], np.int64)  # 0: not a stop
        trigger_tick = trigger // grid["tick_size"][gi]
        off |= (trigger != 0) & (
            (trigger < grid["min_price"][gi])
            | (trigger > grid["max_price"][gi])
            | (trigger % grid["tick_size"][gi] != 0)
            | (trigger_tick > MAX_TRIGGER_TICK)
        )
        display = np.array([o.display or 0 for o in routed], np.int64)  # 0: not an iceberg
        off |= display % grid["lot_size"][gi] != 0
        expires = np.array([o.expire_at or 0 for o in routed], np.int64)  # gtd; 0: none
        for j in [j for j, o in enumerate(routed) if o.tif == "day"]:
            end = self.day_end(routed[j].sym)
            if end is None:
                off[j] = True
            else:
                expires[j] = end
        if off.any():
            for j in np.flatnonzero(off).tolist():
                self._refuse(run, at[j])
            keep = ~off
            at, gi, qty, px = np.array(at)[keep], gi[keep], qty[keep], px[keep]
            trigger_tick, display, expires = trigger_tick[keep], display[keep], expires[keep]
            shard = np.array(shard)[keep]
            routed = [o for o, k in zip(routed, keep.tolist(), strict=True) if k]
        rec = np.zeros(len(routed), COMMAND_DTYPE)
        rec["price"], rec["qty"] = px, qty
        picked = [tickets[i] for i in at]
        rec["req_id"] = [t.req_id for t in picked]
        rec["client"] = [t.client for t in picked]
        rec["instrument"] = [t.inst for t in picked]
        rec["idem_key"] = [o.ik for o in routed]
        rec["kind"] = CMD_NEW
        rec["side"] = [SIDES[o.side] for o in routed]
        rec["tif"] = [TIFS[o.tif] for o in routed]
        rec["ord_type"] = [ORDER_TYPES[o.ord_type] for o in routed]
        rec["flags"] = [FLAG_POST_ONLY * o.post_only for o in routed]
        rec["stp"] = [STP_MODES[o.stp] for o in routed]
        rec["trigger_tick"] = trigger_tick
        rec["display"] = display
        rec["expires"] = expires
        run.at, run.g, run.shard, run.records = np.array(at, np.int64), gi, np.array(shard), rec

    def _refuse(self, run: Run, i: int) -> None:
        """A ticket of a run that does not pass: ``take`` says why."""
        try:
            self.take(run.tickets[i])
        except ProtocolError as e:
            run.refuse(i, e)
        else:
            raise AssertionError(f"a NEW the run refused passes one by one: {run.tickets[i]}")

    # ------------------------------------------------------------ per tick

    def look(self, link: ShardLink, now: float) -> None:
        """Whether the shard is live, and whether it is stalled: it is live, requests wait
        in its ring and it has moved neither cursor (``ShardLink.look``) for ``[gateway]
        stall_ms``. While it is, new requests for its instruments are refused
        (``route``); those already in its ring stay there and are answered when it
        moves again. A shard that is not live (down, restarting, not synced) is not
        watched: it is refused as such, and a process that attaches only after its
        recovery is not stalled meanwhile."""
        live = link.ready()
        if live != self.live[link.index]:
            logs.warning("shard up" if live else "shard down", shard=link.name)
        self.live[link.index] = live
        before = link.idle
        idle = link.look(now, live)
        after = self.stall_after
        if before < after <= idle:
            waiting = link.requests.cursor - link.progress()[0]
            logs.warning("shard stalled", shard=link.name, seconds=round(idle, 1), waiting=waiting)
        elif idle < after <= before and live:  # else "shard down" has been logged
            stalled = round(before, 1)
            logs.warning("shard progressing again", shard=link.name, stalled_seconds=stalled)
        self.count.set_stalled(link.index, idle if idle >= after else 0.0)
