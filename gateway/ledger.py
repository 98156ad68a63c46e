"""The gateway's idempotency ledger: where a (client, idempotency key) pair was used.

A pair creates at most one order across instruments, but a shard knows the
pairs of its own instruments only (it refuses a reuse among them itself). So
before a NEW with a key is written to its shard's ring, the gateway asks where
the pair was used:

- in flight: queued or written for a shard and not answered yet. These are
  the only pairs the ledger keeps in memory, each with the instrument and the
  req_id of the request that holds it. ``use`` takes a pair nobody holds;
  the request's answer (its first event, idx 0: ``settle``) lets go of it, and
  so does a request that is not written after all (``release``: refused,
  busy). Memory is bounded by the requests in flight, not by history. At
  start, the keyed NEWs an earlier gateway wrote that are still in the request
  rings are held too (``hold``): no journal has them yet. One whose answer the
  earlier gateway took stays held; it is journaled where it is held, so the
  answers are the same.
- journaled: every other pair ever used is in a shard's journal.
  ``journaled`` asks the shards' journals (a read transaction each, begun at
  the call: after every event drained so far, so a pair whose answer let go
  of it in memory is there), all of them or all but the pair's own shard's:
  that shard answers a reuse among its instruments itself.

A pair held in flight or journaled on another instrument is a conflict; on
the same instrument the request is a retry, which its shard answers from its
journal with the original's events.
"""

import numpy as np


class Ledger:
    def __init__(self, links):
        """``links``: one per shard, with its ``syms`` and ``idem_lookup_many`` (``ShardLink``)."""
        self._links = links
        self._held: dict[tuple[int, int], tuple[str, int]] = {}  # pair -> (sym, req_id)

    def __len__(self) -> int:
        """Pairs in flight."""
        return len(self._held)

    def use(self, client: int, key: int, sym: str, req_id: int) -> str | None:
        """Hold the pair for request ``req_id`` on ``sym`` and return None if no request in
        flight holds it; else return the instrument of the one that does."""
        pair = (client, key)
        held = self._held.get(pair)
        if held is None:
            self._held[pair] = (sym, req_id)
            return None
        return held[0]

    def hold(self, client: int, key: int, sym: str, req_id: int) -> None:
        """Hold the pair for a request written before this process started (found in a
        request ring at start: not journaled yet, and in no ledger but this one)."""
        self._held[(client, key)] = (sym, req_id)

    def release(self, client: int, key: int, req_id: int) -> None:
        """Request ``req_id`` lets go of the pair, if it holds it."""
        pair = (client, key)
        held = self._held.get(pair)
        if held is not None and held[1] == req_id:
            del self._held[pair]

    def settle(self, events: np.ndarray) -> None:
        """Let go of the pairs of the requests a batch of EVENT records answers (a command's
        first event answers it: ACCEPTED, REJECTED, a duplicate re-send, a conflict)."""
        if not self._held:
            return
        k = np.flatnonzero((events["idx"] == 0) & (events["idem_key"] != 0))
        held = self._held
        for client, key, req_id in zip(
            events["client"][k].tolist(),
            events["idem_key"][k].tolist(),
            events["req_id"][k].tolist(),
            strict=True,
        ):
            h = held.get((client, key))  # ``release``, inline: once per keyed order
            if h is not None and h[1] == req_id:
                del held[(client, key)]

    def journaled(
        self, clients: list[int], keys: list[int], homes: list[int] | None = None
    ) -> list[str | None]:
        """The instrument each pair was journaled on, None for a pair no journal asked has.
        Every shard's journal is asked, but not that of shard ``homes[i]`` for pair i."""
        out: list[str | None] = [None] * len(keys)
        for link in self._links:
            if homes is None:
                ask = list(range(len(keys)))
            else:
                ask = [i for i, home in enumerate(homes) if home != link.index]
            if not ask:
                continue
            found = link.idem_lookup_many(
                np.array([clients[i] for i in ask], np.uint32),
                np.array([keys[i] for i in ask], np.uint64),
            )
            for i, entry in zip(ask, found, strict=True):
                if entry is not None:
                    out[i] = link.syms[entry.instrument]
        return out
