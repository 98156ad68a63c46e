"""Seeded random command streams that exercise every rule of a book.

A stream mixes all order types (stops and stop-limits with triggers on both
sides of the mid, some reached already or off the band; icebergs, some with a
display that is invalid or on an order that cannot have one), TIFs, post-only,
every STP mode, a few clients, cancels and replaces of recent (often live) and
unknown order ids (some giving an iceberg a new display, or an order one),
orders of other clients, mass cancels, GTD and DAY orders with expiries around a
clock that moves along the stream (some passed already, some invalid) and
EXPIRE commands carrying that clock (some late, a few invalid), HALTs and RESUMEs
(some streams spend a third of their time halted, so orders pile up crossed for
the reopening auction), and a share of
invalid commands, with prices around a mid that drifts across the price band. Configs
with a small capacity make REJ_BOOK_FULL happen. Everything is drawn from the
numpy Generator it is given, so a seed reproduces a stream exactly.
"""

import numpy as np

from exchange.bookconfig import BookConfig
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    FLAG_POST_ONLY,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_FOK,
    TIF_GTC,
    TIF_GTD,
    TIF_IOC,
    TYPE_LIMIT,
    TYPE_MARKET,
    TYPE_STOP,
    TYPE_STOP_LIMIT,
    commands,
)

# How far from the mid orders may rest, in ticks (one is drawn per stream): the
# narrow ones make most orders meet the other side, the wide ones build depth.
SPREAD_TICKS = (4, 12, 40)
# The stream's clock starts here (ns since the epoch) and moves a few steps a command
CLOCK_START = 1_800_000_000 * 10**9
CLOCK_STEP = 1_000_000


def random_config(rng: np.random.Generator) -> BookConfig:
    tick = int(rng.choice([1, 1, 5, 25]))
    lot = int(rng.choice([1, 1, 10]))
    levels = int(rng.choice([20, 200, 5000]))
    min_price = tick * int(rng.integers(1, 1000))
    return BookConfig(
        min_price=min_price,
        max_price=min_price + tick * (levels - 1),
        tick_size=tick,
        lot_size=lot,
        max_qty=lot * int(rng.choice([12, 50, 10_000])),
        capacity=int(rng.choice([4, 16, 64, 1 << 16], p=[0.05, 0.1, 0.2, 0.65])),
    )


def _pick(rng: np.random.Generator, n: int, values, p) -> np.ndarray:
    return rng.choice(np.asarray(values), size=n, p=p)


