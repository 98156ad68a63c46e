"""Each client's limits: ``[risk]`` and ``[rate]`` of the config, under its ``[[clients]]`` table.

The instruments of the risk and positions state are numbered in shard order
(``symbols``: the first shard's instruments, then the next shard's...), so a
shard's instrument ``i`` is number ``offsets(config)[shard] + i``.

A symbol's position limit for a client is, first found: the client's
``positions`` entry, ``[risk.positions]``, the client's ``max_position``,
``[risk] max_position``. Every other limit is the client's own value, else the
default. The config does not change while a process runs, so limits are worked
out once per client and kept.
"""

from typing import NamedTuple

from exchange.config import ClientLimits, Config
from exchange.topology import symbols


class Limits(NamedTuple):
    max_order_qty: int
    max_notional: int
    collar_bps: int
    collar_ticks: int  # 0: no collar in ticks
    max_open_orders: int
    max_position: tuple[int, ...]  # per instrument, in ``symbols`` order
    starting_cash: int
    orders_per_second: int
    burst: int


def limits_for(config: Config, client: int) -> Limits:
    own = next((c for c in config.clients if c.client == client), ClientLimits(client=client))
    risk, rate = config.risk, config.rate

    def pick(mine, default):
        return default if mine is None else mine

    fallback = pick(own.max_position, risk.max_position)
    positions = tuple(
        own.positions.get(sym, risk.positions.get(sym, fallback)) for sym in symbols(config)
    )
    return Limits(
        max_order_qty=pick(own.max_order_qty, risk.max_order_qty),
        max_notional=pick(own.max_notional, risk.max_notional),
        collar_bps=pick(own.price_collar_bps, risk.price_collar_bps),
        collar_ticks=pick(own.price_collar_ticks, risk.price_collar_ticks),
        max_open_orders=pick(own.max_open_orders, risk.max_open_orders),
        max_position=positions,
        starting_cash=pick(own.starting_cash, risk.starting_cash),
        orders_per_second=pick(own.orders_per_second, rate.orders_per_second),
        burst=pick(own.burst, rate.burst),
    )


class LimitTable:
    """``limits_for`` with each client's answer kept."""

    def __init__(self, config: Config):
        self.config = config
        self._limits: dict[int, Limits] = {}

    def __call__(self, client: int) -> Limits:
        limits = self._limits.get(client)
        if limits is None:
            limits = self._limits[client] = limits_for(self.config, client)
        return limits
