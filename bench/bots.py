"""A benchmark bot: offers orders at a fixed rate (open loop) and times every answer.

    python -m bench.bots --endpoint E --server-key F --secret F --rate R --seconds S
        [--warmup W] [--batch B] [--echo] [--seed N] --out FILE.npz

Open loop: frame k is due at t0 + (k + phase) / frames_per_second whatever the
answers do, and its round trip is measured from that due instant to its answer.
``--phase`` (a fraction of one frame interval) spreads several bots' frames
evenly instead of all of them sending at the same instants: N bots in step are
bursts of N frames, a different load than the rate they add up to. A stall of
the server, or of the bot, shows as latency instead of quietly lowering the
offered load (no coordinated omission); how late the bot itself sent is
recorded too (``lag``). At most ``--max-inflight`` frames wait for an answer:
beyond that a due frame is skipped and counted, so a saturated server is
measured at its capacity instead of behind an ever longer queue.

The orders (``orders``): every instrument of the default config, sides at
random; a share ``--ioc`` are IOC orders priced through the book (they trade
with what rests and never rest), the others GTC orders a few ticks away from
the reference price (they rest), so the books stay about the same size. Every
order has its own idempotency key. ``--batch B`` sends them B to a NewOrders
frame. ``--heartbeats`` sends Heartbeats instead, which the gateway answers
itself: the round trip of the gateway alone, without rings, shards or journal.
The frames are encoded before the start.

It connects (CURVE), prints ``ready``, waits for a line on stdin, then sends
for ``--warmup`` + ``--seconds`` and waits up to ``--drain`` seconds for the
last answers. Against the daemon it first sends a Heartbeat asking for bundles
(several messages a frame), as ``gateway.client`` does. Answers are decoded as
a bot would (``decode_replies``); with
``--echo`` the server is an echo and each answer must be the frame sent
(decoded with ``decode_request``: the same work). Results in ``--out``:
``rtt`` (seconds, per frame due after the warm-up and sent: NaN if never
answered), ``lag``, and counters (``lost``: frames sent and never answered;
``answered_in_window``: answers that arrived during the
``--seconds`` after the warm-up; ``skipped``; ``rejected``; ``bad``;
``cpu_seconds`` the bot used while sending).
"""

import argparse
import select
import sys
import time

import msgspec
import numpy as np
import zmq

from exchange.config import DEFAULT_TOML, parse_config
from gateway.client import connect_curve
from gateway.codec import decode_replies, decode_request, encode
from gateway.keys import load_secret_certificate
from gateway.protocol import (
    PROTOCOL_VERSION,
    Ack,
    BatchAck,
    Heartbeat,
    NewOrder,
    NewOrders,
    Order,
    Reject,
)

PASSIVE_TICKS = 20  # GTC orders rest 1..this many ticks from the reference price
MAX_LOTS = 10
NOBLOCK = int(zmq.NOBLOCK)
HANDSHAKE_CID = 1 << 62  # above every frame's cid (frame k has cid k + 1)


def orders(n: int, ioc_share: float, seed: int) -> list[Order]:
    rng = np.random.default_rng(seed)
    instruments = parse_config(DEFAULT_TOML).instruments
    which = rng.integers(0, len(instruments), n)
    buy = rng.random(n) < 0.5
    ioc = rng.random(n) < ioc_share
    away = rng.integers(1, PASSIVE_TICKS + 1, n)
    lots = rng.integers(1, MAX_LOTS + 1, n)
    keys = rng.integers(1, 1 << 63, n, dtype=np.int64)
    out = []
    for k in range(n):
        inst = instruments[which[k]]
        b = inst.book
        # a passive buy rests below the reference, an IOC buy goes through the asks
        ticks = -PASSIVE_TICKS if ioc[k] else int(away[k])
        px = inst.ref_price + (-ticks if buy[k] else ticks) * b.tick_size
        out.append(
            Order(
                sym=inst.symbol,
                side="buy" if buy[k] else "sell",
                qty=int(lots[k]) * b.lot_size,
                px=px,
                tif="ioc" if ioc[k] else "gtc",
                ik=int(keys[k]),
            )
        )
    return out


def heartbeats(n: int) -> list[bytes]:
    return [encode(Heartbeat(cid=k + 1, v=PROTOCOL_VERSION, bundle=True)) for k in range(n)]


def frames(orders: list[Order], batch: int) -> list[bytes]:
    """cid k + 1 for frame k."""
    if batch == 1:
        return [
            encode(NewOrder(cid=k + 1, **msgspec.structs.asdict(o))) for k, o in enumerate(orders)
        ]
    return [
        encode(NewOrders(cid=k + 1, orders=orders[i : i + batch]))
        for k, i in enumerate(range(0, len(orders) - batch + 1, batch))
    ]


class Counts:
    def __init__(self):
        self.answered = 0
        self.answered_in_window = 0
        self.skipped = 0
        self.lost = 0  # sent and never answered (within --drain)
        self.rejected = 0  # orders refused (by code: ``codes``)
        self.bad = 0  # answers that were not what was sent (echo) or not an answer
        self.codes: dict[str, int] = {}


def _reject(counts: Counts, code: str) -> None:
    counts.rejected += 1
    counts.codes[code] = counts.codes.get(code, 0) + 1


