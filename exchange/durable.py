"""Files replaced durably: a crash leaves the old file or the new one, whole."""

import os
import time
from pathlib import Path


def replace_file(path: str, data: bytes, tmp: str | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file (``tmp``, default beside it
    with ``.tmp`` added): written, fsynced, renamed over ``path``, then its directory
    fsynced (so the rename itself is on disk)."""
    tmp = tmp or f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_note(path: Path, note: str) -> None:
    """An operator's request as a file of one line: when (UTC), then ``note``. Written
    under a hidden name and renamed into place (``replace_file``), so a reader that
    skips hidden names never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = f"{when} {note}\n".encode()
    replace_file(str(path), data, tmp=str(path.with_name(f".{path.name}.tmp")))
