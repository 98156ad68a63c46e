"""The first inbound stage: a request frame admitted, and turned into tickets.

A frame goes through, in order: one frame? (a message of more is read off and
refused ``invalid``, over turns if it is huge: ``gateway.discard``) -> the client
id of its connection (the ZAP User-Id, never the body) -> ``decode_request``
(types, ranges, the rules between fields) -> [once the frames of a chunk
(``CHUNK``) are decoded: the idempotency pairs of its orders screened against
the store's filter in one call, if ``SCREEN_MIN`` or more] -> the client's
session (its connection, when it last spoke) -> the client's rate limit (a
NewOrders takes a token per order: the orders past the limit are refused one by
one) -> its handler. A request for a
shard becomes one ``Ticket`` per command (a MassCancel without a symbol one per
instrument), each passed to ``submit``, the inbound pipeline's
(``gateway.core``). A Heartbeat is answered here; BookRequest, PositionsRequest
and Kill go to the stages that keep what they ask about (``local``). Any
refusal is one ``Reject`` to the connection, in the order of the requests.

State: the multi-frame message being read off, if any.
"""

import zmq

from exchange.records import CMD_CANCEL, CMD_MASS_CANCEL, CMD_NEW, CMD_REPLACE, CMD_STATUS
from gateway.codec import decode_request, salvage_cid
from gateway.counters import GatewayCounters
from gateway.discard import discard, give_back_heap
from gateway.inflight import BatchGroup, Inflight, MassGroup, Pending
from gateway.protocol import (
    INVALID,
    PROTOCOL_VERSION,
    RATE_LIMITED,
    UNAUTHENTICATED,
    Cancel,
    Heartbeat,
    Kill,
    MassCancel,
    NewOrder,
    NewOrders,
    ProtocolError,
    Reject,
    Replace,
    Status,
)
from gateway.ratelimit import RateLimiter
from gateway.replies import Replies
from gateway.sessions import Sessions
from gateway.shardwriter import ShardWriter
from gateway.ticket import Run, Ticket
from gateway.zap import KeyTable

NOBLOCK = int(zmq.NOBLOCK)
# frames of a refused multi-frame message read per turn at most (~30 ms): the turn
# still drains events and sends replies (``gateway.discard``)
DISCARD_BUDGET = 1 << 20
CHUNK = 64  # frames decoded before they are handled: their keys screened in one call
SCREEN_MIN = 8  # keyed orders a chunk needs for the one call to cost less than theirs
TRIM_AFTER_FRAMES = 1 << 16  # ~4 MB of libzmq's pipe freed: worth a malloc_trim
TOKENS = {Heartbeat: 0, Kill: 0}  # rate-limit tokens a request takes (else 1; NewOrders: n)
KIND = {Cancel: CMD_CANCEL, Replace: CMD_REPLACE, Status: CMD_STATUS}


