"""The shard journal: one LMDB environment (a directory) per shard, one write txn per batch.

Layout (integer keys big-endian so LMDB's byte order is numeric order):

batches    batch's last seq (8 B), -> the batch record (below): everything the batch adds;
           top bit set                these are the main (unnamed) database's own records,
           (+ piece number, 4 B)      in pieces that fit a page (below)
orders     order id (8 B)          -> ORDER_DTYPE row: the order table, up to the last fold
idem       idem key (8 B) + client (4 B) -> IDEM_DTYPE (seq, order id, request fingerprint),
                                      up to the last fold
positions name (UTF-8)            -> int64 (big-endian): the records the shard has consumed
                                      of each input ring, as of ``consumed_at`` (the table
                                      keeps its on-disk name; in the code: ``consumed``)
snapshots  seq (8 B) (+ piece number) -> opaque snapshot bytes of the state after that seq,
                                      in pieces as the batches
meta       b"layout" -> LAYOUT, b"identity" -> 8 random bytes drawn at creation
           (``exchange.journalid``), b"folded" -> int64 seq, b"positions_at" -> int64 seq,
           b"pruned", b"dropped" -> int64 seq (``prune``; absent: 0)

All but ``batches`` are named sub-databases: LMDB records each in the main
database, under its (ASCII) name. A batch key is the seq with its top bit set
(``batch_key``, ``batch_seq``), so the batches sort after those five records, in
seq order, and each new one is the main database's last key.

Checksums: every value but the layout is stored with a checksum that binds it to
its key: a table value is its bytes followed by the little-endian crc32 (zlib's)
of its key's bytes then its own; a batch record carries the crc32 of its header's
counts and its body in the header, and must be the record of the batch whose last
seq is its key. So a flipped byte, a value under another key or a value of the
wrong size fails its check. The layout value is compared whole on every open
(an older layout is refused: journal/2 without checksums, journal/3 with
``batches`` a named sub-database, journal/4 with commands and idempotency
entries without a stop's trigger and book snapshots without stops, journal/5
with each batch record in one value, journal/6 with 64-byte commands and
idempotency entries without a display quantity and book snapshots without
icebergs, journal/7 with commands and idempotency entries without an expiry and
book snapshots without expiries; nothing migrates it). Every read checks what
it reads (``iter_batches``, ``iter_records``, ``events_for``, ``order``, the
idempotency lookups, ``consumed``, ``latest_snapshot``, ``stats``, the writer's
``_load_log`` and ``_merge_prior``): a value that fails is ``JournalDamaged`` naming the journal,
the table, the record (seq, order id, (client, idem key), name) and the reason,
never an answer; so is LMDB reporting a page it cannot use (MDB_CORRUPTED,
MDB_PAGE_NOTFOUND, ...), naming the tables read. A fold computes its rows'
checksums in one Numba pass (``_row_sums``); single values use zlib.

What start-up verifies in full is what it reads: the writer's open reads the
meta seqs and every record of the log; recovery reads the latest snapshot and
every batch after it; the shard's resume reads the positions table and the log
after ``consumed_at``. Everything else is verified lazily, when it is read: the
orders and idem tables (each lookup checks the values it finds), batches before
the snapshot (a SYNC replay, ``events_for`` of a retry's original, the tools)
and older snapshots. ``damaged()`` checks every value of every table, and
``tables()`` gives the folded tables as of one read txn: ``exch journal verify``
reports the first and compares the second with the batches (``tools.verify``).
A lookup that a damaged branch page sends to the wrong leaf without LMDB noticing
finds no value to check: only verify's cross-check of the tables shows that.

A batch record is one blob (``exchange.batchcodec``): the batch's commands, events,
order rows, idempotency entries and what it consumed of each input ring, with its
checksum.

A batch record is stored in pieces of ``piece_bytes`` (2,016 bytes with 4 KB
pages): the first under the batch's key, the others under that key followed by
their number (1, 2, ... as a big-endian uint32), so a batch's pieces sort
together, in order, between its key and the next batch's; readers join them
(``batch_items``), and the record's checksum and size cover the joined bytes, so
a lost or foreign piece is a damaged record. Why: LMDB stores a value larger
than half a page in a run of overflow pages that must be contiguous in the file,
and it looks for such a run in only part of its free list before it grows the
file instead (``mdb_page_alloc``: num x 60 free-list records). Batch records vary
in size with the load (a batch of 4,096 commands is ~4 MB), so with retention
freeing the oldest, the free pages fragment and the file kept growing
(``bench.retention --varied``); pieces live in leaf pages, which take any free
page. A one-command batch (~480 bytes) is one piece, as before. Snapshots are
stored in pieces the same way (a deflated snapshot's size changes with each one).

``write_batch`` writes ONE record per batch (its pieces appended), in ONE write
transaction: either all of it is there after a crash or none of it. What a synced
commit costs is the pages it writes: every B-tree page the transaction changed
(copy on write: the leaf and each branch page above it), LMDB's free-list record
of the pages it replaced, and the meta page. A named sub-database would add its record in the
main database (its root page moves at every commit, so the main database's
leaf is rewritten too): that is why the batches are the main database's own
records (layout 4; journal/3 wrote that page more). The put is an MDB_APPEND
(the key is the main database's last), so leaves split at the end and stay
full. So a one-command batch's commit (strace, ``bench.commit``) writes, with
the batches' tree at depth d (2 up to ~1,700 one-command batches of ~480 bytes,
3 up to ~380,000, 4 up to ~86 million): d pages of it plus one free-list page
(a pwrite for a lone page, lseek + writev for neighbours; one leaf more at a
split, every ~7 batches), one fdatasync, then the meta page's 120 bytes through
LMDB's O_DSYNC descriptor, the second sync. At depth 2 that is 3 pages and 2
syncs (~13.1 KB a commit with the splits), what a bare synced put of one 64-byte
record writes in an environment of the same depth (``bench.apply.RawLog``);
layout 3 wrote 4 pages (~17.2 KB). Both syncs stay: the data pages must be on disk before the
meta page that makes them the journal (``fsync`` below). The last seq is the
last key of ``batches``: there is no counter to put.

The records after ``folded`` are the log. The tables (``orders``, ``idem``,
``consumed``) are brought up to date from it by the transaction of the batch
that brings the log to ``merge_rows`` order rows and idempotency entries
together, or to ``MERGE_BATCHES`` batches (the fold); the log then starts
anew. Readers combine both: ``order()`` looks in the log's rows, newest first
(the writer: in its index of them), then in the table; an idempotency pair is
in a log record's entries or in the table; ``consumed`` is the table's,
updated by the records after ``consumed_at``. The writer keeps the log's rows
and idempotency entries in memory (``PendingRows``, a dict), so its own lookups
never read the log. A fold writes many rows and entries at once (the pages they
share are written once); its batch pays for it (~6 ms at 8,192 of them).

The events passed in are exactly what the books produced for the batch's
commands; the shard's own replies (REJ_CONFLICT rejects, EVF_DUPLICATE
re-sends) are not history and are refused here (see ``exchange.idempotency``).

Durability (``durability=``):

``fsync`` (default)  LMDB sync + metasync: the commit writes the data pages,
    fdatasync()s them, writes the meta page, fdatasync()s again. When
    ``write_batch`` returns, the batch is on stable storage: it survives a
    process crash, an OS crash and a power loss (as far as the disk honours
    flushes). Costs two fdatasync() calls per batch, whatever its size.
``os``  LMDB MDB_NOSYNC: the commit writes pages and meta into the OS page cache
    and returns without flushing. A process crash (SIGKILL included) loses
    nothing committed: the kernel holds the pages and writes them back later.
    An OS crash or power loss loses the batches not yet written back (the
    kernel's dirty writeback, ~30 s by default); worse, LMDB then keeps its
    integrity only if the filesystem preserves write order, which ext4 does
    not promise, so after such a crash treat an ``os`` journal as suspect
    (rebuild the shard from elsewhere). ``close()`` flushes, so a clean stop
    is as durable as ``fsync``.

writemap is off in both modes (so map_async is moot): with a writable map a
full disk is a SIGBUS that kills the process, while write() returns an error
that becomes ``JournalFull``; and with the map read-only a stray write in the
process faults instead of corrupting the file.

The map grows by doubling, up to ``max_map_size``, transparently (the failed
transaction is aborted and redone). A full map at the maximum, or the disk
refusing a write (ENOSPC, EDQUOT, EFBIG, or EIO, which is how LMDB reports a
short write), raises ``JournalFull``: that transaction is aborted, every
earlier commit is intact, and the shard must stop intake.

Retention (``prune``): the oldest batches leave the journal, archived
(``exchange.archive``) or dropped, with the rows of the orders finished by then;
``meta`` then holds ``pruned`` (and ``dropped``) seqs, and the readers of
batches read what is before ``pruned`` from the archives, if they have them
(``iter_records``).

Mapped pages: the tables are looked up at random, so the RSS of a long-running shard would grow with
what it maps (``exchange.pages``); ``release_pages`` gives the pages back, and the
shard calls it every ``RELEASE_SECONDS``.

Readers (``JournalReader``, other processes) use LMDB's MVCC read transactions:
they never block the writer and see whole batches only. One process may write
at a time: the writer holds an exclusive lock on ``writer.lock``.
"""

