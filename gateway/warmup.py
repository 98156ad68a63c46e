"""Compile (or load from Numba's cache) the gateway's kernels before it serves.

The event path (``unseen``, the positions, the risk tables, the book mirrors),
the risk checks' batch pass, the key filter and the live-order table's growth
are Numba code that would otherwise compile at the first drained batch, the
first order, or the first growth of the table, while a client waits: seconds on
a cold cache, holding the GIL (the ZAP thread's CURVE handshakes stall too).
``warm_up`` runs each once on throwaway copies made from the same config, with
events a real book produced. ``specialized_since`` names the kernels that were
compiled for new argument types after all (a warm-up that missed them): the
gateway logs them when it stops.
"""

import sys
import time

import numpy as np
from numba.core.registry import CPUDispatcher

from exchange import ordertable
from exchange.book import Book
from exchange.records import CMD_NEW, SIDE_BUY, SIDE_SELL, TIF_IOC, commands
from exchange.statehash import CANONICAL_FIELDS
from exchange.topology import symbols
from gateway.discard import compile_discard
from gateway.keyfilter import KeyFilter
from gateway.mirror import BookMirror, market_data
from gateway.positions import Positions
from gateway.risk import Risk
from gateway.shardlink import unseen
from shm.counters import counter_add, gauge_set

PACKAGES = ("exchange", "gateway", "shm")  # whose kernels the gateway calls


def _book(inst) -> tuple[Book, np.ndarray]:
    """A book where a resting buy met a sell: its ACCEPTED, TRADE and DEPTH events."""
    b = inst.book
    cmds = commands(2)
    cmds["seq"] = [1, 2]
    cmds["kind"] = CMD_NEW
    cmds["order_id"] = [1, 2]
    cmds["req_id"] = [1, 2]
    cmds["side"] = [SIDE_BUY, SIDE_SELL]
    cmds["tif"] = [0, TIF_IOC]
    cmds["price"] = inst.ref_price
    cmds["qty"] = b.lot_size
    cmds["client"] = [1, 2]
    cmds["qty"][0] *= 2  # half of the buy rests
    book = Book(b)
    return book, book.process(cmds)


def warm_up(config) -> float:
    """Run every compiled path of the gateway once; returns the seconds it took."""
    t0 = time.perf_counter()
    syms = symbols(config)
    positions = Positions(syms, [config.instrument(s).ref_price for s in syms])
    risk = Risk(config, positions)
    inst = config.instrument(config.shards[0].instruments[0])
    book, events = _book(inst)
    risk.reset(0, [book.canonical_rows()])
    events, _, _, _ = unseen(events, (0, 0))
    positions.apply(events, risk.offsets[0])
    risk.apply(events, 0)
    risk.release_answered(events)
    risk.reset(0, [book.canonical_rows()])  # takes off what the events put on
    one = np.ones(1, np.int64)
    risk.admit_run([1], [1], 0 * one, SIDE_BUY * one, one, inst.ref_price * one, one < 0)
    mirror = BookMirror(inst.symbol, inst.book)
    market_data(events, [mirror])
    rows = book.canonical_rows()
    mirror.load_resting(0, rows[:, 0], rows[:, 1], rows[:, CANONICAL_FIELDS.index("shown")])
    keys = KeyFilter(8)
    keys.add(np.array([1], np.uint32), np.array([2], np.uint64))
    keys.may_hold(1, (1 << 64) - 1)
    keys.may_hold_many(np.array([1], np.uint64), np.array([(1 << 64) - 1], np.uint64))
    table = ordertable.new_table(2)
    for oid in range(1, len(table) // 2 + 1):
        ordertable.insert(table, oid)
    table = ordertable.fit(table, len(table))  # grows: rehashes
    ordertable.remove(table, ordertable.find(table, 1))
    compile_discard()
    words = np.zeros(2, np.int64)  # a counter block's values: int64 words
    counter_add(words, 0, 1)
    gauge_set(words, 1, 1)
    return time.perf_counter() - t0


def kernel_signatures() -> dict[str, list[str]]:
    """The argument types each loaded kernel of ours is compiled for, by kernel."""
    out = {}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in PACKAGES:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, CPUDispatcher):
                name = f"{obj.py_func.__module__}.{obj.py_func.__name__}"
                out[name] = [str(sig) for sig in obj.signatures]
    return out


def specialized_since(before: dict[str, list[str]]) -> dict[str, list[str]]:
    """The kernels compiled for argument types they had not met in ``before``, with those
    types: each one stalled the loop for a compile (seconds on a cold cache) while a
    client waited."""
    return {
        name: sigs[len(before.get(name, ())) :]
        for name, sigs in kernel_signatures().items()
        if len(sigs) > len(before.get(name, ()))
    }
