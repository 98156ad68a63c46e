"""The first outbound stage: the answers to requests and the notices, and sending them.

In each drained batch of a shard's events, the event that answers a command
(``answers_request``) goes to the connection that sent the request, or into its
group (a NewOrders batch, a MassCancel fanned out to every instrument); fills,
unrequested cancels and triggered stops go to every connection of the owning
client (a reopening auction's trades fill both owners, ``liq`` "auction"). The
inbound stages' refusals come here too (``answer``, ``reply``).

Messages to a connection wait in its outbox until they are sent (``send_out``:
after a drained batch's replies, and at the end of the turn), then go out in
order: as one frame each, or, for a connection that asked for bundles
(``Heartbeat.bundle``), as few frames as ``bundle_frames`` makes of them (an
order that trades is answered with an Ack and Fills; under load a connection
gets hundreds of messages a turn, and each frame costs a send, a CURVE box and
a receive on both sides). Every refusal is logged with its connection and cid.

State: the outboxes and what could not be sent (``unroutable``, ``dropped``).
"""

import msgspec
import numpy as np
import zmq

from exchange import logs
from exchange.records import (
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_DEPTH,
    EV_STATUS,
    EV_TRADE,
    EV_TRIGGERED,
)
from gateway.codec import bundle_frames, encode
from gateway.counters import GatewayCounters
from gateway.inflight import Inflight, Pending
from gateway.private_replies import (
    accepted_ack,
    answers_request,
    event_of,
    order_status,
    private_messages,
)
from gateway.protocol import BatchAck, Fill, Reject
from gateway.sessions import Sessions
from gateway.shardlink import ShardLink

NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's flag enums cost more than the send itself
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
# the columns an ACCEPTED event's Ack is made of (and what tells it from the others)
_ACK_FIELDS = ("req_id", "kind", "instrument", "order_id", "seq", "flags")


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


class Replies:
    def __init__(
        self, router: zmq.Socket, sessions: Sessions, inflight: Inflight, count: GatewayCounters
    ):
        self.router = router
        self.sessions = sessions
        self.inflight = inflight
        self.count = count
        self.unroutable = 0  # replies and notices to connections that were gone
        self.dropped = 0  # ... and to connections whose queue was full (slow readers)
        self._out: dict[bytes, list[bytes]] = {}  # connection -> messages of this turn

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        """The answers to requests, to their connections or groups; fills and unrequested
        cancels to every connection of their owner; then all of it sent.

        One pass over the events, in order (replies and notices about an instrument go
        out in seq order). An ACCEPTED event is a NEW's answer, most of a busy batch:
        its Ack is made from a few columns; any other event becomes an ``Event``."""
        syms = link.syms
        get, pop = self.inflight.get, self.inflight.pop
        private = ev[ev["kind"] != EV_DEPTH]  # DEPTH is public only
        columns = zip(*(private[f].tolist() for f in _ACK_FIELDS), strict=True)
        for j, (req_id, kind, inst, oid, seq, flags) in enumerate(columns):
            p = get(req_id)
            if p is not None and kind == EV_ACCEPTED:
                pop(req_id)
                group = p.group
                coid = p.coid if group is None else group.coid(req_id)
                ack = accepted_ack(p.cid, syms[inst], oid, seq, coid, flags)
                if group is not None:
                    self.group_put(group, req_id, ack)
                elif p.conn is not None:
                    self._send(p.conn, encode(ack))
                continue
            e = event_of(private[j].tolist())
            sym = syms[inst]
            if p is not None and answers_request(e, p.kind):
                pop(req_id)
                if kind == EV_STATUS:
                    self.reply(p.conn, order_status(e, sym, p.cid, p.client))
                elif p.group is None:
                    [(_, msg)] = private_messages(e, sym, p.kind, p.cid, p.coid)
                    self.reply(p.conn, msg)
                else:
                    coid = p.group.coid(req_id)
                    [(_, msg)] = private_messages(e, sym, p.kind, p.cid, coid)
                    self.group_put(p.group, req_id, msg)
                continue
            if kind in (EV_TRADE, EV_CANCELLED, EV_TRIGGERED):
                for client, msg in private_messages(e, sym, 0, 0):
                    self._notify(client, msg)
        self.send_out()

    # ------------------------------------------------------------ answers

    def answer(self, p: Pending, req_id: int, msg) -> None:
        """The answer to command ``req_id`` of the request ``p``: its reply, or its slot."""
        if p.group is None:
            self.reply(p.conn, msg)
        else:
            self.group_put(p.group, req_id, msg)

    def group_put(self, group, req_id: int, msg) -> None:
        reply = group.put(req_id, msg)
        if reply is None:
            return
        if group.conn is not None:
            self.reply(group.conn, reply)
        elif isinstance(reply, Reject):
            # a cancel on disconnect that could not reach every shard: next tick, again
            logs.warning("cancel on disconnect incomplete", client=group.client, why=reply.reason)
            self.sessions.arm(group.client, True)
        else:
            logs.info("cancelled on disconnect", client=group.client, orders=reply.n)

    def reply(self, conn: bytes | None, msg: msgspec.Struct) -> None:
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

    # ------------------------------------------------------------ sending

    def _send(self, conn: bytes, payload: bytes) -> None:
        """Into the connection's outbox: ``send_out`` sends it."""
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
