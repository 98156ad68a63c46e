"""Who may connect, and who they are: the ZAP handler and the key table behind it.

ZeroMQ asks the ZAP handler (a REP socket at ``ZAP_ENDPOINT`` in the gateway's
context) about every CURVE handshake. The handler accepts a key registered in
the keys directory and sets the connection's User-Id to that key (Z85 text);
every message received on the connection then carries it as the frame
property "User-Id", and the gateway maps it to the client id through the same
``KeyTable``. So a revoked key stops working for new handshakes and, at the
table's next reload, for connections already open.

The handler is polled by the gateway's own loop (no thread): handshakes are
rare, and a single thread keeps the gateway's state owned by one thread. It
answers every request it reads, whatever fails (500 "internal error"): libzmq
waits for the answer, and a REP socket that read a request and did not answer
it cannot read the next, so one unanswered request refused every later
handshake until a restart.

A registered key is still refused while its client holds
``max_connections_per_client`` connections (``gateway.conns``).
"""

import traceback

import zmq
from zmq.utils import z85

from exchange import logs
from gateway.conns import Connections
from gateway.keys import KeysError, client_table, clients_signature

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
CURVE = b"CURVE"


class KeyTable:
    """Z85 public key -> client id, from ``<keys_dir>/clients``, reloaded when it changes.

    A reload that fails (a malformed file appeared, or no descriptor is left to
    read the directory with: EMFILE) keeps the previous table and logs why, so a
    mistake by the operator does not lock everyone out.
    """

    def __init__(self, keys_dir):
        self.keys_dir = keys_dir
        self._signature = clients_signature(keys_dir)
        self._table = client_table(keys_dir)  # at start-up a bad file is fatal
        self._failing = logs.Failing(
            "client keys not reloaded; the previous ones stay", "client keys readable again"
        )

    def refresh(self) -> None:
        try:
            signature = clients_signature(self.keys_dir)
            if signature != self._signature:
                table = client_table(self.keys_dir)
                self._signature = signature
                self._table = table
                logs.info("client keys reloaded", clients=len(table))
        except (KeysError, OSError) as e:
            self._failing.failed(e)
            return
        self._failing.ok()

    def client(self, public_key: bytes) -> int | None:
        return self._table.get(public_key)

    def __len__(self) -> int:
        return len(self._table)


class ZapHandler:
    """Answers ZAP requests for a context; ``handle()`` when its socket is readable."""

    def __init__(self, ctx: zmq.Context, table: KeyTable, conns: Connections):
        self.table = table
        self.conns = conns
        self.socket = ctx.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)
        self.refused = 0
        self._failing = logs.Failing(
            "ZAP requests answered 500: the handler failed", "ZAP handler works again"
        )

    def handle(self) -> None:
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = self.answer(request)
            except Exception as e:
                self._failing.failed(e, traceback=traceback.format_exc())
                request_id = request[1] if len(request) > 1 else b""
                reply = [ZAP_VERSION, request_id, b"500", b"internal error", b"", b""]
            else:
                self._failing.ok()
            self.socket.send_multipart(reply)

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
        client = self.table.client(key)
        if client is None:
            return self._refuse(request_id, address, b"unknown CURVE key")
        why = self.conns.admit(client, address.decode(errors="replace"))
        if why is not None:  # logged by ``admit`` once while the client stays at its cap
            self.refused += 1
            return [ZAP_VERSION, request_id, b"400", why.encode(), b"", b""]
        return [ZAP_VERSION, request_id, b"200", b"OK", key, b""]

    def _refuse(self, request_id: bytes, address: bytes, why: bytes) -> list[bytes]:
        self.refused += 1
        logs.warning(
            "connection refused", address=address.decode(errors="replace"), why=why.decode()
        )
        return [ZAP_VERSION, request_id, b"400", why, b"", b""]

    def close(self) -> None:
        self.socket.close()
