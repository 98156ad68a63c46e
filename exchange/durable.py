"""Files replaced durably: a crash leaves the old file or the new one, whole."""

import os


def replace_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file: written, fsynced, renamed
    over ``path``, then its directory fsynced (so the rename itself is on disk)."""
    tmp = f"{path}.tmp"
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
