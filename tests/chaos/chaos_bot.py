"""A chaos bot: trades at a steady rate through the real daemon and writes down what it saw.

    python tests/chaos/chaos_bot.py --endpoint E --keys-dir D --secret F --client N
        --seconds S --rate R --seed X --out records.json

Each request is a GTC or IOC limit order (``ICEBERG_SHARE`` of the GTC ones
icebergs showing a lot or two of a bigger order, ``GTD_SHARE`` of the others GTD
orders expiring a few seconds after they are sent), or a GTC stop-limit
(``STOP_SHARE``), near an instrument's reference price (so orders of different bots trade) with
its own idempotency key, or a cancel of one of its live orders, or
(``REUSE_SHARE``) a *cross-instrument reuse*: a NewOrder under the key of one
of the bot's own orders it saw acknowledged, on an instrument of the other
shard. The only right final answer to a reuse is a
``conflict`` Reject (``busy``, ``unavailable`` and ``rate_limited`` are retried
as for any order); it must never be acknowledged, since its key has an order
already. Only acknowledged keys are reused: the original of a key still
unanswered might never be journaled (refused, say), and then the reuse could
rightly become the key's order. Requests go out at ``--rate`` a second whatever the
answers do. A request left unanswered for ``RETRY_SECONDS`` is sent again, the
same frame under the same cid and key; when the connection has been silent
that long too, on a new connection first. A ``busy``, ``unavailable`` or
``rate_limited`` answer is retried the same way after a back-off that doubles
from ``BACKOFF_SECONDS`` to ``MAX_BACKOFF_SECONDS``. A socket monitor counts
the CURVE handshakes, so a reconnection is seen whether the bot made a new
socket or ZeroMQ reconnected the old one by itself. After ``--seconds`` (or
SIGTERM) it sends nothing new and keeps retrying until every request is
answered or ``--settle`` seconds have passed, then writes its records
(``records`` below) as JSON and exits 0. ``<out>.ready`` is made when its first
connection is up.

Times are ``time.monotonic()``: one clock for every process on the host, so the
orchestrator can compare them with the instants of its kills.
"""

import argparse
import json
import random
import signal
import time
from dataclasses import dataclass

import msgspec
import zmq

from gateway.client import AuthError, Client
from gateway.codec import encode
from gateway.keys import load_secret_certificate, server_public_key
from gateway.protocol import (
    BUSY,
    RATE_LIMITED,
    UNAVAILABLE,
    Ack,
    Cancel,
    Cancelled,
    Fill,
    NewOrder,
    Reject,
)

# symbol -> (reference price, tick, lot) of the default config's instruments
SYMBOLS = {
    "ACME": (10_000, 1, 1),
    "BOLT": (2_500, 5, 10),
    "BTC-USD": (6_000_000, 100, 1),
    "ETH-USD": (300_000, 10, 1),
}
# symbol -> its shard in the default config (chaos_run checks it against the run's config)
SHARDS = {"ACME": "s0", "BOLT": "s0", "BTC-USD": "s1", "ETH-USD": "s1"}
SPREAD_TICKS = 3  # prices within this many ticks of the reference: orders cross often
MAX_LOTS = 5
IOC_SHARE = 0.1
STOP_SHARE = 0.1  # of the orders: GTC stop-limits, their trigger near the reference
ICEBERG_SHARE = 0.1  # of the GTC limit orders: icebergs (display 1-2 lots, qty up to 4x more)
GTD_SHARE = 0.15  # of the other GTC limit orders: GTD, expiring GTD_SECONDS after sending
GTD_SECONDS = (3.0, 8.0)  # beyond a retry or two (one that reaches its book late: refused)
CANCEL_SHARE = 0.15
REUSE_SHARE = 0.07  # requests that reuse an acknowledged key on the other shard's instruments
RETRY_SECONDS = 1.5
BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0
CONNECT_SECONDS = 1.0
MAX_PENDING = 1000  # beyond this the bot skips sends (counted) instead of piling up
RETRYABLE = (BUSY, UNAVAILABLE, RATE_LIMITED)


@dataclass
class Pending:
    msg: msgspec.Struct
    frame: bytes
    due: float  # when to send (again)
    first_sent: float = 0.0
    sends: int = 0
    backoff: float = BACKOFF_SECONDS


