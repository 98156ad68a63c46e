"""The kill switch at work: blocks from the kill files and from clients' ``Kill``
requests, and the cancels of blocked clients' orders.

An operator's ``exch kill`` writes a file the gateway looks for every second
(``sweep``; the files: ``gateway.killswitch``), a client's ``Kill`` has the
gateway write it (``kill``); either way the client's orders are cancelled on
every instrument and its new orders refused (``Risk.killed``: the exposure
stage's checks). Every second, the orders a blocked client still has (sent
before the block, or on a shard that was down) are cancelled again.

State: none of its own; the blocked clients are the risk state's.
"""

from exchange import logs
from exchange.records import CMD_MASS_CANCEL
from gateway.admission import Admission
from gateway.checks import Checks
from gateway.inflight import Inflight, Pending
from gateway.killswitch import KillError, KillList
from gateway.protocol import Kill
from gateway.risk import Risk
from gateway.shardwriter import ShardWriter
from gateway.ticket import Ticket


class Kills:
    def __init__(
        self,
        kills: KillList,
        risk: Risk,
        checks: Checks,
        admission: Admission,
        inflight: Inflight,
        writer: ShardWriter,
    ):
        self.kills = kills
        self.risk = risk
        self.checks = checks
        self.admission = admission
        self.inflight = inflight
        self.writer = writer
        for client in kills.clients:
            risk.kill(client)

    def kill(self, conn: bytes, client: int, msg: Kill) -> None:
        """The panic button: no rate limit, it must always work."""
        if client not in self.risk.killed:
            try:
                self.kills.block(client, "the client itself (Kill)")
            except OSError as e:
                logs.error("kill file not written: the block lasts until a restart", error=str(e))
            self.risk.kill(client)
            logs.warning("kill switch on", client=client, by="the client")
        self.admission.mass_cancel_all(conn, client, msg.cid)

    def sweep(self) -> None:
        """Blocks and lifts from the kill files; the orders of blocked clients cancelled."""
        try:
            added, lifted = self.kills.refresh()
        except KillError as e:
            logs.error("kill files not reloaded; the previous ones stay", error=str(e))
            added, lifted = set(), set()
        for client in lifted:
            self.risk.unkill(client)
            logs.warning("kill switch lifted", client=client)
        for client in added:
            self.risk.kill(client)
            logs.warning("kill switch on", client=client, by="the operator")
            self._cancel_on(client, list(self.checks.routes))
        for client in self.risk.killed - added:
            self._cancel_on(client, self.risk.exposed_on(client))
        self.writer.flush()

    def _cancel_on(self, client: int, syms: list[str]) -> None:
        """MASS_CANCELs of a blocked client's orders that nobody waits for; a shard that is
        down is skipped (the next sweep finds the orders still there)."""
        routes, live, submit = self.checks.routes, self.checks.live, self.admission.submit
        for sym in syms:
            link, inst, _ = routes[sym]
            if not live[link.index]:
                continue
            p = Pending(None, client, 0, CMD_MASS_CANCEL)
            submit(Ticket(client, self.inflight.new_req_ids(), p, sym, link=link, inst=inst))
