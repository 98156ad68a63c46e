"""The demo's market maker: a ladder of quotes on both sides of a fair price that wanders.

    python -m tools.maker --key maker.key_secret --symbol ACME [--config F] [--seconds N]

Each step (``STEP_SECONDS``) the fair price moves a tick up, down or not at all,
leans against the maker's inventory (a maker that has sold too much quotes
higher, so the takers' flow moves the price), and each quote is moved there with
a Replace (a new order once it is filled). Fills arrive as notices and update
the inventory. It arms cancel on disconnect, so its quotes vanish if it dies,
and cancels them all when stopped (SIGTERM, SIGINT or the end of ``seconds``).
"""

import random
import sys
from dataclasses import dataclass

from gateway.client import Client
from gateway.protocol import Ack, Cancelled, Fill, Replaced
from tools.botrun import bot_args, bot_client, run_bot

STEP_SECONDS = 0.25
LEVELS = 5  # quotes per side
SPREAD_TICKS = 2  # from the fair price to the first quote
GAP_TICKS = 1  # between quotes
SIZE_LOTS = (5, 20)
LEAN_TICKS_PER_LOT = 0.02  # how far the quotes lean per lot of inventory
BAND_BPS = 500  # the fair price stays within ref_price +- 5% (inside the gateway's collar)


@dataclass
class Quote:
    side: str
    level: int
    oid: int = 0  # 0: none resting
    px: int = 0
    qty: int = 0  # total (filled + open), as the last Ack or Replaced said
    leaves: int = 0


class Maker:
    def __init__(self, client: Client, sym: str, ref_price: int, tick: int, lot: int, rng):
        self.client = client
        self.sym = sym
        self.tick = tick
        self.lot = lot
        self.rng = rng
        self.fair = ref_price
        self.low = ref_price * (10_000 - BAND_BPS) // 10_000 // tick * tick
        self.high = ref_price * (10_000 + BAND_BPS) // 10_000 // tick * tick
        self.position = 0  # lots bought minus lots sold
        self.fills = 0
        self.quotes = [Quote(side, i) for side in ("buy", "sell") for i in range(LEVELS)]

    def _take(self, notices) -> None:
        for n in notices:
            q = next((q for q in self.quotes if q.oid and q.oid == getattr(n, "oid", 0)), None)
            if isinstance(n, Fill):
                self.fills += 1
                self.position += n.qty // self.lot if n.side == "buy" else -(n.qty // self.lot)
                if q is not None:
                    q.leaves = n.leaves
                    if not n.leaves:
                        q.oid = 0
            elif isinstance(n, Cancelled) and q is not None:
                q.oid = 0

    def _target(self, q: Quote) -> int:
        lean = round(self.position * LEAN_TICKS_PER_LOT)
        away = SPREAD_TICKS + q.level * GAP_TICKS
        ticks = -away - lean if q.side == "buy" else away - lean
        return self.fair + ticks * self.tick

    def step(self) -> None:
        self.client.heartbeat(cod=True)
        self._take(self.client.notices())
        step = self.tick * self.rng.choice((-1, 0, 1))
        self.fair = min(self.high, max(self.low, self.fair + step))
        for q in self.quotes:
            px = self._target(q)
            if q.oid and q.px == px:
                continue
            size = self.lot * self.rng.randint(*SIZE_LOTS)
            if q.oid:
                reply = self.client.replace(self.sym, q.oid, px, q.qty - q.leaves + size)
                if isinstance(reply, Replaced):
                    q.px, q.qty, q.leaves = reply.px, reply.qty, reply.leaves
                    continue
                q.oid = 0  # filled or gone meanwhile: quote anew
            # cancel_oldest: should a moved quote meet the maker's own other side, that goes
            reply = self.client.new_order(self.sym, q.side, size, px, stp="cancel_oldest")
            if isinstance(reply, Ack):
                q.oid, q.px, q.qty, q.leaves = reply.oid, px, size, size
            self._take(self.client.notices())

    def stop(self) -> None:
        self.client.mass_cancel(self.sym)


def main(argv=None) -> int:
    args = bot_args(__doc__.splitlines()[0], argv)
    inst, client = bot_client(args)
    book = inst.book
    rng = random.Random(args.seed)
    with client:
        maker = Maker(client, args.symbol, inst.ref_price, book.tick_size, book.lot_size, rng)
        return run_bot(maker, args.seconds, STEP_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
