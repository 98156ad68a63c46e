"""Idempotency: a (client, idempotency key) pair creates at most one order.

Only an order the book accepted uses its pair up. A keyed NEW that is refused
(by the gateway: grid, risk, ``busy``, ``unavailable``...; by the shard: an
unknown instrument; or by the book: REJ_POST_ONLY and the kernel's other
REJ_* codes) created no order and leaves the pair free: an identical retry of
it is evaluated again like a new request (and may now be accepted), and a
different order under the pair is taken. Every refusal behaves the same way.

The journal keeps one entry per pair used by a NEW command the book accepted
(key: idem key then client, big-endian; see ``IDEM_KEY_DTYPE``): the seq and
order id that the pair created and the request's *fingerprint*, the fields that
define a new order (instrument, side, price, qty, display, expires, tif,
ord_type, flags, stp, trigger_tick) packed as 48 bytes (a retry with another
expiry is a different request: a conflict). The fingerprint is the fields themselves, not a
hash: equality is exact (FLAG_RETRY, the gateway's mark, is not part of it).
``entries`` makes the keys and values of a batch's keyed NEWs (one Numba
pass); ``used_entries`` keeps those whose first event is ACCEPTED (the kernel
answers a NEW with ACCEPTED or REJECTED first), and those are what a batch
record carries, until the journal folds them into its table. So the journal may
hold several keyed NEWs under one pair: rejected ones, then at most one
accepted (and, after retention took its entry out, another).

The shard calls two helpers around each batch (they only read the journal):

``plan_batch(journal, drained)`` before assigning seqs. Each NEW with an idem
key is one of

- new: it is kept (sequenced, run, journaled with its idempotency entry);
- an identical retry of a journaled order or of a request earlier in the batch:
  dropped; it will get the original's events again;
- a conflict (same pair, different fingerprint): dropped, answered now by a
  REJECTED(REJ_CONFLICT) event;
- a retry the gateway flagged (FLAG_RETRY: it knows an accepted order used the
  pair on this instrument) whose pair has no entry any more: dropped, answered
  now by a REJECTED(REJ_KEY_EXPIRED) event. The original's batch left the
  journal (retention), and its entry with it: the shard's key window is the
  history it keeps. An unflagged NEW under such a pair is new (the gateway's
  own key window is over too).

The plan is made before the books run, so within one batch the first request
under a pair stands for all of them whatever the book makes of it: an identical
retry in the same batch is answered as a duplicate of the original's answer even
when that is the book's REJECTED (the two were decided at once), and a different
request there is a conflict. The rejected original left no entry, so the pair
is free again from the next batch on.

A batch with no keyed NEW costs one pass over its commands; one whose pairs
are all new, a journal lookup more. Only a batch with a used or repeated pair
is sorted out command by command.

``resend(journal, drained, plan, batch_cmds)`` after the batch is committed:
the original events of every retry (DEPTH left out, it is public data),
flagged EVF_DUPLICATE, with the retry's req_id. An entry leaves the journal in
the transaction that takes its batch out (``Journal.prune``), so a retry's
original is always there; earlier-in-batch originals are journaled by then, so
every retry is answered from the journal the same way.

Neither kind of reply is history: conflicts carry seq 0 (never sequenced),
duplicates carry the original seq. They are published after the batch's own
events and never passed to ``Journal.write_batch``. The gateway sends them to
the retry's owner only.

A pair is unique within one shard's journal, across its instruments and
restarts. A client reusing a key on instruments of different shards is for the
gateway to catch, from its own view of the keys the shards' events told it of
(``gateway.ledger``).
"""

import struct
from typing import NamedTuple

import numpy as np
from numba import njit

from exchange.records import (
    CMD_NEW,
    EV_ACCEPTED,
    EV_DEPTH,
    EV_REJECTED,
    EV_TRIGGERED,
    EVENT_DTYPE,
    EVF_DUPLICATE,
    FLAG_RETRY,
    REJ_CONFLICT,
    REJ_KEY_EXPIRED,
)

