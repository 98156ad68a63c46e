"""``exch journal verify`` across shards: the clients' accounts, from every trade journaled.

The positions and cash of every client are folded from the journals' fills
(``tools.positionview``: the gateway's own ``gateway.positions``), and checked
against a second count that trusts nothing but each order's own record:

makers      every trade's maker order was accepted before it, belongs to the
            client the trade names, and is on the other side from its taker
positions   for every instrument, the positions of all clients sum to zero, and
            each client's position counted from its orders' own sides is the
            position the fold gives
cash        the cash the fills moved sums to zero over all clients, and each
            client's is what its orders' own sides say
limits      no client's position in an instrument ever went past its position
            limit (long or short) in the config given, as the peaks held say

Every journal is read up to its last seq when the check starts (the daemon may
keep running). A problem names the check, the seq (0: the journals as a whole)
and what is wrong; the first ``MAX_LISTED`` per check are kept, all are counted.
"""

from dataclasses import dataclass

import numpy as np

from exchange import topology
from exchange.config import Config
from exchange.journal import JournalReader
from exchange.records import EV_ACCEPTED, EVENT_DTYPE, SIDE_BUY
from exchange.topology import symbols
from gateway.limits import limits_for
from gateway.positions import F_PEAK_LONG, F_PEAK_SHORT, F_POS, trades_of
from gateway.slots import Slots
from tools.journalview import JournalView
from tools.positionview import from_journals
from tools.verify import MAX_LISTED, Findings

ACCOUNT_CHECKS = ("makers", "positions", "cash", "limits")
_ORDER = np.dtype([("order_id", "<i8"), ("client", "<u4"), ("side", "u1")])


@dataclass
class AccountsCheck(Findings):
    shards: list[str]
    clients: int = 0
    trades: int = 0


def _read(path: str, shard: str, upto: int, archive_dir: str | None) -> tuple[np.ndarray, ...]:
    """(accepted orders, trades) of one journal (and its archives), up to seq ``upto``."""
    orders, trades = [np.zeros(0, _ORDER)], [np.zeros(0, EVENT_DTYPE)]
    with JournalReader(path, archive_dir=archive_dir, name=shard) as journal:
        for _, ev in JournalView(journal, upto).iter_batches():
            acc = ev[ev["kind"] == EV_ACCEPTED]
            got = np.zeros(len(acc), _ORDER)
            for f in _ORDER.names:
                got[f] = acc[f]
            orders.append(got)
            trades.append(trades_of(ev))
    return np.concatenate(orders), np.concatenate(trades)


def check_accounts(config: Config, paths: dict[str, str] | None = None) -> AccountsCheck:
    """The checks above over the shards of ``paths`` (shard name -> journal directory;
    default: every shard of the config, where the config says)."""
    if paths is None:
        paths = {s.name: topology.journal_path(config, s.name) for s in config.shards}
    report = AccountsCheck(shards=list(paths))
    accounts = from_journals(config, paths, books=False)
    positions = accounts.positions
    report.trades = accounts.trades
    syms = symbols(config)
    # the second count, in the rows of the fold's own Slots so that the two line up
    slots: Slots = positions.slots
    pos = np.zeros((len(slots) + 1, len(syms)), np.int64)
    cash = np.zeros(len(slots) + 1, np.int64)
    start = 0
    for shard in config.shards:
        n = len(shard.instruments)
        upto = accounts.last_seqs[shard.name]  # as far as the fold read: the same trades
        if upto:
            orders, trades = _read(
                paths[shard.name], shard.name, upto, config.journal.archive_dir or None
            )
            _count(report, orders, trades, start, slots, pos, cash)
        start += n
    report.clients = len(slots)
    for inst, sym in enumerate(syms):
        total = int(pos[:, inst].sum())
        if total:
            report.add("positions", 0, f"{sym}: the positions of all clients sum to {total}")
    moved = int(cash.sum())
    if moved:
        report.add("cash", 0, f"the cash moved by all fills sums to {moved}")
    for row, client in enumerate(slots.ids):
        own = pos[row]
        folded = positions.acct[row, :, F_POS]
        for inst in np.flatnonzero(own != folded).tolist():
            report.add(
                "positions",
                0,
                f"client {client} {syms[inst]}: its orders' sides say position {own[inst]}, "
                f"the fills fold to {folded[inst]}",
            )
        if cash[row] != positions.cash[row]:
            report.add(
                "cash",
                0,
                f"client {client}: its orders' sides say cash moved {cash[row]}, "
                f"the fills fold to {positions.cash[row]}",
            )
        _limits(report, config, client, positions.acct[row], syms)
    return report


