"""The last inbound stage: the commands queued for each shard, written to its ring.

A ticket that passed every check waits in its shard's queue; the queues are
written once per turn, a batch per shard (``flush``), and sooner when
``FLUSH_AT`` commands wait at the end of a frame: a shard starts on them while
the gateway decodes the next requests (on 2 cores, a turn-sized gulp left it
idle). A written command is in flight (``Inflight.put``) until its answer
comes; what does not fit is refused ``busy`` (``refuse``, the pipeline's: the
stages before let go of what they hold for it): never dropped, never waited for.

State: the queues and how many commands they hold.
"""

import numpy as np

from exchange.records import COMMAND_DTYPE
from gateway.inflight import Inflight
from gateway.protocol import BUSY, ProtocolError
from gateway.shardlink import ShardLink
from gateway.ticket import Run, Ticket

FLUSH_AT = 256  # commands queued at the end of a frame: written before the next frame


class ShardWriter:
    def __init__(self, links: list[ShardLink], inflight: Inflight, refuse):
        self.links = links
        self.inflight = inflight
        self.refuse = refuse  # (ticket, ProtocolError): a queued command not written after all
        # per shard, the queued tickets and their COMMAND records (bytes, several
        # records a piece for a run), in order
        self.tickets: dict[int, list[Ticket]] = {link.index: [] for link in links}
        self.records: dict[int, list[bytes]] = {link.index: [] for link in links}
        self.queued = 0  # commands in the queues

    def take(self, t: Ticket) -> None:
        self.tickets[t.link.index].append(t)
        self.records[t.link.index].append(t.cmd)
        self.queued += 1

    def take_run(self, run: Run) -> None:
        """The tickets of a run that passed every stage, queued with their records."""
        passing = run.passing()
        if not passing.any():
            return
        at, shard, records, tickets = run.at, run.shard, run.records, run.tickets
        for link in self.links:
            mine = passing & (shard == link.index)
            if mine.any():
                self.tickets[link.index].extend(tickets[i] for i in at[mine].tolist())
                self.records[link.index].append(records[mine].tobytes())
        self.queued += int(passing.sum())

    def undo(self, t: Ticket) -> None:
        """Nothing is held before a command is written."""

    def frame_done(self) -> None:
        if self.queued >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write the queued commands, one batch per shard; answer ``busy`` for what did not fit."""
        self.queued = 0
        for link in self.links:
            out = self.tickets[link.index]
            if not out:
                continue
            # a bytearray: a read-only batch would compile the ring's push once more
            records = bytearray().join(self.records[link.index])
            self.tickets[link.index], self.records[link.index] = [], []
            n = link.requests.write(np.frombuffer(records, COMMAND_DTYPE))
            self.inflight.put([t.req_id for t in out[:n]], [t.p for t in out[:n]])
            reason = f"the request queue of shard {link.name} is full; retry later, unchanged"
            for t in out[n:]:
                self.refuse(t, ProtocolError(BUSY, reason))
