"""``exch keys``: the gateway's CURVE key pair and the registered clients, through ``gateway.keys``.

A running gateway reloads the clients directory every second: a created or
registered client can connect at once, a revoked one is refused from then on.
The gateway reads its own key pair at start only, so after ``server --rotate``
it must be restarted, and every bot needs the new public key.
"""

import os
import time
from pathlib import Path

from gateway.keys import (
    SERVER,
    KeysError,
    create_client,
    create_server_keys,
    list_clients,
    register_client,
    revoke_client,
    server_public_key,
)
from tools.errors import ToolError

RETIRED = "retired"  # where a rotated-out server key pair is kept


def _keys(call, *args):
    try:
        return call(*args)
    except KeysError as e:
        raise ToolError(str(e)) from None


def _server_key(keys_dir: Path) -> str | None:
    if not (keys_dir / f"{SERVER}.key").exists():
        return None
    return _keys(server_public_key, keys_dir).decode()


def listing(keys_dir) -> dict:
    keys_dir = Path(keys_dir)
    clients = _keys(list_clients, keys_dir)
    return {
        "keys_dir": str(keys_dir),
        "server": _server_key(keys_dir),
        "clients": [{"client": c, "public_key": k.decode()} for c, k in sorted(clients.items())],
    }


def create(keys_dir, client_id: int, out) -> dict:
    """A new key pair for ``client_id``: registered, its secret certificate written to ``out``."""
    out = Path(out)
    if out.exists():
        raise ToolError(f"{out} exists already; a secret certificate is never overwritten")
    if not out.parent.is_dir():
        raise ToolError(f"{out.parent} is not a directory")
    public = _keys(create_client, Path(keys_dir), client_id, out)
    return {"client": client_id, "public_key": public.decode(), "secret_certificate": str(out)}


def register(keys_dir, client_id: int, public_key: str) -> dict:
    path = _keys(register_client, Path(keys_dir), client_id, public_key)
    return {"client": client_id, "public_key": public_key, "file": str(path)}


def revoke(keys_dir, client_id: int) -> dict:
    _keys(revoke_client, Path(keys_dir), client_id)
    return {"client": client_id, "revoked": True}


def server(keys_dir, create_pair: bool = False, rotate: bool = False) -> dict:
    """The gateway's public key; ``create_pair`` makes the pair if missing, ``rotate``
    replaces it (the old pair goes to ``retired/``)."""
    keys_dir = Path(keys_dir)
    have = (keys_dir / f"{SERVER}.key_secret").exists()
    retired = None
    if rotate:
        if not have:
            raise ToolError(f"{keys_dir} has no server key pair to rotate; use --create")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        retired = keys_dir / RETIRED / stamp
        retired.mkdir(parents=True)
        for name in (f"{SERVER}.key_secret", f"{SERVER}.key"):
            if (keys_dir / name).exists():
                os.replace(keys_dir / name, retired / name)
        _keys(create_server_keys, keys_dir)
    elif create_pair and not have:
        _keys(create_server_keys, keys_dir)
    public = _server_key(keys_dir)
    if public is None:
        raise ToolError(f"{keys_dir} has no server key pair; create it with --create")
    doc = {"keys_dir": str(keys_dir), "server": public}
    if retired is not None:
        doc["retired"] = str(retired)
    return doc