def _count(report, orders, trades, start, slots, pos, cash) -> None:
    """Positions and cash of one shard's trades, each side from its own order's record."""
    by_id = np.argsort(orders["order_id"], kind="stable")
    known = orders[by_id]
    maker = np.zeros(len(trades), _ORDER)
    found = np.zeros(len(trades), bool)
    if len(known):
        at = np.minimum(np.searchsorted(known["order_id"], trades["other_id"]), len(known) - 1)
        found = known["order_id"][at] == trades["other_id"]
        maker[found] = known[at[found]]
    seq, oid, other = trades["seq"], trades["order_id"], trades["other_id"]
    for k in np.flatnonzero(~found).tolist():
        report.add("makers", seq[k], f"maker order {other[k]} was never accepted")
    for k in np.flatnonzero(found & (maker["client"] != trades["other_client"])).tolist():
        report.add(
            "makers",
            seq[k],
            f"maker order {other[k]} is client {maker['client'][k]}'s, the trade says client "
            f"{trades['other_client'][k]}",
        )
    for k in np.flatnonzero(found & (maker["side"] == trades["side"])).tolist():
        report.add(
            "makers", seq[k], f"order {oid[k]} traded with {other[k]}, on the same side as it"
        )
    qty, px = trades["qty"].astype(np.int64), trades["price"].astype(np.int64)
    inst = trades["instrument"].astype(np.int64) + start
    sides = ((trades["client"], trades["side"]), (maker["client"], maker["side"]))
    for clients, side in sides:
        sign = np.where(side == SIDE_BUY, 1, -1)
        rows = _rows(slots, clients)
        np.add.at(pos, (rows, inst), sign * qty)
        np.add.at(cash, rows, -sign * qty * px)


def _rows(slots: Slots, clients: np.ndarray) -> np.ndarray:
    """The fold's rows of these clients; one it never saw gets the spare last row."""
    ids, at = np.unique(clients, return_inverse=True)
    spare = len(slots)
    rows = [slots.find(c) for c in ids.tolist()]
    return np.array([spare if r is None else r for r in rows], np.int64)[at]


def _limits(report, config, client: int, acct: np.ndarray, syms: list[str]) -> None:
    limits = limits_for(config, client).max_position
    for inst, sym in enumerate(syms):
        for peak, way in ((acct[inst, F_PEAK_LONG], "long"), (acct[inst, F_PEAK_SHORT], "short")):
            if peak > limits[inst]:
                report.add(
                    "limits",
                    0,
                    f"client {client} {sym}: held {peak} {way}, past its position limit of "
                    f"{limits[inst]}",
                )


def render(report: AccountsCheck) -> str:
    head = f"accounts ({', '.join(report.shards)})"
    facts = f"{report.clients} clients, {report.trades} trades"
    if report.ok:
        return (
            f"{head}: OK, {facts}: every maker on the other side, positions sum to zero per "
            "instrument, cash moves sum to zero, no position past its limit"
        )
    total = sum(report.counts.values())
    per = ", ".join(f"{c} {report.counts[c]}" for c in ACCOUNT_CHECKS if c in report.counts)
    lines = [f"{head}: FAIL, {total} problem(s): {per} ({facts})"]
    for p in sorted(report.problems, key=lambda p: p.seq):
        lines.append(f"  {p.check:<12} seq {p.seq:<10} {p.message}")
    hidden = total - len(report.problems)
    if hidden:
        lines.append(f"  ... and {hidden} more (the first {MAX_LISTED} per check are listed)")
    return "\n".join(lines)
