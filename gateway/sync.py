"""Catching up with each shard: the syncs asked of it, and what it serves.

A sync is asked when the gateway starts and whenever the shard process changes
(``ask``; ``ShardLink.sync``). What a shard serves to it (``served``) is history:
its journal after the watermark, folded into the stages that keep history
(``history``: the positions, the idempotency pairs; never answered, never
notified: it happened before), then its books' resting orders, their trading
states and the end, which seed the live orders (the exposure stage), the
mirrors (levels and states), and take the shard out of the idempotency stage's
``uncertain``; its instruments take
requests again once the link is ready (``Checks.live``).

State: none of its own; the sync in flight and the watermark are the link's.
"""

import numpy as np

from exchange import logs
from exchange.records import SYNC_ANSWERS
from gateway.checks import Checks
from gateway.exposure import ExposureStage
from gateway.idemkeys import IdemKeys
from gateway.inflight import Inflight
from gateway.shardlink import ShardLink


class Sync:
    def __init__(
        self,
        inflight: Inflight,
        history: tuple,
        exposure: ExposureStage,
        keys: IdemKeys,
        checks: Checks,
        changed,
    ):
        self.inflight = inflight
        self.history = history  # stages with ``on_history(link, events)``, in order
        self.exposure = exposure
        self.keys = keys
        self.checks = checks
        self.changed = changed  # (): the gateway's state changed (``Checkpoints``)

    def ask(self, link: ShardLink) -> None:
        """Ask the shard to serve its history after the watermark and its resting orders
        (``ShardLink.sync``); a full ring is asked again at the next tick."""
        if not link.sync(self.inflight.new_req_ids()):
            logs.warning("sync not sent: the request ring is full", shard=link.name)

    def served(self, link: ShardLink, served: np.ndarray) -> None:
        """What a shard served to a sync: its history after the watermark, then its
        resting orders, its books' trading states and the end."""
        history = served[~np.isin(served["kind"], SYNC_ANSWERS)]
        if len(history):
            for stage in self.history:
                stage.on_history(link, history)
        done = link.answered(served)
        if done is None:
            return
        seq, resting, trading, kept = done
        # the watermark as the sync was asked: folding its replay has moved ``link.last``
        asked = link.asked_from[0]
        if kept > max(asked - 1, 0):
            # the replay started after ``kept``: what the gateway had not read before it
            # is gone from the shard's journal, so positions and keys would miss it
            link.diverge(
                f"the gateway's state is older than the history shard {link.name}'s journal "
                f"keeps (journal retention: seq {kept} and before are gone); an operator must "
                "restore the gateway's state"
            )
            logs.error(
                "the shard's journal no longer holds the history after the gateway's "
                "watermark (journal retention); its instruments stay unavailable: restore "
                "the gateway's state from a backup taken within the shard's retention",
                shard=link.name,
                pruned_to=kept,
                gateway_seq=asked,
            )
        elif seq < asked:
            link.diverge(
                f"shard {link.name}'s journal ends before what the gateway read; an operator "
                "must rebuild the gateway's state"
            )
            logs.error(
                "shard went back in history: its journal ends before what the gateway read; "
                "its instruments stay unavailable until the gateway's state is rebuilt "
                "(stop, move the gateway state directory aside, start)",
                shard=link.name,
                shard_seq=seq,
                gateway_seq=asked,
            )
        self.exposure.synced(link, resting)
        link.seed_mirrors(seq, resting, trading)
        self.keys.synced(link)
        self.checks.live[link.index] = link.ready()
        self.changed()
        logs.info("synced", shard=link.name, seq=seq, resting=len(resting))