FINGERPRINT_FIELDS = (
    *("price", "qty", "display", "expires", "instrument", "side", "tif", "ord_type", "flags"),
    *("stp", "trigger_tick"),
)
# the pad is a field, not a gap, so that copies carry its zero and equal
# requests give equal bytes
FINGERPRINT_DTYPE = np.dtype(
    [
        ("price", "<i8"),
        ("qty", "<i8"),
        ("display", "<i8"),
        ("expires", "<i8"),
        ("instrument", "<u2"),
        ("side", "u1"),
        ("tif", "u1"),
        ("ord_type", "u1"),
        ("flags", "u1"),
        ("stp", "u1"),
        ("trigger_tick", "<u4"),
        ("_pad", "u1", (5,)),
    ]
)
assert FINGERPRINT_DTYPE.names[:-1] == FINGERPRINT_FIELDS
# the journaled value of one (client, idem key) pair: seq, order id, then the
# fingerprint's fields inline (flat, so that numpy copies it as plain memory)
IDEM_DTYPE = np.dtype([("seq", "<i8"), ("order_id", "<i8"), *FINGERPRINT_DTYPE.descr])
_FINGERPRINT_AT = 16
# Key first: clients' keys tend to grow together (counters, clocks), so the
# entries a fold puts land on few B-tree pages; client first would touch a
# page per client in every fold, which is what the commit has to write.
IDEM_KEY_DTYPE = np.dtype([("idem_key", ">u8"), ("client", ">u4")])
assert IDEM_DTYPE.itemsize == 64
assert IDEM_KEY_DTYPE.itemsize == 12

# a retry (index in the drained batch) and its original: journaled (original_seq > 0,
# original_index -1) or earlier in the same batch (original_seq 0, its index)
RETRY_DTYPE = np.dtype([("index", "<i8"), ("original_seq", "<i8"), ("original_index", "<i8")])


class IdemEntry(NamedTuple):
    client: int
    idem_key: int
    seq: int
    order_id: int
    instrument: int
    fingerprint: bytes


KEY_BYTES = np.dtype(f"V{IDEM_KEY_DTYPE.itemsize}")
VALUE_BYTES = np.dtype(f"V{IDEM_DTYPE.itemsize}")
# the same layouts as structs, for batches of up to SMALL_BATCH commands
_KEY = struct.Struct(">QI")
_VALUE = struct.Struct("<qqqqqqHBBBBBI5x")
assert (_KEY.size, _VALUE.size) == (IDEM_KEY_DTYPE.itemsize, IDEM_DTYPE.itemsize)
SMALL_BATCH = 16


class IdemPlan(NamedTuple):
    keep: np.ndarray | None  # bool per drained command: sequence and run it (None: all)
    conflicts: np.ndarray  # EVENT_DTYPE replies, ready to publish
    retries: np.ndarray  # RETRY_DTYPE, in drained order
    # the keys looked up and found in neither the journal's log nor its table: its
    # write of this batch need not look them up again (``Journal.write_batch``)
    unused: frozenset[bytes] = frozenset()


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# the plan of a batch with nothing to sort out, shared: its arrays are read-only
KEEP_ALL = IdemPlan(
    None, _read_only(np.zeros(0, EVENT_DTYPE)), _read_only(np.zeros(0, RETRY_DTYPE))
)


def fingerprints(cmds: np.ndarray) -> np.ndarray:
    """The FINGERPRINT_DTYPE of every command."""
    out = np.zeros(len(cmds), FINGERPRINT_DTYPE)
    for f in FINGERPRINT_FIELDS:
        out[f] = cmds[f]
    out["flags"] &= ~np.uint8(FLAG_RETRY)
    return out


def entry_keys(clients: np.ndarray, idem_keys: np.ndarray) -> np.ndarray:
    """Journal keys (IDEM_KEY_DTYPE) of (client, idem key) pairs."""
    k = np.zeros(len(clients), IDEM_KEY_DTYPE)
    k["client"] = clients
    k["idem_key"] = idem_keys
    return k


