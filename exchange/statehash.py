"""The canonical state hash of a book: same hash = same book, queue order included.

Both book implementations describe their resting orders as rows of int64
``CANONICAL_FIELDS``, bids from the best price down then asks from the best price
up, each level in queue (FIFO) order (an iceberg with its display quantity and the
part of it shown), and their waiting stops as rows of int64
``STOP_FIELDS`` in trigger order (buy stops lowest trigger first, then sell stops
highest trigger first, each trigger in arrival order); the hash covers the last
sequence number processed, the last trade price (0 before the first trade: it
decides which stops trigger), the book's now (the greatest CMD_EXPIRE time it
processed: it decides which expiries are refused), whether the book is halted (a
halted book hashes with one more word; a continuous one as before halts existed, so
the hashes journaled with older snapshots still verify) and those rows, each order
with its tif and expiry (0: none). Slot numbers and other internal
layout are not part of it, so two different implementations holding the same
book hash the same.
"""

import hashlib

import numpy as np

# display: an iceberg's display quantity (0: an ordinary order); shown: the part of its
# leaves the book shows now (an ordinary order: all of them), which decides the levels'
# totals and, with the queue order, when it refills
CANONICAL_FIELDS = (
    *("side", "price", "order_id", "client", "qty", "leaves", "stp", "flags"),
    *("display", "shown", "tif", "expires"),
)
# a waiting stop: its trigger price, and the limit price as given (TYPE_STOP: unused)
STOP_FIELDS = (
    *("side", "trigger", "order_id", "client", "qty", "price", "stp", "ord_type", "tif"),
    "expires",
)


def hash_canonical(
    last_seq: int,
    last_price: int,
    rows: np.ndarray,
    stops: np.ndarray,
    now: int = 0,
    halted: bool = False,
) -> str:
    rows = np.ascontiguousarray(rows, dtype="<i8").reshape(-1, len(CANONICAL_FIELDS))
    stops = np.ascontiguousarray(stops, dtype="<i8").reshape(-1, len(STOP_FIELDS))
    h = hashlib.blake2b(digest_size=16)
    head = [last_seq, last_price, rows.shape[0], stops.shape[0], now]
    if halted:
        head.append(1)
    h.update(np.array(head, "<i8").tobytes())
    h.update(rows.tobytes())
    h.update(stops.tobytes())
    return h.hexdigest()
