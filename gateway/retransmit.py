"""Retransmission: a symbol's Trades messages of a seq range again, to one connection.

A ``TradesRequest`` is answered from its shard's journal: the gateway asks the
shard a CMD_SYNC flagged SYNCF_RETRANSMIT (``ShardLink.retransmit``), whose
answer is the journaled events of the range, then an EV_SYNCED, every record
flagged EVF_RETRANSMIT: never history (``unseen`` passes them here, so nothing
is folded into positions, keys, risk or mirrors and the watermark stays), only
what a client asked to see again. From its TRADE events of the symbol the
requester gets one ``Trades`` per command seq, exactly as the live feed made
them (``gateway.mirror.trades_messages``) but with ``retx`` true and ``prev``
chained within the retransmission (0 for the first), then one ``TradesEnd``.

Replayed events keep their journaled req_id, so an answer is attributed by
position: at most one retransmission is outstanding per shard, and it is sent
only while no sync of that shard is (``link.sync_req``); the others wait in the
shard's queue (at most ``MAX_QUEUED``, beyond it ``busy``), in order. Every
EVF_RETRANSMIT record up to the EV_SYNCED carrying the outstanding request's
req_id is its answer; an answer that ends with another req_id (an earlier
gateway's, or one asked of a shard process that went away) is passed over. A
shard process that changes while a retransmission is outstanding: it is asked
again, first of its queue, once the shard is synced again; a shard that is down
answers its waiting requests ``unavailable``. An answer whose EV_SYNCED says
the shard's journal no longer holds the start of the range (its other_id, the
seq retention pruned up to, at or past from_seq) is a Reject ``not_found``,
field ``$.from_seq``, naming the first seq still kept: never prints with a
silent hole.

State: per shard, the queue, the outstanding request and its prints so far.
"""

from collections import deque

import numpy as np

from exchange import logs
from exchange.records import EV_SYNCED, EV_TRADE
from gateway.inflight import Inflight
from gateway.mirror import trades_messages
from gateway.protocol import (
    BUSY,
    INVALID,
    MAX_RETRANSMIT_SEQS,
    NOT_FOUND,
    UNAVAILABLE,
    ProtocolError,
    TradesEnd,
    TradesRequest,
)
from gateway.shardlink import ShardLink

MAX_QUEUED = 16  # retransmissions waiting per shard at most, beyond it: busy


class Asked:
    """One TradesRequest being served."""

    __slots__ = ("conn", "msg", "inst", "req_id", "trades")

    def __init__(self, conn: bytes, msg: TradesRequest, inst: int):
        self.conn = conn
        self.msg = msg
        self.inst = inst  # the instrument's number on its shard
        self.req_id = 0  # of the CMD_SYNC sent for it (0: not sent)
        self.trades: list[np.ndarray] = []  # its TRADE events so far


