"""The Python client for bots: ``Client`` (blocking) and ``AsyncClient`` (asyncio, uvloop).

    public, secret = load_secret_certificate("bot.key_secret")
    server = server_public_key("var/keys")            # or the key the operator handed out
    with Client("tcp://127.0.0.1:61301", server, public, secret) as c:
        ack = c.new_order("ACME", "buy", 10, px=10_000)   # Ack or Reject
        for note in c.notices():                          # Fill, Cancelled, Triggered
            ...

Both flavours speak docs/PROTOCOL.md over one DEALER socket with CURVE keys,
and return the protocol's typed messages (``Ack``, ``Reject``, ``Fill``...).

- ``connect`` waits for the CURVE handshake and raises ``AuthError`` when the
  gateway refuses the key, instead of leaving requests unanswered forever.
- Every order gets an idempotency key (random, 64 bits) unless one is given,
  and a retry resends the same frame: a retried order is never placed twice.
- A request unanswered within ``timeout`` is retried on a new connection
  (reconnect); one answered ``busy`` or ``unavailable`` is retried after a
  back-off; ``retries`` bounds both. The last answer (or ``TimeoutError``) is
  returned (raised) when they run out. One answered ``halted`` is not retried:
  the instrument reopens when an operator says so (its ``TradingState`` on the
  market data, ``gateway.subscriber``).
- Messages that are not the awaited reply (fills, unrequested cancels, and
  replies to requests sent with ``send``) are kept, in order, for ``notices``
  and ``recv``.
- ``heartbeat`` asks for bundles (several messages in one frame) unless told
  not to; frames are read message by message whichever the gateway sends.

``send``/``recv`` are the pipelined low-level pair: many requests in flight,
replies read as they come (what a fast bot or a benchmark does).
"""

import asyncio
import collections
import contextlib
import random
import time

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message, recv_monitor_message

from gateway.codec import decode_replies, encode
from gateway.protocol import (
    BUSY,
    MAX_RETRANSMIT_SEQS,
    PROTOCOL_VERSION,
    UNAVAILABLE,
    BookRequest,
    Cancel,
    Heartbeat,
    InstrumentsRequest,
    Kill,
    MassCancel,
    NewOrder,
    NewOrders,
    Order,
    PositionsRequest,
    Reject,
    Replace,
    Status,
    Trades,
    TradesEnd,
    TradesRequest,
)

RETRYABLE = (BUSY, UNAVAILABLE)
BACKOFF_SECONDS = 0.05  # after a busy/unavailable answer; doubles with each retry
_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class AuthError(Exception):
    """The gateway refused the connection at the CURVE handshake (unknown key, wrong server key)."""


def new_idempotency_key() -> int:
    return random.getrandbits(64) or 1


def keyed(order: Order) -> Order:
    """``order`` with an idempotency key (a new one if it has none)."""
    return order if order.ik else msgspec.structs.replace(order, ik=new_idempotency_key())


def order(sym: str, side: str, qty: int, px: int | None = None, **fields) -> Order:
    """One order of a ``new_orders`` batch (fields as in NewOrder: tif, type, display,
    post_only...)."""
    if "type" in fields:
        fields["ord_type"] = fields.pop("type")
    return Order(sym=sym, side=side, qty=qty, px=px, **fields)


def _new_order(cid: int, sym, side, qty, px, fields) -> NewOrder:
    if "type" in fields:
        fields["ord_type"] = fields.pop("type")
    fields.setdefault("ik", 0)
    fields["ik"] = fields["ik"] or new_idempotency_key()
    return NewOrder(cid=cid, sym=sym, side=side, qty=qty, px=px, **fields)


def _batch(cid: int, orders) -> NewOrders:
    return NewOrders(cid=cid, orders=[keyed(o) for o in orders])


def _handshake_error(event: int, value: int) -> AuthError:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return AuthError(
            f"the gateway refused this connection (ZAP status {value}): this client's CURVE "
            "key is not registered, or the client holds the most connections it may "
            "(max_connections_per_client); the gateway's log says which"
        )
    return AuthError(
        "the CURVE handshake failed: check the gateway's public key and this client's key pair"
    )


def _curve_socket(ctx, kind: int, server_key: bytes, public: bytes, secret: bytes):
    s = ctx.socket(kind)
    s.curve_serverkey = server_key
    s.curve_publickey = public
    s.curve_secretkey = secret
    s.linger = 0
    return s


