"""Positions, P&L and open orders from the shards' journals: what ``exch positions``
shows, and what a gateway rebuilds at start (the same ``gateway.positions`` and
``gateway.risk`` code, over the same journals).

Each shard's journal is read up to its last seq at the moment it is opened
(``tools.journalview``), so the daemon may keep running; orders in flight then
are not counted anywhere yet. ``books=False`` leaves the books (open orders)
out: the conservation checks of ``exch journal verify`` need the fills only.
"""

import os
from typing import NamedTuple

import msgspec

from exchange import topology
from exchange.config import Config
from exchange.engine import ShardEngine
from exchange.journal import JournalReader
from exchange.topology import symbols
from gateway.positions import Positions
from gateway.report import position_report
from gateway.risk import Risk
from tools.journalview import JournalView


class Accounts(NamedTuple):
    positions: Positions
    risk: Risk
    last_seqs: dict[str, int]  # shard -> the seq its journal was read up to (0: none yet)
    trades: int


def from_journals(
    config: Config, paths: dict[str, str] | None = None, books: bool = True
) -> Accounts:
    """Every shard's journal (``paths``: shard name -> directory, default the config's;
    a shard left out, or without a journal yet, counts as empty)."""
    if paths is None:
        paths = {s.name: topology.journal_path(config, s.name) for s in config.shards}
    syms = symbols(config)
    positions = Positions(syms, [config.instrument(s).ref_price for s in syms])
    risk = Risk(config, positions)
    seqs, trades = {}, 0
    for index, shard in enumerate(config.shards):
        path = paths.get(shard.name)
        if path is None or not os.path.exists(os.path.join(path, "data.mdb")):
            seqs[shard.name] = 0
            continue
        with JournalReader(
            path, archive_dir=config.journal.archive_dir or None, name=shard.name
        ) as journal:
            view = JournalView(journal, journal.last_seq)
            seqs[shard.name] = view.last_seq
            trades += positions.replay(view.iter_batches(), risk.offsets[index])
            if books:
                configs = [config.instrument(sym).book for sym in shard.instruments]
                engine = ShardEngine(index, configs, view)
                engine.recover()
                for sym, book in zip(shard.instruments, engine.books, strict=True):
                    risk.load(sym, book.canonical_rows())
    return Accounts(positions, risk, seqs, trades)


def report_doc(accounts: Accounts, client: int, killed: set[int]) -> dict:
    """One client's standing as the gateway's PositionReport says it (``killed``: the
    blocked clients), without its cid."""
    for c in killed:
        accounts.risk.kill(c)
    report = position_report(0, client, accounts.positions, accounts.risk)
    doc = msgspec.to_builtins(report)
    del doc["t"], doc["cid"]
    return {"client": client, **doc}


def clients(accounts: Accounts) -> list[int]:
    """Every client that ever traded or has orders, in id order."""
    return sorted(
        c
        for c in accounts.positions.slots.ids
        if accounts.positions.traded(c) or accounts.risk.open_orders(c)
    )


def render(doc: dict) -> str:
    """A client's standing for a person: a header line, then a line per instrument."""
    blocked = "  BLOCKED by the kill switch" if doc["killed"] else ""
    lines = [
        f"client {doc['client']}: cash {doc['cash']:,}, {doc['orders']} open order(s){blocked}"
    ]
    for p in doc["positions"]:
        avg = f"{p['cost'] / p['pos']:,.2f}" if p["pos"] else "-"
        lines.append(
            f"  {p['sym']:<10} pos {p['pos']:>8,}  avg {avg:>12}  realised {p['realised']:>12,}"
            f"  unrealised {p['unrealised']:>12,} @ {p['mark']:,}  volume {p['volume']:,}"
            f"  open buy {p['open_buy']:,} / sell {p['open_sell']:,} ({p['orders']} orders)"
        )
    return "\n".join(lines)
