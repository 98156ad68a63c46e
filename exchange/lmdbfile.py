"""Is an LMDB data file whole? Checked before it is mapped.

LMDB maps ``data.mdb`` and trusts it: a file shorter than the pages its meta page
counts (truncated by a crash of the filesystem, a bad copy, an operator) is mapped
past its end, and the first read of a missing page kills the process with SIGBUS,
no message. ``problem`` reads the two meta pages with plain file reads instead and
says what is wrong before anything is mapped.

The meta page (LMDB 0.9, ``MDB_meta`` after the 16-byte page header): magic,
version, the map's address and size, the free and main databases' records (the
free one's first field is the page size), the last page used, the txn id. LMDB
uses the meta with the larger txn id; both must be valid for it to open.
"""

import os
import struct

DATA_FILE = "data.mdb"
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_META = 0x08
PAGE_HEADER = 16
DEFAULT_PAGE = 4096  # where the second meta page is when the first cannot say
_FLAGS = struct.Struct("<H")  # mp_flags, after the 8-byte page number and 2 bytes of pad
_META = struct.Struct("<II8xQ I44x 48x QQ")  # magic, version, mapsize, psize, last_pg, txnid
_META_BYTES = PAGE_HEADER + _META.size


def _meta(page: bytes) -> tuple[int, int, int] | str:
    """(page size, last page, txn id) of one meta page, or why it is not one."""
    if len(page) < _META_BYTES:
        return "it is cut short"
    if not _FLAGS.unpack_from(page, 10)[0] & P_META:
        return "it is not a meta page"
    magic, version, _mapsize, psize, last_pg, txnid = _META.unpack_from(page, PAGE_HEADER)
    if magic != MAGIC:
        return f"its magic is {magic:#x}, not {MAGIC:#x}"
    if version != DATA_VERSION:
        return f"its version is {version}, not {DATA_VERSION}"
    if psize < 512 or psize & (psize - 1):
        return f"its page size {psize} is not a power of two >= 512"
    return psize, last_pg, txnid


def problem(directory) -> str | None:
    """Why the environment in ``directory`` cannot be mapped safely; None if it can
    (or if there is no data file, or an empty one: LMDB makes a new environment)."""
    path = os.path.join(os.fspath(directory), DATA_FILE)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            first = _meta(f.read(_META_BYTES))
            f.seek(first[0] if isinstance(first, tuple) else DEFAULT_PAGE)
            second = _meta(f.read(_META_BYTES))
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path}: cannot be read: {e.strerror}"
    for i, meta in enumerate((first, second)):
        if isinstance(meta, str):
            return f"{path}: meta page {i} is damaged: {meta}"
    psize, last_pg, _ = max((first, second), key=lambda m: m[2])
    need = (last_pg + 1) * psize
    if size < need:
        return f"{path}: the file is {size} bytes, but its meta page counts {need} (truncated)"
    return None
