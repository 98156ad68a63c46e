"""Who may connect, and who they are: the ZAP handler and the key table behind it.

ZeroMQ asks the ZAP handler (a REP socket at ``ZAP_ENDPOINT`` in the gateway's
context) about every CURVE handshake. The handler accepts a key registered in
the keys directory and sets the connection's User-Id to that key (Z85 text);
every message received on the connection then carries it as the frame
property "User-Id", and the gateway maps it to the client id through the same
``KeyTable``. So a revoked key stops working for new handshakes and, at the
table's next reload, for connections already open.

The handler is polled by the gateway's own loop (no thread): handshakes are
rare, and a single thread keeps the gateway's state owned by one thread.
"""

import zmq
from zmq.utils import z85

from exchange import logs
from gateway.keys import KeysError, client_table, clients_signature

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
CURVE = b"CURVE"


class KeyTable:
    """Z85 public key -> client id, from ``<keys_dir>/clients``, reloaded when it changes.

    A reload that fails (a malformed file appeared) keeps the previous table
    and logs why, so a mistake by the operator does not lock everyone out.
    """

    def __init__(self, keys_dir):
        self.keys_dir = keys_dir
        self._signature = clients_signature(keys_dir)
        self._table = client_table(keys_dir)  # at start-up a bad file is fatal

    def refresh(self) -> None:
        signature = clients_signature(self.keys_dir)
        if signature == self._signature:
            return
        try:
            table = client_table(self.keys_dir)
        except KeysError as e:
            logs.error("client keys not reloaded; the previous ones stay", error=str(e))
            return
        self._signature = signature
        self._table = table
        logs.info("client keys reloaded", clients=len(table))

    def client(self, public_key: bytes) -> int | None:
        return self._table.get(public_key)

    def __len__(self) -> int:
        return len(self._table)


class ZapHandler:
    """Answers ZAP requests for a context; ``handle()`` when its socket is readable."""

    def __init__(self, ctx: zmq.Context, table: KeyTable):
        self.table = table
        self.socket = ctx.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)
        self.refused = 0

    def handle(self) -> None:
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.socket.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The reply frames: 200 with the key as User-Id, or 400 with the reason."""
        if len(request) < 6:
            return [ZAP_VERSION, b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        if version != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"500", b"unsupported ZAP version", b"", b""]
        if mechanism != CURVE or len(request) != 7 or len(request[6]) != 32:
            return self._refuse(request_id, address, b"only CURVE connections are accepted")
        key = z85.encode(request[6])
        self.table.refresh()
        if self.table.client(key) is None:
            return self._refuse(request_id, address, b"unknown CURVE key")
        return [ZAP_VERSION, request_id, b"200", b"OK", key, b""]

    def _refuse(self, request_id: bytes, address: bytes, why: bytes) -> list[bytes]:
        self.refused += 1
        logs.warning(
            "connection refused", address=address.decode(errors="replace"), why=why.decode()
        )
        return [ZAP_VERSION, request_id, b"400", why, b"", b""]

    def close(self) -> None:
        self.socket.close()
