"""The kill switch's files: ``<keys_dir>/killed/<client id>``, one per blocked client.

``exch kill`` writes one, ``exch unkill`` removes it, and a client's own ``Kill``
request has the gateway write its own, so a block outlives a restart of the
gateway and only an operator lifts it. The gateway looks at the directory
every second, as it does at the client keys (``KillList.refresh``). A file
holds one line for the operator: when, and by whom. Files are written under a
hidden name and renamed into place, so a reader never sees half of one.
"""

import os
import re
from pathlib import Path

from exchange.durable import write_note
from gateway.keys import KeysError, check_client_id

KILLED = "killed"
_FILE = re.compile(r"[0-9]{1,10}")


class KillError(Exception):
    """A client id or kill file that cannot be used (the message names it)."""


def folder(keys_dir) -> Path:
    return Path(keys_dir) / KILLED


def kill(keys_dir, client: int, by: str) -> Path:
    """Block ``client`` (again, if it is already: the note is replaced)."""
    client = _client(client)
    path = folder(keys_dir) / str(client)
    write_note(path, by)
    return path


def unkill(keys_dir, client: int) -> None:
    """Lift the block of ``client``; KillError if it is not blocked."""
    client = _client(client)
    try:
        os.unlink(folder(keys_dir) / str(client))
    except FileNotFoundError:
        raise KillError(f"client {client} is not blocked by the kill switch") from None


def killed(keys_dir) -> dict[int, str]:
    """client id -> the note of its kill file. A file that is not named by a client id
    is a KillError naming it: a block nobody can read must not sit there unnoticed."""
    where = folder(keys_dir)
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if name.startswith("."):
            continue
        if not _FILE.fullmatch(name) or not 1 <= int(name) < 1 << 32:
            raise KillError(f"{where / name}: kill files are named by a client id (1..2**32-1)")
        try:
            out[int(name)] = (where / name).read_text().strip()
        except FileNotFoundError:  # lifted while we looked
            continue
    return out


def _client(client: int) -> int:
    try:
        return check_client_id(client)
    except KeysError as e:
        raise KillError(str(e)) from None


class KillList:
    """The blocked clients as the gateway knows them, re-read when the directory changes.

    A re-read that fails (a stray file) raises KillError once and keeps the
    previous list, as the key table does, until the directory changes again.
    """

    def __init__(self, keys_dir):
        self.keys_dir = keys_dir
        self._signature: tuple | None = self._sign()
        self.clients: set[int] = set(killed(keys_dir))  # at start-up a bad file is fatal

    def _sign(self) -> tuple:
        out = []
        try:
            for e in os.scandir(folder(self.keys_dir)):
                try:
                    out.append((e.name, e.inode(), e.stat().st_mtime_ns))
                except FileNotFoundError:  # removed while we looked: the next look sees it
                    continue
        except FileNotFoundError:
            return ()
        return tuple(sorted(out))

    def refresh(self) -> tuple[set[int], set[int]]:
        """(newly blocked, lifted) since the last look."""
        signature = self._sign()
        if signature == self._signature:
            return set(), set()
        self._signature = signature
        now = set(killed(self.keys_dir))
        added, lifted = now - self.clients, self.clients - now
        self.clients = now
        return added, lifted

    def block(self, client: int, by: str) -> None:
        """Block a client from the gateway itself (its own Kill request)."""
        kill(self.keys_dir, client, by)
        self.clients.add(client)
        self._signature = None  # the next look re-reads: the file may be gone by then
