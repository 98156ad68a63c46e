"""Requests written to a shard and not answered yet, by the req_id the gateway gave them.

A req_id is a random 32-bit incarnation (high bits) and a counter (low bits):
unique across gateway restarts without a clock, so the events of a previous
gateway's requests are never taken for this one's (they still carry fills,
which are routed by client id). When the counter runs out, a new incarnation
is drawn.

A request that becomes several commands (a NewOrders batch, a MassCancel of
every instrument) has a group that collects each command's answer and makes
the one reply.
"""

import random

from gateway.protocol import BatchAck, MassCancelled, Reject


class BatchGroup:
    """The results of a NewOrders batch, one slot per order; complete when all are in."""

    __slots__ = ("conn", "client", "cid", "results", "missing")

    def __init__(self, conn: bytes | None, client: int, cid: int, n: int):
        self.conn = conn
        self.client = client
        self.cid = cid
        self.results = [None] * n
        self.missing = n

    def put(self, slot: int, msg) -> BatchAck | None:
        self.results[slot] = msg
        self.missing -= 1
        return BatchAck(cid=self.cid, results=self.results) if self.missing == 0 else None


class MassGroup:
    """A MassCancel's parts, one per instrument: the counts add up; a refused part
    (busy, unavailable) makes the reply that refusal, since not everything was cancelled."""

    __slots__ = ("conn", "client", "cid", "sym", "n", "refused", "missing")

    def __init__(self, conn: bytes | None, client: int, cid: int, sym: str | None, parts: int):
        self.conn = conn
        self.client = client
        self.cid = cid
        self.sym = sym
        self.n = 0
        self.refused = None
        self.missing = parts

    def put(self, slot: int, msg) -> MassCancelled | Reject | None:
        if isinstance(msg, MassCancelled):
            self.n += msg.n
        elif self.refused is None:
            self.refused = msg
        self.missing -= 1
        if self.missing:
            return None
        return self.refused or MassCancelled(cid=self.cid, sym=self.sym, n=self.n)


class Pending:
    """One command in flight: who asked, and what its reply needs to say."""

    __slots__ = ("conn", "client", "cid", "kind", "sym", "coid", "group", "slot")

    def __init__(self, conn, client, cid, kind, sym, coid="", group=None, slot=0):
        self.conn = conn
        self.client = client
        self.cid = cid
        self.kind = kind
        self.sym = sym
        self.coid = coid
        self.group = group
        self.slot = slot


class Inflight:
    COUNTER_BITS = 32

    def __init__(self, incarnation: int | None = None):
        self.incarnation = random.getrandbits(32) if incarnation is None else incarnation
        self._counter = 0
        self._table: dict[int, Pending] = {}

    def new_id(self) -> int:
        self._counter += 1
        if self._counter >> self.COUNTER_BITS:
            self.incarnation = random.getrandbits(32)
            self._counter = 1
        return self.incarnation << self.COUNTER_BITS | self._counter

    def put(self, req_id: int, pending: Pending) -> None:
        self._table[req_id] = pending

    def get(self, req_id: int) -> Pending | None:
        return self._table.get(req_id)

    def pop(self, req_id: int) -> None:
        del self._table[req_id]

    def __len__(self) -> int:
        return len(self._table)
