"""The operators' halt requests: ``<halts dir>/<SYMBOL>``, one file per halted instrument.

``exch halt SYM`` writes one, ``exch resume SYM`` removes it. They are requests, not
the state: the shard that owns the instrument is the one owner of its trading state
(HALTS in ``exchange.records``). It looks at the files of its instruments every
``CHECK_SECONDS`` while a gateway reads its events, and sequences and journals a
CMD_HALT for each of its books that has a file and is not halted, a CMD_RESUME (the
reopening auction) for each that is halted and has none. So a request written while
the shard is down takes effect when it is back, asking twice is asking once, and
what the books did is in the journal, never in these files. A file holds one line
for the operator: when, by whom, why (``exchange.durable.write_note``).
"""

import os
from pathlib import Path

from exchange.durable import write_note

CHECK_SECONDS = 0.25  # how often a shard looks at its instruments' requests


class HaltError(Exception):
    """A halt request that cannot be made or read (the message names it)."""


def _path(halts_dir, symbol: str) -> Path:
    if not symbol or "/" in symbol or symbol.startswith("."):
        raise HaltError(f"{symbol!r} cannot name an instrument's halt request")
    return Path(halts_dir) / symbol


def request_halt(halts_dir, symbol: str, note: str) -> Path:
    """Ask for ``symbol`` to be halted (again, if it is asked already: the note is
    replaced)."""
    path = _path(halts_dir, symbol)
    write_note(path, note)
    return path


def request_resume(halts_dir, symbol: str) -> None:
    """Take back the halt request of ``symbol``; HaltError if there is none."""
    try:
        os.unlink(_path(halts_dir, symbol))
    except FileNotFoundError:
        raise HaltError(f"{symbol} has no halt request to take back") from None


def requested(halts_dir) -> dict[str, str]:
    """symbol -> the note of its halt request (hidden files, half written, are not
    requests)."""
    try:
        names = sorted(n for n in os.listdir(halts_dir) if not n.startswith("."))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        try:
            out[name] = (Path(halts_dir) / name).read_text().strip()
        except FileNotFoundError:  # taken back while we looked
            continue
    return out
