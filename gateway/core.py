"""The gateway's work, without its I/O loop: its stages, wired, and the order they run in.

Each stage is a module with one job and its own state (docs/ARCHITECTURE.md
draws them). ``Gateway`` makes them, hands each what it needs of the others,
and runs them; the order is written here, once:

- inbound, per request frame: ``Admission`` (connection, client id, decode, rate
  limit; a request becomes one ``Ticket`` per command), then for each ticket
  ``inbound``: ``Checks`` (routing, grid) -> ``IdemKeys`` (idempotency pairs) ->
  ``ExposureStage`` (pre-trade risk) -> ``ShardWriter`` (queued; written to the
  rings at the end of the frames' reading). A stage refuses a ticket by raising
  ``ProtocolError``: the stages it went through let go of what they hold for it
  (``undo``, in reverse), and it is answered through ``Replies``. So is a command
  the writer finds no room for (``busy``).
- outbound, per drained batch of a shard's events: ``unseen`` (each journaled
  event once), what a sync served to ``Sync``, a retransmission's answer to
  ``Retransmits`` (``TradesRequest``: never history), then ``outbound``: ``Replies``
  (answers and notices, sent at once: nothing in them comes from the stages after)
  -> ``ExposureStage`` (live orders, requests no longer in flight) -> ``Fills``
  (positions) -> ``IdemKeys`` (pairs let go of, pairs used) -> ``MarketFeed``
  (mirrors; Trades at once).
- once per turn, at its end (``turn_end``): the outboxes sent, the levels that
  moved this turn published, the turn's counts flushed to the counter block
  (``gateway.counters``: the per-order path adds to plain ints only). Every tick,
  ``Housekeeping``'s duties.

``loops`` drives ``step`` and sleeps when there is nothing to do; it reads
``next_tick``, ``ticks``, ``stopping``, ``router`` and ``links``.
"""

import time

import numpy as np
import zmq

from exchange.records import EVF_REPLAY
from exchange.topology import symbols
from gateway.admission import Admission
from gateway.checkpoints import Checkpoints
from gateway.checks import Checks
from gateway.conns import Connections
from gateway.counters import GatewayCounters
from gateway.exposure import ExposureStage
from gateway.fills import Fills
from gateway.housekeeping import Housekeeping
from gateway.idemkeys import IdemKeys
from gateway.inflight import Inflight
from gateway.kills import Kills
from gateway.killswitch import KillList
from gateway.ledger import Ledger
from gateway.limits import limits_for
from gateway.marketdata import MarketFeed
from gateway.positions import Positions
from gateway.protocol import (
    BookRequest,
    InstrumentsRequest,
    Kill,
    PositionsRequest,
    ProtocolError,
    TradesRequest,
)
from gateway.ratelimit import RateLimiter
from gateway.refdata import ReferenceData
from gateway.replies import Replies
from gateway.retransmit import Retransmits
from gateway.risk import Risk
from gateway.sessions import Sessions
from gateway.shardlink import ShardLink, unseen
from gateway.shardwriter import ShardWriter
from gateway.store import Checkpoint, GatewayStore
from gateway.sync import Sync
from gateway.ticket import Run, Ticket
from gateway.zap import KeyTable

REQUEST_BUDGET = 1024  # requests per turn at most, so events are drained in between
EVENT_BUDGET = 8192  # events per ring per turn at most
RUN_MIN = 16  # NEWs a run needs to go through the stages' passes over columns


