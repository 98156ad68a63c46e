"""The gateway's own state: loaded at start, written every second it changed.

``load``: the checkpoint's positions and watermarks (None: no checkpoint, every
shard is read from seq 0), the keyed NEWs still in the request rings held in the
ledger (see ``gateway.ledger``), a checkpoint saying this gateway runs, then a
sync asked of every shard. ``write``: the pairs taken since the last checkpoint,
the positions, and per shard the watermark and whether everything written to it
was answered (``gateway.store``).

State: the shards' marks as loaded (for those not caught up yet), and whether
events were folded since the last checkpoint (``changed``).
"""

from exchange import logs
from gateway.killswitch import KillList
from gateway.ledger import Ledger
from gateway.positions import Positions
from gateway.shardlink import ShardLink
from gateway.store import FORMAT, Checkpoint, GatewayStore, ShardMark, StoreError


class Checkpoints:
    def __init__(
        self,
        store: GatewayStore,
        links: list[ShardLink],
        positions: Positions,
        ledger: Ledger,
        kills: KillList,
    ):
        self.store = store
        self.links = links
        self.positions = positions
        self.ledger = ledger
        self.kills = kills
        self._marks: dict[str, ShardMark] = {}  # per shard not caught up: its loaded mark
        self.changed = False  # events folded since the last checkpoint

    def change(self) -> None:
        self.changed = True

    def load(self, cp: Checkpoint | None, ask) -> None:
        """Start-up, from the gateway's own state; ``ask(link)`` asks a shard for a sync.

        A shard's journal may hold keyed NEWs after the checkpoint's watermark, and
        until the shard serves them their pairs are unknown (``Ledger.uncertain``).
        They are known to be none when the checkpoint found the shard quiet (every
        keyed NEW written to it answered, its pair in the checkpoint) and nothing was
        written to it since: either every record written since is still in its
        request ring (none of them journaled), or the checkpoint was a clean stop's
        (the gateway writes to no ring after it; the next gateway's first act is to
        say it runs, synced to disk, before it writes to any ring).
        """
        if cp is not None:
            self.positions.restore(cp.clients, cp.acct, cp.cash, cp.last_px)
            self._marks = {m.name: m for m in cp.shards}
        held = 0
        for link in self.links:
            news = link.queued_news()
            for client, key, inst, req_id in zip(
                *(news[f].tolist() for f in ("client", "idem_key", "instrument", "req_id")),
                strict=True,
            ):
                self.ledger.hold(client, key, link.syms[inst], req_id)
            held += len(news)
            mark = self._marks.get(link.name)
            if mark is None:
                self._marks[link.name] = ShardMark(link.name, 0, 0, False, 0, 0)
            else:
                link.last = (mark.seq, mark.idx)
            if not self._tail_known(link, mark, cp is not None and cp.clean):
                self.ledger.uncertain.add(link.name)
        self.write(clean=False, durable=True)
        for link in self.links:
            ask(link)
        logs.info(
            "state loaded",
            checkpoint=cp is not None,
            watermarks={link.name: link.last[0] for link in self.links},
            keys_in_rings=held,
            uncertain=sorted(self.ledger.uncertain),
            blocked=sorted(self.kills.clients),
        )

    def _tail_known(self, link: ShardLink, mark: ShardMark | None, clean: bool) -> bool:
        """Whether the shard can have journaled no keyed NEW the mark lacks (``load``)."""
        if mark is None or not mark.quiet:
            return False
        if clean:
            return True
        stamp, published = link.witness()
        written = published - mark.published
        return stamp == mark.ring and 0 <= written <= len(link.requests.unconsumed())

    def write(self, clean: bool, durable: bool = False) -> float:
        """Write the gateway's state (``gateway.store``): the pairs taken since the last
        checkpoint, the positions, and per shard the watermark and whether everything
        written to it was answered. ``clean``: the gateway writes to no ring after it.
        Returns the seconds it took."""
        marks = []
        for link in self.links:
            if link.caught_up:
                # every keyed NEW written to it was answered, and its pair folded in
                quiet = not self.ledger.holds_on(link.syms)
                # one it diverged from: the watermark before (the next gateway finds the gap)
                last = link.held if link.diverged else link.last
                marks.append(ShardMark(link.name, *last, quiet, *link.witness()))
            else:  # nothing read from it yet: what the loaded checkpoint said still holds
                marks.append(self._marks[link.name])
        clients, acct, cash, last_px = self.positions.export()
        cp = Checkpoint(FORMAT, self.positions.symbols, marks, clean, clients, acct, cash, last_px)
        seconds = self.store.write(cp, self.ledger.taken_since(), durable=durable)
        self.ledger.forget_taken()
        self.changed = False
        return seconds

    def periodic(self) -> None:
        """A periodic checkpoint, if events were folded since the last; one that cannot be
        written is logged and tried again at the next (the shards' journals are the
        truth: only the restart's tail grows)."""
        if not self.changed:
            return
        try:
            seconds = self.write(clean=False)
        except StoreError as e:
            logs.error("checkpoint not written", error=str(e))
            return
        if seconds > 0.05:
            logs.info("checkpoint", seconds=round(seconds, 3), keys=self.store.keys())