def connect_curve(ctx, kind: int, endpoint: str, keys: tuple, timeout: float, setup=None):
    """A socket of ``kind`` connected to ``endpoint`` once the CURVE handshake succeeded.

    ``keys`` is (server public key, own public key, own secret key); ``setup``
    may set options before connecting. Raises AuthError or TimeoutError.
    """
    s = _curve_socket(ctx, kind, *keys)
    if setup is not None:
        setup(s)
    monitor = s.get_monitor_socket(_HANDSHAKE_EVENTS)
    try:
        s.connect(endpoint)
        try:
            event = recv_monitor_message(monitor) if monitor.poll(timeout * 1000) else None
        finally:
            s.disable_monitor()
            monitor.close()
        if event is None:
            raise TimeoutError(f"no CURVE handshake with {endpoint}")
        if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            raise _handshake_error(event["event"], event["value"])
    except BaseException:
        s.close()
        raise
    return s


class Client:
    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        public: bytes,
        secret: bytes,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        ctx: zmq.Context | None = None,
    ):
        self.endpoint = endpoint
        self.keys = (server_key, public, secret)
        self.timeout = timeout
        self.retries = retries
        self.ctx = ctx or zmq.Context.instance()
        self.socket: zmq.Socket | None = None
        self.reconnects = 0
        self._cid = 0
        self._kept: collections.deque = collections.deque()
        self._unread: collections.deque = collections.deque()  # the rest of a bundle

    # ------------------------------------------------------------ connection

    def connect(self, timeout: float | None = None) -> "Client":
        """Connect and wait for the handshake; AuthError if refused, TimeoutError if silent."""
        t = self.timeout if timeout is None else timeout
        self.socket = connect_curve(self.ctx, zmq.DEALER, self.endpoint, self.keys, t)
        return self

    def reconnect(self) -> None:
        """A new connection (replies to the old one are lost; retries bring them back)."""
        self.socket.close()
        self.socket = None
        self.reconnects += 1
        self.connect()

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def __enter__(self) -> "Client":
        if self.socket is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ pipelined

    def next_cid(self) -> int:
        self._cid += 1
        return self._cid

    def send(self, request: msgspec.Struct) -> int:
        """Send a request (its cid as given); returns the cid."""
        self.socket.send(encode(request), copy=False)
        return request.cid

    def send_raw(self, frame: bytes) -> None:
        self.socket.send(frame)

    def recv(self, timeout: float | None = None):
        """The next message (a kept one first), or None after ``timeout`` seconds."""
        if self._kept:
            return self._kept.popleft()
        return self._read(timeout)

    def _read(self, timeout: float | None):
        if self._unread:
            return self._unread.popleft()
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self.socket.poll(ms):
            return None
        first, *rest = decode_replies(self.socket.recv())
        self._unread.extend(rest)
        return first

    def notices(self, timeout: float = 0.0) -> list:
        """Every message received so far and within ``timeout`` that nobody waited for."""
        out = list(self._kept)
        self._kept.clear()
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return out
            out.append(msg)

    # ------------------------------------------------------------ one request, one reply

    def request(self, msg: msgspec.Struct):
        """Send ``msg`` and wait for its reply, with the retries described above."""
        backoff = BACKOFF_SECONDS
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            self.send(msg)
            reply = self.wait_reply(msg.cid, self.timeout)
            if reply is None:
                if last:
                    raise TimeoutError(f"no reply to cid {msg.cid} from {self.endpoint}")
                self.reconnect()
                continue
            if last or not (isinstance(reply, Reject) and reply.code in RETRYABLE):
                return reply
            time.sleep(backoff)
            backoff *= 2

    def wait_reply(self, cid: int, timeout: float):
        """The reply to ``cid`` (None after ``timeout``), keeping what else arrives."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            if getattr(msg, "cid", 0) == cid:
                return msg
            self._kept.append(msg)

    def heartbeat(self, cod: bool = False, bundle: bool = True) -> Heartbeat | Reject:
        """Keep the session alive; ``cod`` arms cancel on disconnect; ``bundle`` lets the
        gateway send several messages a frame (this library reads them one by one)."""
        return self.request(
            Heartbeat(cid=self.next_cid(), v=PROTOCOL_VERSION, cod=cod, bundle=bundle)
        )

    def new_order(self, sym: str, side: str, qty: int, px: int | None = None, **fields):
        """Ack or Reject. Fields as in NewOrder (tif, type, trigger, display, expire_at,
        post_only, stp, coid, ik); ``display``: an iceberg's shown quantity; ``expire_at``
        (with tif="gtd"): when the order expires, ns since the Unix epoch; tif="day": at
        its instrument's session end."""
        return self.request(_new_order(self.next_cid(), sym, side, qty, px, fields))

    def new_orders(self, orders: list[Order]):
        """BatchAck (or one Reject); build the orders with ``order(...)``."""
        return self.request(_batch(self.next_cid(), orders))

    def cancel(self, sym: str, oid: int):
        return self.request(Cancel(cid=self.next_cid(), sym=sym, oid=oid))

    def replace(
        self,
        sym: str,
        oid: int,
        px: int,
        qty: int,
        trigger: int | None = None,
        display: int | None = None,
    ):
        """Replaced, Cancelled or Reject; ``trigger``: a waiting stop's (new) trigger;
        ``display``: the order's new display quantity (None: it keeps its own)."""
        msg = Replace(
            cid=self.next_cid(), sym=sym, oid=oid, px=px, qty=qty, trigger=trigger, display=display
        )
        return self.request(msg)

    def mass_cancel(self, sym: str | None = None):
        return self.request(MassCancel(cid=self.next_cid(), sym=sym))

    def status(self, sym: str, oid: int):
        return self.request(Status(cid=self.next_cid(), sym=sym, oid=oid))

    def book(self, sym: str, depth: int = 5):
        """BookSnapshot (or Reject): the best ``depth`` levels of each side and the trading
        state ("continuous" or "halted"), as of its seq."""
        return self.request(BookRequest(cid=self.next_cid(), sym=sym, depth=depth))

    def positions(self, sym: str | None = None):
        """PositionReport (or Reject): cash, and per instrument position, P&L, open orders."""
        return self.request(PositionsRequest(cid=self.next_cid(), sym=sym))

    def instruments(self, sym: str | None = None):
        """Instruments (or Reject): each instrument's tick, lot, price band, max qty,
        collar reference and state; ``version`` changes when the static ones do."""
        return self.request(InstrumentsRequest(cid=self.next_cid(), sym=sym))

    def kill(self):
        """The panic button: cancel every order and block this client until an operator
        lifts it. MassCancelled (or Reject: blocked all the same)."""
        return self.request(Kill(cid=self.next_cid()))

    def trades(self, sym: str, from_seq: int, to_seq: int | None = None):
        """A retransmission: (the symbol's Trades of seqs from_seq..to_seq, ``retx`` true,
        in seq order; the TradesEnd), or ([], Reject). ``to_seq`` None: as far as allowed."""
        msg = _trades_request(self.next_cid(), sym, from_seq, to_seq)
        end = self.request(msg)
        if not isinstance(end, TradesEnd):
            return [], end
        mine = [m for m in self._kept if _retransmitted(m, sym)]
        self._kept = collections.deque(m for m in self._kept if not _retransmitted(m, sym))
        return mine, end


