"""The venue's reference data: each instrument's trading parameters, for ``InstrumentsRequest``.

What a bot on another host needs before its first order, over the protocol: the
instruments (in ``exchange.topology.symbols`` order), each one's tick and lot, its
price band and largest quantity (the book's config), the price collar's
reference now (the last trade, before any the configured ``ref_price``: the
gateway's marks) and its state now: open, halted (its shard serves it, and has
halted its book) or unavailable (its shard does not serve it now). The static part (all but
the reference price and the state) is fixed while the gateway runs; its
``version`` is a digest of it, so a bot can cache the list and refetch when the
version it sees changes (after an operator changed the config and restarted).
"""

import hashlib

import msgspec

from exchange.config import Config
from exchange.topology import symbols
from gateway.positions import Positions
from gateway.protocol import NOT_FOUND, Instrument, Instruments, InstrumentsRequest, ProtocolError

OPEN = "open"
HALTED = "halted"
UNAVAILABLE = "unavailable"
_STATIC = ("sym", "tick", "lot", "min_px", "max_px", "max_qty")


class ReferenceData:
    """Answers ``InstrumentsRequest``: the collar references are the positions' marks,
    ``serving(sym)`` says whether its shard takes requests now, ``halted(sym)`` whether
    its book is halted, ``reply(conn, message)`` sends the answer."""

    def __init__(self, config: Config, positions: Positions, serving, halted, reply):
        self.symbols = symbols(config)
        self.positions = positions
        self.serving = serving
        self.halted = halted
        self.reply = reply
        self._number = {sym: i for i, sym in enumerate(self.symbols)}
        self._static = []
        for sym in self.symbols:
            book = config.instrument(sym).book
            self._static.append(
                (sym, book.tick_size, book.lot_size, book.min_price, book.max_price, book.max_qty)
            )
        digest = hashlib.blake2b(msgspec.msgpack.encode(self._static), digest_size=8).digest()
        self.version = int.from_bytes(digest, "big") >> 1  # an int64+: msgpack's positive ints

    def request(self, conn: bytes, client: int, msg: InstrumentsRequest) -> None:
        self.reply(conn, self.answer(msg.cid, msg.sym))

    def answer(self, cid: int, sym: str | None) -> Instruments:
        """Every instrument, or ``sym`` alone."""
        if sym is None:
            numbers = range(len(self.symbols))
        elif sym in self._number:
            numbers = (self._number[sym],)
        else:
            raise ProtocolError(NOT_FOUND, f"no instrument {sym!r}", "$.sym")
        lines = [
            Instrument(
                **dict(zip(_STATIC, self._static[i], strict=True)),
                ref_px=int(self.positions.marks[i]),
                state=self._state(self.symbols[i]),
            )
            for i in numbers
        ]
        return Instruments(cid=cid, version=self.version, instruments=lines)

    def _state(self, sym: str) -> str:
        if not self.serving(sym):
            return UNAVAILABLE
        return HALTED if self.halted(sym) else OPEN
