"""Connections of the shell tools to the gateway, as a registered client over CURVE.

A tool speaks for the client whose secret certificate it is given (``--key``,
made by ``exch keys create``); the gateway's public key is read from the
config's keys directory unless given (``--server-key``: the key, or the path
of the ``server.key`` an operator handed out).
"""

from pathlib import Path
from typing import NamedTuple

from exchange.config import Config
from gateway.client import AuthError, Client
from gateway.keys import KeysError, check_public_key, load_secret_certificate, server_public_key
from gateway.subscriber import Subscriber
from tools.errors import ToolError

TIMEOUT_SECONDS = 5.0


class Identity(NamedTuple):
    server: bytes
    public: bytes
    secret: bytes


def identity(config: Config, key_path: str | None, server_key: str | None = None) -> Identity:
    if not key_path:
        raise ToolError(
            "no client key: give --key PATH (or set EXCH_KEY), a secret certificate "
            "made by `exch keys create`"
        )
    try:
        public, secret = load_secret_certificate(key_path)
        if server_key is None:
            server = server_public_key(config.gateway.keys_dir)
        elif Path(server_key).exists():
            server = server_public_key(Path(server_key).parent)
        else:
            server = check_public_key(server_key)
    except KeysError as e:
        raise ToolError(str(e)) from None
    return Identity(server, public, secret)


def _first(endpoints: list[str], given: str | None) -> str:
    return given or endpoints[0]


def client(
    config: Config, ident: Identity, endpoint: str | None = None, timeout: float = TIMEOUT_SECONDS
) -> Client:
    """A connected ``Client`` (the gateway accepted the key), else ToolError."""
    where = _first(config.gateway.router, endpoint)
    c = Client(where, *ident, timeout=timeout, retries=1)
    try:
        return c.connect()
    except AuthError as e:
        raise ToolError(f"{where}: {e}; is the key registered (`exch keys list`)?") from None
    except TimeoutError:
        raise ToolError(f"no answer from the gateway at {where}: is the daemon running?") from None


def subscriber(
    config: Config, ident: Identity, symbols, snapshot, depth: int, endpoint: str | None = None
) -> Subscriber:
    where = _first(config.gateway.pub, endpoint)
    try:
        return Subscriber(where, *ident, symbols, snapshot, depth=depth, timeout=TIMEOUT_SECONDS)
    except AuthError as e:
        raise ToolError(f"{where}: {e}") from None
    except TimeoutError:
        raise ToolError(f"no market data at {where}: is the daemon running?") from None
