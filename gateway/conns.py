"""Who holds which of the gateway's connections, for the per-client connection cap.

Every connection takes one of the gateway's file descriptors; one client with
about a thousand of them once left the gateway unable to open a file. So the
ZAP handler admits a client's handshake only while the client holds fewer than
``[gateway] max_connections_per_client`` connections (``admit``).

libzmq tells no socket's owner when one of its peers leaves, except through a
socket monitor (ROUTER_NOTIFY is a draft API, absent from pyzmq's libzmq): its
events say that a descriptor was accepted and, later, that it was closed, and
nothing about the key behind it. A ZAP request names the key and the peer's
address, not the descriptor. So an admitted handshake is put on the oldest
descriptor from the same address that no client holds yet (handshakes finish
in about the order they were accepted; ``Connections.poll`` has read the
monitors first, and libzmq reports the accept before it asks ZAP), and the
descriptor's close gives the client's place back. When two clients on one
host shake hands at the same moment, their descriptors may be swapped: each
still counts one connection, only the one that closes first gives back the
other's place. A handshake that finds no such descriptor (its peer left
already) is admitted and counted nowhere.

The monitors' queues have no limit (a full one would block libzmq's I/O
thread); ``poll`` empties them at every handshake and every housekeeping tick.
"""

import socket
import struct

import zmq

from exchange import logs

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_EVENT = struct.Struct("<HI")  # a monitor event's first frame: the event, its value (the fd)


class Conn:
    __slots__ = ("address", "client")

    def __init__(self, address: str | None):
        self.address = address
        self.client: int | None = None


def _peer(fd: int) -> str | None:
    """What a ZAP request will give as the address of the peer on ``fd``: its IP for
    tcp, ``:uid:gid:pid`` (the end of libzmq's ``localhost:uid:gid:pid``) for ipc."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:  # closed since (its DISCONNECTED is still queued) or not a socket
        return None
    try:
        if s.family == socket.AF_UNIX:
            pid, uid, gid = struct.unpack(
                "3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )
            return f":{uid}:{gid}:{pid}"
        return s.getpeername()[0]
    except OSError:
        return None
    finally:
        s.detach()  # the descriptor is libzmq's


def _same_peer(zap_address: str, conn_address: str | None) -> bool:
    if conn_address is None:
        return False
    if conn_address.startswith(":"):  # ipc
        return zap_address.endswith(conn_address)
    return zap_address == conn_address


class Connections:
    """The descriptors of the watched sockets, which client holds each, and the cap."""

    def __init__(self, ctx: zmq.Context, cap: int):
        self.ctx = ctx
        self.cap = cap
        self._monitors: list[zmq.Socket] = []
        self._conns: dict[tuple[int, int], Conn] = {}  # (watched socket, fd) -> its Conn
        self._free: dict[tuple[int, int], Conn] = {}  # ... of those no client holds, oldest first
        self.held: dict[int, int] = {}  # client -> connections it holds
        self._refused: dict[int, int] = {}  # client -> handshakes refused since it was at the cap

    def watch(self, s: zmq.Socket) -> None:
        """Follow the connections of ``s``; before it binds, so none is missed."""
        endpoint = f"inproc://gateway.monitor.{len(self._monitors)}.{id(self)}"
        s.monitor(endpoint, _EVENTS)
        monitor = self.ctx.socket(zmq.PAIR)
        monitor.rcvhwm = 0  # no limit: see the module's doc
        monitor.linger = 0
        monitor.connect(endpoint)
        self._monitors.append(monitor)

    def poll(self) -> None:
        """Take in every monitor event queued."""
        for i, monitor in enumerate(self._monitors):
            while True:
                try:
                    head = monitor.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                monitor.recv()  # the endpoint, the same for every event of a listener
                event, fd = _EVENT.unpack_from(head)
                if event == zmq.EVENT_ACCEPTED:
                    self._conns[i, fd] = self._free[i, fd] = Conn(_peer(fd))
                    continue
                conn = self._conns.pop((i, fd), None)
                self._free.pop((i, fd), None)
                if conn is not None and conn.client is not None:
                    self._release(conn.client)

    def _release(self, client: int) -> None:
        left = self.held[client] - 1
        if left:
            self.held[client] = left
        else:
            del self.held[client]

    def admit(self, client: int, address: str) -> str | None:
        """Whether ``client`` may have one more connection, from ``address``: None and the
        connection counted, or why not."""
        self.poll()
        held = self.held.get(client, 0)
        if held >= self.cap:
            refused = self._refused.get(client, 0)
            if not refused:  # once while the client stays at its cap, not per handshake
                logs.warning(
                    "connections refused: the client is at its cap",
                    client=client,
                    connections=held,
                    max_connections_per_client=self.cap,
                )
            self._refused[client] = refused + 1
            return f"client {client} has {held} connections open, the most it may have"
        refused = self._refused.pop(client, 0)
        if refused:
            logs.info("connections admitted again", client=client, refused=refused)
        for key, conn in self._free.items():
            if _same_peer(address, conn.address):
                del self._free[key]
                conn.client = client
                self.held[client] = held + 1
                break
        return None

    def close(self) -> None:
        for monitor in self._monitors:
            monitor.close()
