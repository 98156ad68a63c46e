"""A command on its way through the gateway's inbound stages (``gateway.core``).

A request becomes one ticket per command it asks of a shard (a NewOrder one, a
NewOrders one per order, a MassCancel without a symbol one per instrument):
``gateway.admission`` makes them, each stage of the inbound pipeline fills in
its part or refuses it (``ProtocolError``), and ``gateway.shardwriter`` queues
what is left for its shard's ring. A refused ticket is answered through its
``Pending`` and the stages it went through let go of what they hold for it.
"""

import msgspec
import numpy as np

from gateway.inflight import Pending


class Ticket(msgspec.Struct, gc=False):
    """A Struct: one is made for every command, and it is the cheapest object to make."""

    client: int
    req_id: int
    p: Pending  # who asked, what the answer needs; ``p.kind`` is the command's CMD_*
    sym: str
    msg: object = None  # the request (an order of a batch: the ``Order``); None: mass cancel
    link: object = None  # the shard's ``ShardLink``: set by routing, or routed already
    inst: int = 0  # the instrument's number on its shard
    cmd: bytes = b""  # the COMMAND record, once made
    key: int = 0  # the idempotency key it holds in the ledger (0: none)
    retry: bool = False  # a retry under a key used on this instrument: no risk checks

    def refusal(self, e) -> object:
        """The Reject that answers this command when ``e`` (a ProtocolError) refuses it."""
        p = self.p
        return e.reject(p.cid, p.coid if p.group is None else p.group.coid(self.req_id))


class Run:
    """Consecutive NEW tickets of a chunk of frames, taken through the inbound stages
    together (``gateway.core.Gateway.submit_run``): each stage takes the whole run
    (``take_run``), in the stages' order, skipping the tickets refused before it.

    No two tickets of a run hold one idempotency pair (``gateway.admission`` starts a
    new run there), so a refusal's letting go of a pair, done after the run, changes
    nothing for the tickets after it in the run.
    """

    __slots__ = ("tickets", "refused", "stage", "at", "g", "shard", "records")

    def __init__(self):
        self.tickets: list[Ticket] = []
        # ticket index -> (the inbound stage that refused it, ProtocolError); 0 with
        # nothing held, before the stages (the rate limit)
        self.refused: dict = {}
        self.stage = 0  # the stage taking the run now (``submit_run`` sets it)
        # what the routing stage makes of the tickets it passes: their indices, global
        # instrument numbers, shard indices and COMMAND records
        self.at = np.zeros(0, np.int64)
        self.g = np.zeros(0, np.int64)
        self.shard = np.zeros(0, np.int64)
        self.records = None

    def refuse(self, i: int, e) -> None:
        self.refused[i] = (self.stage, e)

    def passing(self) -> np.ndarray:
        """Which of ``at`` no stage has refused so far (bool)."""
        refused = self.refused
        return np.array([i not in refused for i in self.at.tolist()], np.bool_)
