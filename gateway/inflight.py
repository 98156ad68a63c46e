"""Requests written to a shard and not answered yet, by the req_id the gateway gave them.

A req_id is a random 32-bit incarnation (high bits) and a counter (low bits):
unique across gateway restarts without a clock, so the events of a previous
gateway's requests are never taken for this one's (they still carry fills,
which are routed by client id). When the counter runs out, a new incarnation
is drawn.

A request that becomes several commands (a NewOrders batch, a MassCancel of
every instrument) takes consecutive req_ids and has a group that collects
each command's answer, in the slot ``req_id - base``, and makes the one reply.
Its commands share one ``Pending``.
"""

import random

import msgspec

from gateway.protocol import BatchAck, MassCancelled, Reject


class BatchGroup:
    """The results of a NewOrders batch, one slot per order; complete when all are in."""

    __slots__ = ("conn", "client", "cid", "base", "coids", "results", "missing")

    def __init__(self, conn: bytes | None, client: int, cid: int, base: int, coids: list[str]):
        self.conn = conn
        self.client = client
        self.cid = cid
        self.base = base
        self.coids = coids
        self.results = [None] * len(coids)
        self.missing = len(coids)

    def coid(self, req_id: int) -> str:
        return self.coids[req_id - self.base]

    def put(self, req_id: int, msg) -> BatchAck | None:
        self.results[req_id - self.base] = msg
        self.missing -= 1
        return BatchAck(cid=self.cid, results=self.results) if self.missing == 0 else None


class MassGroup:
    """A MassCancel's parts, one per instrument: the counts add up; a refused part
    (busy, unavailable) makes the reply that refusal, since not everything was cancelled."""

    __slots__ = ("conn", "client", "cid", "n", "refused", "missing")

    def __init__(self, conn: bytes | None, client: int, cid: int, parts: int):
        self.conn = conn
        self.client = client
        self.cid = cid
        self.n = 0
        self.refused = None
        self.missing = parts

    def coid(self, req_id: int) -> str:
        return ""

    def put(self, req_id: int, msg) -> MassCancelled | Reject | None:
        if isinstance(msg, MassCancelled):
            self.n += msg.n
        elif self.refused is None:
            self.refused = msg
        self.missing -= 1
        if self.missing:
            return None
        return self.refused or MassCancelled(cid=self.cid, sym=None, n=self.n)


class Pending(msgspec.Struct, gc=False):
    """A command in flight (or the commands of a group): who asked, what the reply says.

    A Struct: made for every order, and the cheapest object Python makes.
    """

    conn: bytes | None  # None: nobody waits (cancel on disconnect)
    client: int
    cid: int
    kind: int  # CMD_*
    coid: str = ""
    group: BatchGroup | MassGroup | None = None


class Inflight:
    COUNTER_BITS = 32

    def __init__(self, incarnation: int | None = None):
        self.incarnation = random.getrandbits(32) if incarnation is None else incarnation
        self._counter = 0
        self._table: dict[int, Pending] = {}

    def new_req_ids(self, n: int = 1) -> int:
        """The first of ``n`` consecutive new req_ids."""
        if (self._counter + n) >> self.COUNTER_BITS:
            self.incarnation = random.getrandbits(32)
            self._counter = 0
        first = self._counter + 1
        self._counter += n
        return self.incarnation << self.COUNTER_BITS | first

    def put(self, req_ids: list[int], pending: list[Pending]) -> None:
        self._table.update(zip(req_ids, pending, strict=True))

    def get(self, req_id: int) -> Pending | None:
        return self._table.get(req_id)

    def pop(self, req_id: int) -> None:
        del self._table[req_id]

    def __len__(self) -> int:
        return len(self._table)