class Bot:
    def __init__(
        self, client: Client, client_id: int, rate: float, rng: random.Random, ready_path=""
    ):
        self.client = client
        self.ready_path = ready_path  # made at the first connection
        self.client_id = client_id
        self.rate = rate
        self.rng = rng
        self.pending: dict[int, Pending] = {}
        self.live: dict[int, str] = {}  # oid -> symbol of orders that may rest
        self.acked: list[tuple[int, str, int]] = []  # (key, symbol, oid) of acknowledged orders
        self.reuses: dict[int, dict] = {}  # cid -> its entry in records["reuses"]
        self.refused: dict[int, int] = {}  # cid -> key of a NewOrder answered by a Reject
        self.next_cid = 1
        self.monitor: zmq.Socket | None = None  # the connection's CURVE handshakes
        self.monitors = 0
        self.last_heard = time.monotonic()
        self.records = {
            "client": client_id,
            "orders": {},  # str(ik) -> [sym, side, px, qty, tif]
            "acks": [],  # [cid, ik, sym, oid, seq, dup, t]
            "rejects": [],  # [cid, kind, code, field, reason, t]
            "cancelled": [],  # replies to Cancel: [cid, sym, oid, t]
            "fills": [],  # [sym, seq, idx, oid, side, px, qty, leaves, dup]
            "sent": 0,  # requests made (not counting retries)
            "retries": 0,  # frames sent again
            "retryable": 0,  # busy / unavailable / rate_limited answers (each retried)
            "reconnects": 0,  # handshakes after the first (new sockets and ZeroMQ's own)
            "skipped": 0,  # sends skipped because MAX_PENDING were unanswered
            "unanswered": [],  # cids still unanswered at the end
            # cross-instrument reuses: {cid, ik, sym, orig_sym, orig_oid, t (made),
            # retryable: [codes answered, each retried], answer: the final code, "ack" or
            # None (unanswered), answered: t, reason (of a Reject), acks: [[oid, seq, dup,
            # t]] (each one a broken promise)}
            "reuses": [],
        }

    # ------------------------------------------------------------ requests

    def make_request(self, now: float) -> None:
        cid = self.next_cid
        self.next_cid += 1
        rng = self.rng
        draw = rng.random()
        if self.live and draw < CANCEL_SHARE:
            oid = rng.choice(list(self.live))
            msg = Cancel(cid=cid, sym=self.live.pop(oid), oid=oid)
        elif self.acked and draw > 1 - REUSE_SHARE:
            ik, orig_sym, orig_oid = rng.choice(self.acked)
            sym = rng.choice([s for s in SYMBOLS if SHARDS[s] != SHARDS[orig_sym]])
            msg = self._order(cid, sym, ik)
            reuse = {"cid": cid, "ik": ik, "sym": sym, "orig_sym": orig_sym, "orig_oid": orig_oid}
            reuse.update(t=now, retryable=[], answer=None, acks=[])
            self.reuses[cid] = reuse
            self.records["reuses"].append(reuse)
        else:
            sym = rng.choice(list(SYMBOLS))
            msg = self._order(cid, sym, rng.getrandbits(63) | 1)
            self.records["orders"][str(msg.ik)] = [
                *(sym, msg.side, msg.px, msg.qty, msg.tif, msg.display or 0, msg.expire_at or 0)
            ]
        self.pending[cid] = Pending(msg, encode(msg), due=now)
        self.records["sent"] += 1

    def _order(self, cid: int, sym: str, ik: int) -> NewOrder:
        rng = self.rng
        ref, tick, lot = SYMBOLS[sym]
        side = rng.choice(("buy", "sell"))
        px = ref + tick * rng.randint(-SPREAD_TICKS, SPREAD_TICKS)
        qty = lot * rng.randint(1, MAX_LOTS)
        if rng.random() < STOP_SHARE:
            # a buy stop above the reference, a sell stop below: trades around it reach
            # them (and a stop the last trade has reached already is refused, rightly)
            trigger = ref + tick * rng.randint(0, SPREAD_TICKS) * (1 if side == "buy" else -1)
            kind = "stop_limit"
            return NewOrder(
                cid=cid, sym=sym, side=side, qty=qty, px=px, ord_type=kind, trigger=trigger, ik=ik
            )
        tif = "ioc" if rng.random() < IOC_SHARE else "gtc"
        if tif == "gtc" and rng.random() < ICEBERG_SHARE:
            display = lot * rng.randint(1, 2)
            qty = lot * rng.randint(2, 4 * MAX_LOTS)
            return NewOrder(cid=cid, sym=sym, side=side, qty=qty, px=px, display=display, ik=ik)
        if tif == "gtc" and rng.random() < GTD_SHARE:
            # the wall clock: an expiry is a time since the epoch (the shard's clock says
            # when it has come)
            at = time.time_ns() + int(rng.uniform(*GTD_SECONDS) * 1e9)
            return NewOrder(
                cid=cid, sym=sym, side=side, qty=qty, px=px, tif="gtd", expire_at=at, ik=ik
            )
        return NewOrder(cid=cid, sym=sym, side=side, qty=qty, px=px, tif=tif, ik=ik)

    def send_due(self, now: float) -> None:
        socket = self.client.socket
        for p in self.pending.values():
            if p.due > now:
                continue
            try:
                socket.send(p.frame, zmq.NOBLOCK)
            except zmq.Again:  # the connection's queue is full: next pass
                continue
            if p.sends:
                self.records["retries"] += 1
            else:
                p.first_sent = now
            p.sends += 1
            p.due = now + RETRY_SECONDS

    # ------------------------------------------------------------ replies

    def on_message(self, msg, now: float) -> None:
        self.last_heard = now
        r = self.records
        if isinstance(msg, Fill):
            r["fills"].append(
                [msg.sym, msg.seq, msg.idx, msg.oid, msg.side, msg.px, msg.qty, msg.leaves, msg.dup]
            )
            if msg.leaves == 0:
                self.live.pop(msg.oid, None)
            return
        cid = getattr(msg, "cid", 0)
        p = self.pending.get(cid) if cid else None
        reuse = self.reuses.get(cid) if cid else None
        if reuse is not None and isinstance(msg, (Ack, Reject)):
            self._on_reuse_answer(reuse, p, msg, now)
            return
        if isinstance(msg, Ack):
            ik = p.msg.ik if p is not None else self._ik_of(cid)
            r["acks"].append([cid, ik, msg.sym, msg.oid, msg.seq, msg.dup, now])
            if p is not None:
                del self.pending[cid]
                self.acked.append((ik, msg.sym, msg.oid))
                if p.msg.tif == "gtc":
                    self.live[msg.oid] = msg.sym
        elif isinstance(msg, Reject):
            if p is None:
                return  # a late answer to a request answered already
            if msg.code in RETRYABLE:
                r["retryable"] += 1
                p.due = now + p.backoff
                p.backoff = min(2 * p.backoff, MAX_BACKOFF_SECONDS)
                return
            kind = "cancel" if isinstance(p.msg, Cancel) else "new"
            r["rejects"].append([cid, kind, msg.code, msg.field, msg.reason, now])
            if kind == "new":
                # a refused order used no key: a retry of it already sent may still be
                # taken (a stop no longer reached), and its late Ack names this key
                self.refused[cid] = p.msg.ik
            del self.pending[cid]
        elif isinstance(msg, Cancelled):
            self.live.pop(msg.oid, None)
            if p is not None:
                r["cancelled"].append([cid, msg.sym, msg.oid, now])
                del self.pending[cid]

    def _on_reuse_answer(self, reuse: dict, p: Pending | None, msg, now: float) -> None:
        """A cross-instrument reuse's answer: only ``conflict`` may end it."""
        if isinstance(msg, Ack):  # never right, late or not: every one is recorded
            reuse["acks"].append([msg.oid, msg.seq, msg.dup, now])
            if p is not None:
                reuse["answer"], reuse["answered"] = "ack", now
                del self.pending[reuse["cid"]]
                if p.msg.tif == "gtc":  # it may rest: cancel it like the bot's own
                    self.live[msg.oid] = msg.sym
            return
        if p is None:
            return  # a late answer to a reuse answered already
        if msg.code in RETRYABLE:
            self.records["retryable"] += 1
            reuse["retryable"].append(msg.code)
            p.due = now + p.backoff
            p.backoff = min(2 * p.backoff, MAX_BACKOFF_SECONDS)
            return
        reuse["answer"], reuse["answered"], reuse["reason"] = msg.code, now, msg.reason
        del self.pending[reuse["cid"]]

    def _ik_of(self, cid: int) -> int:
        """The key of a request answered already (an answer to one of its retries)."""
        for ack in reversed(self.records["acks"]):
            if ack[0] == cid:
                return ack[1]
        return self.refused.get(cid, 0)

    # ------------------------------------------------------------ the loop

    def ensure_connected(self) -> bool:
        if self.client.socket is not None:
            return True
        try:
            self.client.connect(CONNECT_SECONDS)
        except (TimeoutError, AuthError):  # the gateway is down or restarting
            return False
        if self.monitor is not None:  # not the first connection
            self.records["reconnects"] += 1
        elif self.ready_path:  # the orchestrator kills nothing before every bot is in
            open(self.ready_path, "w").close()
        # ZeroMQ also reconnects the same socket by itself when the gateway comes back.
        # An address of its own: connect's monitor may still hold the default one.
        self.monitors += 1
        address = f"inproc://chaos-bot-handshakes-{self.monitors}"
        self.client.socket.monitor(address, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.monitor = self.client.ctx.socket(zmq.PAIR)
        self.monitor.connect(address)
        self.last_heard = time.monotonic()
        for p in self.pending.values():  # whatever the old connection carried is lost
            p.due = min(p.due, self.last_heard)
        return True

    def maybe_reconnect(self, now: float) -> None:
        """A retry is due and the connection has said nothing for as long: a new one."""
        if self.client.socket is None or now - self.last_heard < RETRY_SECONDS:
            return
        if any(p.sends and p.due <= now for p in self.pending.values()):
            self.count_handshakes()
            self.client.socket.disable_monitor()
            self.monitor.close()
            self.client.close()

    def count_handshakes(self) -> None:
        while self.monitor.poll(0):
            self.monitor.recv_multipart()
            self.records["reconnects"] += 1

    def run(self, seconds: float, settle: float) -> None:
        start = time.monotonic()
        end = [start + seconds if seconds else float("inf")]
        signal.signal(signal.SIGTERM, lambda *_: end.__setitem__(0, time.monotonic()))
        next_at = start
        while True:
            now = time.monotonic()
            trading = now < end[0]
            if (not trading and not self.pending) or now > end[0] + settle:
                break
            self.maybe_reconnect(now)
            if not self.ensure_connected():
                continue
            while trading and next_at <= now:
                if len(self.pending) < MAX_PENDING:
                    self.make_request(now)
                else:
                    self.records["skipped"] += 1
                next_at += 1 / self.rate
            self.send_due(now)
            dues = [p.due for p in self.pending.values()]
            wait = min([next_at, *dues] if trading else dues or [now]) - now
            msg = self.client.recv(max(0.0, min(wait, 0.1)))
            while msg is not None:
                self.on_message(msg, time.monotonic())
                msg = self.client.recv(0)
            self.count_handshakes()
        self.records["unanswered"] = sorted(self.pending)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--keys-dir", required=True, help="holds the gateway's public key")
    ap.add_argument("--secret", required=True, help="the bot's secret certificate")
    ap.add_argument("--client", type=int, required=True, help="the bot's client id")
    ap.add_argument("--seconds", type=float, default=0, help="how long to trade (0: to SIGTERM)")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second")
    ap.add_argument("--settle", type=float, default=60.0, help="how long to chase answers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="where the records go (JSON)")
    args = ap.parse_args()
    public, secret = load_secret_certificate(args.secret)
    client = Client(args.endpoint, server_public_key(args.keys_dir), public, secret)
    bot = Bot(client, args.client, args.rate, random.Random(args.seed), args.out + ".ready")
    try:
        bot.run(args.seconds, args.settle)
    finally:
        client.close()
    with open(args.out, "w") as f:
        json.dump(bot.records, f)


if __name__ == "__main__":
    main()
