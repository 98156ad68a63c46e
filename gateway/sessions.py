"""Client sessions: each client's connections, when it last spoke, cancel on disconnect.

A client is its CURVE key; it may hold several connections (ROUTER routing
ids), which all receive its notices. A connection is forgotten when a send to
it finds it gone. A client that armed cancel on disconnect (``Heartbeat.cod``)
and then says nothing for the configured time is reported once by ``silent``
and disarmed; its next Heartbeat with ``cod`` arms it again. A connection whose
last Heartbeat had ``bundle`` takes several messages in one frame.
"""


class Sessions:
    def __init__(self):
        self._conns: dict[int, dict[bytes, None]] = {}  # client -> its connections, in order
        self._owner: dict[bytes, int] = {}
        self._last: dict[int, float] = {}
        self._armed: set[int] = set()
        self._bundled: set[bytes] = set()  # connections

    def seen(self, client: int, conn: bytes, now: float) -> None:
        self._last[client] = now
        if self._owner.get(conn) != client:
            self._drop(conn)
            self._owner[conn] = client
            self._conns.setdefault(client, {})[conn] = None

    def connections(self, client: int) -> list[bytes]:
        conns = self._conns.get(client)
        return list(conns) if conns else []

    def gone(self, conn: bytes) -> None:
        """A send found the connection closed."""
        self._drop(conn)

    def _drop(self, conn: bytes) -> None:
        self._bundled.discard(conn)
        client = self._owner.pop(conn, None)
        if client is not None:
            del self._conns[client][conn]

    def bundle(self, conn: bytes, on: bool) -> None:
        if on:
            self._bundled.add(conn)
        else:
            self._bundled.discard(conn)

    def bundled(self, conn: bytes) -> bool:
        return conn in self._bundled

    def arm(self, client: int, on: bool) -> None:
        if on:
            self._armed.add(client)
        else:
            self._armed.discard(client)

    def silent(self, now: float, after: float) -> list[int]:
        """Armed clients that said nothing for ``after`` seconds; they are disarmed."""
        out = [c for c in self._armed if now - self._last.get(c, now) >= after]
        self._armed.difference_update(out)
        return out