@njit(cache=True)
def _pack_entries(cmds, index, keys, values):
    """Index, journal key (12 big-endian bytes each, in ``keys``) and value of each keyed
    NEW; returns how many."""
    m = 0
    for i in range(cmds.shape[0]):
        c = cmds[i]
        if c.kind != CMD_NEW or c.idem_key == 0:
            continue
        index[m] = i
        at = m * 12
        for b in range(8):
            keys[at + b] = (c.idem_key >> np.uint64(56 - 8 * b)) & np.uint64(0xFF)
        for b in range(4):
            keys[at + 8 + b] = (c.client >> np.uint32(24 - 8 * b)) & np.uint32(0xFF)
        v = values[m]
        v.seq = c.seq
        v.order_id = c.order_id
        v.price = c.price
        v.qty = c.qty
        v.display = c.display
        v.expires = c.expires
        v.instrument = c.instrument
        v.side = c.side
        v.tif = c.tif
        v.ord_type = c.ord_type
        v.flags = c.flags & ~np.uint8(FLAG_RETRY)
        v.stp = c.stp
        v.trigger_tick = c.trigger_tick
        m += 1
    return m


def entries(cmds: np.ndarray) -> tuple[list[int], list[bytes], list[bytes]]:
    """(indices, journal keys, journal values) of the batch's NEW commands with an idem
    key, in batch order; keys and values as bytes (what LMDB and dicts take)."""
    n = len(cmds)
    if n <= SMALL_BATCH:
        return _entries_small(cmds)
    index = np.empty(n, np.int64)
    keys = bytearray(n * KEY_BYTES.itemsize)
    # bytearrays: zeroed buffers without numpy's per-field work on structured dtypes
    values = np.frombuffer(bytearray(n * IDEM_DTYPE.itemsize), IDEM_DTYPE)
    m = _pack_entries(cmds, index, np.frombuffer(keys, np.uint8), values)
    return index[:m].tolist(), *items(np.frombuffer(keys, KEY_BYTES, m), values[:m])


def _entries_small(cmds: np.ndarray) -> tuple[list[int], list[bytes], list[bytes]]:
    """``entries`` in plain Python: on a few commands, numpy's fixed costs are most of it.
    A command's row unpacks by position, in ``records.COMMAND_STRUCT``'s order."""
    index, keys, values = [], [], []
    for i, c in enumerate(cmds.tolist()):
        seq, oid, price, qty, _, key, client, inst, kind, side, tif, typ, flags, stp, trig = c[:15]
        if kind == CMD_NEW and key:
            index.append(i)
            keys.append(_KEY.pack(key, client))
            flags &= ~FLAG_RETRY
            disp, exp = c[15], c[16]
            values.append(
                _VALUE.pack(seq, oid, price, qty, disp, exp, inst, side, tif, typ, flags, stp, trig)
            )
    return index, keys, values


def accepted(cmds: np.ndarray, events: np.ndarray, index: list[int]) -> list[bool]:
    """Whether the book accepted each NEW ``cmds[index]``: its first event (the
    kernel's answer to a NEW) is ACCEPTED, not REJECTED."""
    if not index:
        return []
    seqs = cmds["seq"][index]
    return np.isin(seqs, events["seq"][events["kind"] == EV_ACCEPTED]).tolist()


def used_entries(
    cmds: np.ndarray, events: np.ndarray
) -> tuple[list[int], list[bytes], list[bytes]]:
    """``entries`` of the keyed NEWs of a sequenced batch that the book accepted
    (``events``: what the books made of ``cmds``): the pairs the batch uses up."""
    index, keys, values = entries(cmds)
    ok = accepted(cmds, events, index)
    if all(ok):
        return index, keys, values
    kept = [j for j, a in enumerate(ok) if a]
    return [index[j] for j in kept], [keys[j] for j in kept], [values[j] for j in kept]