def _trades_request(cid: int, sym: str, from_seq: int, to_seq: int | None) -> TradesRequest:
    if to_seq is None:
        to_seq = from_seq + MAX_RETRANSMIT_SEQS - 1
    return TradesRequest(cid=cid, sym=sym, from_seq=from_seq, to_seq=to_seq)


def _retransmitted(msg, sym: str) -> bool:
    return isinstance(msg, Trades) and msg.retx and msg.sym == sym


class AsyncClient:
    """``Client``'s asyncio twin: the same methods as coroutines, many requests at once.

    A reader task hands each reply to the request awaiting its cid and queues
    the rest for ``notice()``.
    """

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        public: bytes,
        secret: bytes,
        *,
        timeout: float = 5.0,
        retries: int = 3,
    ):
        self.endpoint = endpoint
        self.keys = (server_key, public, secret)
        self.timeout = timeout
        self.retries = retries
        self.ctx = zmq.asyncio.Context.instance()
        self.socket = None
        self.reconnects = 0
        self._cid = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self._notices: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    async def connect(self, timeout: float | None = None) -> "AsyncClient":
        s = _curve_socket(self.ctx, zmq.DEALER, *self.keys)
        monitor = s.get_monitor_socket(_HANDSHAKE_EVENTS)
        try:
            s.connect(self.endpoint)
            try:
                async with asyncio.timeout(self.timeout if timeout is None else timeout):
                    event = parse_monitor_message(await monitor.recv_multipart())
            except TimeoutError:
                raise TimeoutError(f"no CURVE handshake with {self.endpoint}") from None
            finally:
                s.disable_monitor()
                monitor.close()
            if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                raise _handshake_error(event["event"], event["value"])
        except BaseException:
            s.close()
            raise
        self.socket = s
        self._reader = asyncio.get_running_loop().create_task(self._read(s))
        return self

    async def _read(self, socket) -> None:
        while True:
            for msg in decode_replies(await socket.recv()):
                waiter = self._waiting.pop(getattr(msg, "cid", 0), None)
                if waiter is None or waiter.done():
                    self._notices.put_nowait(msg)
                else:
                    waiter.set_result(msg)

    async def reconnect(self) -> None:
        await self._stop()
        self.reconnects += 1
        await self.connect()

    async def _stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    async def close(self) -> None:
        await self._stop()
        for waiter in self._waiting.values():
            waiter.cancel()
        self._waiting.clear()

    async def __aenter__(self) -> "AsyncClient":
        if self.socket is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def next_cid(self) -> int:
        self._cid += 1
        return self._cid

    async def notice(self, timeout: float | None = None):
        """The next message nobody awaited (fills, cancels...), or None after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                return await self._notices.get()
        except TimeoutError:
            return None

    async def request(self, msg: msgspec.Struct):
        backoff = BACKOFF_SECONDS
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[msg.cid] = waiter
            await self.socket.send(encode(msg))
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await waiter
            except TimeoutError:
                self._waiting.pop(msg.cid, None)
                if last:
                    raise TimeoutError(f"no reply to cid {msg.cid} from {self.endpoint}") from None
                await self.reconnect()
                continue
            if last or not (isinstance(reply, Reject) and reply.code in RETRYABLE):
                return reply
            await asyncio.sleep(backoff)
            backoff *= 2

    async def heartbeat(self, cod: bool = False, bundle: bool = True):
        return await self.request(
            Heartbeat(cid=self.next_cid(), v=PROTOCOL_VERSION, cod=cod, bundle=bundle)
        )

    async def new_order(self, sym: str, side: str, qty: int, px: int | None = None, **fields):
        return await self.request(_new_order(self.next_cid(), sym, side, qty, px, fields))

    async def new_orders(self, orders: list[Order]):
        return await self.request(_batch(self.next_cid(), orders))

    async def cancel(self, sym: str, oid: int):
        return await self.request(Cancel(cid=self.next_cid(), sym=sym, oid=oid))

    async def replace(
        self,
        sym: str,
        oid: int,
        px: int,
        qty: int,
        trigger: int | None = None,
        display: int | None = None,
    ):
        msg = Replace(
            cid=self.next_cid(), sym=sym, oid=oid, px=px, qty=qty, trigger=trigger, display=display
        )
        return await self.request(msg)

    async def mass_cancel(self, sym: str | None = None):
        return await self.request(MassCancel(cid=self.next_cid(), sym=sym))

    async def status(self, sym: str, oid: int):
        return await self.request(Status(cid=self.next_cid(), sym=sym, oid=oid))

    async def book(self, sym: str, depth: int = 5):
        """As ``Client.book``: BookSnapshot (levels and trading state) or Reject."""
        return await self.request(BookRequest(cid=self.next_cid(), sym=sym, depth=depth))

    async def positions(self, sym: str | None = None):
        return await self.request(PositionsRequest(cid=self.next_cid(), sym=sym))

    async def instruments(self, sym: str | None = None):
        return await self.request(InstrumentsRequest(cid=self.next_cid(), sym=sym))

    async def kill(self):
        return await self.request(Kill(cid=self.next_cid()))

    async def trades(self, sym: str, from_seq: int, to_seq: int | None = None):
        """As ``Client.trades``: (Trades retransmitted, TradesEnd), or ([], Reject)."""
        end = await self.request(_trades_request(self.next_cid(), sym, from_seq, to_seq))
        if not isinstance(end, TradesEnd):
            return [], end
        mine, others = [], []
        while not self._notices.empty():
            m = self._notices.get_nowait()
            (mine if _retransmitted(m, sym) else others).append(m)
        for m in others:
            self._notices.put_nowait(m)
        return mine, end
