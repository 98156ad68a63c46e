"""``exch book`` and ``exch trades``: market data for a person at a terminal (or a script).

``book`` asks the gateway for a depth snapshot (a BookRequest: the levels and the
trading state); with ``watch`` it follows the symbol's Depth and TradingState
messages on the PUB socket, re-asking for a snapshot after a gap
(``gateway.subscriber``), and redraws on every change.
``trades`` follows the symbol's Trades messages. Both run until ``seconds``
have passed (0: until Ctrl-C) or, for trades, ``count`` prints were shown.
"""

import time
from collections.abc import Callable

from gateway.protocol import BookSnapshot, Reject, Trades
from gateway.subscriber import Subscriber
from tools.errors import ToolError

POLL_SECONDS = 0.25
CLEAR = "\x1b[H\x1b[2J"


def snapshot(client, sym: str, depth: int) -> BookSnapshot:
    try:
        book = client.book(sym, depth)
    except TimeoutError:
        raise ToolError(f"no answer from the gateway in {client.timeout} s (asked twice)") from None
    if isinstance(book, Reject):
        raise ToolError(f"{sym}: {book.code} {book.field}: {book.reason}")
    return book


def patient(book):
    """``book(sym, depth)`` (e.g. ``Client.book``) as a subscriber's snapshot source: an
    unanswered request gives None, so the book stays stale and is asked for again."""

    def ask(sym: str, depth: int):
        try:
            return book(sym, depth)
        except TimeoutError:
            return None

    return ask


def _until(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds if seconds > 0 else None
    return lambda: end is not None and time.monotonic() >= end


def watch_book(
    sub: Subscriber, sym: str, show: Callable[[int, list, list, str], None], seconds: float
):
    """``show(seq, bids, asks, state)`` for the first book and after every change (of
    its levels or its trading state)."""
    done = _until(seconds)
    shown = None
    while not done():
        sub.poll(POLL_SECONDS)
        book = sub.books.get(sym)
        if book is not None and book != shown:
            show(book.seq, book.bids, book.asks, book.state)
            shown = book


def follow_trades(
    sub: Subscriber, sym: str, show: Callable[[Trades], None], seconds: float, count: int
) -> int:
    """``show(msg)`` for each Trades message; returns the number of prints shown."""
    done = _until(seconds)
    prints = 0
    while not done() and not (count and prints >= count):
        for msg in sub.poll(POLL_SECONDS):
            if isinstance(msg, Trades) and msg.sym == sym:
                show(msg)
                prints += len(msg.prints)
    return prints
