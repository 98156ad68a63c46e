"""The gateway's idempotency ledger: where a (client, idempotency key) pair was used.

A pair creates at most one order across instruments, but a shard knows the
pairs of its own instruments only (it refuses a reuse among them itself, and
answers an identical retry with the original's events). So before a keyed NEW
is queued for its shard, the gateway asks the ledger where the pair was used,
from state the gateway owns (never a shard's journal):

- in flight: queued or written for a shard and not answered yet, each with the
  instrument and the req_id of the request that holds it. ``use`` takes a pair
  nobody holds; the request's answer (its first event, idx 0: ``release_answered``) lets
  go of it, and so does a request that is not written after all (``release``:
  refused, busy). At start, the keyed NEWs an earlier gateway wrote that are
  still in the request rings are held too (``hold``): no event has told of them.
- answered: ``fold`` takes every journaled keyed NEW's ACCEPTED event the gateway
  folds in (live or replayed by a shard, each once: ``gateway.shardlink``)
  into ``recent`` (pair -> instrument, for lookups) and ``taken`` (the store's
  records, made a batch at a time from the events' columns): only an order the
  book accepted uses its pair up (a keyed NEW refused, by the gateway or by the
  book, leaves the key free). A checkpoint writes ``taken_since()`` to the
  store (``gateway.store``), which keeps the last ``key_window`` of them on
  disk, and ``forget_taken`` empties both. Lookups in the
  store go through its Bloom filter first (``gateway.keyfilter``), so a new
  key costs no read of the store.
  Memory holds the pairs in flight and those taken since the last checkpoint.
- unknown: a shard that was not synced since the gateway started may have
  journaled keyed NEWs after the checkpoint's watermark that no event has told
  of yet (``uncertain``). A pair found nowhere while such a shard exists could
  be one of them, so ``used_on`` answers ``UNKNOWN`` and the gateway refuses
  the order ``unavailable`` (retry later, unchanged) rather than risk a second
  order under the pair.

A pair held in flight or answered on another instrument is a conflict; on the
same instrument the request is a retry, which its shard answers from its
journal with the original's events.
"""

import numpy as np

from exchange.records import EV_ACCEPTED, EVF_DUPLICATE
from gateway.store import GatewayStore, taken_records

UNKNOWN = "?"  # ``used_on``: the pair may have been used on a shard not synced yet


def keyed_firsts(events: np.ndarray) -> np.ndarray:
    """The journaled ACCEPTED events of keyed NEWs, live or replayed: the pairs used up.
    Not a book's REJECTED (a refused order uses no key, ``exchange.idempotency``), nor
    the shard's own replies (seq 0, duplicates)."""
    ev = events
    return ev[
        (ev["idx"] == 0)
        & (ev["kind"] == EV_ACCEPTED)
        & (ev["idem_key"] != 0)
        & (ev["seq"] > 0)
        & (ev["flags"] & EVF_DUPLICATE == 0)
    ]


class Ledger:
    def __init__(self, symbols: list[str], store: GatewayStore):
        self.symbols = symbols
        self.store = store
        self._held: dict[tuple[int, int], tuple[str, int]] = {}  # pair -> (sym, req_id)
        # the pairs folded since the last checkpoint: key << 32 | client (a client id is
        # 32 bits; one int is the cheapest dict key) -> instrument number, and the
        # store's records of them, a batch's at a time
        self.recent: dict[int, int] = {}
        self.taken: list[np.ndarray] = []
        self.uncertain: set[str] = set()  # shards whose tail after the checkpoint is unknown

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
        request ring at start: no event has told of it yet)."""
        self._held[(client, key)] = (sym, req_id)

    def holds_on(self, syms: list[str]) -> bool:
        """Whether a request in flight holds a pair on one of these instruments."""
        return any(sym in syms for sym, _ in self._held.values())

    def release(self, client: int, key: int, req_id: int) -> None:
        """Request ``req_id`` lets go of the pair, if it holds it."""
        pair = (client, key)
        held = self._held.get(pair)
        if held is not None and held[1] == req_id:
            del self._held[pair]

    def release_answered(self, events: np.ndarray) -> None:
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

    def fold(self, events: np.ndarray, offset: int) -> None:
        """Remember the pairs the journaled keyed NEWs among one shard's new events used
        (``offset``: the number of the shard's first instrument)."""
        firsts = keyed_firsts(events)
        if not len(firsts):
            return
        clients, keys = firsts["client"], firsts["idem_key"]
        insts = firsts["instrument"].astype(np.int64) + offset
        self.taken.append(taken_records(clients, keys, insts, firsts["order_id"], firsts["seq"]))
        ids = [k << 32 | c for c, k in zip(clients.tolist(), keys.tolist(), strict=True)]
        self.recent.update(zip(ids, insts.tolist(), strict=True))

    def taken_since(self) -> np.ndarray:
        """The store's records of the pairs folded since the last checkpoint, a pair once
        (its latest use: a pair folded again after a crash)."""
        if not self.taken:
            return taken_records([], [], [], [], [])
        records = np.concatenate(self.taken)
        if len(self.recent) < len(records):
            last = len(records) - 1 - np.unique(records["pair"][::-1], return_index=True)[1]
            records = records[np.sort(last)]
        self.taken = [records]
        return records

    def forget_taken(self) -> None:
        """The store has them (a checkpoint was written)."""
        self.recent = {}
        self.taken = []

    def used_on(self, client: int, key: int) -> str | None:
        """The instrument the pair was used on (not counting requests in flight), None if
        never, ``UNKNOWN`` if it may have been used on a shard not synced yet."""
        inst = self.recent.get(key << 32 | client)
        if inst is None:
            use = self.store.lookup(client, key)
            inst = None if use is None else use.instrument
        if inst is not None:
            return self.symbols[inst]
        return UNKNOWN if self.uncertain else None
