"""The gateway's work, without its I/O loop: requests in -> commands to the shards'
rings; event batches in -> replies, notices and market data out.

A request frame goes through, in order: one frame? -> the client id of its
connection (the ZAP User-Id, never the body) -> ``decode_request`` (types,
ranges, the rules between fields) -> the client's rate limit -> a known
instrument on a shard the gateway is synced with and that is not stalled
(``Gateway._watch``) -> the instrument's grid
(lot, tick, band, max qty) -> the idempotency ledger (pairs in flight, then the
gateway's own view of the pairs used: ``gateway.ledger``; one used on another
instrument is a ``conflict``, on the same instrument a retry, which skips the
risk checks: its shard answers it from its journal, whatever the limits say
now) -> the pre-trade risk checks (``gateway.risk``) -> queued for its shard's
ring, its exposure counted as in flight until its answer comes. Any refusal is
one ``Reject`` to the connection, and nothing reaches a shard. The queued
commands are written to the rings once per turn (``flush``), a batch per
shard; what does not fit is answered ``busy``: never dropped, never waited
for. A Status is a question for the order's shard (CMD_STATUS): the gateway
opens no journal.

Events come back through the shards' event rings. In each drained batch, the
event that answers a command (``answers_request``) goes to the connection that
sent the request, or into its group (a NewOrders batch, a MassCancel fanned out
to every instrument); fills and unrequested cancels go to every connection of
the owning client; these are sent at once. Then the batch is folded into the
positions (fills), the risk state (live orders, the requests it answers no
longer in flight) and the ledger, and its market data goes to the PUB socket.
What a shard serves to a sync (``load``, ``_served``) is history: folded into
the positions and the ledger, never answered or notified.
Messages to a connection wait in its outbox until they are sent (after a
drained batch's replies, and at the end of the turn), then go out in order: as
one frame each, or, for a connection that asked for bundles
(``Heartbeat.bundle``), as few frames as ``bundle_frames`` makes of them (an
order that trades is answered with an Ack and Fills; under load a connection
gets hundreds of messages a turn, and each frame costs a send, a CURVE box and
a receive on both sides).

The kill switch: an operator's ``exch kill`` writes a file the gateway looks
for every second (``gateway.killswitch``), a client's ``Kill`` has the gateway
write it; either way the client's orders are cancelled on every instrument and
its new orders refused. Every second, the orders a blocked client still has
(sent before the block, or on a shard that was down) are cancelled again.

What a turn counts (requests, orders, fills, rejects by code) is kept in plain
ints and flushed to the counter block once at the end of the turn
(``gateway.counters``); the ``clients`` gauge is set every tick.

``loops`` drives ``step``/``tick`` and sleeps when there is nothing to do.
"""

import time

import msgspec
import numpy as np
import zmq

from exchange import logs
from exchange.engine import order_id_shard
from exchange.records import (
    CMD_CANCEL,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_STATUS,
    COMMAND_DTYPE,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_RESTING,
    EV_STATUS,
    EV_SYNCED,
    EV_TRADE,
    EVF_REPLAY,
    REJ_NOT_FOUND,
    REJECT_NAMES,
)
from gateway.conns import Connections
from gateway.counters import GatewayCounters
from gateway.discard import discard, give_back_heap
from gateway.inflight import BatchGroup, Inflight, MassGroup, Pending
from gateway.killswitch import KillError, KillList
from gateway.ledger import UNKNOWN, Ledger
from gateway.limits import limits_for, symbols
from gateway.mirror import market_data
from gateway.positions import Positions
from gateway.protocol import (
    BOOK_REJECTS,
    BUSY,
    CONFLICT,
    INVALID,
    NOT_FOUND,
    PROTOCOL_VERSION,
    RATE_LIMITED,
    SIDES,
    UNAUTHENTICATED,
    UNAVAILABLE,
    BatchAck,
    BookRequest,
    Cancel,
    Fill,
    Heartbeat,
    InstrumentsRequest,
    Kill,
    MassCancel,
    NewOrder,
    NewOrders,
    PositionsRequest,
    ProtocolError,
    Reject,
    Replace,
    Status,
    accepted_ack,
    answers_request,
    bundle_frames,
    cancel_command,
    decode_request,
    encode,
    event_rows,
    mass_cancel_command,
    new_order_command,
    order_status,
    private_messages,
    replace_command,
    salvage_cid,
    status_command,
)
from gateway.ratelimit import RateLimiter
from gateway.refdata import ReferenceData
from gateway.report import position_report
from gateway.risk import Risk
from gateway.sessions import Sessions
from gateway.shardlink import ShardLink, resting_rows, unseen
from gateway.store import FORMAT, Checkpoint, GatewayStore, ShardMark, StoreError
from gateway.zap import KeyTable
from shm.proc import token_alive

NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's flag enums cost more than the send itself
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
REQUEST_BUDGET = 1024  # requests per turn at most, so events are drained in between
# commands queued before they are written: a shard starts on them while the
# gateway decodes the next requests (on 2 cores, a turn-sized gulp left it idle)
FLUSH_AT = 256
EVENT_BUDGET = 8192  # events per ring per turn at most
# frames of a refused multi-frame message read per turn at most (~30 ms): the turn
# still drains events and sends replies (``gateway.discard``)
DISCARD_BUDGET = 1 << 20
TRIM_AFTER_FRAMES = 1 << 16  # ~4 MB of libzmq's pipe freed: worth a malloc_trim
TICK_SECONDS = 0.1  # shard liveness and cancel on disconnect are checked this often
KEYS_EVERY_TICKS = 10  # the keys directory is looked at every second
CHECKPOINT_EVERY_TICKS = 10  # the gateway's own state is written every second it changed


class Outbox:
    """One shard's commands waiting for ``flush``, with what each needs afterwards:
    its pending reply, and its idempotency key (0: none, or not a NEW)."""

    __slots__ = ("cmds", "req_ids", "pending", "keys")

    def __init__(self):
        self.cmds, self.req_ids, self.pending, self.keys = [], [], [], []

    def add(self, cmd: bytes, req_id: int, p: Pending, key: int = 0) -> None:
        self.cmds.append(cmd)
        self.req_ids.append(req_id)
        self.pending.append(p)
        self.keys.append(key)


def _conflict(ik: int, used: str) -> ProtocolError:
    return ProtocolError(CONFLICT, f"idempotency key {ik} was used for an order on {used}", "$.ik")


def _uncertain(ik: int, shards: set[str]) -> ProtocolError:
    return ProtocolError(
        UNAVAILABLE,
        f"idempotency key {ik} cannot be checked until shard(s) {', '.join(sorted(shards))} "
        "serve their latest orders to the gateway; retry later, unchanged",
        "$.ik",
    )


def _log_reject(conn: bytes | None, r: Reject, **extra) -> None:
    logs.info(
        "rejected",
        conn=conn.hex() if conn else None,
        cid=r.cid,
        coid=r.coid,
        code=r.code,
        field=r.field,
        reason=r.reason,
        **extra,
    )


