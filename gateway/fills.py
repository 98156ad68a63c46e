"""The positions stage, outbound: fills folded into the positions (``gateway.positions``).

Each drained batch's fills (``on_events``) and the history a shard serves to a
sync (``on_history``: it happened before, and is folded, never notified). A
``PositionsRequest`` is answered from here (``gateway.report``).

State: the positions (per client and instrument, and each client's cash).
"""

import numpy as np

from gateway.positions import Positions
from gateway.protocol import NOT_FOUND, PositionsRequest, ProtocolError
from gateway.report import position_report
from gateway.risk import Risk
from gateway.shardlink import ShardLink


class Fills:
    def __init__(self, positions: Positions, risk: Risk, reply):
        self.positions = positions
        self.risk = risk
        self.reply = reply  # (conn, message): ``Replies.reply``

    def on_events(self, link: ShardLink, ev: np.ndarray) -> None:
        self.positions.apply(ev, link.offset)

    def on_history(self, link: ShardLink, history: np.ndarray) -> None:
        self.positions.apply(history, link.offset)

    def report(self, conn: bytes, client: int, msg: PositionsRequest) -> None:
        if msg.sym is not None and msg.sym not in self.risk.index:
            raise ProtocolError(NOT_FOUND, f"no instrument {msg.sym!r}", "$.sym")
        self.reply(conn, position_report(msg.cid, client, self.positions, self.risk, msg.sym))
