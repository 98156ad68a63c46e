"""The gateway's idempotency ledger: which instrument each (client, key) pair was used on.

A shard knows the keys of its own instruments only, so the gateway refuses a
key that the same client already used on another instrument (``conflict``)
before the request reaches any shard. The ledger starts from every shard's
journal and notes a key when the request is written to a ring, not when it is
acknowledged, so two uses in flight at once on different shards cannot both
pass; a request that was not written after all (busy) is forgotten again.
Keys are also noted from the events (a request of a previous gateway that was
journaled after the start-up read).
"""


class Ledger:
    def __init__(self):
        self._sym: dict[tuple[int, int], str] = {}

    def __len__(self) -> int:
        return len(self._sym)

    def owner(self, client: int, key: int) -> str | None:
        """The instrument the pair was used on, or None if it is unused."""
        return self._sym.get((client, key))

    def note(self, client: int, key: int, sym: str) -> bool:
        """Record the pair's instrument; True if it was new (so a rollback may forget it)."""
        if (client, key) in self._sym:
            return False
        self._sym[(client, key)] = sym
        return True

    def forget(self, client: int, key: int) -> None:
        del self._sym[(client, key)]