def answer_cids(raw: bytes, echo: bool, sent: list[bytes], counts: Counts) -> list[int]:
    """The cids a frame answers (notices answer none), counting refusals."""
    if echo:
        cid = decode_request(raw).cid
        if not 0 < cid <= len(sent) or raw != sent[cid - 1]:
            counts.bad += 1
            return []
        return [cid]
    cids = []
    for msg in decode_replies(raw):
        if isinstance(msg, (Ack, Heartbeat)):
            cids.append(msg.cid)
        elif isinstance(msg, BatchAck):
            for r in msg.results:
                if not isinstance(r, Ack):
                    _reject(counts, r.code)
            cids.append(msg.cid)
        elif isinstance(msg, Reject):
            _reject(counts, msg.code)
            cids.append(msg.cid)
        # else fills and cancels of the IOC remainders: notices
    return cids


def run(sock: zmq.Socket, sent: list[bytes], fps: float, args) -> tuple:
    """Send ``sent`` open loop at ``fps`` frames a second; (rtt, lag, counts)."""
    n = len(sent)
    due = (np.arange(n) + args.phase) / fps
    answered_at = np.full(n, np.nan)
    lag = np.full(n, np.nan)  # NaN: not sent (skipped)
    counts = Counts()
    fd = sock.getsockopt(zmq.FD)
    recv, send = sock.recv, sock.send
    clock = time.perf_counter
    t0 = clock()
    window = (t0 + args.warmup, t0 + args.warmup + args.seconds)
    give_up = window[1] + args.drain
    k = 0
    while True:
        now = clock()
        while k < n and t0 + due[k] <= now:
            if k - counts.answered - counts.skipped >= args.max_inflight:
                counts.skipped += 1
            else:
                try:
                    send(sent[k], NOBLOCK)
                    lag[k] = clock() - t0 - due[k]
                except zmq.Again:  # the connection's queue is full
                    counts.skipped += 1
            k += 1
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            raw = recv(NOBLOCK)
            at = clock()
            for cid in answer_cids(raw, args.echo, sent, counts):
                if 0 < cid <= n and np.isnan(answered_at[cid - 1]):
                    answered_at[cid - 1] = at
                    counts.answered += 1
                    counts.answered_in_window += window[0] <= at < window[1]
        now = clock()
        if k == n and (counts.answered + counts.skipped == n or now > give_up):
            break
        # with --max-inflight frames unanswered, the frames due meanwhile are skipped
        # anyway: wait for an answer instead of waking for each of them (an overloaded
        # server would otherwise lose CPU to its own load generator)
        full = k - counts.answered - counts.skipped >= args.max_inflight
        wake = t0 + due[k] if k < n and not full else give_up
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            # the socket's fd only signals that its state changed: check EVENTS first
            select.select([fd], [], [], max(0.0, wake - now))
    sent_ = ~np.isnan(lag)
    counts.lost = int((sent_ & np.isnan(answered_at)).sum())
    measured = (due >= args.warmup) & sent_
    rtt = answered_at[measured] - t0 - due[measured]
    return rtt, lag[measured], counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--server-key", required=True, help="the server's public key (Z85)")
    ap.add_argument("--secret", required=True, help="the bot's secret certificate")
    ap.add_argument("--rate", type=float, required=True, help="orders per second offered")
    ap.add_argument("--seconds", type=float, required=True, help="measured time")
    ap.add_argument("--warmup", type=float, default=0.5, help="sent before the measured time")
    ap.add_argument("--drain", type=float, default=10.0, help="wait for late answers")
    ap.add_argument("--batch", type=int, default=1, help="orders per frame")
    ap.add_argument("--ioc", type=float, default=0.5, help="share of IOC orders that trade")
    ap.add_argument("--max-inflight", type=int, default=20_000, help="frames unanswered")
    ap.add_argument("--heartbeats", action="store_true", help="Heartbeats instead of orders")
    ap.add_argument("--echo", action="store_true", help="the server echoes each frame")
    ap.add_argument("--phase", type=float, default=0.0, help="offset, in frame intervals")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="results (.npz)")
    args = ap.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.batch < 1 or not 0 <= args.phase < 1:
        ap.error("--rate and --seconds must be > 0, --batch >= 1 and 0 <= --phase < 1")
    fps = args.rate / args.batch
    n = max(1, int(fps * (args.warmup + args.seconds)))
    if args.heartbeats:
        sent = heartbeats(n)
    else:
        sent = frames(orders(n * args.batch, args.ioc, args.seed), args.batch)
    public, secret = load_secret_certificate(args.secret)
    keys = (args.server_key.encode(), public, secret)

    def unbounded(s: zmq.Socket) -> None:  # the bot bounds what is in flight itself
        s.sndhwm = s.rcvhwm = 0

    sock = connect_curve(zmq.Context.instance(), zmq.DEALER, args.endpoint, keys, 30, unbounded)
    if not args.echo:  # as a bot using gateway.client does: several messages a frame
        sock.send(encode(Heartbeat(cid=HANDSHAKE_CID, v=PROTOCOL_VERSION, bundle=True)))
        if not sock.poll(30_000) or decode_replies(sock.recv()) != [
            Heartbeat(cid=HANDSHAKE_CID, v=PROTOCOL_VERSION, bundle=True)
        ]:
            sys.exit("the gateway did not answer the handshake")
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    try:
        rtt, lag, c = run(sock, sent, fps, args)
    finally:
        sock.close(0)
    np.savez(
        args.out,
        rtt=rtt,
        lag=lag,
        answered=c.answered,
        answered_in_window=c.answered_in_window,
        skipped=c.skipped,
        lost=c.lost,
        rejected=c.rejected,
        bad=c.bad,
        cpu_seconds=time.process_time() - cpu,
        codes=np.array(sorted(f"{k}={v}" for k, v in c.codes.items()), dtype=str),
    )


if __name__ == "__main__":
    main()
