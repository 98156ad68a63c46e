"""CURVE key files: the gateway's key pair and the registered clients' public keys.

    <keys_dir>/server.key          the gateway's public certificate (give it to bots)
    <keys_dir>/server.key_secret   the gateway's secret certificate (mode 0600)
    <keys_dir>/clients/<id>.key    a client's public certificate; the file name is
                                   the client id (1 .. 2**32-1)

Certificates are ZeroMQ's ZPL text files (what czmq and ``zmq.auth`` read), so
a bot in another language can load its secret certificate with its own
library. Every file is written to a temporary name and renamed into place, so
a gateway reloading the directory never reads half a file. The operator tool
(``exch keys``) calls these functions; the gateway reads ``client_table``.
"""

import os
import re
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

MAX_CLIENT_ID = (1 << 32) - 1
SERVER = "server"
CLIENTS = "clients"
_CLIENT_FILE = re.compile(r"([0-9]{1,10})\.key")


class KeysError(Exception):
    """A key file or key is missing, malformed, or would clash with another."""


def new_key_pair() -> tuple[bytes, bytes]:
    """A fresh CURVE key pair (public, secret), each 40 Z85 characters."""
    return zmq.curve_keypair()


def check_public_key(key) -> bytes:
    """``key`` as Z85 bytes if it is a CURVE public key (40 Z85 characters), else KeysError."""
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != 40:
        raise KeysError(f"a CURVE key is 40 Z85 characters, got {key!r:.60}")
    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError):
        raise KeysError(f"{key!r} is not Z85 text") from None
    return key


def check_client_id(client_id) -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, int):
        raise KeysError(f"a client id is an int, got {type(client_id).__name__}")
    if not 1 <= client_id <= MAX_CLIENT_ID:
        raise KeysError(f"a client id is in 1..{MAX_CLIENT_ID}, got {client_id}")
    return client_id


def _write_certificate(path: Path, public: bytes, secret: bytes | None, about: str) -> None:
    lines = [f"#   ZeroMQ CURVE {'secret' if secret else 'public'} certificate: {about}"]
    if secret:
        lines.append("#   DO NOT give this file to anyone else.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _read_certificate(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeysError(f"cannot read the certificate {path}: {e}") from None
    if need_secret and secret is None:
        raise KeysError(f"{path} holds no secret key")
    try:
        check_public_key(public)
        if need_secret:
            check_public_key(secret)
    except KeysError as e:
        raise KeysError(f"{path}: {e}") from None
    return public, secret


def create_server_keys(keys_dir) -> bytes:
    """Make the gateway's key pair in ``keys_dir``; returns the public key.

    Refuses to replace an existing pair: every bot holds the public key.
    """
    keys_dir = Path(keys_dir)
    if (keys_dir / f"{SERVER}.key_secret").exists():
        raise KeysError(f"{keys_dir} has a server key pair already")
    (keys_dir / CLIENTS).mkdir(parents=True, exist_ok=True)
    public, secret = new_key_pair()
    _write_certificate(keys_dir / f"{SERVER}.key_secret", public, secret, "the gateway")
    _write_certificate(keys_dir / f"{SERVER}.key", public, None, "the gateway")
    return public


def load_server_keys(keys_dir) -> tuple[bytes, bytes]:
    """The gateway's (public, secret) key pair."""
    return _read_certificate(Path(keys_dir) / f"{SERVER}.key_secret", need_secret=True)


def server_public_key(keys_dir) -> bytes:
    return _read_certificate(Path(keys_dir) / f"{SERVER}.key", need_secret=False)[0]


def write_secret_certificate(path, public: bytes, secret: bytes) -> None:
    """A bot's own certificate (mode 0600), for ``load_secret_certificate``."""
    _write_certificate(Path(path), check_public_key(public), check_public_key(secret), "a bot")


def load_secret_certificate(path) -> tuple[bytes, bytes]:
    """A bot's (public, secret) key pair from its certificate file."""
    return _read_certificate(Path(path), need_secret=True)


def register_client(keys_dir, client_id: int, public_key) -> Path:
    """Register a bot's public key under ``client_id``; the bot keeps its secret key.

    Refuses an id that is taken and a key registered under another id (one key,
    one client).
    """
    client_id = check_client_id(client_id)
    public_key = check_public_key(public_key)
    table = list_clients(keys_dir)
    if client_id in table:
        raise KeysError(f"client {client_id} is registered already; revoke it first")
    for other, key in table.items():
        if key == public_key:
            raise KeysError(f"this key is registered already, as client {other}")
    path = Path(keys_dir) / CLIENTS / f"{client_id}.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_certificate(path, public_key, None, f"client {client_id}")
    return path


def create_client(keys_dir, client_id: int, secret_path) -> bytes:
    """A new key pair for ``client_id``: registered here, secret certificate at ``secret_path``."""
    public, secret = new_key_pair()
    register_client(keys_dir, client_id, public)
    write_secret_certificate(secret_path, public, secret)
    return public


def revoke_client(keys_dir, client_id: int) -> None:
    """Remove a client's key: new connections are refused, and a running gateway
    stops accepting its requests at its next reload of the directory."""
    client_id = check_client_id(client_id)
    try:
        os.unlink(Path(keys_dir) / CLIENTS / f"{client_id}.key")
    except FileNotFoundError:
        raise KeysError(f"client {client_id} is not registered in {keys_dir}") from None


def list_clients(keys_dir) -> dict[int, bytes]:
    """client id -> public key of every registered client.

    A file in the clients directory that is not ``<id>.key`` with a valid
    public key raises KeysError naming it: a key nobody can use must not sit
    there unnoticed. Hidden files (in-progress writes) are skipped.
    """
    folder = Path(keys_dir) / CLIENTS
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return {}
    table = {}
    for name in names:
        if name.startswith("."):
            continue
        m = _CLIENT_FILE.fullmatch(name)
        if m is None:
            raise KeysError(f"{folder / name}: client key files are named <client id>.key")
        client_id = int(m.group(1))
        if not 1 <= client_id <= MAX_CLIENT_ID:
            raise KeysError(f"{folder / name}: client id outside 1..{MAX_CLIENT_ID}")
        table[client_id] = _read_certificate(folder / name, need_secret=False)[0]
    return table


def client_table(keys_dir) -> dict[bytes, int]:
    """public key (Z85 bytes) -> client id; KeysError if two clients share a key."""
    table = {}
    for client_id, key in list_clients(keys_dir).items():
        if key in table:
            raise KeysError(f"clients {table[key]} and {client_id} have the same public key")
        table[key] = client_id
    return table


def clients_signature(keys_dir) -> tuple:
    """Changes whenever a client file is added, removed or replaced (cheap: no file is read)."""
    folder = Path(keys_dir) / CLIENTS
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return ()
    return tuple(sorted((e.name, e.inode(), e.stat().st_mtime_ns) for e in entries))