def items(keys: np.ndarray, values: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """Entries (KEY_BYTES, IDEM_DTYPE arrays) as bytes, without a Python loop."""
    return keys.tolist(), values.view(VALUE_BYTES).tolist()


def decode_entry(key: bytes, value: bytes) -> IdemEntry:
    k = np.frombuffer(key, IDEM_KEY_DTYPE)[0]
    v = np.frombuffer(value, IDEM_DTYPE)[0]
    return IdemEntry(
        client=int(k["client"]),
        idem_key=int(k["idem_key"]),
        seq=int(v["seq"]),
        order_id=int(v["order_id"]),
        instrument=int(v["instrument"]),
        fingerprint=value[_FINGERPRINT_AT:],
    )


def keyed_news(cmds: np.ndarray) -> np.ndarray:
    """Indices of the NEW commands that carry an idempotency key."""
    return np.flatnonzero((cmds["kind"] == CMD_NEW) & (cmds["idem_key"] != 0))


def used_news(cmds: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Indices of the keyed NEW commands of a sequenced batch that the book accepted
    (``events``: what the books made of ``cmds``): the ones that use their pair up."""
    idx = keyed_news(cmds)
    if len(idx):
        idx = idx[accepted(cmds, events, idx.tolist())]
    return idx


def plan_batch(journal, drained: np.ndarray) -> IdemPlan:
    """Classify a drained batch (before seq assignment); see the module docstring."""
    index, keys, values = entries(drained)
    if not index:
        return KEEP_ALL
    found = journal.idem_values(keys)
    retried = (drained["flags"][index] & FLAG_RETRY != 0).tolist()
    unused = frozenset(k for k, f in zip(keys, found, strict=True) if f is None)
    if not any(found) and not any(retried) and len(unused) == len(keys):
        return KEEP_ALL._replace(unused=unused)
    keep = np.ones(len(drained), bool)
    first = {}  # key -> position in ``keys`` of the batch's first command under it
    conflicts, expired, retries = [], [], []
    for j, key in enumerate(keys):
        i = index[j]
        request = values[j][_FINGERPRINT_AT:]
        if found[j] is not None:
            seq = int.from_bytes(found[j][:8], "little", signed=True)
            same_body, original = found[j][_FINGERPRINT_AT:] == request, (seq, -1)
        elif key in first:
            earlier = first[key]
            same_body = values[earlier][_FINGERPRINT_AT:] == request
            original = (0, index[earlier])
        elif retried[j]:
            keep[i] = False
            expired.append(i)
            continue
        else:
            first[key] = j
            continue
        keep[i] = False
        if same_body:
            retries.append((i, *original))
        else:
            conflicts.append(i)
    retry_arr = np.array(retries, RETRY_DTYPE) if retries else KEEP_ALL.retries
    refused = shard_rejects(drained[conflicts], REJ_CONFLICT)
    if expired:
        refused = np.concatenate([refused, shard_rejects(drained[expired], REJ_KEY_EXPIRED)])
    return IdemPlan(keep, refused, retry_arr, unused)


def shard_rejects(cmds: np.ndarray, code: int) -> np.ndarray:
    """REJECTED(``code``) replies to ``cmds`` the shard refuses before it sequences them
    (a conflict, an expired key, an instrument it does not hold): seq 0 and order id 0."""
    ev = np.zeros(len(cmds), EVENT_DTYPE)
    for f in ("req_id", "price", "qty", "idem_key", "client", "instrument", "side"):
        ev[f] = cmds[f]
    ev["kind"] = EV_REJECTED
    ev["code"] = code
    return ev


def resend(journal, drained: np.ndarray, plan: IdemPlan, batch_cmds: np.ndarray) -> np.ndarray:
    """The duplicate replies to the plan's retries, once the batch is committed.

    ``batch_cmds`` are the batch's sequenced, journaled commands. An original
    earlier in the batch is found there by its (client, idem key), so the shard
    may drop more commands than the plan did; but a retry whose original was
    not journaled is a ValueError: the shard must answer it as it answered
    the original.
    """
    out = []
    for r in plan.retries:
        seq = int(r["original_seq"])
        if not seq:
            o = drained[r["original_index"]]
            at = np.flatnonzero(
                (batch_cmds["kind"] == CMD_NEW)
                & (batch_cmds["client"] == o["client"])
                & (batch_cmds["idem_key"] == o["idem_key"])
            )
            if not len(at):
                raise ValueError(
                    f"the original (drained index {r['original_index']}) of retry "
                    f"{r['index']} was not journaled: answer the retry as the original"
                )
            seq = int(batch_cmds["seq"][at[0]])
        ev = journal.events_for(seq)
        # what the original's own order did: the stops its trades triggered are their
        # owners' (a retry must not send another client's fills to anyone again)
        triggered = np.flatnonzero(ev["kind"] == EV_TRIGGERED)
        if len(triggered):
            ev = ev[: triggered[0]]
        ev = ev[ev["kind"] != EV_DEPTH]
        ev["req_id"] = drained["req_id"][r["index"]]
        ev["flags"] |= EVF_DUPLICATE
        out.append(ev)
    return np.concatenate(out, dtype=EVENT_DTYPE) if out else np.zeros(0, EVENT_DTYPE)
