"""The batch record codec: the one blob a shard journals per batch (``exchange.journal``
stores it, in pieces), and the checks a batch passes before it is journaled.

A batch record is a 24-byte header (six little-endian uint32: the numbers of
commands, events, order rows and idempotency entries, the bytes of the consumed counts,
and the record's checksum, zlib's crc32 of the counts and the body), then the
COMMAND_DTYPE commands, the EVENT_DTYPE events, the ORDER_DTYPE rows (by order id)
of the orders the batch changed, the IDEM_DTYPE values and then the 12-byte keys of
the idempotency entries of its keyed NEW commands that the book accepted (a
rejected one uses no key: ``exchange.idempotency``), and what it consumed of
each input ring (a msgpack map).
"""

import struct
import zlib
from typing import NamedTuple

import msgspec
import numpy as np
from numba import njit

from exchange import idempotency
from exchange.orderstate import ORDER_DTYPE
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE, EVF_DUPLICATE

COUNTS = struct.Struct("<5I")  # the header: its counts, then its checksum
_SUM = struct.Struct("<I")  # zlib's crc32, little-endian
HEAD_SIZE = COUNTS.size + _SUM.size
SECTIONS = (COMMAND_DTYPE, EVENT_DTYPE, ORDER_DTYPE, idempotency.IDEM_DTYPE, idempotency.KEY_BYTES)
_C, _E, _R, _V, _K = (d.itemsize for d in SECTIONS)


class BatchRecord(NamedTuple):
    commands: np.ndarray  # COMMAND_DTYPE
    events: np.ndarray  # EVENT_DTYPE
    rows: np.ndarray  # ORDER_DTYPE, by order id
    idem_values: np.ndarray  # IDEM_DTYPE, one per keyed NEW the book accepted, in batch order
    idem_keys: np.ndarray  # their journal keys (idempotency.KEY_BYTES)
    consumed: dict[str, int]


def record_size(n_cmds: int, n_events: int, n_rows: int, n_idem: int, n_consumed: int) -> int:
    return HEAD_SIZE + _C * n_cmds + _E * n_events + _R * n_rows + (_V + _K) * n_idem + n_consumed


def batch_record(cmds, events, rows, idem_values: bytes, idem_keys: bytes, consumed: bytes):
    """The bytes of a batch record: the header, then the arrays' and the packed sections'
    bytes, joined."""
    n_idem = len(idem_keys) // _K
    counts = COUNTS.pack(len(cmds), len(events), len(rows), n_idem, len(consumed))
    parts = (cmds.tobytes(), events.tobytes(), rows.tobytes(), idem_values, idem_keys, consumed)
    crc = zlib.crc32(counts)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join((counts, _SUM.pack(crc), *parts))


def encode_batch(record: BatchRecord) -> bytes:
    """The bytes of a decoded batch record (how tools and tests write one by hand)."""
    r = record
    blob = msgspec.msgpack.encode(r.consumed) if r.consumed else b""
    keys, values = r.idem_keys.tobytes(), r.idem_values.tobytes()
    return batch_record(r.commands, r.events, r.rows, values, keys, blob)


def decode_batch(value) -> BatchRecord:
    """The sections of a batch record, as read-only views of ``value``; ValueError if it
    is not one or fails its checksum (the journal's reads make that a ``JournalDamaged``)."""
    if len(value) < HEAD_SIZE:
        raise ValueError(f"a batch record of {len(value)} bytes is shorter than its header")
    crc = zlib.crc32(memoryview(value)[HEAD_SIZE:], zlib.crc32(value[: COUNTS.size]))
    if crc != _SUM.unpack_from(value, COUNTS.size)[0]:
        raise ValueError("checksum mismatch")
    counts = COUNTS.unpack_from(value)
    if record_size(*counts) != len(value):
        raise ValueError(f"a batch record of {len(value)} bytes does not hold what its header says")
    at = HEAD_SIZE
    parts = []
    for dtype, n in zip(SECTIONS, (*counts[:4], counts[3]), strict=True):
        parts.append(np.frombuffer(value, dtype, n, at))
        at += n * dtype.itemsize
    try:
        consumed = msgspec.msgpack.decode(value[at:], type=dict[str, int]) if counts[4] else {}
    except msgspec.DecodeError as e:
        raise ValueError(f"a batch record's consumed counts are unreadable: {e}") from None
    return BatchRecord(*parts, consumed)