class Gateway:
    def __init__(
        self,
        config,
        router: zmq.Socket,
        pub: zmq.Socket,
        keys: KeyTable,
        links: list[ShardLink],
        kills: KillList,
        counters: GatewayCounters,
        store: GatewayStore,
        conns: Connections,
        clock=time.monotonic,
    ):
        self.router = router
        self.pub = pub
        self.keys = keys
        self.conns = conns
        self.links = links
        self.clock = clock
        self.routes = {
            sym: (link, i, link.books[i]) for link in links for i, sym in enumerate(link.syms)
        }
        self.inflight = Inflight()
        self.sessions = Sessions()
        own_rates = {}
        for c in config.clients:
            lim = limits_for(config, c.client)
            own_rates[c.client] = (lim.orders_per_second, lim.burst)
        self.limiter = RateLimiter(config.rate.orders_per_second, config.rate.burst, own_rates)
        syms = symbols(config)
        self.positions = Positions(syms, [config.instrument(s).ref_price for s in syms])
        self.risk = Risk(config, self.positions)
        self.refdata = ReferenceData(config)
        self.kills = kills
        self.count = counters
        for client in kills.clients:
            self.risk.kill(client)
        self.store = store
        self.ledger = Ledger(syms, store)
        self._marks: dict[str, ShardMark] = {}  # per shard not caught up: its loaded mark
        self._changed = False  # events folded since the last checkpoint
        self.cod_after = config.session.cancel_on_disconnect_ms / 1000
        self.outbox = {link.index: Outbox() for link in links}
        self.queued = 0  # commands in the outboxes
        self.open_batches = 0  # NewOrders not answered yet
        self.live = {link.index: False for link in links}  # ``ShardLink.ready``, per tick
        self.stall_after = config.gateway.stall_ms / 1000
        self.now = clock()
        self.stopping = False  # set by a signal: the loop returns after its turn
        self.ticks = 0
        self.next_tick = self.now
        self.unroutable = 0  # replies and notices to connections that were gone
        self.dropped = 0  # ... and to connections whose queue was full (slow readers)
        self._out: dict[bytes, list[bytes]] = {}  # connection -> messages of this turn
        self._refusing: tuple[bytes, int] | None = None  # a message being read off: conn, frames
        self._duties = [
            (self._keys_and_kills, "keys and kill files"),
            (self._shards, "shard liveness"),
            (self._checkpoint_due, "checkpoint"),
            (self.store.fill_filter, "key filter"),
            (lambda: self.count.set_clients(self.sessions), "clients gauge"),
            (self._cancel_silent, "cancel on disconnect"),
            (self.conns.poll, "connection events"),
        ]
        self._failing = [
            logs.Failing(f"{what} failed", f"{what} works again") for _, what in self._duties
        ]
        self._handlers = {
            NewOrder: self._new_order,
            NewOrders: self._new_orders,
            Cancel: self._cancel,
            Replace: self._replace,
            MassCancel: self._mass_cancel,
            Status: self._status,
            BookRequest: self._book,
            Heartbeat: self._heartbeat,
            PositionsRequest: self._positions,
            InstrumentsRequest: self._instruments,
            Kill: self._kill,
        }

    def load(self, cp: Checkpoint | None) -> None:
        """Start-up, from the gateway's own state: the checkpoint's positions and
        watermarks (None: no checkpoint, every shard is read from seq 0), the keyed NEWs
        still in the request rings held in the ledger (see ``gateway.ledger``), a
        checkpoint saying this gateway runs, then a sync asked of every shard.

        A shard's journal may hold keyed NEWs after the checkpoint's watermark, and
        until the shard serves them their pairs are unknown (``Ledger.uncertain``).
        They are known to be none when the checkpoint found the shard quiet (every
        keyed NEW written to it answered, its pair in the checkpoint) and nothing was
        written to it since: either every record written since is still in its
        request ring (none of them journaled), or the checkpoint was a clean stop's
        (the gateway writes to no ring after it; the next gateway's first act is to
        say it runs, synced to disk, before it writes to any ring).
        """
        if cp is not None:
            self.positions.restore(cp.clients, cp.acct, cp.cash, cp.last_px)
            self._marks = {m.name: m for m in cp.shards}
        held = 0
        for link in self.links:
            news = link.queued_news()
            for client, key, inst, req_id in zip(
                *(news[f].tolist() for f in ("client", "idem_key", "instrument", "req_id")),
                strict=True,
            ):
                self.ledger.hold(client, key, link.syms[inst], req_id)
            held += len(news)
            mark = self._marks.get(link.name)
            if mark is None:
                self._marks[link.name] = ShardMark(link.name, 0, 0, False, 0, 0)
            else:
                link.last = (mark.seq, mark.idx)
            if not self._tail_known(link, mark, cp is not None and cp.clean):
                self.ledger.uncertain.add(link.name)
        self.checkpoint(clean=False, durable=True)
        for link in self.links:
            self._sync(link)
        logs.info(
            "state loaded",
            checkpoint=cp is not None,
            watermarks={link.name: link.last[0] for link in self.links},
            keys_in_rings=held,
            uncertain=sorted(self.ledger.uncertain),
            blocked=sorted(self.kills.clients),
        )

    def _tail_known(self, link: ShardLink, mark: ShardMark | None, clean: bool) -> bool:
        """Whether the shard can have journaled no keyed NEW the mark lacks (``load``)."""
        if mark is None or not mark.quiet:
            return False
        if clean:
            return True
        stamp, published = link.witness()
        written = published - mark.published
        return stamp == mark.ring and 0 <= written <= len(link.requests.unconsumed())

    # ------------------------------------------------------------ the gateway's own state

    def checkpoint(self, clean: bool, durable: bool = False) -> float:
        """Write the gateway's state (``gateway.store``): the pairs taken since the last
        checkpoint, the positions, and per shard the watermark and whether everything
        written to it was answered. ``clean``: the gateway writes to no ring after it.
        Returns the seconds it took."""
        marks = []
        for link in self.links:
            if link.caught_up:
                # every keyed NEW written to it was answered, and its pair folded in
                quiet = not self.ledger.holds_on(link.syms)
                marks.append(ShardMark(link.name, *link.last, quiet, *link.witness()))
            else:  # nothing read from it yet: what the loaded checkpoint said still holds
                marks.append(self._marks[link.name])
        clients, acct, cash, last_px = self.positions.export()
        cp = Checkpoint(FORMAT, self.positions.symbols, marks, clean, clients, acct, cash, last_px)
        seconds = self.store.write(cp, self.ledger.recent, durable=durable)
        self.ledger.recent = {}
        self._changed = False
        return seconds

    def _checkpoint_now(self) -> None:
        """A periodic checkpoint; one that cannot be written is logged and tried again at
        the next (the shards' journals are the truth: only the restart's tail grows)."""
        try:
            seconds = self.checkpoint(clean=False)
        except StoreError as e:
            logs.error("checkpoint not written", error=str(e))
            return
        if seconds > 0.05:
            logs.info("checkpoint", seconds=round(seconds, 3), keys=self.store.keys())

    def _sync(self, link: ShardLink) -> None:
        """Ask the shard to serve its history after the watermark and its resting orders
        (``ShardLink.sync``); a full ring is asked again at the next tick."""
        if not link.sync(self.inflight.reserve()):
            logs.warning("sync not sent: the request ring is full", shard=link.name)

    # ------------------------------------------------------------ the loop's entry points

    def step(self, take_requests: bool = True) -> int:
        """One turn: requests (unless stopping), events, housekeeping; returns the work done."""
        self.now = self.clock()
        done = self.take_requests() if take_requests else 0
        done += self.drain_events()
        if self.now >= self.next_tick:
            self.tick()
        self.send_out()
        self.count.flush()
        return done

    def take_requests(self, budget: int = REQUEST_BUDGET) -> int:
        """Frame by frame (recv_multipart costs several times more per message)."""
        if self._refusing is not None and not self._refuse_more():
            return 1  # the ROUTER gives no other message before the rest of this one
        recv = self.router.recv
        n = 0
        while n < budget:
            try:
                conn = recv(NOBLOCK)
            except zmq.Again:
                break
            # the rest of a message is there once its first frame is
            body = recv(NOBLOCK, copy=False)
            n += 1
            if body.more:
                self._refusing = (conn, 1)
                if not self._refuse_more():
                    break
                continue
            self.on_request(conn, body)
            if self.queued >= FLUSH_AT:
                self.flush()
        if self.queued:
            self.flush()
        self.count.requests += n
        return n

    def drain_events(self, budget: int = EVENT_BUDGET) -> int:
        n = 0
        for link in self.links:
            # read() allocates room for what it is asked for: ask for what is there
            ready = link.events.readable()
            if ready:
                ev = link.events.read(min(ready, budget))
                n += len(ev)
                self.on_events(link, ev)
        return n

    def _refuse_more(self) -> bool:
        """Read on in the multi-frame message being refused, up to the turn's budget;
        True once it is read off and answered ``invalid``."""
        conn, frames = self._refusing
        n, over = discard(self.router, DISCARD_BUDGET)
        frames += n
        if not over:
            self._refusing = (conn, frames)
            return False
        self._refusing = None
        reason = f"a request is exactly one frame, got {frames}"
        self._reply(conn, Reject(cid=0, code=INVALID, field="$", reason=reason))
        if frames >= TRIM_AFTER_FRAMES:
            give_back_heap()
        return True

    def tick(self) -> None:
        """Housekeeping. A duty that fails with an OSError (EMFILE: every descriptor in
        use) is logged and tried again next tick; the others still run."""
        self.next_tick = self.now + TICK_SECONDS
        self.ticks += 1
        for (duty, _), failing in zip(self._duties, self._failing, strict=True):
            try:
                duty()
            except OSError as e:
                failing.failed(e)
            else:
                failing.ok()

    def _keys_and_kills(self) -> None:
        if self.ticks % KEYS_EVERY_TICKS == 0:
            self.keys.refresh()
            self._kill_switch()

    def _shards(self) -> None:
        for link in self.links:
            token = link.token()
            if token != link.synced_to and token_alive(token):
                self._sync(link)  # a shard process it has not synced with: (re)started
            live = link.ready()
            if live != self.live[link.index]:
                logs.warning("shard up" if live else "shard down", shard=link.name)
            self.live[link.index] = live
            self._watch(link)

    def _checkpoint_due(self) -> None:
        if self._changed and self.ticks % CHECKPOINT_EVERY_TICKS == 0:
            self._checkpoint_now()

    def _cancel_silent(self) -> None:
        if self.cod_after:
            for client in self.sessions.silent(self.now, self.cod_after):
                self._cancel_all(client)
            self.flush()

    def _watch(self, link: ShardLink) -> None:
        """Whether the shard is stalled: it is live, requests wait in its ring and it has
        moved neither cursor (``ShardLink.look``) for ``[gateway] stall_ms``. While it
        is, new requests for its instruments are refused (``_route``); those already in
        its ring stay there and are answered when it moves again. A shard that is not
        live (down, restarting, not synced) is not watched: it is refused as such, and
        a process that attaches only after its recovery is not stalled meanwhile."""
        live = self.live[link.index]
        before = link.idle
        idle = link.look(self.now, live)
        after = self.stall_after
        if before < after <= idle:
            waiting = link.requests.position - link.progress()[0]
            logs.warning("shard stalled", shard=link.name, seconds=round(idle, 1), waiting=waiting)
        elif idle < after <= before and live:  # else "shard down" has been logged
            stalled = round(before, 1)
            logs.warning("shard progressing again", shard=link.name, stalled_seconds=stalled)
        self.count.set_stalled(link.index, idle if idle >= after else 0.0)

    # ------------------------------------------------------------ requests

    def on_request(self, conn: bytes, body: zmq.Frame) -> None:
        """A request of one frame from connection ``conn``."""
        buf = body.bytes
        try:
            client = self.keys.client(body.get("User-Id").encode())
        except zmq.ZMQError:  # no User-Id: not a ZAP-authenticated connection
            client = None
        if client is None:
            reason = "this connection's CURVE key is not registered (revoked?)"
            self._reply(conn, ProtocolError(UNAUTHENTICATED, reason).reject(salvage_cid(buf)))
            return
        try:
            msg = decode_request(buf)
        except ProtocolError as e:
            self._reply(conn, e.reject())
            return
        self.sessions.seen(client, conn, self.now)
        self.count.seen.add(client)
        try:
            self._handlers[type(msg)](conn, client, msg)
        except ProtocolError as e:
            self._reply(conn, e.reject(msg.cid, getattr(msg, "coid", "")))

    def _take(self, client: int, n: int) -> int:
        got = self.limiter.take(client, n, self.now)
        if got == 0:
            rate, burst = self.limiter.limits(client)
            raise ProtocolError(
                RATE_LIMITED, f"over the limit of {rate:g} requests/s (burst {burst}); slow down"
            )
        return got

    def _route(self, sym: str) -> tuple[ShardLink, int, object]:
        route = self.routes.get(sym)
        if route is None:
            raise ProtocolError(NOT_FOUND, f"no instrument {sym!r}", "$.sym")
        link = route[0]
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

    def _check_oid(self, link: ShardLink, oid: int) -> None:
        """An order id of another shard is not on this instrument: not found, here."""
        if order_id_shard(oid) != link.index:
            _, field, text = BOOK_REJECTS[REJ_NOT_FOUND]
            raise ProtocolError(NOT_FOUND, f"{REJECT_NAMES[REJ_NOT_FOUND]}: {text}", field)

    def _queue(self, link: ShardLink, cmd: bytes, req_id: int, p: Pending) -> None:
        self.outbox[link.index].add(cmd, req_id, p)
        self.queued += 1

    def _queue_order(self, client: int, order, req_id: int, p: Pending) -> None:
        sym, ik = order.sym, order.ik
        link, inst, book = self._route(sym)
        cmd = new_order_command(order, book, client=client, instrument=inst, req_id=req_id)
        retry = False  # of a request under the same key on this instrument: its shard
        if ik:  # answers it from its journal, whatever the limits say now
            used = self.ledger.use(client, ik, sym, req_id)  # in flight?
            if used is None:
                used = self.ledger.used_on(client, ik)  # answered before?
                if used is not None and used != sym:
                    self.ledger.release(client, ik, req_id)
                    if used == UNKNOWN:
                        raise _uncertain(ik, self.ledger.uncertain)
            if used is not None and used != sym:
                raise _conflict(ik, used)
            retry = used is not None
        if not retry:
            refusal = self.risk.admit(req_id, client, sym, SIDES[order.side], order.qty, order.px)
            if refusal is not None:
                if ik:
                    self.ledger.release(client, ik, req_id)
                raise ProtocolError(refusal.code, refusal.reason, refusal.field)
        self.outbox[link.index].add(cmd, req_id, p, ik)
        self.queued += 1

    def _new_order(self, conn, client: int, msg: NewOrder) -> None:
        self.count.orders += 1
        self._take(client, 1)
        p = Pending(conn, client, msg.cid, CMD_NEW, msg.sym, msg.coid)
        self._queue_order(client, msg, self.inflight.reserve(), p)

    def _new_orders(self, conn, client: int, msg: NewOrders) -> None:
        """Each order on its own: the ones past the rate limit or refused get a Reject slot."""
        orders = msg.orders
        self.count.orders += len(orders)
        allowed = self._take(client, len(orders))
        base = self.inflight.reserve(len(orders))
        group = BatchGroup(conn, client, msg.cid, base, [o.coid for o in orders])
        p = Pending(conn, client, msg.cid, CMD_NEW, "", "", group)
        self.open_batches += 1
        for i, order in enumerate(orders):
            try:
                if i >= allowed:
                    raise ProtocolError(RATE_LIMITED, "over the rate limit: the rest of the batch")
                self._queue_order(client, order, base + i, p)
            except ProtocolError as e:
                self._group_put(group, base + i, e.reject(msg.cid, order.coid))

    def _cancel(self, conn, client: int, msg: Cancel) -> None:
        self._take(client, 1)
        link, inst, _ = self._route(msg.sym)
        self._check_oid(link, msg.oid)
        req_id = self.inflight.reserve()
        cmd = cancel_command(msg, client=client, instrument=inst, req_id=req_id)
        self._queue(link, cmd, req_id, Pending(conn, client, msg.cid, CMD_CANCEL, msg.sym))

    def _replace(self, conn, client: int, msg: Replace) -> None:
        self._take(client, 1)
        link, inst, book = self._route(msg.sym)
        self._check_oid(link, msg.oid)
        req_id = self.inflight.reserve()
        cmd = replace_command(msg, book, client=client, instrument=inst, req_id=req_id)
        refusal = self.risk.check_replace(client, msg.sym, msg.oid, msg.px, msg.qty)
        if refusal is not None:
            raise ProtocolError(refusal.code, refusal.reason, refusal.field)
        self.risk.reserve_replace(req_id, client, msg.sym, msg.oid, msg.qty)
        self._queue(link, cmd, req_id, Pending(conn, client, msg.cid, CMD_REPLACE, msg.sym))

    def _mass_cancel(self, conn, client: int, msg: MassCancel) -> None:
        self._take(client, 1)
        if msg.sym is not None:
            link, inst, _ = self._route(msg.sym)
            req_id = self.inflight.reserve()
            cmd = mass_cancel_command(client=client, instrument=inst, req_id=req_id)
            self._queue(link, cmd, req_id, Pending(conn, client, msg.cid, CMD_MASS_CANCEL, msg.sym))
            return
        self._fan_out_mass_cancel(conn, client, msg.cid)

    def _fan_out_mass_cancel(self, conn, client: int, cid: int) -> None:
        group = MassGroup(conn, client, cid, None, len(self.routes))
        p = Pending(conn, client, cid, CMD_MASS_CANCEL, "", "", group)
        base = self.inflight.reserve(len(self.routes))
        for req_id, sym in enumerate(self.routes, base):
            try:
                link, inst, _ = self._route(sym)
            except ProtocolError as e:
                self._group_put(group, req_id, e.reject(cid))
                continue
            cmd = mass_cancel_command(client=client, instrument=inst, req_id=req_id)
            self._queue(link, cmd, req_id, p)

    def _cancel_all(self, client: int) -> None:
        """Cancel on disconnect: a MassCancel of every instrument that nobody waits for."""
        logs.info("cancel on disconnect", client=client)
        self._fan_out_mass_cancel(None, client, 0)

    def _status(self, conn, client: int, msg: Status) -> None:
        self._take(client, 1)
        link, inst, _ = self._route(msg.sym)
        self._check_oid(link, msg.oid)
        req_id = self.inflight.reserve()
        cmd = status_command(msg, client=client, instrument=inst, req_id=req_id)
        self._queue(link, cmd, req_id, Pending(conn, client, msg.cid, CMD_STATUS, msg.sym))

    def _book(self, conn, client: int, msg: BookRequest) -> None:
        self._take(client, 1)
        link, inst, _ = self._route(msg.sym)
        self._reply(conn, link.mirrors[inst].book(msg.cid, msg.depth))

    def _heartbeat(self, conn, client: int, msg: Heartbeat) -> None:
        self.sessions.arm(client, msg.cod)
        self.sessions.bundle(conn, msg.bundle)
        self._reply(
            conn, Heartbeat(cid=msg.cid, v=PROTOCOL_VERSION, cod=msg.cod, bundle=msg.bundle)
        )

    def _positions(self, conn, client: int, msg: PositionsRequest) -> None:
        self._take(client, 1)
        if msg.sym is not None and msg.sym not in self.routes:
            raise ProtocolError(NOT_FOUND, f"no instrument {msg.sym!r}", "$.sym")
        self._reply(conn, position_report(msg.cid, client, self.positions, self.risk, msg.sym))

    def _instruments(self, conn, client: int, msg: InstrumentsRequest) -> None:
        self._take(client, 1)

        def serving(i: int) -> bool:
            link = self.routes[self.refdata.symbols[i]][0]
            return self.live[link.index] and link.idle < self.stall_after

        marks = self.positions.marks
        self._reply(conn, self.refdata.answer(msg.cid, msg.sym, marks, serving))

    def _kill(self, conn, client: int, msg: Kill) -> None:
        """The panic button: no rate limit, it must always work."""
        if client not in self.risk.killed:
            try:
                self.kills.block(client, "the client itself (Kill)")
            except OSError as e:
                logs.error("kill file not written: the block lasts until a restart", error=str(e))
            self.risk.kill(client)
            logs.warning("kill switch on", client=client, by="the client")
        self._fan_out_mass_cancel(conn, client, msg.cid)

    # ------------------------------------------------------------ kill switch

    def _kill_switch(self) -> None:
        """Blocks and lifts from the kill files; the orders of blocked clients cancelled."""
        try:
            added, lifted = self.kills.refresh()
        except KillError as e:
            logs.error("kill files not reloaded; the previous ones stay", error=str(e))
            added, lifted = set(), set()
        for client in lifted:
            self.risk.unkill(client)
            logs.warning("kill switch lifted", client=client)
        for client in added:
            self.risk.kill(client)
            logs.warning("kill switch on", client=client, by="the operator")
            self._cancel_on(client, list(self.routes))
        for client in self.risk.killed - added:
            self._cancel_on(client, self.risk.exposed_on(client))
        self.flush()

    def _cancel_on(self, client: int, syms: list[str]) -> None:
        """MASS_CANCELs of a blocked client's orders that nobody waits for; a shard that is
        down is skipped (the next sweep finds the orders still there)."""
        for sym in syms:
            if not self.live[self.routes[sym][0].index]:
                continue
            link, inst, _ = self.routes[sym]
            req_id = self.inflight.reserve()
            cmd = mass_cancel_command(client=client, instrument=inst, req_id=req_id)
            self._queue(link, cmd, req_id, Pending(None, client, 0, CMD_MASS_CANCEL, sym))

    def flush(self) -> None:
        """Write the queued commands, one batch per shard; answer ``busy`` for what did not fit."""
        self.queued = 0
        for link in self.links:
            out = self.outbox[link.index]
            if not out.cmds:
                continue
            self.outbox[link.index] = Outbox()
            n = link.requests.write(np.frombuffer(b"".join(out.cmds), COMMAND_DTYPE))
            self.inflight.put(out.req_ids[:n], out.pending[:n])
            reason = f"the request queue of shard {link.name} is full; retry later, unchanged"
            for req_id, p, key in zip(out.req_ids[n:], out.pending[n:], out.keys[n:], strict=True):
                self._unqueue(p, req_id, key, ProtocolError(BUSY, reason))

    def _unqueue(self, p: Pending, req_id: int, key: int, why: ProtocolError) -> None:
        """A queued command that is not written after all: what it held is let go of, and
        its request is answered ``why``."""
        self.risk.release(req_id)
        if key:
            self.ledger.release(p.client, key, req_id)
        coid = p.coid if p.group is None else p.group.coid(req_id)
        self._answer(p, req_id, why.reject(p.cid, coid))

    # ------------------------------------------------------------ events

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        """Replies and notices first, sent at once; then the positions, the risk state, the
        ledger and the market data (at light load those took ~180 µs a batch, and a reply
        waited for them). Nothing the replies need comes from them, and the next
        request is read after all of it."""
        before = link.last
        ev, link.last, served = unseen(ev, link.last, link.caught_up)
        self._changed |= link.last != before
        if served:
            replay = (ev["flags"] & EVF_REPLAY) != 0
            self._served(link, ev[replay])
            ev = ev[~replay]
            if not len(ev):
                return
        self._private(link, ev)
        self.send_out()
        offset = self.risk.offsets[link.index]
        self.positions.apply(ev, offset)
        self.risk.apply(ev, link.index)
        self.risk.settle(ev)
        self.ledger.settle(ev)
        self.ledger.fold(ev, offset)
        send = self.pub.send
        for msg in market_data(ev, link.mirrors):
            send(msg.sym.encode(), MORE)
            send(encode(msg), NOBLOCK)

    def _served(self, link: ShardLink, served: np.ndarray) -> None:
        """What a shard served to a sync: its history after the watermark (folded into the
        positions and the ledger; never answered, never notified: it happened before),
        then its resting orders and the end, which seed the risk state and the mirrors."""
        kind = served["kind"]
        history = served[(kind != EV_RESTING) & (kind != EV_SYNCED)]
        offset = self.risk.offsets[link.index]
        if len(history):
            self.positions.apply(history, offset)
            self.ledger.settle(history)  # the pairs an earlier gateway's requests held
            self.ledger.fold(history, offset)
        done = link.answered(served)
        if done is None:
            return
        seq, resting = done
        if seq < link.last[0]:
            link.diverged = True
            logs.error(
                "shard went back in history: its journal ends before what the gateway read; "
                "its instruments stay unavailable until the gateway's state is rebuilt "
                "(stop, move the gateway state directory aside, start)",
                shard=link.name,
                shard_seq=seq,
                gateway_seq=link.last[0],
            )
        per_inst = [
            resting_rows(resting[resting["instrument"] == i]) for i in range(len(link.syms))
        ]
        self.risk.reset(link.index, per_inst)
        link.seed_mirrors(seq, resting)
        self.ledger.uncertain.discard(link.name)
        self.live[link.index] = link.ready()
        self._changed = True
        logs.info("synced", shard=link.name, seq=seq, resting=len(resting))

    def _private(self, link: ShardLink, ev: np.ndarray) -> None:
        """The answers to requests, to their connections or groups; fills and unrequested
        cancels to every connection of their owner."""
        syms = link.syms
        inflight = self.inflight
        private = self._batch_acks(ev[ev["kind"] != EV_DEPTH], syms)  # DEPTH is public only
        for e in event_rows(private):
            sym = syms[e.instrument]
            p = inflight.get(e.req_id)
            if p is not None and answers_request(e, p.kind):
                inflight.pop(e.req_id)
                if e.kind == EV_STATUS:
                    self._reply(p.conn, order_status(e, sym, p.cid, p.client))
                elif p.group is None:
                    [(_, msg)] = private_messages(e, sym, p.kind, p.cid, p.coid)
                    self._reply(p.conn, msg)
                else:
                    coid = p.group.coid(e.req_id)
                    [(_, msg)] = private_messages(e, sym, p.kind, p.cid, coid)
                    self._group_put(p.group, e.req_id, msg)
                continue
            if e.kind == EV_TRADE or e.kind == EV_CANCELLED:
                for client, msg in private_messages(e, sym, 0, 0):
                    self._notify(client, msg)

    def _batch_acks(self, private: np.ndarray, syms: list[str]) -> np.ndarray:
        """Put the ACCEPTED events that answer orders of NewOrders batches into their
        BatchAcks, reading columns instead of making an Event per order (most of a
        batch's private events are these); returns the events left to take one by one.

        A batch's reply goes out when its last order is answered, so where its Acks
        fall among the other events does not change what a client receives.
        """
        if not self.open_batches:
            return private
        rows = np.flatnonzero(private["kind"] == EV_ACCEPTED)
        if not len(rows):
            return private
        accepted = private[rows]
        req_ids = accepted["req_id"].tolist()
        get = self.inflight.get
        pending = [get(r) for r in req_ids]
        columns = (accepted[f].tolist() for f in ("order_id", "seq", "flags", "instrument"))
        done = np.zeros(len(private), bool)
        for row, req_id, p, oid, seq, flags, inst in zip(
            rows.tolist(), req_ids, pending, *columns, strict=True
        ):
            if p is None or not isinstance(p.group, BatchGroup):
                continue
            self.inflight.pop(req_id)
            group = p.group
            ack = accepted_ack(p.cid, syms[inst], oid, seq, group.coid(req_id), flags)
            self._group_put(group, req_id, ack)
            done[row] = True
        return private[~done] if done.any() else private

    # ------------------------------------------------------------ sending

    def _answer(self, p: Pending, req_id: int, msg) -> None:
        if p.group is None:
            self._reply(p.conn, msg)
        else:
            self._group_put(p.group, req_id, msg)

    def _group_put(self, group, req_id: int, msg) -> None:
        reply = group.put(req_id, msg)
        if reply is None:
            return
        if isinstance(group, BatchGroup):
            self.open_batches -= 1
        if group.conn is not None:
            self._reply(group.conn, reply)
        elif isinstance(reply, Reject):
            # a cancel on disconnect that could not reach every shard: next tick, again
            logs.warning("cancel on disconnect incomplete", client=group.client, why=reply.reason)
            self.sessions.arm(group.client, True)
        else:
            logs.info("cancelled on disconnect", client=group.client, orders=reply.n)

    def _reply(self, conn: bytes | None, msg: msgspec.Struct) -> None:
        if conn is not None:
            self._send(conn, encode(msg))
        # every refusal is findable in the logs by the connection and the bot's cid
        if isinstance(msg, Reject):
            self.count.reject(msg.code)
            _log_reject(conn, msg)
        elif isinstance(msg, BatchAck):
            # one line per code and batch, with the first refusal: a batch of 256 refused
            # busy under overload was 256 lines, and the logging slowed the gateway more
            first: dict[str, list] = {}
            for r in msg.results:
                if isinstance(r, Reject):
                    self.count.reject(r.code)
                    seen = first.get(r.code)
                    if seen is None:
                        first[r.code] = [r, 1]
                    else:
                        seen[1] += 1
            for r, n in first.values():
                _log_reject(conn, r, batch_cid=msg.cid, orders=n)

    def _notify(self, client: int, msg: msgspec.Struct) -> None:
        conns = self.sessions.connections(client)
        if conns:
            if type(msg) is Fill:
                self.count.fills += 1
            payload = encode(msg)
            for conn in conns:
                self._send(conn, payload)

    def _send(self, conn: bytes, payload: bytes) -> None:
        """Into the connection's outbox: ``send_out`` sends it at the end of the turn."""
        out = self._out.get(conn)
        if out is None:
            self._out[conn] = [payload]
        else:
            out.append(payload)

    def send_out(self) -> None:
        """Every outbox, in order: a frame a message, or bundles where asked for. Never
        blocks: a closed connection is forgotten, a full one loses the messages."""
        if not self._out:
            return
        outboxes, self._out = self._out, {}
        send = self.router.send
        for conn, payloads in outboxes.items():
            if len(payloads) > 1 and self.sessions.bundled(conn):
                frames = bundle_frames(payloads)
            else:
                frames = [(p, 1) for p in payloads]
            for frame, n in frames:
                try:
                    send(conn, MORE)
                    send(frame, NOBLOCK)
                except zmq.Again:
                    self.dropped += n
                except zmq.ZMQError as e:
                    if e.errno != zmq.EHOSTUNREACH:
                        raise
                    self.unroutable += n
                    self.sessions.gone(conn)
