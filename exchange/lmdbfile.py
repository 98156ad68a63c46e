"""Is an LMDB data file whole? Checked before it is mapped.

LMDB maps ``data.mdb`` and trusts it: a file shorter than the pages its meta page
counts (truncated by a crash of the filesystem, a bad copy, an operator) is mapped
past its end, and the first read of a missing page kills the process with SIGBUS,
no message. ``problem`` reads the two meta pages with plain file reads instead and
says what is wrong before anything is mapped.

The meta page (LMDB 0.9, ``MDB_meta`` after the 16-byte page header): magic,
version, the map's address and size, the free and main databases' records (the
free one's first field is the page size, its last the root page of the free list),
the last page used, the txn id. LMDB uses the meta with the larger txn id; both
must be valid for it to open.

A sound file may be shorter than that count: a page a transaction took from the
end of the file and freed again before it committed (a page split, then merged)
is counted but never written, and it is on the free list. So the pages past the
end are looked for there (``_free_past``): a file is truncated when one of them is
not free. The free list is a B-tree (``FREE_DBI``) keyed by txn id, each value a
list of page numbers (a count, then the numbers; 8 bytes each), big values in
overflow pages; each node is ``MDB_node`` (data size or child page, flags, key
size, then the key and the data).
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
# magic, version, mapsize, psize, the free list's root page, last_pg, txnid
_META = struct.Struct("<II8xQ I36xQ 48x QQ")
_META_BYTES = PAGE_HEADER + _META.size
_PAGE = struct.Struct("<8x2xHHH")  # mp_flags, mp_lower, mp_upper
_NODE = struct.Struct("<HHHH")  # mn_lo, mn_hi, mn_flags, mn_ksize
_ID = struct.Struct("<Q")
P_BRANCH = 0x01
P_LEAF = 0x02
F_BIGDATA = 0x01  # the node's data is in overflow pages: its first page's number
P_INVALID = (1 << 64) - 1  # an empty database's root
_ATTEMPTS = 3


def _meta(page: bytes) -> tuple[int, int, int, int] | str:
    """(page size, last page, txn id, free list root) of one meta page, or why it is
    not one."""
    if len(page) < _META_BYTES:
        return "it is cut short"
    if not _FLAGS.unpack_from(page, 10)[0] & P_META:
        return "it is not a meta page"
    magic, version, _mapsize, psize, free_root, last_pg, txnid = _META.unpack_from(
        page, PAGE_HEADER
    )
    if magic != MAGIC:
        return f"its magic is {magic:#x}, not {MAGIC:#x}"
    if version != DATA_VERSION:
        return f"its version is {version}, not {DATA_VERSION}"
    if psize < 512 or psize & (psize - 1):
        return f"its page size {psize} is not a power of two >= 512"
    return psize, last_pg, txnid, free_root


def _free_past(f, psize: int, root: int, size: int, last_pg: int) -> str | None:
    """None if every page from the end of the file (``size`` bytes) to ``last_pg`` is on
    the free list whose root page is ``root``; else what is missing (a page in use, or
    a free list that is not all in the file)."""
    end = size // psize  # the first page past the end
    missing = set(range(end, last_pg + 1))
    todo, seen = ([] if root == P_INVALID else [root]), 0
    while todo and missing:
        pgno = todo.pop()
        seen += 1
        if pgno >= end:
            return f"its free list's page {pgno} is past the end"
        if seen > end:
            return "its free list has more pages than the file (a loop)"
        f.seek(pgno * psize)
        page = f.read(psize)
        flags, lower, _ = _PAGE.unpack_from(page)
        if not flags & (P_BRANCH | P_LEAF) or not PAGE_HEADER <= lower <= psize:
            return f"its free list's page {pgno} is not a B-tree page"
        for at in struct.unpack_from(f"<{(lower - PAGE_HEADER) // 2}H", page, PAGE_HEADER):
            if at + _NODE.size > psize:
                return f"its free list's page {pgno} has a node past its end"
            lo, hi, node_flags, ksize = _NODE.unpack_from(page, at)
            if flags & P_BRANCH:
                todo.append(lo | hi << 16 | node_flags << 32)  # the child's page number
                continue
            data = page[at + _NODE.size + ksize :]
            if node_flags & F_BIGDATA:  # in overflow pages, after their page header
                first = _ID.unpack_from(data)[0]
                if first >= end:
                    return f"its free list's page {first} is past the end"
                f.seek(first * psize + PAGE_HEADER)
                data = f.read(lo | hi << 16)
            count = _ID.unpack_from(data)[0] if len(data) >= _ID.size else -1
            if not 0 <= count <= (len(data) - _ID.size) // _ID.size:
                return f"its free list's page {pgno} has a list of {count} pages"
            missing.difference_update(struct.unpack_from(f"<{count}Q", data, _ID.size))
    return f"page {min(missing)} is not free" if missing else None


def problem(directory) -> str | None:
    """Why the environment in ``directory`` cannot be mapped safely; None if it can
    (or if there is no data file, or an empty one: LMDB makes a new environment).

    A live writer may reuse the pages of a free list while it is read (a reader here
    holds no LMDB read txn): what is found wrong counts only if the newest meta page
    still names the same transaction after the search, else it is looked at again."""
    path = os.path.join(os.fspath(directory), DATA_FILE)
    for _ in range(_ATTEMPTS):
        try:
            with open(path, "rb") as f:
                why, txnid = _examine(f, path)
                if why is None or txnid is None or _newest(f)[2] == txnid:
                    return why
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"{path}: cannot be read: {e.strerror}"
    return why


def _newest(f) -> tuple[int, int, int, int] | str:
    """The meta page with the larger txn id (or why one is not a meta page)."""
    f.seek(0)
    first = _meta(f.read(_META_BYTES))
    f.seek(first[0] if isinstance(first, tuple) else DEFAULT_PAGE)
    second = _meta(f.read(_META_BYTES))
    for i, meta in enumerate((first, second)):
        if isinstance(meta, str):
            return f"meta page {i} is damaged: {meta}"
    return max((first, second), key=lambda m: m[2])


def _examine(f, path: str) -> tuple[str | None, int | None]:
    """(what is wrong or None, the txn id of the meta page it read)."""
    if os.fstat(f.fileno()).st_size == 0:
        return None, None
    meta = _newest(f)
    # the size after the meta pages: a live writer writes a commit's pages before its
    # meta page, so a size taken first may predate the meta read
    size = os.fstat(f.fileno()).st_size
    if isinstance(meta, str):
        return f"{path}: {meta}", None
    psize, last_pg, txnid, free_root = meta
    need = (last_pg + 1) * psize
    if size >= need:
        return None, txnid
    try:
        why = _free_past(f, psize, free_root, size, last_pg)
    except struct.error:
        why = "its free list is cut short"
    if why is None:  # only free pages are past the end
        return None, txnid
    return (
        f"{path}: the file is {size} bytes, but its meta page counts {need} (truncated: {why})",
        txnid,
    )
