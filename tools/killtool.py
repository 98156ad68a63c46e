"""``exch kill`` / ``exch unkill``: the kill switch's files, through ``gateway.killswitch``.

A running gateway looks at the files every second: within a second of ``exch
kill 7`` every order of client 7 is cancelled on every shard and its new orders
are refused ``kill_switch``; ``exch unkill 7`` lets it trade again. A block
written while the gateway is down takes effect when it starts.
"""

import getpass
import socket

from gateway import killswitch
from gateway.killswitch import KillError
from tools.errors import ToolError


def _checked(call, *args):
    try:
        return call(*args)
    except (KillError, OSError) as e:
        raise ToolError(str(e)) from None


def kill(keys_dir, client: int, reason: str | None) -> dict:
    by = f"exch kill by {getpass.getuser()}@{socket.gethostname()}"
    if reason:
        by += f": {reason}"
    path = _checked(killswitch.kill, keys_dir, client, by)
    return {"client": client, "killed": True, "file": str(path), "note": by}


def unkill(keys_dir, client: int) -> dict:
    _checked(killswitch.unkill, keys_dir, client)
    return {"client": client, "killed": False}


def listing(keys_dir) -> dict:
    blocked = _checked(killswitch.killed, keys_dir)
    return {
        "dir": str(killswitch.folder(keys_dir)),
        "killed": [{"client": c, "note": note} for c, note in sorted(blocked.items())],
    }
