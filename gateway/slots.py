"""Client ids -> dense row numbers, for the per-client arrays of the risk and positions state.

Client ids are any uint32, so the arrays (``gateway.risk``, ``gateway.positions``)
are indexed by a row given to each client the first time it is seen, and grow
with the clients actually met. One ``Slots`` is shared by both, so a client has
the same row in each. ``grown`` gives an owner its array with room for every row.
"""

import numpy as np

MIN_ROWS = 16
SMALL = 32  # up to this many ids, dict lookups beat numpy's per-call cost


class Slots:
    def __init__(self):
        self._row: dict[int, int] = {}
        self.ids: list[int] = []  # row -> client id
        # the same, sorted by id, for ``rows``: one searchsorted per array of ids
        self._sorted_ids = np.zeros(0, np.uint32)
        self._sorted_rows = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, client: int) -> int:
        """The client's row, given now if it has none."""
        row = self._row.get(client)
        if row is None:
            if not 0 < client < 1 << 32:
                raise ValueError(f"a client id is in 1..2**32-1, got {client!r}")
            row = self._row[client] = len(self.ids)
            self.ids.append(client)
        return row

    def find(self, client: int) -> int | None:
        """The client's row, or None if it was never seen (nothing is given)."""
        return self._row.get(client)

    def rows(self, clients: np.ndarray) -> np.ndarray:
        """The rows (int64) of an array of client ids, giving rows to new ones."""
        if len(clients) <= SMALL:
            return np.array([self.row(c) for c in clients.tolist()], np.int64)
        known = self._sorted_ids
        at = np.searchsorted(known, clients)
        hit = at < len(known)
        hit[hit] = known[at[hit]] == clients[hit]
        if not hit.all():
            for c in np.unique(clients[~hit]).tolist():
                self.row(c)
            order = np.argsort(self.ids)
            self._sorted_ids = np.array(self.ids, np.uint32)[order]
            self._sorted_rows = order.astype(np.int64)
            return self.rows(clients)
        return self._sorted_rows[at]


def grown(arr: np.ndarray, rows: int) -> np.ndarray:
    """``arr``, or a zero-padded copy whose first axis holds at least ``rows`` (doubling)."""
    if len(arr) >= rows:
        return arr
    size = max(MIN_ROWS, len(arr))
    while size < rows:
        size *= 2
    out = np.zeros((size, *arr.shape[1:]), arr.dtype)
    out[: len(arr)] = arr
    return out
