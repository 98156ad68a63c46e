"""The gateway's counter block in shared memory, ``gateway``: what ``exch top`` and
``exchanged status`` read of it.

Counters: ``requests`` (frames taken), ``orders`` (the orders in them: a NewOrder
is one, a NewOrders its count), ``fills`` (Fill notices sent) and one
``rejects.<code>`` per stable error code of ``gateway.protocol.ERROR_CODES``,
every one made up front because a block's layout is fixed when it is created.
Gauges: ``clients``, the clients the gateway has heard from that still have a
connection it knows of (it learns that one is gone when a send to it fails), and
per shard ``stalled_ms.<shard>``, how long the shard has been stalled (0: it is
not; see ``gateway.checks.Checks.look``), set every tick.

The hot path only adds to plain Python ints and a set; ``flush`` writes what a
turn counted with one atomic add per metric that moved, so the shared-memory
cost is per turn, not per message.
"""

from gateway.protocol import ERROR_CODES
from gateway.sessions import Sessions
from shm.counters import KIND_COUNTER, KIND_GAUGE, CounterBlock, counter_add, gauge_set

BLOCK = "gateway"
REJECTS = "rejects."
COUNTERS = ("requests", "orders", "fills", *(REJECTS + code for code in ERROR_CODES))
STALLED = "stalled_ms."


class GatewayCounters:
    """The tallies of the turn under way, and the block they are flushed to."""

    __slots__ = ("block", "requests", "orders", "fills", "rejects", "seen", "_slot", "_stalled")

    def __init__(self, namespace: str, shards: list[str]):
        stalled = [STALLED + shard for shard in shards]
        # a gateway killed with SIGKILL leaves its block: the next one replaces it
        self.block = CounterBlock(
            namespace,
            BLOCK,
            counters=COUNTERS,
            gauges=["clients", *stalled],
            replace_stale=True,
        )
        self._slot = {m: self.block.slot(m, KIND_COUNTER) for m in COUNTERS}
        self._slot["clients"] = self.block.slot("clients", KIND_GAUGE)
        self._stalled = [self.block.slot(m, KIND_GAUGE) for m in stalled]  # by shard index
        self.requests = 0
        self.orders = 0
        self.fills = 0
        self.rejects: dict[str, int] = {}  # code -> refusals this turn
        self.seen: set[int] = set()  # clients heard from, kept while a connection is known

    def reject(self, code: str) -> None:
        self.rejects[code] = self.rejects.get(code, 0) + 1

    def flush(self) -> None:
        """Add what this turn counted to the block, and start the next turn at zero."""
        values, slot = self.block.values, self._slot
        if self.requests:
            counter_add(values, slot["requests"], self.requests)
            self.requests = 0
        if self.orders:
            counter_add(values, slot["orders"], self.orders)
            self.orders = 0
        if self.fills:
            counter_add(values, slot["fills"], self.fills)
            self.fills = 0
        if self.rejects:
            for code, n in self.rejects.items():
                counter_add(values, slot[REJECTS + code], n)
            self.rejects.clear()

    def set_clients(self, sessions: Sessions) -> None:
        """The ``clients`` gauge: the clients seen that still have a known connection."""
        self.seen = {client for client in self.seen if sessions.connections(client)}
        gauge_set(self.block.values, self._slot["clients"], len(self.seen))

    def set_stalled(self, shard: int, seconds: float) -> None:
        """Shard number ``shard`` has been stalled for ``seconds`` (0: it is not)."""
        gauge_set(self.block.values, self._stalled[shard], round(seconds * 1000))

    def unlink(self) -> None:
        """At a clean exit: nothing is left in shared memory."""
        self.block.unlink()
