"""The canonical state hash of a book: same hash = same book, queue order included.

Both book implementations describe their resting orders as rows of int64
``CANONICAL_FIELDS``, bids from the best price down then asks from the best price
up, each level in queue (FIFO) order; the hash covers the last sequence number
processed and those rows. Slot numbers and other internal layout are not part of
it, so two different implementations holding the same book hash the same.
"""

import hashlib

import numpy as np

CANONICAL_FIELDS = ("side", "price", "order_id", "client", "qty", "leaves", "stp", "flags")


def hash_canonical(last_seq: int, rows: np.ndarray) -> str:
    rows = np.ascontiguousarray(rows, dtype="<i8").reshape(-1, len(CANONICAL_FIELDS))
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([last_seq, rows.shape[0]], dtype="<i8").tobytes())
    h.update(rows.tobytes())
    return h.hexdigest()
