"""The last outbound stage: the public feed, from the book mirrors (``gateway.mirror``).

Each drained batch's public events (TRADE, DEPTH and STATE, never a duplicate)
go into their instruments' mirrors (``on_events``): the ``Trades`` of each
command that traded and the ``TradingState`` of each halt and resume are
published at once; the levels the batch set are shown once per turn
(``publish``, at the end of the turn): one ``Depth`` and one ``TopOfBook`` per
instrument whose levels moved, each only if what it shows changed, carrying
the seq of the last command taken on that instrument; with ``[gateway]
md_interval_ms`` set, at most once every that long (a turn that finds the
interval not over keeps them for a later one, and the loop wakes by ``due``).
Per instrument the order stays Trades and TradingState (by seq), then Depth, then
TopOfBook. A
``BookRequest`` is answered from the mirrors (``book``): as of their ``seq``,
which the feed's messages carry too.

State: the mirrors that moved this turn (the mirrors are their links').
"""

import numpy as np
import zmq

from gateway.codec import encode
from gateway.mirror import BookMirror, public
from gateway.protocol import BookRequest
from gateway.shardlink import ShardLink

NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's flag enums cost more than the send itself
MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


class MarketFeed:
    def __init__(self, pub: zmq.Socket, route, reply, interval: float, clock):
        self.pub = pub
        self.route = route  # sym -> (link, instrument number, book): ``Checks.route``
        self.reply = reply  # (conn, message): ``Replies.reply``
        self.interval = interval  # seconds between publications at least (0: every turn)
        self.clock = clock
        self.due = 0.0  # the next publication may not be earlier
        self._moved: list[BookMirror] = []  # mirrors whose levels moved since the last

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        send = self.pub.send
        for inst, events in public(ev):
            mirror = link.mirrors[inst]
            was = mirror.dirty
            for msg in mirror.take(events):
                send(msg.sym.encode(), MORE)
                send(encode(msg), NOBLOCK)
            if mirror.dirty and not was:
                self._moved.append(mirror)

    @property
    def waiting(self) -> bool:
        """Levels moved and not shown yet: the loop must wake by ``due``."""
        return bool(self._moved)

    def publish(self) -> None:
        """What the levels that moved since the last publication show now (once per turn,
        or at most once every ``interval``)."""
        if not self._moved:
            return
        if self.interval:
            now = self.clock()
            if now < self.due:
                return
            self.due = now + self.interval
        moved, self._moved = self._moved, []
        send = self.pub.send
        for mirror in moved:
            for msg in mirror.shown():
                send(msg.sym.encode(), MORE)
                send(encode(msg), NOBLOCK)

    def book(self, conn: bytes, client: int, msg: BookRequest) -> None:
        link, inst, _ = self.route(msg.sym)
        self.reply(conn, link.mirrors[inst].book(msg.cid, msg.depth))
