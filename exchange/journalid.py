"""Which journal is a shard's: the identity recorded beside the journals.

A journal draws a random identity when it is made (``Journal.identity``). The
first time a shard runs on a journal it records that identity in
``<topology.journal_ids_dir(Config)>/<shard>``; from then on, a shard whose journal is
gone (no data file, or an empty one) or is another journal refuses to start
(``JournalDamaged``; the shard exits ``EXIT_UNTRUSTED``). A shard started from zero
would hand out again the order ids clients hold and forget the idempotency keys of
acknowledged orders, so a journal is made only when the installation has no
record for the shard (its first start) or when the operator says so
(``new_journal``, ``exch journal new``).

A journal found without a record (restored onto a new machine, say) is adopted:
its identity is recorded.
"""

import os

from exchange import durable, logs, topology
from exchange.journal import Journal, JournalDamaged, JournalError
from exchange.lmdbfile import DATA_FILE


def record_path(config, shard: str) -> str:
    return os.path.join(topology.journal_ids_dir(config), shard)


def has_data(path: str) -> bool:
    """Does the journal directory hold an LMDB data file with anything in it?"""
    try:
        return os.path.getsize(os.path.join(path, DATA_FILE)) > 0
    except FileNotFoundError:
        return False


def recorded(config, shard: str) -> str | None:
    try:
        with open(record_path(config, shard)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _record(config, shard: str, identity: str) -> None:
    """Durably: a crash leaves the old record or the new one, and a journal found
    without its record is adopted at the next start."""
    directory = topology.journal_ids_dir(config)
    os.makedirs(directory, exist_ok=True)
    durable.replace_file(record_path(config, shard), f"{identity}\n".encode())


def open_journal(config, shard: str) -> Journal:
    """The shard's journal for writing: made at the installation's first start, refused
    (``JournalDamaged``) when it is gone or is not the recorded one."""
    path = topology.journal_path(config, shard)
    expected = recorded(config, shard)
    if expected is not None and not has_data(path):
        raise JournalDamaged(
            f"journal {path} is gone (no {DATA_FILE}, or an empty one), but this "
            f"installation ran shard {shard} on journal {expected} "
            f"({record_path(config, shard)}): restore it from a backup, or start the "
            f"shard on a new journal with `exch journal new --shard {shard}`"
        )
    journal = Journal(path, durability=config.journal.durability)
    try:
        if expected is None:
            _record(config, shard, journal.identity)
            logs.info("journal identity recorded", journal=path, identity=journal.identity)
        elif journal.identity != expected:
            raise JournalDamaged(
                f"journal {path} is journal {journal.identity}, but this installation "
                f"ran shard {shard} on journal {expected} ({record_path(config, shard)}): "
                "put the shard's own journal back"
            )
    except BaseException:
        journal.close()
        raise
    return journal


def new_journal(config, shard: str) -> str:
    """Make a new, empty journal for ``shard`` and record it; its identity. Refused
    while a journal with data is in its place: move that aside first."""
    path = topology.journal_path(config, shard)
    if has_data(path):
        raise JournalError(
            f"journal {path} exists; move it aside first if the shard is to start anew"
        )
    with Journal(path, durability=config.journal.durability) as journal:
        _record(config, shard, journal.identity)
        return journal.identity
