"""The gateway's idempotency ledger: which instrument each (client, key) pair was used on.

A shard knows the keys of its own instruments only, so the gateway refuses a
key that the same client already used on another instrument (``conflict``)
before the request reaches any shard. The ledger starts from every shard's
journal and records a key when the request is written to a ring, not when it
is acknowledged, so two uses in flight at once on different shards cannot
both pass; a request that was not written after all (busy) is forgotten
again. Keys of requests from a previous gateway that were journaled after the
start-up read are noted from their events.
"""


class Ledger:
    def __init__(self):
        self._sym: dict[tuple[int, int], str] = {}

    def __len__(self) -> int:
        return len(self._sym)

    def use(self, client: int, key: int, sym: str) -> str | None:
        """Record the pair for ``sym`` if it is new, and return None (``forget`` undoes
        it); else return the instrument it was used on: ``sym``, or another (a conflict)."""
        pair = (client, key)
        used = self._sym.get(pair)
        if used is None:
            self._sym[pair] = sym
        return used

    def note(self, client: int, key: int, sym: str) -> None:
        """Record a pair known to be used (from a journal or an event); the first use stays."""
        self._sym.setdefault((client, key), sym)

    def forget(self, client: int, key: int) -> None:
        del self._sym[(client, key)]
