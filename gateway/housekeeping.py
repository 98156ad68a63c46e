"""What the gateway does every tick (``TICK_SECONDS``), off the per-order path.

The duties, in order: the keys directory and the kill files (every second:
``Kills.sweep``), each shard's liveness (a shard process it has not synced with
is asked for a sync; ``Checks.look``: live, stalled; the retransmissions waiting
for it: ``Retransmits.tick``), the checkpoint (every
second it changed), the key filter's filling from the store, the ``clients``
gauge, cancel on disconnect (a client that armed it and said nothing for
``[session] cancel_on_disconnect_ms``: a MassCancel of every instrument that
nobody waits for), the connections' events (``gateway.conns``), systemd's
watchdog (``exchange.sdnotify``: ticks are what a hung loop stops). A duty that
fails with an OSError (EMFILE: every descriptor in use) is logged and tried again
next tick; the others still run.

State: the tick count and when the next one is due.
"""

from exchange import logs, sdnotify
from shm.proc import token_alive

TICK_SECONDS = 0.1  # shard liveness and cancel on disconnect are checked this often
KEYS_EVERY_TICKS = 10  # the keys directory is looked at every second
CHECKPOINT_EVERY_TICKS = 10  # the gateway's own state is written every second it changed


class Housekeeping:
    def __init__(self, gw, cancel_on_disconnect_after: float, now: float):
        self.gw = gw  # the stages (``gateway.core.Gateway``)
        self.cod_after = cancel_on_disconnect_after
        self.ticks = 0
        self.next_tick = now
        self.now = now
        self.watchdog = sdnotify.Watchdog()
        self._duties = [
            (self._keys_and_kills, "keys and kill files"),
            (self._shards, "shard liveness"),
            (self._checkpoint, "checkpoint"),
            (gw.store.fill_filter, "key filter"),
            (lambda: gw.count.set_clients(gw.sessions), "clients gauge"),
            (self._cancel_silent, "cancel on disconnect"),
            (gw.conns.poll, "connection events"),
            (lambda: self.watchdog.kick(gw.status), "systemd watchdog"),
        ]
        self._failing = [
            logs.Failing(f"{what} failed", f"{what} works again") for _, what in self._duties
        ]

    def tick(self, now: float) -> None:
        self.now = now
        self.next_tick = now + TICK_SECONDS
        self.ticks += 1
        for (duty, _), failing in zip(self._duties, self._failing, strict=True):
            try:
                duty()
            except OSError as e:
                failing.failed(e)
            else:
                failing.ok()

    def _keys_and_kills(self) -> None:
        if self.ticks % KEYS_EVERY_TICKS == 0:
            self.gw.keys.refresh()
            self.gw.kills.sweep()

    def _shards(self) -> None:
        for link in self.gw.links:
            token = link.token()
            if token != link.synced_to and token_alive(token):
                self.gw.sync.ask(link)  # a shard process it has not synced with: (re)started
            self.gw.checks.look(link, self.now)
        self.gw.retransmits.tick()  # after the syncs asked: a retransmission waits for them

    def _checkpoint(self) -> None:
        if self.ticks % CHECKPOINT_EVERY_TICKS == 0:
            self.gw.checkpoints.periodic()

    def _cancel_silent(self) -> None:
        if self.cod_after:
            for client in self.gw.sessions.silent(self.now, self.cod_after):
                logs.info("cancel on disconnect", client=client)
                self.gw.admission.mass_cancel_all(None, client, 0)
            self.gw.writer.flush()
