"""Shard-like journal input: sequenced commands of several instruments and their real events.

The commands come from ``tests.streams.random_stream`` (every rule of a book,
invalid commands included), one stream per instrument, interleaved and
sequenced as a shard would; the events are what ``ReferenceBook`` answers.
Saved to and loaded from an ``.npz`` so that worker processes journal exactly
what the test checks against.
"""

import numpy as np
from streams import random_batches, random_stream

from exchange import idempotency
from exchange.bookconfig import BookConfig
from exchange.records import CMD_NEW, EVENT_DTYPE
from exchange.reference import ReferenceBook

CONFIG = BookConfig(min_price=100, max_price=160, tick_size=1, lot_size=1, max_qty=100)
ORDER_ID_SPAN = 10_000_000  # instrument i's order ids start at 1 + i * span


def shard_stream(seed: int, n: int, instruments: int = 2):
    """(commands, events, books) of one shard; ``books[i]`` is instrument i's book after them."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, instruments, n)
    parts = []
    for i in range(instruments):
        part = random_stream(
            rng, CONFIG, int((owner == i).sum()), first_order_id=1 + i * ORDER_ID_SPAN, clients=4
        )
        part["instrument"] = i
        parts.append(part)
    cmds = np.concatenate(parts)
    # instrument i's commands go where owner == i, in their own order
    cmds = cmds[np.argsort(np.argsort(owner, kind="stable"))]
    cmds["seq"] = np.cumsum(rng.integers(1, 3, n))
    # a shard gives every NEW an id of its own (from its seq): the streams' reused ids
    # (a book's REJ_DUPLICATE_ID, or another refusal checked first) are new ones here
    new = np.flatnonzero(cmds["kind"] == CMD_NEW)
    ids = cmds["order_id"][new]
    again = np.ones(len(ids), bool)
    again[np.unique(ids, return_index=True)[1]] = False
    ids[again] = ids.max() + 1 + np.arange(int(again.sum()))
    cmds["order_id"][new] = ids
    books = [ReferenceBook(CONFIG) for _ in range(instruments)]
    evs = [books[i].process(cmds[cmds["instrument"] == i]) for i in range(instruments)]
    events = np.concatenate(evs, dtype=EVENT_DTYPE)
    events = events[np.argsort(events["seq"], kind="stable")]
    return cmds, events, books


def cut(cmds: np.ndarray, events: np.ndarray, seed: int, max_batch: int = 64):
    """The stream as a list of (commands, events) batches of random sizes."""
    out = []
    for s in random_batches(np.random.default_rng(seed), len(cmds), max_batch):
        c = cmds[s]
        lo, hi = np.searchsorted(events["seq"], [c["seq"][0], c["seq"][-1] + 1])
        out.append((c, events[lo:hi]))
    return out


def save(path, batches) -> None:
    arrays = {}
    for k, (c, e) in enumerate(batches):
        arrays[f"c{k}"] = c
        arrays[f"e{k}"] = e
    np.savez(path, **arrays)


def load(path) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path) as z:
        n = len(z.files) // 2
        return [(z[f"c{k}"], z[f"e{k}"]) for k in range(n)]


def assert_prefix(journal, batches) -> int:
    """The journal holds exactly the first k batches, whole, for some k; returns their last seq.

    A writer may go on meanwhile: the batches read must end between the last
    seq read before them and the one read after.
    """
    before = journal.last_seq
    got = list(journal.iter_batches())
    after = journal.last_seq
    k = len(got)
    assert k <= len(batches), f"journal holds {k} batches, the stream only {len(batches)}"
    for i, ((c, e), (gc, ge)) in enumerate(zip(batches, got, strict=False)):
        assert gc.tobytes() == c.tobytes(), f"batch {i}: commands differ"
        assert ge.tobytes() == e.tobytes(), f"batch {i}: events differ"
    end = int(batches[k - 1][0]["seq"][-1]) if k else 0
    assert before <= end <= after, f"{k} batches end at {end}, last_seq went {before}..{after}"
    return end


def idem_entries_of(journal, clients, idem_keys) -> list:
    """The journal's entries of (client, idempotency key) pairs (None: unused), looked up
    as a shard does for a batch (``Journal.idem_values``)."""
    k = idempotency.entry_keys(np.asarray(clients, np.uint32), np.asarray(idem_keys, np.uint64))
    keys = [k[i : i + 1].tobytes() for i in range(len(k))]
    values = journal.idem_values(keys)
    decode = idempotency.decode_entry
    return [None if v is None else decode(k, v) for k, v in zip(keys, values, strict=True)]


def idem_entry(journal, client: int, idem_key: int):
    """The journal's entry of one pair (``idem_entries_of``)."""
    return idem_entries_of(journal, [client], [idem_key])[0]
