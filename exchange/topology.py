"""Where everything is, derived from the config: a shard's rings and counter block,
its journal, the gateway's state, the numbering of the instruments and the shard
each one is on. Every process and tool asks here, so two of them never disagree.

Instruments are numbered exchange-wide in config order: shard by shard, each
shard's ``instruments`` in order (``symbols``); that number is what the gateway's
state stores. Inside a shard an instrument's index (``instrument`` in COMMAND and
EVENT records) is its position in its shard's list (``routes``); the shard's
first instrument's number is its offset (``offsets``).

Files: a shard's journal is ``<journal.dir>/<shard>``; beside ``journal.dir`` (in
its parent) are ``journal-ids`` (``exchange.journalid``), ``run/<namespace>.json``
(the supervisor's status), ``halts`` (the operators' halt requests,
``exchange.halts``) and, unless ``[gateway] state_dir`` says otherwise,
``gateway`` (the gateway's store). Relative paths are relative to the process's
working directory.
"""

import os

from exchange.config import Config


def request_ring(shard: str) -> str:
    """The ring the gateway writes a shard's requests to."""
    return f"{shard}-req"


def event_ring(shard: str) -> str:
    """The ring a shard publishes its events on."""
    return f"{shard}-evt"


def counters_name(shard: str) -> str:
    """A shard's counter block."""
    return f"shard-{shard}"


def symbols(config: Config) -> list[str]:
    """Every instrument, in exchange-wide number order."""
    return [sym for shard in config.shards for sym in shard.instruments]


def offsets(config: Config) -> list[int]:
    """The number of each shard's first instrument, in shard order."""
    out, n = [], 0
    for shard in config.shards:
        out.append(n)
        n += len(shard.instruments)
    return out


def routes(config: Config) -> dict[str, tuple[str, int]]:
    """symbol -> (shard name, instrument index inside that shard)."""
    return {sym: (s.name, i) for s in config.shards for i, sym in enumerate(s.instruments)}


def journal_path(config: Config, shard: str) -> str:
    """The directory of a shard's journal."""
    return os.path.join(config.journal.dir, shard)


def _beside_journals(config: Config, name: str) -> str:
    return os.path.join(os.path.dirname(os.path.normpath(config.journal.dir)), name)


def journal_ids_dir(config: Config) -> str:
    """Where each shard's journal identity is recorded (``exchange.journalid``): beside
    the journal directory, not in it, so that losing that directory (an unmounted
    disk, an ``rm -r``) is noticed."""
    return _beside_journals(config, "journal-ids")


def supervisor_status_path(config: Config) -> str:
    """The supervisor's status document (its pid and its children's), beside the
    journals: one per namespace."""
    return os.path.join(_beside_journals(config, "run"), f"{config.shm.namespace}.json")


def gateway_state_dir(config: Config) -> str:
    """Where the gateway keeps its own state: ``[gateway] state_dir``, or beside the
    journals (so a test's or a demo's journal directory brings its own)."""
    return config.gateway.state_dir or _beside_journals(config, "gateway")


def halts_dir(config: Config) -> str:
    """The operators' halt requests (``exchange.halts``), beside the journals: the
    shards read them, ``exch halt`` and ``exch resume`` write them."""
    return _beside_journals(config, "halts")
