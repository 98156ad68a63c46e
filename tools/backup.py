"""``exch journal backup``: a consistent copy of a shard's journal, safe while the shard runs.

LMDB copies the environment inside one read transaction (``mdb_env_copy``,
compacting: free pages are left out), so the copy holds whole batches only,
up to the last one committed when the copy started, and the shard is never
stopped or slowed beyond sharing the disk. The copy is a journal directory
(``data.mdb``); ``exch journal verify --path`` checks it, which the command
does right after copying. Restoring is moving such a directory into place
while the shard is stopped (docs/OPERATIONS.md).
"""

import os
import time
from pathlib import Path

import lmdb

from exchange.journal import JournalDamaged, JournalError, JournalReader
from tools.errors import ToolError

MAX_DBS = 16  # at least the journal's sub-databases; a reader needs no exact count


def backup(src: str, dest: str) -> dict:
    """Copy the journal at ``src`` into the new directory ``dest``; returns what was copied."""
    dest_path = Path(dest)
    if dest_path.exists():
        raise ToolError(f"{dest} exists already; a backup goes to a new directory")
    if not dest_path.parent.is_dir():
        raise ToolError(f"{dest_path.parent} is not a directory")
    try:
        with JournalReader(src) as j:  # refuses what is not a journal
            before = j.last_seq
    except JournalDamaged:
        raise
    except JournalError as e:
        raise ToolError(str(e)) from None
    t0 = time.perf_counter()
    # LMDB allows one handle per environment per process: the Journal above is closed
    env = lmdb.open(src, readonly=True, max_dbs=MAX_DBS, map_size=0)
    try:
        dest_path.mkdir()
        try:
            env.copy(dest, compact=True)
        except BaseException:
            for name in os.listdir(dest):
                os.unlink(dest_path / name)
            dest_path.rmdir()
            raise
    finally:
        env.close()
    with JournalReader(dest) as j:
        last = j.last_seq
    return {
        "source": src,
        "backup": dest,
        "last_seq": last,  # at least ``before``: the shard may have committed meanwhile
        "source_last_seq_before": before,
        "bytes": (dest_path / "data.mdb").stat().st_size,
        "seconds": round(time.perf_counter() - t0, 3),
    }