def random_stream(
    rng: np.random.Generator,
    config: BookConfig,
    n: int,
    *,
    first_seq: int = 1,
    first_order_id: int = 1,
    clients: int = 3,
) -> np.ndarray:
    """n commands for one book, seqs from first_seq, NEW order ids from first_order_id.

    The mix (how often orders are cancelled or replaced, how far from the mid
    they rest) is itself drawn, so that some streams keep a thin book and others
    a deep one.
    """
    cmds = commands(n)
    tick, lot = config.tick_size, config.lot_size

    cmds["seq"] = first_seq + np.cumsum(rng.integers(1, 3, size=n)) - 1
    cmds["req_id"] = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    cmds["idem_key"] = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 2**62, size=n))
    cmds["instrument"] = rng.integers(0, 2**16)
    client = rng.integers(1, clients + 1, size=n)

    p_cancel, p_replace = rng.uniform(0.03, 0.2, size=2)
    p_expire = rng.choice([0.0, 0.01, 0.05])
    p_halt = rng.choice([0.0, 0.003, 0.01])
    kind = _pick(
        rng,
        n,
        [CMD_NEW, CMD_CANCEL, CMD_REPLACE, CMD_MASS_CANCEL, CMD_EXPIRE, CMD_HALT, CMD_RESUME]
        + [0, 99],
        [0.98 - p_cancel - p_replace - p_expire - 3 * p_halt, p_cancel, p_replace, 0.005]
        + [p_expire, p_halt, 2 * p_halt, 0.0075, 0.0075],
    )
    is_new = kind == CMD_NEW
    side = _pick(rng, n, [SIDE_BUY, SIDE_SELL, 0, 3], [0.495, 0.495, 0.005, 0.005])
    p_dated = rng.choice([0.0, 0.1, 0.3])
    tif = _pick(
        rng,
        n,
        [TIF_GTC, TIF_IOC, TIF_FOK, TIF_GTD, TIF_DAY, 5],
        [0.65 - p_dated, 0.18, 0.165, 0.7 * p_dated, 0.3 * p_dated, 0.005],
    )
    p_stop = rng.choice([0.0, 0.04, 0.15])
    ord_type = _pick(
        rng,
        n,
        [TYPE_LIMIT, TYPE_MARKET, TYPE_STOP, TYPE_STOP_LIMIT, 4],
        [0.9 - p_stop, 0.095, p_stop / 2, p_stop / 2, 0.005],
    )
    stop = (ord_type == TYPE_STOP) | (ord_type == TYPE_STOP_LIMIT)
    # bits no order may carry (FLAG_RETRY, 2, is the gateway's: the shard answers a
    # keyed NEW that carries it before any book sees it)
    flags = _pick(rng, n, [0, FLAG_POST_ONLY, 4, 5], [0.87, 0.12, 0.005, 0.005])
    flags = np.where((ord_type != TYPE_LIMIT) & (rng.random(n) < 0.9), 0, flags)
    stp = _pick(rng, n, [0, 1, 2, 3, 4, 7], [0.3, 0.14, 0.14, 0.14, 0.27, 0.01])

    # The mid walks in ticks across the band, bouncing off its edges, so that
    # resting orders are left behind at many prices. Orders sit mostly on the
    # passive side of the mid (depth builds up), sometimes through it.
    levels = config.levels
    walk = np.cumsum(rng.choice([-1, 0, 0, 0, 1], size=n)) + levels // 2
    period = 2 * max(levels - 1, 1)
    mid = np.minimum(walk % period, period - walk % period)
    away = rng.integers(-2, int(rng.choice(SPREAD_TICKS)) + 1, size=n)
    price = config.min_price + tick * (mid + np.where(side == SIDE_SELL, away, -away))
    price = np.clip(price, config.min_price, config.max_price)
    odd = rng.random(n)
    price = np.where(odd < 0.01, config.min_price - tick, price)
    price = np.where((odd >= 0.01) & (odd < 0.02), config.max_price + tick, price)
    if tick > 1:
        price = np.where((odd >= 0.02) & (odd < 0.03), price + 1, price)

    # A stop's trigger: mostly beyond the mid on its own side (a buy stop above),
    # some through it (reached already once there was a trade), a few off the band
    # or on an order that is not a stop.
    beyond = rng.integers(-2, int(rng.choice(SPREAD_TICKS)) + 1, size=n)
    trigger = config.min_price + tick * (mid + np.where(side == SIDE_SELL, -beyond, beyond))
    trigger = np.clip(trigger, config.min_price, config.max_price)
    odd = rng.random(n)
    trigger = np.where(odd < 0.01, config.min_price - tick, trigger)
    trigger = np.where((odd >= 0.01) & (odd < 0.02), config.max_price + tick, trigger)
    trigger_tick = np.maximum(trigger // tick, 0)
    trigger_tick = np.where(stop | (rng.random(n) < 0.003), trigger_tick, 0)

    qty = lot * rng.integers(1, 9, size=n)
    qty = np.where(rng.random(n) < 0.1, lot * rng.integers(9, 40, size=n), qty)
    odd = rng.random(n)
    qty = np.where(odd < 0.005, 0, qty)
    qty = np.where((odd >= 0.005) & (odd < 0.01), -lot, qty)
    qty = np.where((odd >= 0.01) & (odd < 0.02), config.max_qty + lot, qty)
    if lot > 1:
        qty = np.where((odd >= 0.02) & (odd < 0.03), qty + 1, qty)

    # Icebergs: some streams have none, others many, mostly GTC limit orders with a
    # display of 1-3 lots and a reserve behind it; a few displays are invalid (negative,
    # above qty, off the lot) or on an order that is not a GTC limit. A replace mostly
    # keeps the display (0), sometimes sets one.
    gtc_limit = (tif == TIF_GTC) & (ord_type == TYPE_LIMIT)
    p_ice = rng.choice([0.0, 0.1, 0.3])
    iceberg = (rng.random(n) < p_ice) & (gtc_limit | (rng.random(n) < 0.05))
    valid = (qty > 0) & (qty <= config.max_qty) & (qty % lot == 0)
    bigger = np.minimum(lot * rng.integers(2, 25, size=n), config.max_qty)
    qty = np.where(iceberg & valid, bigger, qty)
    display = lot * rng.integers(1, 4, size=n)
    display = np.where(iceberg & (qty > 0), np.minimum(display, qty), display)
    odd = rng.random(n)
    display = np.where(odd < 0.01, -lot, display)
    display = np.where((odd >= 0.01) & (odd < 0.02), np.abs(qty) + lot, display)
    if lot > 1:
        display = np.where((odd >= 0.02) & (odd < 0.03), display + 1, display)
    display = np.where(iceberg | ((kind == CMD_REPLACE) & (rng.random(n) < 0.2)), display, 0)

    # Expiries: a clock moves along the stream; an EXPIRE mostly carries it (some a
    # late time, a few none); a GTD/DAY order mostly expires a little ahead of it (some
    # at or before, so before the book's now once an EXPIRE said so; a few without an
    # expiry), and a few other orders and replaces carry an expiry they must not.
    clock = CLOCK_START + CLOCK_STEP * np.cumsum(rng.integers(0, 4, size=n))
    ahead = CLOCK_STEP * rng.integers(-3, int(rng.choice([10, 60, 400])), size=n)
    dated = (tif == TIF_GTD) | (tif == TIF_DAY)
    expires = np.where(dated, clock + ahead, 0)
    odd = rng.random(n)
    expires = np.where(odd < 0.005, 0, expires)
    expires = np.where((odd >= 0.005) & (odd < 0.01), -CLOCK_STEP, expires)
    expires = np.where((odd >= 0.01) & (odd < 0.015), clock + ahead, expires)
    late = CLOCK_STEP * rng.integers(0, 20, size=n) * (rng.random(n) < 0.2)
    expires = np.where(kind == CMD_EXPIRE, clock - late, expires)
    expires = np.where((kind == CMD_EXPIRE) & (odd < 0.01), 0, expires)
    expires = np.where(kind == CMD_REPLACE, np.where(odd < 0.015, clock + ahead, 0), expires)

    # NEW ids count up; a few NEWs reuse a recent id (live or not).
    order_id = first_order_id + np.cumsum(is_new) - 1
    reuse = is_new & (rng.random(n) < 0.01)
    order_id = np.where(reuse, order_id - rng.integers(1, 40, size=n), order_id)

    # Cancels and replaces mostly aim at a recent GTC limit NEW (as its owner,
    # at or near its price); some at an id nobody has, some as another client.
    restable = is_new & ((((tif == TIF_GTC) | dated) & (ord_type == TYPE_LIMIT)) | stop)
    rank = np.cumsum(restable) - 1
    acts = (kind == CMD_CANCEL) | (kind == CMD_REPLACE)
    targets = acts & (rank >= 0) & (rng.random(n) < 0.97)
    if restable.any():
        back = np.minimum(rng.geometric(0.15, size=n) - 1, np.maximum(rank, 0))
        target = np.flatnonzero(restable)[np.maximum(rank - back, 0)]
        order_id = np.where(targets, order_id[target], order_id)
        client = np.where(targets & (rng.random(n) < 0.95), client[target], client)
        keep_price = targets & (kind == CMD_REPLACE) & (rng.random(n) < 0.5)
        price = np.where(keep_price, price[target], price)
        # a replace of a stop restates a trigger (its own, often), of another order not
        replaces = targets & (kind == CMD_REPLACE)
        keep_trigger = replaces & stop[target] & (rng.random(n) < 0.5)
        trigger_tick = np.where(replaces & ~stop[target], 0, trigger_tick)
        trigger_tick = np.where(keep_trigger, trigger_tick[target], trigger_tick)
    order_id = np.where(acts & ~targets, -1 - rng.integers(0, 1000, size=n), order_id)
    order_id = np.where(kind == CMD_MASS_CANCEL, 0, order_id)

    cmds["kind"] = kind
    cmds["order_id"] = order_id
    cmds["price"] = price
    cmds["qty"] = qty
    cmds["client"] = client
    cmds["side"] = side
    cmds["tif"] = tif
    cmds["ord_type"] = ord_type
    cmds["flags"] = flags
    cmds["stp"] = stp
    cmds["trigger_tick"] = np.where((kind == CMD_NEW) | (kind == CMD_REPLACE), trigger_tick, 0)
    cmds["display"] = np.where((kind == CMD_NEW) | (kind == CMD_REPLACE), display, 0)
    carries = (kind == CMD_NEW) | (kind == CMD_REPLACE) | (kind == CMD_EXPIRE)
    cmds["expires"] = np.where(carries, expires, 0)
    return cmds


def random_batches(rng: np.random.Generator, n: int, max_batch: int = 300) -> list[slice]:
    """Cut n commands into batches of random sizes, single commands included."""
    cuts = []
    start = 0
    while start < n:
        size = 1 if rng.random() < 0.2 else int(rng.integers(1, max_batch + 1))
        cuts.append(slice(start, min(start + size, n)))
        start += size
    return cuts