class Gateway:
    def __init__(
        self,
        config,
        router: zmq.Socket,
        pub: zmq.Socket,
        keys: KeyTable,
        links: list[ShardLink],
        kills: KillList,
        counters: GatewayCounters,
        store: GatewayStore,
        conns: Connections,
        clock=time.monotonic,
    ):
        self.router = router
        self.keys = keys
        self.conns = conns
        self.links = links
        self.clock = clock
        self.count = counters
        self.store = store
        self.now = clock()
        self.stopping = False  # set by a signal: the loop returns after its turn
        # what stages share: the requests written and not answered, the sessions
        self.inflight = Inflight()
        self.sessions = Sessions()
        own_rates = {}
        for c in config.clients:
            lim = limits_for(config, c.client)
            own_rates[c.client] = (lim.orders_per_second, lim.burst)
        limiter = RateLimiter(config.rate.orders_per_second, config.rate.burst, own_rates)
        syms = symbols(config)
        positions = Positions(syms, [config.instrument(s).ref_price for s in syms])
        risk = Risk(config, positions)
        ledger = Ledger(syms, store)

        self.replies = Replies(router, self.sessions, self.inflight, counters)
        self.checks = Checks(links, config.gateway.stall_ms / 1000, counters)
        self.idemkeys = IdemKeys(ledger)
        self.exposure = ExposureStage(risk)
        self.writer = ShardWriter(links, self.inflight, self.busy)
        self.admission = Admission(
            router,
            keys,
            self.sessions,
            limiter,
            counters,
            self.inflight,
            self.replies,
            self.writer,
            list(self.checks.routes),
            store.screen,
        )
        self.fills = Fills(positions, risk, self.replies.reply)
        md_interval = config.gateway.md_interval_ms / 1000
        self.feed = MarketFeed(pub, self.checks.route, self.replies.reply, md_interval, clock)
        self.kills = Kills(kills, risk, self.checks, self.admission, self.inflight, self.writer)
        self.checkpoints = Checkpoints(store, links, positions, ledger, kills)

        # the order the stages run in: written here only
        self.inbound = (self.checks, self.idemkeys, self.exposure, self.writer)
        self.outbound = (self.replies, self.exposure, self.fills, self.idemkeys, self.feed)
        history = (self.fills, self.idemkeys)  # what a sync serves: folded, never answered
        self.turn_end = (self.replies.send_out, self.feed.publish, counters.flush)

        self.sync = Sync(
            self.inflight,
            history,
            self.exposure,
            self.idemkeys,
            self.checks,
            self.checkpoints.change,
        )
        self.admission.submit = self.submit
        self.admission.submit_run = self.submit_run
        self.retransmits = Retransmits(links, self.checks.route, self.inflight, self.replies.reply)
        self.refdata = ReferenceData(
            config, positions, self.checks.serving, self.checks.halted, self.replies.reply
        )
        self.admission.handlers.update(
            {
                BookRequest: self.feed.book,
                PositionsRequest: self.fills.report,
                InstrumentsRequest: self.refdata.request,
                Kill: self.kills.kill,
                TradesRequest: self.retransmits.request,
            }
        )
        self.housekeeping = Housekeeping(
            self, config.session.cancel_on_disconnect_ms / 1000, self.now
        )

    @property
    def ticks(self) -> int:
        return self.housekeeping.ticks

    @property
    def next_tick(self) -> float:
        """When the loop must turn next, work or not: housekeeping, or market data held
        back by ``md_interval_ms``."""
        if self.feed.waiting:
            return min(self.housekeeping.next_tick, self.feed.due)
        return self.housekeeping.next_tick

    def status(self) -> str:
        """What systemd shows for the unit (STATUS=)."""
        live = sum(self.checks.live.values())
        return f"serving, {live} of {len(self.links)} shards live, {len(self.inflight)} in flight"

    def load(self, cp: Checkpoint | None) -> None:
        """Start-up from the gateway's own state, then a sync asked of every shard."""
        self.checkpoints.load(cp, self.sync.ask)

    # ------------------------------------------------------------ the loop's entry point

    def step(self, take_requests: bool = True) -> int:
        """One turn: requests (unless stopping), events, housekeeping, the turn's end;
        returns the work done."""
        self.now = now = self.clock()
        done = self.admission.take(REQUEST_BUDGET, now) if take_requests else 0
        done += self.drain_events()
        if now >= self.housekeeping.next_tick:
            self.housekeeping.tick(now)
        for end in self.turn_end:
            end()
        return done

    # ------------------------------------------------------------ inbound

    def submit(self, t: Ticket) -> None:
        """A command through the inbound stages, in order."""
        stage = None
        try:
            for stage in self.inbound:
                stage.take(t)
        except ProtocolError as e:
            self._refuse(t, e, self.inbound.index(stage))

    def submit_run(self, run: Run) -> None:
        """A run of NEWs through the inbound stages, in order, each over the whole run;
        then the refused ones answered, in the run's order. A run shorter than
        ``RUN_MIN`` goes ticket by ticket (``submit``): the passes over columns cost
        more than they save on a few orders."""
        if len(run.tickets) < RUN_MIN:
            for i, t in enumerate(run.tickets):
                refused = run.refused.get(i)
                if refused is None:
                    self.submit(t)
                else:
                    self._refuse(t, refused[1], 0)
            return
        for k, stage in enumerate(self.inbound):
            run.stage = k
            stage.take_run(run)
        for i, (done, e) in sorted(run.refused.items()):
            self._refuse(run.tickets[i], e, done)

    def busy(self, t: Ticket, e: ProtocolError) -> None:
        """A queued command the writer found no room for."""
        self._refuse(t, e, len(self.inbound) - 1)

    def _refuse(self, t: Ticket, e: ProtocolError, done: int) -> None:
        for stage in reversed(self.inbound[:done]):
            stage.undo(t)
        self.replies.answer(t.p, t.req_id, t.refusal(e))

    # ------------------------------------------------------------ outbound

    def drain_events(self, budget: int = EVENT_BUDGET) -> int:
        n = 0
        for link in self.links:
            # read() allocates room for what it is asked for: ask for what is there
            ready = link.events.readable()
            if ready:
                ev = link.events.read(min(ready, budget))
                n += len(ev)
                self.on_events(link, ev)
        return n

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        before = link.last
        ev, link.last, served, retransmitted = unseen(ev, link.last, link.caught_up)
        if link.last != before:
            self.checkpoints.changed = True
        if len(retransmitted):
            self.retransmits.on_answer(link, retransmitted)
        if served:
            replay = (ev["flags"] & EVF_REPLAY) != 0
            self.sync.served(link, ev[replay])
            ev = ev[~replay]
            if not len(ev):
                return
        for stage in self.outbound:
            stage.on_events(link, ev)
