"""The idempotency stage, inbound and outbound: the gateway's ledger of (client, key)
pairs (``gateway.ledger``) at work.

Inbound, after routing: a keyed NEW holds its pair (``Ledger.use``). A pair held
by a request in flight, or found used (``Ledger.used_on``) on another instrument
is a ``conflict``; on the same instrument the order is a retry, which skips the
risk checks (its shard answers it from its journal, whatever the limits say
now); one whose pair was answered before carries ``FLAG_RETRY``, so that its
shard refuses it (``REJ_KEY_EXPIRED``) rather than making an order when the pair
is older than the history it keeps; found nowhere while a shard is
``uncertain``: ``unavailable``. A command
refused later, or not written (busy), lets go of its pair (``undo``).

Outbound: each drained batch lets go of the pairs of the requests it answers and
adds the pairs its journaled keyed NEWs used (``on_events``): those the book
accepted; a keyed NEW the book rejected, like one the gateway refused, leaves
its key free (``exchange.idempotency``); so does the history
a shard serves to a sync (``on_history``), and the sync's end takes the shard out
of ``uncertain``.

State: the ledger (pairs in flight, pairs answered since the last checkpoint, the
uncertain shards).
"""

import numpy as np

from exchange.records import CMD_NEW, COMMAND_DTYPE, FLAG_RETRY
from gateway.ledger import UNKNOWN, Ledger
from gateway.protocol import CONFLICT, UNAVAILABLE, ProtocolError
from gateway.shardlink import ShardLink
from gateway.ticket import Run, Ticket


def _conflict(ik: int, used: str) -> ProtocolError:
    return ProtocolError(CONFLICT, f"idempotency key {ik} was used for an order on {used}", "$.ik")


def _uncertain(ik: int, shards: set[str]) -> ProtocolError:
    return ProtocolError(
        UNAVAILABLE,
        f"idempotency key {ik} cannot be checked until shard(s) {', '.join(sorted(shards))} "
        "serve their latest orders to the gateway; retry later, unchanged",
        "$.ik",
    )


_FLAGS_AT = COMMAND_DTYPE.fields["flags"][1]  # the byte of a COMMAND record


def retried(cmd: bytes) -> bytes:
    """A COMMAND record with FLAG_RETRY set."""
    flags = cmd[_FLAGS_AT] | FLAG_RETRY
    return cmd[:_FLAGS_AT] + flags.to_bytes(1, "little") + cmd[_FLAGS_AT + 1 :]


class IdemKeys:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def take(self, t: Ticket) -> None:
        if self._answered(t):
            t.cmd = retried(t.cmd)

    def _answered(self, t: Ticket) -> bool:
        """Hold a keyed NEW's pair; True if an order on its instrument used it before."""
        if t.p.kind != CMD_NEW or not t.msg.ik:
            return False
        ledger, client, ik, sym = self.ledger, t.client, t.msg.ik, t.sym
        answered = False
        used = ledger.use(client, ik, sym, t.req_id)  # in flight?
        if used is None:
            used = ledger.used_on(client, ik)  # answered before?
            answered = used == sym
            if used is not None and used != sym:
                ledger.release(client, ik, t.req_id)
                if used == UNKNOWN:
                    raise _uncertain(ik, ledger.uncertain)
        if used is not None and used != sym:
            raise _conflict(ik, used)
        t.retry = used is not None
        t.key = ik
        return answered

    def take_run(self, run: Run) -> None:
        """``take`` of each keyed NEW of a run that passed the stages before (its COMMAND
        records are the run's, in ``at``'s order)."""
        tickets, refused = run.tickets, run.refused
        for j, i in enumerate(run.at.tolist()):
            t = tickets[i]
            if t.msg.ik and i not in refused:
                try:
                    if self._answered(t):
                        run.records["flags"][j] |= FLAG_RETRY
                except ProtocolError as e:
                    run.refuse(i, e)

    def undo(self, t: Ticket) -> None:
        if t.key:
            self.ledger.release(t.client, t.key, t.req_id)

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        self.ledger.release_answered(ev)
        self.ledger.fold(ev, link.offset)

    def on_history(self, link: ShardLink, history: np.ndarray) -> None:
        self.ledger.release_answered(history)  # the pairs an earlier gateway's requests held
        self.ledger.fold(history, link.offset)

    def synced(self, link: ShardLink) -> None:
        self.ledger.uncertain.discard(link.name)
