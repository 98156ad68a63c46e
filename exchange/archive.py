"""Journal archives: the batch records that retention took out of a shard's journal.

One file per pruned range, ``<archive_dir>/<shard>/<identity>-<first seq>-<last seq>.jarc``
(seqs zero-padded to 20 digits, so names sort in seq order):

    MAGIC (8 bytes)
    header length (uint32 LE), the header (msgpack ``Header``), crc32 of the header (uint32 LE)
    the body: zlib-compressed, then its crc32 (uint32 LE)

The decompressed body is the batch records as the journal stored them, in seq
order, each as its 8-byte key (``exchange.journal.batch_key``), its length
(uint32 LE) and its bytes; every record keeps its own checksum, which the
journal's readers check as they check the journal's. The header names the shard,
the journal's identity, the seq range and the number of batches, so a file that
is renamed, moved under another shard or cut short fails its check
(``ArchiveDamaged``), never read as history.

``write`` is atomic: a temporary file, fsync, rename, fsync of the directory. The
journal deletes a range only once its archive is written (``Journal.prune``); a
crash in between leaves an archive whose range the journal still holds (its
first seq is after the journal's ``pruned``): readers pass over it and the next
prune replaces it (``stale``).
"""

import os
import re
import struct
import zlib
from typing import NamedTuple

import msgspec

from exchange import durable

MAGIC = b"EXJARC1\n"
SUFFIX = ".jarc"
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<8sI")  # key, then the length of the value
_NAME = re.compile(r"^([0-9a-f]+)-([0-9]{20})-([0-9]{20})\.jarc$")
_MAX_HEADER = 1 << 12


class HistoryPruned(LookupError):
    """The batches asked for were taken out of the journal by retention
    (``Journal.prune``) and the reader has no archive of them: history that is no
    longer kept, not damage."""


class ArchiveDamaged(Exception):
    """An archive file fails its check: refuse it, never serve it."""


class Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    shard: str
    identity: str
    first_seq: int
    last_seq: int
    batches: int


class Archive(NamedTuple):
    path: str
    identity: str
    first_seq: int
    last_seq: int


def shard_dir(archive_dir: str, shard: str) -> str:
    return os.path.join(archive_dir, shard)


def file_name(identity: str, first_seq: int, last_seq: int) -> str:
    return f"{identity}-{first_seq:020d}-{last_seq:020d}{SUFFIX}"


def listing(archive_dir: str, shard: str, identity: str) -> list[Archive]:
    """The archives of the journal ``identity`` of ``shard``, by first seq (none when the
    directory does not exist). Files of other journals are not its history."""
    directory = shard_dir(archive_dir, shard)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _NAME.match(name)
        if m and m.group(1) == identity:
            out.append(Archive(os.path.join(directory, name), identity, *map(int, m.groups()[1:])))
    return sorted(out, key=lambda a: a.first_seq)


def write(archive_dir: str, header: Header, records: list[tuple[bytes, bytes]]) -> str:
    """Write the archive of ``records`` ((key, value) of each batch, in seq order), durably
    and atomically; returns its path."""
    directory = shard_dir(archive_dir, header.shard)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, file_name(header.identity, header.first_seq, header.last_seq))
    raw = b"".join(_RECORD.pack(k, len(v)) + bytes(v) for k, v in records)
    body = zlib.compress(raw, 1)
    head = msgspec.msgpack.encode(header)
    parts = (MAGIC, _U32.pack(len(head)), head, _U32.pack(zlib.crc32(head)), body)
    durable.replace_file(path, b"".join(parts) + _U32.pack(zlib.crc32(body)))
    return path


def read(archive: Archive, shard: str) -> tuple[Header, list[tuple[bytes, bytes]]]:
    """The header and the (key, value) records of an archive of ``shard``, checked: its
    checksums, and that its header, its name and its records agree; ArchiveDamaged
    naming the file and the reason otherwise."""
    path = archive.path
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ArchiveDamaged(f"archive {path} cannot be read: {e}") from None

    def damaged(reason: str) -> ArchiveDamaged:
        return ArchiveDamaged(f"archive {path}: {reason}")

    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 3 * _U32.size:
        raise damaged("not an archive (bad magic or too short)")
    at = len(MAGIC)
    (n,) = _U32.unpack_from(data, at)
    at += _U32.size
    if n > _MAX_HEADER or at + n + 2 * _U32.size > len(data):
        raise damaged(f"a header of {n} bytes does not fit")
    head = data[at : at + n]
    at += n
    if zlib.crc32(head) != _U32.unpack_from(data, at)[0]:
        raise damaged("header checksum mismatch")
    at += _U32.size
    body, (crc,) = data[at : -_U32.size], _U32.unpack_from(data, len(data) - _U32.size)
    if zlib.crc32(body) != crc:
        raise damaged("body checksum mismatch")
    try:
        header = msgspec.msgpack.decode(head, type=Header)
        raw = zlib.decompress(body)
    except (msgspec.DecodeError, zlib.error) as e:
        raise damaged(f"unreadable: {e}") from None
    want = (shard, archive.identity, archive.first_seq, archive.last_seq)
    got = (header.shard, header.identity, header.first_seq, header.last_seq)
    if got != want:
        raise damaged(f"its header says {got}, its place says {want}")
    records = []
    at = 0
    while at < len(raw):
        if at + _RECORD.size > len(raw):
            raise damaged("a record is cut short")
        key, size = _RECORD.unpack_from(raw, at)
        at += _RECORD.size
        if at + size > len(raw):
            raise damaged("a record is cut short")
        records.append((key, raw[at : at + size]))
        at += size
    if len(records) != header.batches:
        raise damaged(f"{len(records)} records, its header says {header.batches}")
    return header, records


def stale(archives: list[Archive], pruned: int) -> list[Archive]:
    """The archives a prune that did not finish left (their range is still in the journal,
    whose history before ``pruned + 1`` is archived)."""
    return [a for a in archives if a.first_seq > pruned]


def covering(archives: list[Archive], dropped: int, pruned: int) -> list[Archive]:
    """The archives of seqs ``dropped`` + 1..``pruned`` (what a journal pruned up to
    ``pruned`` archived after it last dropped history up to ``dropped``), in order;
    ArchiveDamaged when they do not cover that range exactly (one missing, or two
    overlapping)."""
    used = [a for a in archives if dropped < a.first_seq <= pruned]
    expected = dropped + 1
    for a in used:
        if a.first_seq != expected or a.last_seq < a.first_seq:
            raise ArchiveDamaged(
                f"archive {a.path} starts at seq {a.first_seq}, where seq {expected} was "
                f"expected: the history of seqs {expected}..{pruned} is not all there"
            )
        expected = a.last_seq + 1
    if expected != pruned + 1:
        raise ArchiveDamaged(
            f"the archives end at seq {expected - 1}, the journal was pruned up to {pruned}"
        )
    return used