class Admission:
    def __init__(
        self,
        router: zmq.Socket,
        keys: KeyTable,
        sessions: Sessions,
        limiter: RateLimiter,
        count: GatewayCounters,
        inflight: Inflight,
        replies: Replies,
        writer: ShardWriter,
        syms: list[str],
        screen,
    ):
        self.router = router
        self.keys = keys
        self.sessions = sessions
        self.limiter = limiter
        self.count = count
        self.inflight = inflight
        self.replies = replies
        self.writer = writer
        self.syms = syms  # every instrument: a MassCancel without a symbol
        self.submit = None  # (ticket): the inbound pipeline, wired by ``gateway.core``
        self.submit_run = None  # (run): the same for a run of NEWs
        # the run of NEWs of the chunk being handled, and the pairs its tickets hold
        self._run, self._pairs = Run(), set()
        self.screen = screen  # (clients, keys): the pairs about to be looked up
        self.now = 0.0  # the turn's clock
        # a message being read off: its connection, the cid its first frame holds (0:
        # none readable), its frames so far
        self._refusing: tuple[bytes, int, int] | None = None
        self.handlers = {
            Cancel: self._on_order,
            Replace: self._on_order,
            Status: self._on_order,
            MassCancel: self._mass_cancel,
            Heartbeat: self._heartbeat,
        }  # and the ``local`` ones, wired by ``gateway.core``

    def take(self, budget: int, now: float) -> int:
        """Frames a chunk at a time (recv_multipart costs several times more per message):
        each chunk's frames decoded, its keyed orders' pairs screened in one call
        (``GatewayStore.screen``), then each request handled in order; the queued
        commands are written before the next frame once there are enough, and at the
        end. Returns the frames taken."""
        self.now = now
        if self._refusing is not None and not self._refuse_more():
            return 1  # the ROUTER gives no other message before the rest of this one
        recv = self.router.recv
        n = 0
        while n < budget:
            chunk = []
            more = False
            while n < budget and len(chunk) < CHUNK:
                try:
                    conn = recv(NOBLOCK)
                except zmq.Again:
                    break
                # the rest of a message is there once its first frame is
                body = recv(NOBLOCK, copy=False)
                n += 1
                if body.more:
                    more = True
                    break
                chunk.append(self._decoded(conn, body))
            self._handle(chunk)
            if more:
                self._refusing = (conn, salvage_cid(body.bytes), 1)
                if not self._refuse_more():
                    break
            elif len(chunk) < CHUNK:
                break  # nothing more to read now
        if self.writer.queued:
            self.writer.flush()
        self.count.requests += n
        return n

    def _decoded(self, conn: bytes, body: zmq.Frame) -> tuple:
        """(conn, client, the request) of a frame, or (conn, None, the Reject refusing it)."""
        buf = body.bytes
        try:
            client = self.keys.client(body.get("User-Id").encode())
        except zmq.ZMQError:  # no User-Id: not a ZAP-authenticated connection
            client = None
        if client is None:
            reason = "this connection's CURVE key is not registered (revoked?)"
            return conn, None, ProtocolError(UNAUTHENTICATED, reason).reject(salvage_cid(buf))
        try:
            return conn, client, decode_request(buf)
        except ProtocolError as e:
            return conn, None, e.reject()

    def _handle(self, chunk: list[tuple]) -> None:
        """A chunk's requests in order, after the pairs of its keyed orders are screened."""
        clients, keys = [], []
        for _, client, msg in chunk:
            cls = type(msg)
            if cls is NewOrder:
                if msg.ik:
                    clients.append(client)
                    keys.append(msg.ik)
            elif cls is NewOrders:
                for o in msg.orders:
                    if o.ik:
                        clients.append(client)
                        keys.append(o.ik)
        if len(keys) >= SCREEN_MIN:
            self.screen(clients, keys)
        for conn, client, msg in chunk:
            cls = type(msg)
            if client is not None and (cls is NewOrder or cls is NewOrders):
                self._orders(conn, client, msg)
                continue
            self._end_run()
            if client is None:
                self.replies.reply(conn, msg)
            else:
                self.on_request(conn, client, msg)
                self.writer.frame_done()
        self._end_run()

    def _end_run(self) -> None:
        """The run of orders so far through the inbound stages; a new run begins."""
        if self._run.tickets:
            self.submit_run(self._run)
            self.writer.frame_done()
            self._run, self._pairs = Run(), set()

    def _in_run(self, t: Ticket, ik: int) -> None:
        """A NEW's ticket into the run; a new run first if it holds the pair already."""
        if ik:
            pair = (t.client, ik)
            if pair in self._pairs:
                self._end_run()
            self._pairs.add(pair)
        self._run.tickets.append(t)

    def _refuse_more(self) -> bool:
        """Read on in the multi-frame message being refused, up to the turn's budget;
        True once it is read off and answered ``invalid``."""
        conn, cid, frames = self._refusing
        n, over = discard(self.router, DISCARD_BUDGET)
        frames += n
        if not over:
            self._refusing = (conn, cid, frames)
            return False
        self._refusing = None
        reason = f"a request is exactly one frame, got {frames}"
        self.replies.reply(conn, Reject(cid=cid, code=INVALID, field="$", reason=reason))
        if frames >= TRIM_AFTER_FRAMES:
            give_back_heap()
        return True

    def on_request(self, conn: bytes, client: int, msg) -> None:
        """A decoded request of client ``client`` from connection ``conn``."""
        self.sessions.seen(client, conn, self.now)
        self.count.seen.add(client)
        cls = type(msg)
        try:
            if TOKENS.get(cls, 1):
                self._take(client, 1)
            self.handlers[cls](conn, client, msg)
        except ProtocolError as e:
            self.replies.reply(conn, e.reject(msg.cid, getattr(msg, "coid", "")))

    def _take(self, client: int, n: int) -> int:
        got = self.limiter.take(client, n, self.now)
        if got == 0:
            rate, burst = self.limiter.limits(client)
            raise ProtocolError(
                RATE_LIMITED, f"over the limit of {rate:g} requests/s (burst {burst}); slow down"
            )
        return got

    # ------------------------------------------------------------ requests -> tickets

    def _orders(self, conn, client: int, msg: NewOrder | NewOrders) -> None:
        """A NewOrder, or each order of a NewOrders, into the run of orders; an order past
        the rate limit is refused in the run (before the stages: it holds nothing), a
        NewOrders none of whose orders is within the limit at once."""
        self.sessions.seen(client, conn, self.now)
        self.count.seen.add(client)
        if type(msg) is NewOrder:
            self.count.orders += 1
            p = Pending(conn, client, msg.cid, CMD_NEW, msg.coid)
            self._in_run(Ticket(client, self.inflight.new_req_ids(), p, msg.sym, msg), msg.ik)
            try:
                self._take(client, 1)
            except ProtocolError as e:
                self._run.refuse(len(self._run.tickets) - 1, e)
            return
        orders = msg.orders
        self.count.orders += len(orders)
        try:
            allowed = self._take(client, len(orders))
        except ProtocolError as e:
            self._end_run()  # its refusals first: replies go in the requests' order
            self.replies.reply(conn, e.reject(msg.cid))
            return
        base = self.inflight.new_req_ids(len(orders))
        group = BatchGroup(conn, client, msg.cid, base, [o.coid for o in orders])
        p = Pending(conn, client, msg.cid, CMD_NEW, "", group)
        for i, order in enumerate(orders):
            if i >= allowed:
                e = ProtocolError(RATE_LIMITED, "over the rate limit: the rest of the batch")
                self.replies.group_put(group, base + i, e.reject(msg.cid, order.coid))
            else:
                self._in_run(Ticket(client, base + i, p, order.sym, order), order.ik)

    def _on_order(self, conn, client: int, msg: Cancel | Replace | Status) -> None:
        p = Pending(conn, client, msg.cid, KIND[type(msg)])
        self.submit(Ticket(client, self.inflight.new_req_ids(), p, msg.sym, msg))

    def _mass_cancel(self, conn, client: int, msg: MassCancel) -> None:
        if msg.sym is None:
            self.mass_cancel_all(conn, client, msg.cid)
            return
        p = Pending(conn, client, msg.cid, CMD_MASS_CANCEL)
        self.submit(Ticket(client, self.inflight.new_req_ids(), p, msg.sym))

    def mass_cancel_all(self, conn, client: int, cid: int) -> None:
        """A MassCancel of every instrument (``conn`` None: nobody waits for it)."""
        group = MassGroup(conn, client, cid, len(self.syms))
        p = Pending(conn, client, cid, CMD_MASS_CANCEL, "", group)
        base = self.inflight.new_req_ids(len(self.syms))
        for req_id, sym in enumerate(self.syms, base):
            self.submit(Ticket(client, req_id, p, sym))

    def _heartbeat(self, conn, client: int, msg: Heartbeat) -> None:
        self.sessions.arm(client, msg.cod)
        self.sessions.bundle(conn, msg.bundle)
        self.replies.reply(
            conn, Heartbeat(cid=msg.cid, v=PROTOCOL_VERSION, cod=msg.cod, bundle=msg.bundle)
        )