import errno
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import lmdb
import msgspec
import numpy as np
from numba import njit

from exchange import archive, batchcodec, idempotency, lmdbfile, orderstate, pages
from exchange.archive import HistoryPruned
from exchange.batchcodec import BatchRecord, batch_record, decode_batch
from exchange.idempotency import IdemEntry
from exchange.orderstate import ORDER_DTYPE, ORDER_ID_SEQ_MASK, ST_LIVE, OrderState
from exchange.records import COMMAND_DTYPE, EVENT_DTYPE, copy_records

LAYOUT = b"exchange.journal/8"
DURABILITY_MODES = ("fsync", "os")
DEFAULT_MAP_SIZE = 64 << 20
DEFAULT_MAX_MAP_SIZE = 64 << 30
KEEP_SNAPSHOTS = 2
IDENTITY_BYTES = 8  # drawn at creation: a journal made anew never passes for the old one
RELEASE_SECONDS = 10.0  # how often the processes give back the journal pages they read
# LMDB keeps every page a write transaction dirtied, malloc'd, for later transactions until
# the environment closes (its me_dpages list, never shrunk), and a fold dirties up to a page
# per row and entry (keys chosen at random land on random pages): the fold's size bounds
# that memory (#16: 1 << 16 held 62 MB after 1.5M random keys, and more as the table grew)
MERGE_ROWS = 1 << 13
MERGE_BATCHES = 256  # bounds the log records a reader may search
# commands one ``prune`` takes out at most (one archive file): bounds the pause it is
# for the shard's loop and the memory it holds
PRUNE_COMMANDS = 1 << 16
# iter_batches reads in short txns (so the writer can reuse pages) of bounded size
_READ_CHUNK_BATCHES = 64
_READ_CHUNK_BYTES = 16 << 20
_SCAN_CHUNK = 1 << 16  # records per read txn of a table scan (idem_entries, damaged)
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
# the named sub-databases; the batches are the main database's own records
_DBS = (b"meta", b"orders", b"idem", b"snapshots", b"positions")
_BATCH_BIT = 1 << 63  # set in a batch's key: it sorts after every (ASCII) name
_PIECE_KEY_SIZE = 12  # a value's 8-byte key and the piece's number (big-endian uint32)
_PIECED = ("batches", "snapshots")  # the tables whose values are stored in pieces
assert all(name.isascii() for name in _DBS)
_SUM = struct.Struct("<I")  # a checksum: zlib's crc32, little-endian
_R, _V, _K = ORDER_DTYPE.itemsize, idempotency.IDEM_DTYPE.itemsize, idempotency.KEY_BYTES.itemsize
# the sizes of the table values before their checksum (meta: identity, folded and
# consumed_at; the layout value is compared whole)
_VALUE_SIZES = {"orders": _R, "idem": _V, "positions": 8, "meta": 8}
_KEY_SIZES = {"orders": 8, "idem": _K}
# what LMDB raises on pages it cannot trust (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_PANIC,
# MDB_INCOMPATIBLE: a sub-database record that is no longer one) and on the txn such an
# error spoiled (MDB_BAD_TXN, MDB_PROBLEM)
_DAMAGE_ERRORS = (
    lmdb.InvalidError,  # at open: a meta page that is not one
    lmdb.VersionMismatchError,
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.PanicError,
    lmdb.IncompatibleError,
    lmdb.BadTxnError,
    lmdb.ProblemError,
)
_CRC_POLY = 0xEDB88320  # zlib's CRC-32, reflected


class JournalError(Exception):
    """The journal cannot be used as asked (missing, wrong layout, locked, fatal LMDB error)."""


class JournalDamaged(JournalError):
    """The journal's bytes cannot be trusted (a record failed its check, a short file, a
    bad meta page, a journal gone where one existed): refuse, never serve."""


class JournalLocked(JournalError):
    """Another process has the journal open for writing (it may be on its way out)."""


class JournalFull(JournalError):
    """No more space (map at its maximum, or the disk): the batch was not written."""


class Stats(NamedTuple):
    path: str
    durability: str
    last_seq: int
    batches: int
    orders_merged: int  # rows in the orders table
    order_log_rows: int  # rows in the log since the last fold (an order may have several)
    idem_entries: int
    snapshots: int
    map_size: int
    max_map_size: int
    used_bytes: int
    commits: int  # by this process
    commit_seconds: float  # summed over those commits
    map_grows: int  # by this process
    pruned: int  # the batches up to this seq were taken out (``Journal.prune``)
    dropped: int  # ... and those up to this one without an archive


class Tables(NamedTuple):
    """The folded tables as of one read txn (``Journal.tables``)."""

    folded: int
    consumed_at: int
    pruned: int  # the orders table has no row of an order finished by this seq
    order_ids: np.ndarray  # int64: the keys of the rows that pass their check, in order
    orders: np.ndarray  # ORDER_DTYPE: those rows
    idem_keys: np.ndarray  # idempotency.KEY_BYTES, by key: the entries that pass theirs
    idem_values: np.ndarray  # IDEM_DTYPE, theirs
    consumed: dict[str, int]  # those that pass their check
    damaged: dict[str, list[bytes]]  # table -> the keys of the values that fail it


def _key(n: int) -> bytes:
    # what astype(">i8") makes of an id array, so keys written in bulk match
    return int(n).to_bytes(8, "big", signed=True)


def _int(b) -> int:
    return int.from_bytes(b, "big", signed=True)


def batch_key(seq: int) -> bytes:
    """The key of the batch whose last seq is ``seq``, in the main database: the seq
    big-endian with its top bit set, so that batch keys are in numeric order and come
    after the records of the named sub-databases (ASCII names, first byte < 0x80).
    OverflowError outside [0, 2**63), as for any 8-byte key."""
    seq = int(seq)
    if seq < 0:
        raise OverflowError(f"a batch's seq is not negative: {seq}")
    return (seq | _BATCH_BIT).to_bytes(8, "big") if seq < _BATCH_BIT else _key(seq)


def batch_seq(key) -> int:
    """The seq of a batch key (``batch_key``) or of one of its pieces' keys (``_piece_key``);
    -1 for a key that is not one (a named sub-database's record, or damage)."""
    if len(key) not in (8, _PIECE_KEY_SIZE) or not key[0] & 0x80:
        return -1
    return int.from_bytes(key[:8], "big") ^ _BATCH_BIT


FIRST_BATCH_KEY = batch_key(0)  # no batch has a smaller key


def _piece_key(key: bytes, piece: int) -> bytes:
    """The key of piece ``piece`` (1, 2, ...) of the value under the 8-byte ``key``: it
    sorts after ``key`` and before the next 8-byte key."""
    return key + piece.to_bytes(_PIECE_KEY_SIZE - 8, "big")


