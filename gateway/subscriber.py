"""Market data for a bot: a SUB socket that notices lost messages and refreshes its books.

    sub = Subscriber(pub_endpoint, server_key, public, secret, ["ACME"], snapshot=client.book)
    for msg in sub.poll(0.1):       # Trades, TradingState, Depth, TopOfBook, in order
        ...
    sub.books["ACME"]               # LocalBook(seq, bids, asks, state), kept from Depth
                                    # and TradingState messages

Each feed of each symbol is a chain (``prev`` = the previous message's
``seq``, docs/PROTOCOL.md section 6). A broken chain is a gap: ZeroMQ PUB
drops messages for a subscriber that falls behind. A gap in Depth or TopOfBook
marks the symbol's book stale, and the next ``poll`` replaces it with a
snapshot (``snapshot(sym, depth)``, normally ``Client.book``: a BookRequest);
Depth messages not newer than a snapshot are ignored. The book's trading state
("continuous" or "halted") comes from the snapshot and then from TradingState
messages newer than it; a gap in them marks the book stale too. A gap in Trades is only
counted: trades are a stream, and a bot's own trades arrive as Fills anyway.
"""

from typing import NamedTuple

import zmq

from gateway.client import connect_curve
from gateway.codec import decode_market_data
from gateway.protocol import DEFAULT_DEPTH, BookSnapshot, Depth, Trades, TradingState


class LocalBook(NamedTuple):
    seq: int  # the levels as of this seq (the last snapshot or Depth taken)
    bids: list
    asks: list
    state: str = "continuous"  # the trading state: "continuous" or "halted"


class Feeds:
    """The chains and books of some symbols, message by message (no socket: ``Subscriber``).

    ``snapshot(sym, depth)`` returns a ``BookSnapshot`` (or anything else when it
    cannot: the book stays stale and is asked for again at the next refresh).
    """

    def __init__(self, symbols, snapshot, depth: int = DEFAULT_DEPTH):
        self.symbols = set(symbols)
        self.snapshot = snapshot
        self.depth = depth
        self.books: dict[str, LocalBook] = {}
        self.gaps = 0
        self.refreshes = 0
        self.stale = set(self.symbols)  # every book starts from a snapshot
        self._last: dict[tuple[str, type], int] = {}

    def refresh(self) -> None:
        for sym in sorted(self.stale):
            book = self.snapshot(sym, self.depth)
            if isinstance(book, BookSnapshot):
                self.books[sym] = LocalBook(book.seq, book.bids, book.asks, book.state)
                self.stale.discard(sym)
                self.refreshes += 1

    def handle(self, topic: bytes, msg):
        """Take one message; returns it, or None if it is for a symbol not asked for."""
        sym = topic.decode(errors="replace")
        if sym not in self.symbols or msg.sym != sym:
            return None  # a longer symbol with our prefix
        feed = type(msg)
        last = self._last.get((sym, feed), 0)
        if last and msg.prev != last:
            self.gaps += 1
            if feed is not Trades:
                self.stale.add(sym)
        self._last[(sym, feed)] = msg.seq
        book = self.books.get(sym)
        if book is not None and msg.seq > book.seq:
            if feed is Depth:
                self.books[sym] = book._replace(seq=msg.seq, bids=msg.bids, asks=msg.asks)
            elif feed is TradingState:
                # the levels keep their seq: a Depth of the same seq may follow
                self.books[sym] = book._replace(state=msg.state)
        return msg


class Subscriber(Feeds):
    """``Feeds`` fed by a SUB socket (CURVE) subscribed to the symbols."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        public: bytes,
        secret: bytes,
        symbols,
        snapshot,
        *,
        depth: int = DEFAULT_DEPTH,
        rcvhwm: int = 1000,
        timeout: float = 5.0,
        ctx: zmq.Context | None = None,
    ):
        super().__init__(symbols, snapshot, depth)

        def setup(s):
            s.rcvhwm = rcvhwm
            for sym in self.symbols:
                s.subscribe(sym.encode())

        ctx = ctx or zmq.Context.instance()
        self.socket = connect_curve(
            ctx, zmq.SUB, endpoint, (server_key, public, secret), timeout, setup
        )

    def close(self) -> None:
        self.socket.close()

    def poll(self, timeout: float = 0.0) -> list:
        """Refresh stale books, then every message that arrives within ``timeout`` seconds."""
        self.refresh()
        out = []
        ms = int(timeout * 1000)
        while self.socket.poll(ms):
            ms = 0
            topic, body = self.socket.recv_multipart()
            msg = self.handle(topic, decode_market_data(body))
            if msg is not None:
                out.append(msg)
        return out
