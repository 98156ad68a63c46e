"""The demo's noise taker: orders that take liquidity at random, with a slowly changing lean.

    python -m tools.taker --key taker.key_secret --symbol ACME [--config F] [--seconds N]

Each step (``STEP_SECONDS``), most of the time, it buys or sells a few lots:
an IOC limit order a tick through the best opposite price, or a market order.
Which side is a coin that leans one way or the other for a while (a new lean
every ``LEAN_STEPS`` steps on average), so the maker's inventory builds up and
the price walks. It never rests an order.
"""

import random
import sys

from gateway.client import Client
from gateway.protocol import BookSnapshot, Fill
from tools.botrun import bot_args, bot_client, run_bot

STEP_SECONDS = 0.3
ACT = 0.7  # the chance of an order in a step
MARKET = 0.25  # the share of market orders
LOTS = (1, 8)
LEAN = 0.3  # the coin's lean: P(buy) is 0.5 +- up to this
LEAN_STEPS = 40


class Taker:
    def __init__(self, client: Client, sym: str, tick: int, lot: int, rng):
        self.client = client
        self.sym = sym
        self.tick = tick
        self.lot = lot
        self.rng = rng
        self.lean = 0.0
        self.orders = 0
        self.filled = 0

    def step(self) -> None:
        for n in self.client.notices():
            if isinstance(n, Fill):
                self.filled += n.qty
        if self.rng.random() < 1 / LEAN_STEPS:
            self.lean = self.rng.uniform(-LEAN, LEAN)
        if self.rng.random() >= ACT:
            return
        side = "buy" if self.rng.random() < 0.5 + self.lean else "sell"
        qty = self.lot * self.rng.randint(*LOTS)
        if self.rng.random() < MARKET:
            self.client.new_order(self.sym, side, qty, type="market")
        else:
            book = self.client.book(self.sym, 1)
            if not isinstance(book, BookSnapshot):
                return
            levels = book.asks if side == "buy" else book.bids
            if not levels:
                return
            px = levels[0][0] + (self.tick if side == "buy" else -self.tick)
            self.client.new_order(self.sym, side, qty, px, tif="ioc")
        self.orders += 1

    def stop(self) -> None:
        """Nothing rests: IOC and market orders never do."""


def main(argv=None) -> int:
    args = bot_args(__doc__.splitlines()[0], argv)
    inst, client = bot_client(args)
    with client:
        taker = Taker(
            client, args.symbol, inst.book.tick_size, inst.book.lot_size, random.Random(args.seed)
        )
        return run_bot(taker, args.seconds, STEP_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
