"""``exch halt`` / ``exch resume``: the operators' halt requests, through ``exchange.halts``.

The shard that owns an instrument looks at its requests four times a second (while
a gateway reads its events): within a second of ``exch halt ACME`` it sequences and
journals the halt, and ACME takes only orders that rest until ``exch resume ACME``,
which reopens it with a call auction. A request written while the shard is down
takes effect when it is back.
"""

import getpass
import socket

from exchange import halts, topology
from exchange.config import Config
from exchange.halts import HaltError
from tools.errors import ToolError


def _symbol(config: Config, symbol: str) -> str:
    known = topology.symbols(config)
    if symbol not in known:
        raise ToolError(f"no instrument {symbol!r} in the config (instruments: {', '.join(known)})")
    return symbol


def halt(config: Config, symbol: str, reason: str | None) -> dict:
    by = f"exch halt by {getpass.getuser()}@{socket.gethostname()}"
    if reason:
        by += f": {reason}"
    try:
        path = halts.request_halt(topology.halts_dir(config), _symbol(config, symbol), by)
    except (HaltError, OSError) as e:
        raise ToolError(str(e)) from None
    shard = topology.routes(config)[symbol][0]
    return {"symbol": symbol, "halt": True, "shard": shard, "file": str(path), "note": by}


def resume(config: Config, symbol: str) -> dict:
    try:
        halts.request_resume(topology.halts_dir(config), _symbol(config, symbol))
    except (HaltError, OSError) as e:
        raise ToolError(str(e)) from None
    return {"symbol": symbol, "halt": False, "shard": topology.routes(config)[symbol][0]}


def listing(config: Config) -> dict:
    where = topology.halts_dir(config)
    try:
        asked = halts.requested(where)
    except OSError as e:
        raise ToolError(str(e)) from None
    return {
        "dir": where,
        "halted": [{"symbol": s, "note": note} for s, note in sorted(asked.items())],
    }
