"""The exposure stage, inbound and outbound: the pre-trade risk state
(``gateway.risk``) at work.

Inbound, after the idempotency stage: a NEW (not a retry) passes the pre-trade
checks and is counted in flight (``Risk.admit``); a REPLACE passes them for what
it adds and holds that (``Risk.check_replace``, ``Risk.hold_replace``). A
command refused later, or not written (busy), is no longer counted (``undo``).

Outbound: each drained batch is folded into the live orders, and the requests it
answers are no longer in flight (``on_events``: in this order, no order is ever
counted neither live nor in flight). A sync's resting orders replace the shard's
part of the live orders (``synced``).

State: the risk state (live orders, what is in flight, the clients blocked by the
kill switch).
"""

import numpy as np

from exchange.records import CMD_NEW, CMD_REPLACE
from gateway.protocol import SIDES, ProtocolError
from gateway.risk import Risk
from gateway.shardlink import ShardLink, resting_rows
from gateway.ticket import Run, Ticket


class ExposureStage:
    def __init__(self, risk: Risk):
        self.risk = risk

    def take(self, t: Ticket) -> None:
        kind = t.p.kind
        if kind == CMD_NEW:
            if t.retry:
                return
            o = t.msg
            refusal = self.risk.admit(t.req_id, t.client, t.sym, SIDES[o.side], o.qty, o.px)
        elif kind == CMD_REPLACE:
            m = t.msg
            refusal = self.risk.check_replace(t.client, t.sym, m.oid, m.px, m.qty)
            if refusal is None:
                self.risk.hold_replace(t.req_id, t.client, t.sym, m.oid, m.qty)
        else:
            return
        if refusal is not None:
            raise ProtocolError(refusal.code, refusal.reason, refusal.field)

    def take_run(self, run: Run) -> None:
        """``take`` of the NEWs of a run that passed the stages before, in one pass
        (``Risk.admit_run``)."""
        tickets, refused = run.tickets, run.refused
        skip = np.array([i in refused or tickets[i].retry for i in run.at.tolist()], np.bool_)
        records = run.records
        for j, refusal in self.risk.admit_run(
            records["req_id"].tolist(),
            records["client"].tolist(),
            run.g,
            records["side"],
            records["qty"],
            records["price"],
            skip,
        ):
            run.refuse(int(run.at[j]), ProtocolError(refusal.code, refusal.reason, refusal.field))

    def undo(self, t: Ticket) -> None:
        self.risk.release(t.req_id)

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        self.risk.apply(ev, link.index)
        self.risk.release_answered(ev)

    def synced(self, link: ShardLink, resting: np.ndarray) -> None:
        per_inst = [
            resting_rows(resting[resting["instrument"] == i]) for i in range(len(link.syms))
        ]
        self.risk.reset(link.index, per_inst)