def checked_consumed(consumed) -> dict[str, int]:
    """{input ring name: records consumed} as plain ints; a bad name or count is a ValueError."""
    if not isinstance(consumed, dict):
        raise ValueError(f"consumed must be a dict of name -> int, got {type(consumed).__name__}")
    out = {}
    for name, pos in consumed.items():
        # a UTF-8 character is 4 bytes at most: only a long name needs encoding to tell
        if not isinstance(name, str) or not name or (len(name) > 100 and len(name.encode()) > 400):
            raise ValueError(f"an input name must be a non-empty str of <= 400 bytes: {name!r}")
        if not isinstance(pos, int | np.integer) or not 0 <= pos < 2**63:
            raise ValueError(f"consumed {name!r} must be an int in [0, 2**63), got {pos!r}")
        out[name] = int(pos)
    return out


def records(arr, dtype, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype != dtype:
        got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{what} must be a 1-d array of {what} records, got {got}")
    return np.ascontiguousarray(arr)


_OK = 0
_EMPTY = 1
_NOT_PAST_LAST = 2
_SEQ_ORDER = 3
_FOREIGN_EVENT = 4
_DUPLICATE_EVENT = 5
_EVENT_ORDER = 6


@njit(cache=True)
def _batch_problem(cmds, events, last_seq):
    """(problem code, index of the offending record) of a batch, (_OK, 0) if it is sound."""
    if cmds.shape[0] == 0:
        return _EMPTY, 0
    if cmds[0].seq <= last_seq:
        return _NOT_PAST_LAST, 0
    for i in range(1, cmds.shape[0]):
        if cmds[i].seq <= cmds[i - 1].seq:
            return _SEQ_ORDER, i
    ci = 0
    for i in range(events.shape[0]):
        e = events[i]
        if e.flags & EVF_DUPLICATE:
            return _DUPLICATE_EVENT, i
        if i > 0:
            p = events[i - 1]
            if e.seq < p.seq or (e.seq == p.seq and e.idx <= p.idx):
                return _EVENT_ORDER, i
        while ci < cmds.shape[0] and cmds[ci].seq < e.seq:
            ci += 1
        if ci == cmds.shape[0] or cmds[ci].seq != e.seq:
            return _FOREIGN_EVENT, i
    return _OK, 0


def check_batch(cmds: np.ndarray, events: np.ndarray, last_seq: int) -> None:
    code, i = _batch_problem(cmds, events, last_seq)
    if code == _OK:
        return
    if code == _EMPTY:
        raise ValueError("empty batch: a batch needs at least one command")
    if code == _NOT_PAST_LAST:
        raise ValueError(
            f"batch starts at seq {cmds['seq'][0]}, not past the journal's last seq {last_seq}"
        )
    if code == _SEQ_ORDER:
        s = cmds["seq"]
        raise ValueError(f"batch seqs must strictly increase: seq {s[i]} after {s[i - 1]}")
    if code == _DUPLICATE_EVENT:
        raise ValueError("EVF_DUPLICATE re-sends are replies, not history: do not journal them")
    if code == _EVENT_ORDER:
        s, x = events["seq"], events["idx"]
        raise ValueError(
            f"events must be in (seq, idx) order: event {i} is "
            f"({s[i]}, {x[i]}) after ({s[i - 1]}, {x[i - 1]})"
        )
    raise ValueError(f"event {i} has seq {events['seq'][i]}, which no command of the batch has")