def piece_bytes(psize: int) -> int:
    """The most bytes a piece may hold so that it stays in a leaf page of ``psize``
    bytes, two to a page: LMDB puts a larger value in a run of overflow pages of its own
    (``me_nodemax``: half a page after its 16-byte header, less a 2-byte index; a node
    is an 8-byte header, its key and its value)."""
    return ((((psize - 16) // 2) & -2) - 2 - 8 - _PIECE_KEY_SIZE) & -8


def put_pieces(txn, db, key: bytes, value, psize: int, append: bool = False) -> bool:
    """Store ``value`` under the 8-byte ``key`` of ``db`` (the batches, the snapshots) in
    pieces of ``piece_bytes(psize)``: the first under ``key``, the rest under
    ``_piece_key``s. With ``append`` the keys must be past every key of ``db``
    (MDB_APPEND). Returns False, writing nothing, if ``key`` is taken: a value stored
    before under it is deleted first (``delete_pieces``)."""
    step = piece_bytes(psize)
    view = memoryview(value)
    if not txn.put(key, view[:step], db=db, overwrite=False, append=append):
        return False
    if len(view) > step:
        starts = range(step, len(view), step)
        rest = ((_piece_key(key, at // step), view[at : at + step]) for at in starts)
        _, added = txn.cursor(db=db).putmulti(rest, overwrite=False, append=append)
        if added != len(starts):  # pieces without their first: damage
            raise ValueError(f"pieces of a value under key {key.hex()} are stored already")
    return True


def delete_pieces(txn, db, key: bytes) -> None:
    """Delete the value stored under the 8-byte ``key`` of ``db``, every piece of it."""
    cur = txn.cursor(db=db)
    found = cur.set_key(key)
    while found and cur.key()[:8] == key and len(cur.key()) in (8, _PIECE_KEY_SIZE):
        found = cur.delete()


def _joined(cur) -> tuple[bytes, bytes, bool]:
    """(key, value, found) at the cursor, on a value's first piece: its pieces joined;
    the cursor ends on the record after its last piece (``found``: there is one). A
    missing or foreign piece makes a value that fails its checks (size, checksum)."""
    key = bytes(cur.key()[:8])
    parts = [cur.value()]
    found = cur.next()
    while found:
        k = cur.key()
        if len(k) != _PIECE_KEY_SIZE or k[:8] != key:
            break
        parts.append(cur.value())
        found = cur.next()
    return key, parts[0] if len(parts) == 1 else b"".join(parts), found


def _joined_from(cur, found: bool) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each value stored in pieces from the cursor's position on
    (``found``: it is on one), in order."""
    while found:
        key, value, found = _joined(cur)
        yield key, value


def _last_joined(cur) -> tuple[bytes, bytes] | None:
    """(key, value) of the last value stored in pieces in the cursor's database."""
    if not cur.last():
        return None
    cur.set_key(bytes(cur.key()[:8]))  # from the last piece to the first
    return _joined(cur)[:2]


def joined_items(cur, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of a table whose values are stored in pieces (``put_pieces``: the
    batches, the snapshots), from key ``start`` on (None: the first), unchecked, in
    order: for tools and tests that open the environment with LMDB directly."""
    yield from _joined_from(cur, cur.first() if start is None else cur.set_range(start))


def batch_items(env, txn, start_seq: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of the batch records from ``start_seq`` on (``joined_items``;
    ``txn``: a transaction of ``env``, the batches are in its main database)."""
    yield from joined_items(txn.cursor(db=env.open_db(None)), batch_key(start_seq))


def _items(arr: np.ndarray) -> list[bytes]:
    """One bytes object per record (the form LMDB puts take), without a Python loop."""
    return np.ascontiguousarray(arr).view(f"V{arr.dtype.itemsize}").tolist()


def _bytes_2d(arr: np.ndarray) -> np.ndarray:
    """The bytes of each record of a 1-d array, a row each (2-d uint8)."""
    arr = np.ascontiguousarray(arr)
    return arr.view(np.uint8).reshape(len(arr), arr.dtype.itemsize)


def _joined_2d(items, width: int) -> np.ndarray:
    """Byte strings of ``width`` bytes each as a 2-d uint8 array, a row each."""
    return np.frombuffer(b"".join(items), np.uint8).reshape(len(items), width)


def _crc_tables() -> np.ndarray:
    """zlib's CRC-32 tables for 4 bytes at a step: row k maps a byte that has k bytes
    after it in the step."""
    t = np.zeros((4, 256), np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC_POLY if c & 1 else c >> 1
        t[0, i] = c
    for k in range(1, 4):
        t[k] = (t[k - 1] >> 8) ^ t[0, t[k - 1] & 0xFF]
    return t


_CRC_TABLES = _crc_tables()


@njit(cache=True)
def _crc_update(c, data):
    """The (inverted) crc32 state ``c`` after the bytes of ``data`` (1-d uint8)."""
    t = _CRC_TABLES
    n = data.shape[0]
    i = 0
    while i + 4 <= n:
        c ^= (
            np.uint32(data[i])
            | (np.uint32(data[i + 1]) << np.uint32(8))
            | (np.uint32(data[i + 2]) << np.uint32(16))
            | (np.uint32(data[i + 3]) << np.uint32(24))
        )
        c = (
            t[3, c & np.uint32(0xFF)]
            ^ t[2, (c >> np.uint32(8)) & np.uint32(0xFF)]
            ^ t[1, (c >> np.uint32(16)) & np.uint32(0xFF)]
            ^ t[0, c >> np.uint32(24)]
        )
        i += 4
    while i < n:
        c = t[0, (c ^ np.uint32(data[i])) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        i += 1
    return c


@njit(cache=True)
def _row_sums(keys, values, out):
    """``zlib.crc32`` of each row's key bytes then its value bytes (2-d uint8 arrays,
    a record a row): the checksums of many table values in one pass."""
    for r in range(keys.shape[0]):
        c = _crc_update(np.uint32(0xFFFFFFFF), keys[r])
        out[r] = _crc_update(c, values[r]) ^ np.uint32(0xFFFFFFFF)


def _sum(key, value) -> int:
    return zlib.crc32(value, zlib.crc32(key))


def _sealed(key: bytes, value: bytes) -> bytes:
    """A table value as stored: its bytes, then the checksum of its key and its bytes."""
    return value + _SUM.pack(_sum(key, value))


def _seal_rows(keys: np.ndarray, values: np.ndarray) -> list[bytes]:
    """``_sealed`` of many same-sized values at once (``keys``, ``values``: 2-d uint8)."""
    n, m = values.shape
    out = np.empty((n, m + _SUM.size), np.uint8)
    out[:, :m] = values
    sums = np.empty(n, "<u4")
    _row_sums(keys, values, sums)
    out[:, m:] = sums.view(np.uint8).reshape(n, _SUM.size)
    return out.view(f"V{m + _SUM.size}").reshape(n).tolist()


def _checked_rows(table: str, keys: list, values: list) -> tuple[np.ndarray, ...]:
    """(which values pass their check, their keys and those values without their
    checksums as 2-d uint8) of sealed values of the fixed-size ``table`` under ``keys``."""
    size = _VALUE_SIZES[table] + _SUM.size
    ok = np.fromiter(map(len, values), np.int64, len(values)) == size
    ok &= np.fromiter(map(len, keys), np.int64, len(keys)) == _KEY_SIZES[table]
    if not ok.all():  # damage of another size: left out before the bytes are joined
        keys = [k for k, good in zip(keys, ok.tolist(), strict=True) if good]
        values = [v for v, good in zip(values, ok.tolist(), strict=True) if good]
    sealed = _joined_2d(values, size)
    key_bytes = _joined_2d(keys, _KEY_SIZES[table])
    sums = np.empty(len(keys), "<u4")
    _row_sums(key_bytes, sealed[:, : size - _SUM.size], sums)
    good = sums == np.ascontiguousarray(sealed[:, size - _SUM.size :]).view("<u4").reshape(-1)
    ok[ok] = good
    return ok, key_bytes[good], np.ascontiguousarray(sealed[good, : size - _SUM.size])


def _chunks(cur, n: int = _SCAN_CHUNK) -> Iterator[tuple[list, list]]:
    """(keys, values) of a cursor's records from the first on, ``n`` at a time."""
    keys, values = [], []
    for k, v in cur:
        keys.append(k)
        values.append(v)
        if len(keys) == n:
            yield keys, values
            keys, values = [], []
    if keys:
        yield keys, values


def _items_from(cur, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of a table's records from key ``start`` on (None: the first)."""
    found = cur.first() if start is None else cur.set_range(start)
    while found:
        yield cur.item()
        found = cur.next()


def _chunk_in(items: Iterator[tuple[bytes, bytes]], limit: int) -> tuple[list, list]:
    """(keys, values) of up to ``limit`` of ``items``, at most about ``_READ_CHUNK_BYTES``
    (values read in a txn without ``buffers`` are copies: they outlive it)."""
    keys, values = [], []
    size = 0
    for key, value in items:
        keys.append(key)
        values.append(value)
        size += len(value)
        if len(keys) >= limit or size >= _READ_CHUNK_BYTES:
            break
    return keys, values


def _record_name(table: str, key) -> str:
    """How a message names the record under ``key``."""
    key = bytes(key)
    if table == "batches":
        seq = batch_seq(key)
        return f"seq {seq}" if seq >= 0 else f"key {key!r} (not a batch's)"
    if table == "snapshots":
        return f"seq {_int(key[:8])}"
    if table == "orders":
        return f"order {_int(key)}"
    if table == "idem" and len(key) == _K:
        e = np.frombuffer(key, idempotency.IDEM_KEY_DTYPE)[0]
        return f"(client {e['client']}, idem key {e['idem_key']})"
    return repr(key.decode(errors="backslashreplace"))


def _snapshot_bytes(blob) -> bytes:
    if not isinstance(blob, bytes | bytearray | memoryview) or not len(blob):
        raise ValueError(f"a snapshot must be non-empty bytes, got {type(blob).__name__}")
    return bytes(blob)


class JournalReader:
    """One shard's journal, read: by any number of processes (the tools, a backup), and by
    its writer (``Journal``, a subclass). Reads are LMDB's MVCC read transactions: they
    never block the writer and see whole batches only.

    LMDB allows one open environment per path per process, so a process shares one
    journal object per path (a second one fails with ``JournalError``).
    """

    durability = "read-only"  # what ``stats`` says of a reader: it commits nothing
    max_map_size = DEFAULT_MAX_MAP_SIZE

    def __init__(self, path, archive_dir: str | None = None, name: str | None = None):
        self._setup(path, archive_dir, name)
        self._env = self._open_reader()
        self._attach()

    def _setup(self, path, archive_dir: str | None, name: str | None) -> None:
        self.path = os.fspath(path)
        # where the pruned batches are read from (``iter_records``); None: nowhere
        self.archive_dir = archive_dir
        # the shard's name in its archives: the journal's directory is named after it
        self.name = name or os.path.basename(os.path.normpath(self.path))
        self._commits = 0
        self._commit_seconds = 0.0
        self._grows = 0
        self._env = None

    def _attach(self) -> None:
        """The handles and what start-up reads, checked: a damaged one closes what was opened."""
        try:
            # the batches are the main database's records (``batch_key``)
            self._db = {"batches": self._env.open_db(None)}
            self._db.update((n.decode(), self._env.open_db(n, create=False)) for n in _DBS)
            self._psize = self._env.stat()["psize"]  # a batch record's pieces fit its pages
            self._last_seq = self._read_last_seq()
            with self._read() as txn:
                value = txn.get(b"identity", db=self._db["meta"])
                self.identity = bytes(self._unsealed("meta", b"identity", value)).hex()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------ opening

    def _open_reader(self) -> lmdb.Environment:
        if not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise JournalError(f"no journal at {self.path}")
        # map_size 0: map what the file says; _read() follows when the writer grows it
        env = self._lmdb_open(readonly=True, create=False, map_size=0)

        def check():
            with env.begin() as txn:
                try:
                    meta = env.open_db(b"meta", txn=txn, create=False)
                except lmdb.NotFoundError:
                    raise JournalError(f"{self.path} holds no journal") from None
                layout = txn.get(b"layout", db=meta)
                if layout != LAYOUT:
                    raise JournalError(self._layout_message(layout))

        return self._checked(env, check)

    def _checked(self, env: lmdb.Environment, check) -> lmdb.Environment:
        """``env`` once ``check()`` passed; else ``env`` is closed, and LMDB's report of a
        damaged file is the journal's ``JournalDamaged``."""
        try:
            check()
        except _DAMAGE_ERRORS as e:
            env.close()
            raise JournalDamaged(f"journal {self.path} cannot be opened: {e}") from e
        except BaseException:
            env.close()
            raise
        return env

    def _lmdb_open(self, **options) -> lmdb.Environment:
        problem = lmdbfile.problem(self.path)  # before mapping: a short file is a SIGBUS
        if problem is not None:
            raise JournalDamaged(f"journal {problem}")
        try:
            return lmdb.open(self.path, max_dbs=len(_DBS), **options)
        except _DAMAGE_ERRORS as e:
            raise JournalDamaged(f"journal {self.path} cannot be opened: {e}") from e
        except lmdb.Error as e:
            # e.g. LMDB forbids opening one environment twice in a process:
            # share one Journal per path within a process
            raise JournalError(f"cannot open journal {self.path}: {e}") from e

    def _layout_message(self, layout) -> str:
        return (
            f"journal {self.path} has layout {layout!r}, this code reads {LAYOUT!r}; "
            "use the matching version of the exchange to read or migrate it"
        )

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    def _read(self, buffers: bool = False) -> lmdb.Transaction:
        """A read txn; with ``buffers`` values are views into the map, valid inside it only."""
        try:
            return self._env.begin(buffers=buffers)
        except lmdb.MapResizedError:
            # the writer grew the map past ours: adopt its size
            self._env.set_mapsize(0)
            return self._env.begin(buffers=buffers)

    @contextmanager
    def _reading(self, *tables: str, buffers: bool = False) -> Iterator[lmdb.Transaction]:
        """``_read()``, with LMDB's reports of damaged pages made ``JournalDamaged``
        naming the ``tables`` read."""
        try:
            with self._read(buffers) as txn:
                yield txn
        except _DAMAGE_ERRORS as e:
            raise self._lmdb_damage(tables, e) from e

    def _lmdb_damage(self, tables, e: lmdb.Error) -> JournalDamaged:
        return JournalDamaged(f"journal {self.path}: {', '.join(tables)}: LMDB reports damage: {e}")

    def _damaged(self, table: str, key, reason: str) -> JournalDamaged:
        return JournalDamaged(f"journal {self.path}: {table} {_record_name(table, key)}: {reason}")

    def _unsealed(self, table: str, key, value):
        """A table value without its checksum; JournalDamaged if it fails its check."""
        if value is None:
            raise self._damaged(table, key, "missing")
        size = _VALUE_SIZES.get(table, len(value) - _SUM.size)
        if len(value) != size + _SUM.size or size < 0:
            raise self._damaged(table, key, f"a value of {len(value)} bytes")
        body = value[:size]
        if _sum(key, body) != _SUM.unpack_from(value, size)[0]:
            raise self._damaged(table, key, "checksum mismatch")
        return body

    def _unsealed_rows(self, table: str, keys: list, values: list) -> np.ndarray:
        """``_unsealed`` of many values of a fixed-size table at once: 2-d uint8, a row each."""
        ok, _, rows = _checked_rows(table, keys, values)
        if not ok.all():
            at = int(np.flatnonzero(~ok)[0])
            raise self._damaged(table, keys[at], "checksum mismatch")
        return rows

    def _batch(self, key, value) -> BatchRecord:
        """The batch record stored under ``key``, checked (see ``decode_batch``)."""
        try:
            rec = decode_batch(value)
        except ValueError as e:
            raise self._damaged("batches", key, str(e)) from None
        if not len(rec.commands) or rec.commands["seq"][-1] != batch_seq(key):
            raise self._damaged("batches", key, "not the record of the batch ending at this seq")
        return rec

    def release_pages(self) -> int:
        """Unmap the pages of the data file this process has read (``exchange.pages``).
        Returns the bytes of map given back."""
        return pages.release(os.path.join(self.path, "data.mdb"))

    def _meta(self, txn, name: bytes) -> int:
        return _int(self._unsealed("meta", name, txn.get(name, db=self._db["meta"])))

    def _log(self, txn, after: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, record) of the batches after seq ``after``, oldest first."""
        cur = txn.cursor(db=self._db["batches"])
        yield from _joined_from(cur, cur.set_range(batch_key(after + 1)))

    # ------------------------------------------------------------ writing

    def _last_seq_in(self, txn) -> int:
        cur = txn.cursor(db=self._db["batches"])
        return max(batch_seq(cur.key()), 0) if cur.last() else 0

    # ------------------------------------------------------------ queries

    @property
    def last_seq(self) -> int:
        """The last journaled seq (0 for an empty journal)."""
        return self._read_last_seq()

    def idem_values(self, keys: list[bytes]) -> list[bytes | None]:
        """The IDEM_DTYPE value of each journal key (IDEM_KEY_DTYPE bytes), None if unused."""
        with self._reading("meta", "batches", "idem") as txn:
            logged = self._logged_idem(txn)
            misses = [k for k in keys if k not in logged]
            found = self._idem_table(txn, misses) if misses else {}
        return [logged.get(k) or found.get(k) for k in keys]

    def _logged_idem(self, txn) -> dict[bytes, bytes]:
        """The log's idempotency entries (key -> value), as of ``txn``."""
        return self._log_idem(txn)

    def order(self, order_id: int) -> OrderState | None:
        """The order's state after the last batch that touched it, or None if never seen."""
        with self._reading("meta", "batches", "orders", buffers=True) as txn:
            row = self._log_row(txn, order_id)
            if row is None:
                key = _key(order_id)
                v = txn.get(key, db=self._db["orders"])
                if v is None:
                    return None
                row = np.frombuffer(self._unsealed("orders", key, v), ORDER_DTYPE)[0]
            return OrderState.from_row(row)

    def _log_row(self, txn, order_id: int):
        """The order's latest row in the log, None if the log has none."""
        return self._logged_row(txn, order_id)

    def _read_last_seq(self) -> int:
        with self._reading("batches") as txn:
            return self._last_seq_in(txn)

    def _idem_table(self, txn, keys: list[bytes]) -> dict[bytes, bytes]:
        """The idem table's values (checked, without their checksums) of those ``keys`` it has."""
        found = txn.cursor(db=self._db["idem"]).getmulti(keys)
        if not found:
            return {}
        used = [k for k, _ in found]
        rows = self._unsealed_rows("idem", used, [v for _, v in found])
        return dict(zip(used, rows.view(idempotency.VALUE_BYTES).reshape(-1).tolist(), strict=True))

    def _log_idem(self, txn) -> dict[bytes, bytes]:
        """The idempotency entries of the log (key -> value), as of ``txn``: what a reader
        has instead of the writer's ``_idem``."""
        out: dict[bytes, bytes] = {}
        for key, value in self._log(txn, self._meta(txn, b"folded")):
            rec = self._batch(key, value)
            out.update(zip(*idempotency.items(rec.idem_keys, rec.idem_values), strict=True))
        return out

    def idem_entries(self) -> Iterator[IdemEntry]:
        """Every idempotency entry, by key then client (read in chunks of short txns)."""
        # the log first: a fold meanwhile moves its entries into the table, where
        # they are found again (and skipped), never lost between two reads
        with self._reading("meta", "batches") as txn:
            log = sorted(self._log_idem(txn).items())
        logged = {k for k, _ in log}
        at = 0
        for keys, sealed in self._scan("idem"):
            values = self._unsealed_rows("idem", keys, sealed).view(idempotency.VALUE_BYTES)
            for k, v in zip(keys, values.reshape(-1).tolist(), strict=True):
                if k in logged:
                    continue
                while at < len(log) and log[at][0] < k:
                    yield idempotency.decode_entry(*log[at])
                    at += 1
                yield idempotency.decode_entry(k, v)
        for k, v in log[at:]:
            yield idempotency.decode_entry(k, v)

    def _logged_row(self, txn, order_id: int):
        """The order's latest row in the log, None if the log has none."""
        folded = self._meta(txn, b"folded")
        cur = txn.cursor(db=self._db["batches"])
        found = cur.last()  # the last batch's last piece
        while found and batch_seq(cur.key()) > folded:
            key = bytes(cur.key()[:8])
            cur.set_key(key)  # its first piece
            rows = self._batch(*_joined(cur)[:2]).rows
            i = np.searchsorted(rows["order_id"], order_id)
            if i < len(rows) and rows["order_id"][i] == order_id:
                return rows[i]
            cur.set_key(key)
            found = cur.prev()  # the batch before's last piece
        return None

    def events_for(self, seq: int) -> np.ndarray:
        """The events command ``seq`` produced (empty if it is not journaled);
        HistoryPruned if its batch was taken out (archives are not read here: a
        retry's answer must not cost a file's decompression)."""
        with self._reading("meta", "batches", buffers=True) as txn:
            pruned = self._pruned_in(txn)[0]
            if 0 < seq <= pruned:
                raise HistoryPruned(f"journal {self.path}: seq {seq} was pruned (<= {pruned})")
            cur = txn.cursor(db=self._db["batches"])
            if not cur.set_range(batch_key(max(seq, 0))):
                return np.zeros(0, EVENT_DTYPE)
            ev = self._batch(*_joined(cur)[:2]).events
            lo, hi = np.searchsorted(ev["seq"], [seq, seq + 1])
            return copy_records(ev[lo:hi])

    def iter_batches(self, after_seq: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(commands, events) of each journaled batch after ``after_seq``, in order.

        A batch that straddles ``after_seq`` is cut to its part after it. The
        arrays are read-only. Batches are read a chunk per read txn, so batches
        a writer commits meanwhile may show up at the end, always whole.
        """
        start = max(after_seq, 0) + 1
        for rec in self.iter_records(after_seq):
            cmds, events = rec.commands, rec.events
            if cmds["seq"][0] < start:
                cmds = cmds[cmds["seq"] >= start]
                events = events[events["seq"] >= start]
            yield cmds, events

    def iter_records(self, after_seq: int = 0) -> Iterator[BatchRecord]:
        """Every batch record that ends after ``after_seq``, whole and checked, in order
        (read as ``iter_batches`` reads them). Batches that ``prune`` took out come from
        the archives (``archive_dir``; one missing or failing its check is
        JournalDamaged); HistoryPruned when there are none of them (no ``archive_dir``,
        or dropped: see ``history_after``). A prune meanwhile is followed: each chunk's
        read txn says what is pruned as of it."""
        start = max(after_seq, 0) + 1
        while True:
            with self._reading("meta", "batches") as txn:
                pruned = self._pruned_in(txn)[0]
                if start > pruned:
                    cur = txn.cursor(db=self._db["batches"])
                    found = cur.set_range(batch_key(start))
                    keys, values = _chunk_in(_joined_from(cur, found), _READ_CHUNK_BATCHES)
            if start <= pruned:
                yield from self._archived(start, pruned)
                start = pruned + 1
                continue
            if not keys:
                return
            for key, value in zip(keys, values, strict=True):
                yield self._batch(key, value)
            start = batch_seq(keys[-1]) + 1

    def _archived(self, start: int, pruned: int) -> Iterator[BatchRecord]:
        """The archived batch records from the one holding ``start`` to the one ending at
        ``pruned``, checked."""
        dropped = self.history_after()
        if self.archive_dir is None or start <= dropped:
            raise HistoryPruned(
                f"journal {self.path}: the batches up to seq {pruned} were pruned; "
                + (
                    f"those up to {dropped} were dropped (no archive)"
                    if start <= dropped
                    else "no archive directory to read them from"
                )
            )
        try:
            found = archive.listing(self.archive_dir, self.name, self.identity)
            for a in archive.covering(found, dropped, pruned):
                if a.last_seq < start:
                    continue
                _, records = archive.read(a, self.name)
                expected = a.first_seq
                for key, value in records:
                    rec = self._batch(key, value)
                    if rec.commands["seq"][0] != expected or batch_seq(key) > a.last_seq:
                        raise archive.ArchiveDamaged(
                            f"archive {a.path}: the batch ending at seq {batch_seq(key)} "
                            f"does not start at seq {expected}"
                        )
                    expected = batch_seq(key) + 1
                    if expected > start:
                        yield rec
                if expected != a.last_seq + 1:
                    raise archive.ArchiveDamaged(f"archive {a.path}: ends at seq {expected - 1}")
        except archive.ArchiveDamaged as e:
            raise JournalDamaged(str(e)) from None

    def history_after(self) -> int:
        """The seq this journal's history starts after, for a reader with its archives:
        what ``prune`` dropped without an archive (0: all of it is kept somewhere)."""
        with self._reading("meta") as txn:
            return self._pruned_in(txn)[1]

    @property
    def pruned(self) -> int:
        """The seq up to which ``prune`` took the batches out of the journal (0: none)."""
        with self._reading("meta") as txn:
            return self._pruned_in(txn)[0]

    def _pruned_in(self, txn) -> tuple[int, int]:
        """(pruned, dropped) as of ``txn``; 0 in a journal never pruned (these meta
        records are written by the first prune)."""
        out = []
        for name in (b"pruned", b"dropped"):
            value = txn.get(name, db=self._db["meta"])
            out.append(0 if value is None else _int(self._unsealed("meta", name, value)))
        return out[0], out[1]

    def _read_chunk(self, table: str, start: bytes | None, limit: int) -> tuple[list, list]:
        """(keys, values) of up to ``limit`` records of ``table`` from key ``start`` on
        (None: the first), in one short read txn (so the writer can reuse pages)."""
        with self._reading(table) as txn:
            cur = txn.cursor(db=self._db[table])
            if table in _PIECED:  # whole values, their pieces joined
                found = cur.first() if start is None else cur.set_range(start)
                return _chunk_in(_joined_from(cur, found), limit)
            return _chunk_in(_items_from(cur, start), limit)

    def _scan(self, table: str) -> Iterator[tuple[list, list]]:
        """(keys, values) of every record of ``table``, in key order, a chunk at a time."""
        start = FIRST_BATCH_KEY if table == "batches" else None  # past the others' records
        while True:
            keys, values = self._read_chunk(table, start, _SCAN_CHUNK)
            if not keys:
                return
            yield keys, values
            if table in _PIECED:  # the next 8-byte key: past the last one's pieces
                start = (int.from_bytes(keys[-1], "big") + 1).to_bytes(8, "big")
            else:
                start = keys[-1] + b"\0"  # the least key after it, in LMDB's byte order

    def consumed(self) -> dict[str, int]:
        """What the shard has consumed of each input ring, committed last: name -> records.

        Committed in the same transaction as the batch they follow, so after a
        crash they say exactly which inputs the journal holds.
        """
        with self._reading("meta", "positions", "batches") as txn:
            out = {}
            for k, v in txn.cursor(db=self._db["positions"]):
                out.update(self._consumed_entry(k, v))
            for key, value in self._log(txn, self._meta(txn, b"positions_at")):
                out.update(self._batch(key, value).consumed)
        return out

    def _consumed_entry(self, key: bytes, value: bytes) -> dict[str, int]:
        """{name: records consumed} of one positions table record, checked."""
        count = _int(self._unsealed("positions", key, value))
        try:
            return {key.decode(): count}
        except UnicodeDecodeError:  # a name written checked is UTF-8
            raise self._damaged("positions", key, "the name is not UTF-8") from None

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        with self._reading("snapshots") as txn:
            found = _last_joined(txn.cursor(db=self._db["snapshots"]))
            if found is None:
                return None
            key, value = found
            return _int(key), self._unsealed("snapshots", key, value)

    # ------------------------------------------------------------ verification

    def damaged(self) -> Iterator[tuple[int, str]]:
        """(seq, message) of every stored value that fails its check and of keys out of
        order (a damaged B-tree), table by table, each read in chunks of short txns: what
        ``exch journal verify`` reports. seq: the batch's for the batches table, else 0.
        LMDB reporting a damaged page ends that table's scan (with one message)."""
        for table in self._db:
            last = None
            try:
                for keys, values in self._scan(table):
                    for key, value in zip(keys, values, strict=True):
                        if last is not None and key <= last:
                            yield 0, f"journal {self.path}: {table}: key {key!r} after {last!r}"
                        last = key
                        try:
                            self._check(table, key, value)
                        except JournalDamaged as e:
                            yield (max(batch_seq(key), 0) if table == "batches" else 0), str(e)
            except JournalDamaged as e:
                yield 0, str(e)

    def _count(self, txn, table: str) -> int:
        """The values of a table stored in pieces (``_PIECED``): its 8-byte keys, not a
        piece's (``_piece_key``) nor, in the main database, a named sub-database's."""
        cur = txn.cursor(db=self._db[table])
        if not cur.set_range(FIRST_BATCH_KEY if table == "batches" else b""):
            return 0
        return sum(len(k) == 8 for k in cur.iternext(values=False))

    def _check(self, table: str, key: bytes, value: bytes) -> None:
        """JournalDamaged if the value stored under ``key`` fails its check."""
        if table == "batches":
            self._batch(key, value)
        elif table != "meta" or key != b"layout":  # the layout was compared at the open
            self._unsealed(table, key, value)

    def tables(self) -> Tables:
        """The orders, idem and positions tables, and the seqs they are folded up to, as of
        one read txn (what ``exch journal verify`` compares with the batches); a value
        that fails its check is left out, its key listed in ``damaged``."""
        damaged: dict[str, list[bytes]] = {"orders": [], "idem": [], "positions": []}
        ids, rows, idem_keys, idem_values = [], [], [], []
        consumed = {}
        with self._reading("meta", "orders", "idem", "positions") as txn:
            folded = self._meta(txn, b"folded")
            consumed_at = self._meta(txn, b"positions_at")
            pruned = self._pruned_in(txn)[0]
            for table in ("orders", "idem"):
                for keys, values in _chunks(txn.cursor(db=self._db[table])):
                    ok, kept_keys, kept = _checked_rows(table, keys, values)
                    damaged[table] += [keys[i] for i in np.flatnonzero(~ok).tolist()]
                    if table == "orders":
                        ids.append(kept_keys.view(">i8").reshape(-1).astype(np.int64))
                        rows.append(kept.view(ORDER_DTYPE).reshape(-1))
                    else:
                        idem_keys.append(kept_keys.view(idempotency.KEY_BYTES).reshape(-1))
                        idem_values.append(kept.view(idempotency.IDEM_DTYPE).reshape(-1))
            for k, v in txn.cursor(db=self._db["positions"]):
                try:
                    consumed.update(self._consumed_entry(k, v))
                except JournalDamaged:
                    damaged["positions"].append(k)
        return Tables(
            folded,
            consumed_at,
            pruned,
            np.concatenate([np.zeros(0, np.int64), *ids]),
            np.concatenate([np.zeros(0, ORDER_DTYPE), *rows]),
            np.concatenate([np.zeros(0, idempotency.KEY_BYTES), *idem_keys]),
            np.concatenate([np.zeros(0, idempotency.IDEM_DTYPE), *idem_values]),
            consumed,
            damaged,
        )

    def stats(self) -> Stats:
        with self._reading("meta", "batches", buffers=True) as txn:
            counts = {n: txn.stat(self._db[n])["entries"] for n in self._db}
            counts.update((table, self._count(txn, table)) for table in _PIECED)
            last = self._last_seq_in(txn)
            pruned, dropped = self._pruned_in(txn)
            log_rows = log_keyed = 0
            for key, value in self._log(txn, self._meta(txn, b"folded")):
                rec = self._batch(key, value)
                log_rows += len(rec.rows)
                log_keyed += len(rec.idem_keys)
        info, st = self._env.info(), self._env.stat()
        return Stats(
            path=self.path,
            durability=self.durability,
            last_seq=last,
            batches=counts["batches"],
            orders_merged=counts["orders"],
            order_log_rows=log_rows,
            idem_entries=counts["idem"] + log_keyed,
            snapshots=counts["snapshots"],
            map_size=info["map_size"],
            max_map_size=self.max_map_size,
            used_bytes=(info["last_pgno"] + 1) * st["psize"],
            commits=self._commits,
            commit_seconds=self._commit_seconds,
            map_grows=self._grows,
            pruned=pruned,
            dropped=dropped,
        )


class Journal(JournalReader):
    """One shard's journal, written: by one process at a time, its shard (an exclusive
    lock on ``writer.lock``), which reads it too. The writer keeps the log's rows,
    idempotency entries and consumed counts in memory (the module docstring), so its own
    lookups never read the log.
    """

    def __init__(
        self,
        path,
        durability: str = "fsync",
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        keep_snapshots: int = KEEP_SNAPSHOTS,
        merge_rows: int = MERGE_ROWS,
        archive_dir: str | None = None,
        name: str | None = None,
    ):
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        if not 0 < map_size <= max_map_size:
            raise ValueError(f"need 0 < map_size <= max_map_size, got {map_size}, {max_map_size}")
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
        if merge_rows < 1:
            raise ValueError(f"merge_rows must be >= 1, got {merge_rows}")
        self._setup(path, archive_dir, name)
        self.durability = durability
        self.max_map_size = max_map_size
        self.keep_snapshots = keep_snapshots
        self.merge_rows = merge_rows
        # the writer's view of the log: its order rows, idempotency entries (key ->
        # value) and the consumed committed in it since ``consumed_at``
        self._pending = orderstate.PendingRows()
        self._idem: dict[bytes, bytes] = {}
        self._log_consumed: dict[str, int] = {}
        self._lock_fd = self._lock_writer()
        try:
            self._env = self._open_writer(map_size)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._attach()
        try:
            self._load_log()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._env is not None and self.durability == "os":
            self._env.sync(True)
        super().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def last_seq(self) -> int:
        """The last journaled seq (0 for an empty journal)."""
        # the writer is the only one that moves it, so it need not ask LMDB
        return self._last_seq

    def _logged_idem(self, txn) -> dict[bytes, bytes]:
        return self._idem

    def _log_row(self, txn, order_id: int):
        return self._pending.find(order_id)  # checked when the log was loaded

    def _lock_writer(self) -> int:
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(os.path.join(self.path, "writer.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(f"journal {self.path} is already open for writing") from None
        return fd

    def _open_writer(self, map_size: int) -> lmdb.Environment:
        env = self._lmdb_open(
            map_size=map_size,
            sync=self.durability == "fsync",
            metasync=True,
            writemap=False,
            map_async=False,
        )

        def check():
            fresh = env.stat()["entries"] == 0
            with env.begin(write=True) as txn:
                try:
                    meta = env.open_db(b"meta", txn=txn, create=fresh)
                except lmdb.NotFoundError:
                    raise JournalError(
                        f"{self.path} is an LMDB environment but no journal"
                    ) from None
                layout = txn.get(b"layout", db=meta)
                if layout is None:
                    txn.put(b"layout", LAYOUT, db=meta)
                    identity = os.urandom(IDENTITY_BYTES)
                    txn.put(b"identity", _sealed(b"identity", identity), db=meta)
                    txn.put(b"folded", _sealed(b"folded", _key(0)), db=meta)
                    txn.put(b"positions_at", _sealed(b"positions_at", _key(0)), db=meta)
                elif layout != LAYOUT:
                    raise JournalError(self._layout_message(layout))
                for name in _DBS[1:]:
                    env.open_db(name, txn=txn)

        return self._checked(env, check)

    def _load_log(self) -> None:
        """The writer's in-memory view of the log (see the module docstring), checked."""
        with self._reading("meta", "batches") as txn:
            consumed_at = self._meta(txn, b"positions_at")
            for key, value in self._log(txn, self._meta(txn, b"folded")):
                rec = self._batch(key, value)
                self._pending.add(rec.rows)
                self._idem.update(
                    zip(*idempotency.items(rec.idem_keys, rec.idem_values), strict=True)
                )
                if batch_seq(key) > consumed_at:
                    self._log_consumed.update(rec.consumed)

    def _write(self, fill) -> float:
        """Run ``fill(txn)`` in a write txn and commit; grow the map and redo it when full."""
        while True:
            txn = self._env.begin(write=True)
            try:
                fill(txn)
                t0 = time.perf_counter()
                txn.commit()
                dt = time.perf_counter() - t0
            except lmdb.MapFullError:
                txn.abort()
                self._grow()
                continue
            except _DAMAGE_ERRORS as e:
                txn.abort()
                raise self._lmdb_damage(("a write transaction",), e) from e
            except lmdb.Error as e:
                txn.abort()
                if e.code in _FULL_ERRNOS:
                    raise JournalFull(
                        f"journal {self.path}: the disk refused a write "
                        f"({errno.errorcode[e.code]}: {e}; LMDB reports a short write as EIO); "
                        "nothing of this batch was written; stop intake and free space"
                    ) from e
                raise JournalError(f"journal {self.path}: LMDB failed: {e}") from e
            except BaseException:
                txn.abort()
                raise
            self._commits += 1
            self._commit_seconds += dt
            return dt

    def _grow(self) -> None:
        size = self._env.info()["map_size"]
        if size >= self.max_map_size:
            raise JournalFull(
                f"journal {self.path}: the map is full at its maximum of {self.max_map_size} "
                "bytes; nothing of this batch was written; stop intake, raise max_map_size"
            )
        self._env.set_mapsize(min(2 * size, self.max_map_size))
        self._grows += 1

    def _put_meta(self, txn, name: bytes, seq: int) -> None:
        txn.put(name, _sealed(name, _key(seq)), db=self._db["meta"])

    def write_batch(
        self,
        cmds: np.ndarray,
        events: np.ndarray,
        snapshot: bytes | None = None,
        consumed: dict[str, int] | None = None,
        unused: frozenset[bytes] = frozenset(),
    ) -> float:
        """Journal one sequenced batch in one transaction; returns the seconds its commit took.

        ``cmds``: COMMAND_DTYPE, seqs strictly increasing past ``last_seq``.
        ``events``: EVENT_DTYPE, exactly what the books produced for them, in
        (seq, idx) order, no EVF_DUPLICATE. ``snapshot``: the state after the
        batch, stored under its last seq. ``consumed``: the records the shard
        has consumed of each input ring after this batch (see ``consumed()``). A malformed
        batch or a reused idempotency pair raises ValueError and writes
        nothing; so does an event about an order the journal never saw created.
        ``unused``: idempotency keys the caller found in neither the log nor the table
        since this journal's last write (``idempotency.plan_batch``'s lookup): the write
        need not look them up again.
        """
        cmds = batchcodec.records(cmds, COMMAND_DTYPE, "commands")
        events = batchcodec.records(events, EVENT_DTYPE, "events")
        batchcodec.check_batch(cmds, events, self.last_seq)
        if snapshot is not None:
            snapshot = _snapshot_bytes(snapshot)
        consumed = batchcodec.checked_consumed(consumed) if consumed is not None else {}
        blob = msgspec.msgpack.encode(consumed) if consumed else b""
        rows, need, needs_prior = orderstate.derive(cmds, events)
        # only an order the book accepted uses its pair up (``exchange.idempotency``)
        _, keys, values = idempotency.used_entries(cmds, events)
        if keys:
            self._refuse_used_pairs(None, keys)
        last = int(cmds["seq"][-1])
        pending = self._pending
        # the fold's work: the log's rows and idempotency entries
        work = pending.rows + len(rows) + len(self._idem) + len(keys)
        fold = work >= self.merge_rows or pending.batches + 1 >= MERGE_BATCHES
        logged = []

        def fill(txn):
            order_rows = rows
            if needs_prior:
                # merge_prior adds to the rows: a fill that is redone starts over
                order_rows = np.frombuffer(bytearray(rows.tobytes()), ORDER_DTYPE)
                self._merge_prior(txn, order_rows, need)
            if keys:
                self._refuse_used_pairs(txn, keys, unused)
            record = batch_record(cmds, events, order_rows, b"".join(values), b"".join(keys), blob)
            # MDB_APPEND: the key is past every key of the main database (batch_key),
            # so the put fills the last leaf and splits none in half
            db = self._db["batches"]
            if not put_pieces(txn, db, batch_key(last), record, self._psize, append=True):
                raise JournalError(f"journal {self.path}: a batch ending at {last} exists")
            if fold:
                self._fold(txn, last, order_rows, dict(zip(keys, values, strict=True)), consumed)
            if snapshot is not None:
                self._put_snapshot(txn, last, snapshot)
            logged[:] = [order_rows]

        dt = self._write(fill)
        # only a committed transaction moves the in-memory state
        if fold:
            self._folded()
        else:
            pending.add(logged[0])
            if keys:
                self._idem.update(zip(keys, values, strict=True))
            self._log_consumed.update(consumed)
        self._last_seq = last
        return dt

    def _folded(self) -> None:
        """After a fold's commit: the log starts anew."""
        self._pending.clear()
        self._idem.clear()
        self._log_consumed.clear()

    def _fold(self, txn, last: int, rows: np.ndarray, idem: dict, consumed: dict) -> None:
        """Bring the tables up to date with the log and this batch; the log starts anew."""
        table = self._pending.latest(rows)
        ids = table["order_id"].astype(">i8")
        sealed = _seal_rows(_bytes_2d(ids), _bytes_2d(table))
        txn.cursor(db=self._db["orders"]).putmulti(zip(_items(ids), sealed, strict=True))
        idem = {**self._idem, **idem}
        if idem:
            keys, values = zip(*sorted(idem.items()), strict=True)
            sealed = _seal_rows(_joined_2d(keys, _K), _joined_2d(values, _V))
            txn.cursor(db=self._db["idem"]).putmulti(zip(keys, sealed, strict=True))
        self._put_consumed(txn, {**self._log_consumed, **consumed})
        self._put_meta(txn, b"folded", last)

    def _put_consumed(self, txn, consumed: dict[str, int]) -> None:
        names = [name.encode() for name in consumed]
        items = [(n, _sealed(n, _key(p))) for n, p in zip(names, consumed.values(), strict=True)]
        txn.cursor(db=self._db["positions"]).putmulti(items)
        self._put_meta(txn, b"positions_at", self._last_seq_in(txn))

    def _merge_prior(self, txn, rows: np.ndarray, need: np.ndarray) -> None:
        """What the batch's rows keep from their previous rows: the log's, else the table's."""
        idx = self._pending.merge_into(rows, need)
        if not len(idx):
            return
        ids = rows["order_id"][idx]
        keys = _items(ids.astype(">i8"))
        blobs = [txn.get(k, db=self._db["orders"]) for k in keys]
        missing = [int(i) for i, b in zip(ids, blobs, strict=True) if b is None]
        if missing:
            raise ValueError(
                f"events touch orders {missing[:5]} that the journal never saw created"
            )
        prior = self._unsealed_rows("orders", keys, blobs).view(ORDER_DTYPE).reshape(-1)
        orderstate.merge_prior(rows, need, idx, prior)

    def _refuse_used_pairs(self, txn, keys: list[bytes], unused=frozenset()) -> None:
        """ValueError naming the first (client, idem key) pair of ``keys`` used already:
        twice in ``keys``, in the log (``txn`` None) or in the table (``txn``; the
        ``unused`` ones were looked up there already)."""
        if txn is None:
            used = [k for k in keys if k in self._idem]
            if not used and len(set(keys)) < len(keys):
                seen = set()
                used = [k for k in keys if k in seen or seen.add(k)]
        else:
            unknown = [k for k in keys if k not in unused]
            used = list(self._idem_table(txn, unknown)) if unknown else []
        if used:
            e = np.frombuffer(used[0], idempotency.IDEM_KEY_DTYPE)[0]
            pair = (int(e["client"]), int(e["idem_key"]))
            raise ValueError(
                f"(client, idem key) {pair} is already used: filter retries with "
                "idempotency.plan_batch before sequencing"
            )

    def write_consumed(self, consumed: dict[str, int]) -> float:
        """Commit consumed counts alone (a batch whose every command was a retry)."""
        consumed = batchcodec.checked_consumed(consumed)
        merged = {**self._log_consumed, **consumed}
        dt = self._write(lambda txn: self._put_consumed(txn, merged))
        self._log_consumed.clear()
        return dt

    def write_snapshot(self, seq: int, blob: bytes) -> float:
        """Store a snapshot of the state after ``seq`` (which must be journaled already)."""
        blob = _snapshot_bytes(blob)
        if not 0 < seq <= self.last_seq:
            raise ValueError(f"snapshot seq {seq} is not a journaled seq (last is {self.last_seq})")
        return self._write(lambda txn: self._put_snapshot(txn, seq, blob))

    def prune(
        self, retain: int, archive_dir: str | None = None, limit: int = PRUNE_COMMANDS
    ) -> tuple[int, int] | None:
        """Take the oldest batches out of the journal, keeping at least the last ``retain``
        commands and the latest snapshot's replay; returns the (first, last) seqs taken
        out, None when there was nothing to take. The log's rows and entries live in
        its batch records only: when the range reaches into the log, the same
        transaction folds it first (as a batch's fold does).

        At most ``limit`` commands and ``MERGE_ROWS`` idempotency entries at a time (and
        always whole batches), so call it again while it returns a range: LMDB keeps a
        buffer for every page its largest transaction dirtied, and an entry is deleted
        from a random page. With ``archive_dir`` the batches are written to
        an archive first (``exchange.archive``: durable before anything is deleted),
        else dropped. The same transaction deletes them, deletes the order rows of the
        orders that finished (filled, cancelled, rejected) at or before the last seq
        taken out (their state is history too; live orders stay, whatever their age),
        and records ``pruned`` (and ``dropped``, when not archived) in ``meta``; and it
        deletes the idempotency entries of the batches taken out: the shard's key
        window is the history it keeps (a retry of an order older than that is
        answered ``REJ_KEY_EXPIRED``, ``exchange.idempotency``). A crash between the
        archive and the commit leaves the batches in the journal and an archive past
        ``pruned``, which readers pass over and the next prune replaces.
        """
        if retain < 1:
            raise ValueError(f"retain must be >= 1, got {retain}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._reading("meta", "snapshots", "batches") as txn:
            pruned = self._pruned_in(txn)[0]
            snapshots = txn.cursor(db=self._db["snapshots"])
            snap = _int(snapshots.key()[:8]) if snapshots.last() else 0
            bound = min(self._last_seq - retain, snap)
            fold = bound > self._meta(txn, b"folded")
            keys, values, n, n_idem = [], [], 0, 0
            cur = txn.cursor(db=self._db["batches"])
            for key, value in _joined_from(cur, cur.set_range(batch_key(pruned + 1))):
                if batch_seq(key) > bound:
                    break
                if len(value) >= batchcodec.COUNTS.size:
                    counts = batchcodec.COUNTS.unpack_from(value)
                    n, n_idem = n + counts[0], n_idem + counts[3]
                if keys and (n > limit or n_idem > MERGE_ROWS):
                    break
                keys.append(key)
                values.append(value)
        if not keys:
            return None
        last = batch_seq(keys[-1])
        # what is archived or dropped was sound
        recs = [self._batch(key, value) for key, value in zip(keys, values, strict=True)]
        if archive_dir is not None:
            old = archive.listing(archive_dir, self.name, self.identity)
            for a in archive.stale(old, pruned):
                os.remove(a.path)
            head = archive.Header(self.name, self.identity, pruned + 1, last, len(keys))
            archive.write(archive_dir, head, list(zip(keys, values, strict=True)))

        def fill(txn):
            if fold:
                self._fold(txn, self._last_seq, np.zeros(0, ORDER_DTYPE), {}, {})
            for key in keys:
                delete_pieces(txn, self._db["batches"], key)
            for rec in recs:  # folded by now: in the table (a pair is used once at a time)
                for key in rec.idem_keys.tolist():
                    txn.delete(key, db=self._db["idem"])
            self._prune_orders(txn, last)
            self._put_meta(txn, b"pruned", last)
            if archive_dir is None:
                self._put_meta(txn, b"dropped", last)

        self._write(fill)
        if fold:
            self._folded()
        return pruned + 1, last

    def _prune_orders(self, txn, upto: int) -> None:
        """Delete the order rows of the orders finished at or before seq ``upto``. They
        were created at or before it, and an order id's low bits are its NEW's seq, so
        only the table's first rows need reading: up to the first order created after
        ``upto`` (the live orders before it, and the orders of the range)."""
        cur = txn.cursor(db=self._db["orders"])
        keys, values = [], []
        found = cur.first()
        while found and _int(cur.key()) & ORDER_ID_SEQ_MASK <= upto:
            keys.append(cur.key())
            values.append(cur.value())
            found = cur.next()
        if not keys:
            return
        rows = self._unsealed_rows("orders", keys, values).view(ORDER_DTYPE).reshape(-1)
        done = (rows["status"] != ST_LIVE) & (rows["last_seq"] <= upto)
        for i in np.flatnonzero(done).tolist():
            txn.delete(keys[i], db=self._db["orders"])

    def _put_snapshot(self, txn, seq: int, blob: bytes) -> None:
        db, key = self._db["snapshots"], _key(seq)
        # in pieces, as the batches: a run of overflow pages would need a contiguous run
        # of free pages, and a deflated snapshot's size changes with every one
        delete_pieces(txn, db, key)
        put_pieces(txn, db, key, _sealed(key, blob), self._psize)
        kept = [k for k in txn.cursor(db=db).iternext(values=False) if len(k) == 8]
        for old in kept[: len(kept) - self.keep_snapshots]:
            delete_pieces(txn, db, old)