class Retransmits:
    def __init__(self, links: list[ShardLink], route, inflight: Inflight, reply):
        self.links = links
        self.route = route  # sym -> (link, instrument number, book): ``Checks.route``
        self.inflight = inflight
        self.reply = reply  # (conn, message): ``Replies.reply``
        self.queues = [deque() for _ in links]
        self.outstanding: list[Asked | None] = [None] * len(links)
        self.sent_to = [0] * len(links)  # the shard process the outstanding one went to

    def request(self, conn: bytes, client: int, msg: TradesRequest) -> None:
        if msg.to_seq < msg.from_seq or msg.to_seq - msg.from_seq >= MAX_RETRANSMIT_SEQS:
            raise ProtocolError(
                INVALID,
                f"to_seq must be >= from_seq and less than {MAX_RETRANSMIT_SEQS} seqs after it",
                "$.to_seq",
            )
        link, inst, _ = self.route(msg.sym)
        queue = self.queues[link.index]
        if len(queue) >= MAX_QUEUED:
            raise ProtocolError(
                BUSY, f"{MAX_QUEUED} retransmissions wait for shard {link.name}; retry later"
            )
        queue.append(Asked(conn, msg, inst))
        self.pump(link)

    def pump(self, link: ShardLink) -> None:
        """The next waiting retransmission of the shard asked, if none is outstanding and
        no sync of it is."""
        i = link.index
        queue = self.queues[i]
        if not queue or self.outstanding[i] is not None or link.sync_req or not link.ready():
            return
        if link.token() != link.synced_to:
            return  # a shard process not synced with yet: after its sync
        asked = queue[0]
        asked.req_id = self.inflight.new_req_ids()
        asked.trades = []
        if not link.retransmit(asked.req_id, asked.msg.from_seq - 1, asked.msg.to_seq):
            return  # the request ring is full: at the next tick
        queue.popleft()
        self.outstanding[i] = asked
        self.sent_to[i] = link.token()

    def tick(self) -> None:
        """Per shard: a process that changed under the outstanding one (asked again once
        the shard is synced), a shard down (its waiting ones refused), the next one."""
        for link in self.links:
            i = link.index
            if not self.queues[i] and self.outstanding[i] is None:
                continue
            if not link.alive():
                self._refuse_all(link)
                continue
            asked = self.outstanding[i]
            if asked is not None and link.token() != self.sent_to[i]:
                self.outstanding[i] = None
                self.queues[i].appendleft(asked)
            self.pump(link)

    def _refuse_all(self, link: ShardLink) -> None:
        i = link.index
        waiting = list(self.queues[i])
        if self.outstanding[i] is not None:
            waiting.insert(0, self.outstanding[i])
        self.queues[i].clear()
        self.outstanding[i] = None
        for asked in waiting:
            e = ProtocolError(
                UNAVAILABLE, f"shard {link.name} holding {asked.msg.sym} is down; retry later"
            )
            self.reply(asked.conn, e.reject(asked.msg.cid))

    def on_answer(self, link: ShardLink, recs: np.ndarray) -> None:
        """Records of retransmissions' answers (EVF_RETRANSMIT), in ring order."""
        i = link.index
        ends = np.flatnonzero(recs["kind"] == EV_SYNCED).tolist()
        start = 0
        for end in [*ends, len(recs)]:
            part = recs[start:end]
            asked = self.outstanding[i]
            if asked is not None:
                mine = part[(part["kind"] == EV_TRADE) & (part["instrument"] == asked.inst)]
                if len(mine):
                    asked.trades.append(mine.copy())
            if end == len(recs):
                break
            synced = recs[end]
            if asked is not None and int(synced["req_id"]) == asked.req_id:
                self.outstanding[i] = None
                self._answer(asked, int(synced["seq"]), int(synced["other_id"]))
            elif asked is not None:
                asked.trades = []  # another request's answer ended: its prints were not ours
            start = end + 1
        self.pump(link)

    def _answer(self, asked: Asked, last_seq: int, kept: int) -> None:
        msg = asked.msg
        if msg.from_seq <= kept:
            # retention took seqs up to ``kept`` out of the shard's journal: a part of the
            # range is gone, and prints missing from an answer must never pass for none
            e = ProtocolError(
                NOT_FOUND,
                f"the history of {msg.sym} up to seq {kept} is no longer kept (journal "
                f"retention): ask from_seq {kept + 1} or later",
                "$.from_seq",
            )
            self.reply(asked.conn, e.reject(msg.cid))
            logs.info("retransmission refused: pruned", sym=msg.sym, kept_after=kept)
            return
        trades = np.concatenate(asked.trades) if asked.trades else None
        out = trades_messages(msg.sym, trades, 0, retx=True) if trades is not None else []
        for m in out:
            self.reply(asked.conn, m)
        end = TradesEnd(
            cid=msg.cid,
            sym=msg.sym,
            from_seq=msg.from_seq,
            to_seq=msg.to_seq,
            count=len(out),
            last_seq=last_seq,
        )
        self.reply(asked.conn, end)
        logs.info("retransmitted", sym=msg.sym, seqs=(msg.from_seq, msg.to_seq), n=len(out))
