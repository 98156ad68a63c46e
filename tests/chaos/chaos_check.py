"""What a chaos run must leave true, checked from the bots' own records and the journals.

``check(config, records, kills)`` reads every shard's journal (the daemon
stopped) and returns a ``Report`` whose ``violations`` list each broken promise:

acked        every order a bot saw acknowledged is in its shard's journal: the
             order, owned by that bot, on that instrument, and the idempotency
             entry of (bot, key) naming that order id and seq
one order    every acknowledgement under one (bot, key) names the same order;
per key      no (client, key) has an entry in two shards; no (client, key) is on
             more than one journaled NEW the book accepted (an order), in one
             shard or across shards (a NEW the book rejected made no order and
             left the key free: a later one under it may be accepted)
reuses       every cross-instrument reuse of a key (a NewOrder under the key of
             an order the bot saw acknowledged, on the other shard) was answered
             ``conflict`` in the end, never acknowledged, and no journal has an
             order (an accepted NEW) of that (client, key) on the reuse's shard
journal      ``tools.verify`` finds nothing wrong in any shard's journal (seqs,
             events, no fill beyond an order's quantity, idempotency, replay
             byte for byte, snapshot + replay = full replay)
state hash   the state hashes the live shard recorded in its latest snapshot
             equal a fresh replay of the journal up to that seq
positions    every trade moves its quantity from a seller to a buyer (the maker's
             order is on the other side), so positions sum to zero per instrument
fills        every fill a bot was told of is a journaled trade of its order,
             at that price and quantity
answers      every request was answered in the end; no order was refused except
             by a retryable code (which the bot retried)
halts        nothing traded on a halted instrument but the auction of the RESUME
             that reopened it, all at one price; every HALT and RESUME answered
             its STATE
kept trading every bot had orders acknowledged after the last kill, and when the
             gateway was killed (alone, or with the supervisor) every bot had to
             reconnect and did

A kill's victim is a shard's name, ``gateway``, ``supervisor`` (the supervisor
alone: its children stopped by SIGTERM) or ``all`` (the supervisor and every
child at once).
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from exchange import topology
from exchange.engine import ShardEngine
from exchange.idempotency import FINGERPRINT_DTYPE, decode_entry, entry_keys, used_news
from exchange.journal import Journal, JournalReader
from exchange.records import (
    CMD_EXPIRE,
    CMD_HALT,
    CMD_NEW,
    CMD_RESUME,
    CXL_EXPIRED,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_STATE,
    EV_TRADE,
    REJ_EXPIRY_PASSED,
    REJ_HALTED,
    REJ_TRIGGER_REACHED,
    REJECT_NAMES,
    SIDE_BUY,
    SIDE_SELL,
)
from tools.journalview import JournalView
from tools.verify import render, verify_journal

RIGHT_REFUSALS = tuple(
    REJECT_NAMES[code] for code in (REJ_TRIGGER_REACHED, REJ_EXPIRY_PASSED, REJ_HALTED)
)
MAX_LISTED = 20  # violations listed per check; all are counted
KINDS = ("shard", "gateway", "supervisor", "all")  # of kills
GATEWAY_DOWN = {"gateway", "supervisor", "all"}  # kills that take the gateway down


def kill_kind(victim: str) -> str:
    return victim if victim in KINDS else "shard"


@dataclass
class Report:
    kills: int = 0
    gateway_kills: int = 0
    shard_kills: int = 0
    supervisor_kills: int = 0  # the supervisor alone
    all_kills: int = 0  # the supervisor and every child at once
    requests: int = 0
    orders: int = 0
    acks: int = 0
    dup_acks: int = 0
    iceberg_acks: int = 0  # acks of icebergs (each journaled with the display it was sent)
    gtd_acks: int = 0  # acks of GTD orders (each journaled with the expiry it was sent)
    expired: int = 0  # orders the shards expired (CANCELLED expired), none before its time
    halts: int = 0  # journaled HALTs that halted an instrument
    auction_trades: int = 0  # trades of the auctions that reopened them
    retries: int = 0
    retryable: int = 0
    reconnects: int = 0
    fills_seen: int = 0
    journaled_commands: int = 0
    journaled_keyed_news: int = 0
    trades: int = 0
    reuses: int = 0  # cross-instrument reuses of acknowledged keys
    reuse_conflicts: int = 0  # ... answered conflict in the end
    reuse_unavailable: int = 0  # ... answered unavailable at least once (then retried)
    reuse_busy: int = 0  # ... answered busy or rate_limited at least once (then retried)
    reuse_acks: int = 0  # ... acknowledged (each one a violation)
    violations: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, check: str, message: str) -> None:
        if self.counts[check] < MAX_LISTED:
            self.violations.append(f"{check}: {message}")
        self.counts[check] += 1

    def summary(self) -> str:
        return (
            f"chaos: {self.kills} kills ({self.shard_kills} shard, {self.gateway_kills} gateway, "
            f"{self.supervisor_kills} supervisor, {self.all_kills} all), "
            f"{self.requests} requests, {self.orders} orders, {self.acks} acks "
            f"({self.dup_acks} duplicate, {self.iceberg_acks} of icebergs, {self.gtd_acks} GTD, "
            f"{self.expired} expired), {self.halts} halts ({self.auction_trades} auction "
            f"trades), {self.retries} "
            f"retries ({self.retryable} answered busy or unavailable), {self.reconnects} "
            f"reconnects, "
            f"{self.fills_seen} fills seen, {self.trades} trades and "
            f"{self.journaled_commands} commands ({self.journaled_keyed_news} keyed NEWs accepted) "
            f"journaled; cross-instrument key reuses: {self.reuses} attempted, "
            f"{self.reuse_conflicts} answered conflict, {self.reuse_unavailable} answered "
            f"unavailable (then retried), {self.reuse_busy} busy (then retried), "
            f"{self.reuse_acks} acknowledged; violations = {sum(self.counts.values())}"
        )


def check(config, records: list[dict], kills: list[tuple[float, str]]) -> Report:
    """``records``: each bot's JSON records; ``kills``: (monotonic instant, process name)."""
    report = Report(kills=len(kills))
    kinds = Counter(kill_kind(victim) for _, victim in kills)
    report.shard_kills, report.gateway_kills = kinds["shard"], kinds["gateway"]
    report.supervisor_kills, report.all_kills = kinds["supervisor"], kinds["all"]
    routes = topology.routes(config)
    books = {s.name: [config.instrument(sym).book for sym in s.instruments] for s in config.shards}
    # LMDB opens an environment once per process: the verification first, on its own
    for i, shard in enumerate(config.shards):
        path = str(Path(config.journal.dir) / shard.name)
        v = verify_journal(
            path,
            books[shard.name],
            symbols=list(shard.instruments),
            shard=shard.name,
            shard_index=i,
        )
        report.journaled_commands += v.commands
        if not v.ok:
            report.add("journal", render(v))
    journals = {
        s.name: JournalReader(str(Path(config.journal.dir) / s.name)) for s in config.shards
    }
    try:
        trades = {}
        for i, shard in enumerate(config.shards):
            _state_hash(report, journals[shard.name], shard.name, i, books[shard.name])
            trades[shard.name] = _trades(report, journals[shard.name], shard)
            _expiries(report, journals[shard.name], shard)
            _halts(report, journals[shard.name], shard)
        _cross_shard_keys(report, journals)
        news = _keyed_news(report, journals)
        for r in records:
            _bot(report, r, routes, journals, trades, kills)
            _reuses(report, r, routes, news)
    finally:
        for j in journals.values():
            j.close()
    return report


# ------------------------------------------------------------ the journals


def _state_hash(report: Report, journal: Journal, name: str, index: int, books) -> None:
    snap = journal.latest_snapshot()
    if snap is None:
        report.add("state hash", f"shard {name} wrote no snapshot to compare with")
        return
    seq, blob = snap
    recorded = msgspec.msgpack.decode(blob)["hashes"]
    engine = ShardEngine(index, books, journal)
    engine.recover(JournalView(journal, seq), use_snapshot=False)
    if engine.state_hashes() != recorded:
        report.add(
            "state hash",
            f"shard {name} at seq {seq}: the live shard recorded {recorded}, a fresh replay "
            f"gives {engine.state_hashes()}",
        )


def _trades(report: Report, journal: Journal, shard) -> dict:
    """(seq, idx) -> (instrument, taker oid, maker oid, px, qty) of every journaled trade;
    checks that each moves its quantity from a seller to a buyer."""
    side_of = {}
    out = {}
    position = defaultdict(lambda: defaultdict(int))  # instrument -> client -> net qty
    for _, events in journal.iter_batches():
        acc = events[events["kind"] == EV_ACCEPTED]
        side_of.update(zip(acc["order_id"].tolist(), acc["side"].tolist(), strict=True))
        for e in events[events["kind"] == EV_TRADE].tolist():
            seq, _, taker, maker, px, qty = e[:6]
            client, other_client, idx, inst, _, side = e[9:15]
            maker_side = side_of.get(maker)
            if {side, maker_side} != {SIDE_BUY, SIDE_SELL}:
                report.add(
                    "positions",
                    f"{shard.name} trade ({seq}, {idx}): taker {taker} side {side}, "
                    f"maker {maker} side {maker_side}",
                )
                continue
            sign = 1 if side == SIDE_BUY else -1
            position[inst][client] += sign * qty
            position[inst][other_client] -= sign * qty
            out[(seq, idx)] = (inst, taker, maker, px, qty)
    report.trades += len(out)
    for inst, clients in position.items():
        if sum(clients.values()):
            report.add(
                "positions",
                f"{shard.instruments[inst]}: positions {dict(clients)} sum to "
                f"{sum(clients.values())}",
            )
    return out


def _expiries(report: Report, journal: Journal, shard) -> None:
    """Every order the shard expired was expired by one of its own EXPIREs, carrying a
    time at or after the order's expiry: never before its time."""
    expires = {}
    for cmds, events in journal.iter_batches():
        new = cmds[(cmds["kind"] == CMD_NEW) & (cmds["expires"] > 0)]
        expires.update(zip(new["order_id"].tolist(), new["expires"].tolist(), strict=True))
        ticks = cmds[cmds["kind"] == CMD_EXPIRE]
        at = dict(zip(ticks["seq"].tolist(), ticks["expires"].tolist(), strict=True))
        gone = events[(events["kind"] == EV_CANCELLED) & (events["code"] == CXL_EXPIRED)]
        for seq, oid in zip(gone["seq"].tolist(), gone["order_id"].tolist(), strict=True):
            report.expired += 1
            if seq not in at or oid not in expires or at[seq] < expires[oid]:
                report.add(
                    "expiries",
                    f"{shard.name} seq {seq}: order {oid} (expiry {expires.get(oid)}) expired "
                    f"by a command at {at.get(seq)}",
                )


def _halts(report: Report, journal: Journal, shard) -> None:
    """While an instrument is halted nothing trades on it; the RESUME that reopens it
    trades at one price (its STATE's); each HALT and RESUME ends with its STATE."""
    halted = set()
    for cmds, events in journal.iter_batches():
        seqs = events["seq"]
        for seq, kind, inst in zip(
            cmds["seq"].tolist(), cmds["kind"].tolist(), cmds["instrument"].tolist(), strict=True
        ):
            turn = kind in (CMD_HALT, CMD_RESUME)
            if not turn and inst not in halted:
                continue
            mine = events[np.searchsorted(seqs, seq) : np.searchsorted(seqs, seq, "right")]
            trades = mine[mine["kind"] == EV_TRADE]
            where = f"{shard.name} seq {seq} ({shard.instruments[inst]})"
            if not turn:
                if len(trades):
                    report.add("halts", f"{where}: traded {len(trades)} times while halted")
                continue
            state = np.flatnonzero(mine["kind"] == EV_STATE)
            if len(state) != 1:
                report.add("halts", f"{where}: {len(state)} STATE events")
            elif kind == CMD_HALT:
                report.halts += inst not in halted
                halted.add(inst)
                if len(trades):
                    report.add("halts", f"{where}: a HALT traded")
            else:
                auction = mine[: state[0]][mine["kind"][: state[0]] == EV_TRADE]
                report.auction_trades += len(auction)
                if (auction["price"] != mine["price"][state[0]]).any():
                    report.add("halts", f"{where}: auction trades off the auction price")
                halted.discard(inst)


def _cross_shard_keys(report: Report, journals: dict) -> None:
    seen = {}
    for name, j in journals.items():
        for e in j.idem_entries():
            pair = (e.client, e.idem_key)
            if pair in seen:
                report.add(
                    "one order per key",
                    f"(client {e.client}, key {e.idem_key}) has orders in {seen[pair]} and {name}",
                )
            seen[pair] = name


def _keyed_news(report: Report, journals: dict) -> dict:
    """(client, key) -> [(shard, instrument, seq)] of every journaled keyed NEW the book
    accepted (an order); a pair on more than one is a violation (retries are answered
    from the journal, never journaled; a NEW the book rejected used no key)."""
    news = defaultdict(list)
    for name, j in journals.items():
        for cmds, events in j.iter_batches():
            keyed = cmds[used_news(cmds, events)]
            for client, key, inst, seq in zip(
                *(keyed[f].tolist() for f in ("client", "idem_key", "instrument", "seq")),
                strict=True,
            ):
                news[(client, key)].append((name, inst, seq))
    report.journaled_keyed_news = sum(len(v) for v in news.values())
    for (client, key), where in news.items():
        if len(where) > 1:
            report.add(
                "one order per key",
                f"(client {client}, key {key}) is on {len(where)} journaled NEWs: "
                + ", ".join(f"{name} instrument {inst} seq {seq}" for name, inst, seq in where),
            )
    return news


# ------------------------------------------------------------ one bot's records


def _reuses(report: Report, r: dict, routes: dict, news: dict) -> None:
    client = r["client"]
    for u in r.get("reuses", []):
        report.reuses += 1
        what = (
            f"client {client}: key {u['ik']} of order {u['orig_oid']} ({u['orig_sym']}) reused "
            f"on {u['sym']} (cid {u['cid']}, made at {u['t']:.3f})"
        )
        codes = set(u["retryable"])
        report.reuse_unavailable += "unavailable" in codes
        report.reuse_busy += bool(codes - {"unavailable"})
        report.reuse_conflicts += u["answer"] == "conflict"
        if u["acks"]:
            report.reuse_acks += 1
            report.add("reuses", f"{what}: acknowledged {u['acks']}")
        elif u["answer"] is None:
            report.add("reuses", f"{what}: never answered (retryable answers: {u['retryable']})")
        elif u["answer"] != "conflict":
            report.add("reuses", f"{what}: answered {u['answer']} {u.get('reason')}")
        shard, _ = routes[u["sym"]]
        journaled = [w for w in news.get((client, u["ik"]), []) if w[0] == shard]
        if journaled:
            report.add("reuses", f"{what}: journaled NEWs {journaled}")


def _bot(report: Report, r: dict, routes: dict, journals: dict, trades: dict, kills) -> None:
    client = r["client"]
    report.requests += r["sent"]
    report.orders += len(r["orders"])
    report.retries += r["retries"]
    report.retryable += r["retryable"]
    report.reconnects += r["reconnects"]
    report.acks += len(r["acks"])
    report.dup_acks += sum(1 for a in r["acks"] if a[5])
    report.fills_seen += len(r["fills"])
    oids = defaultdict(set)
    for _, ik, sym, oid, seq, _, _ in r["acks"]:
        oids[ik].add(oid)
        shard, inst = routes[sym]
        j = journals[shard]
        order = j.order(oid)
        if order is None or (order.client, order.instrument) != (client, inst):
            report.add("acked", f"client {client}: acked order {oid} ({sym}) journaled as {order}")
            continue
        key = entry_keys(np.array([client], np.uint32), np.array([ik], np.uint64)).tobytes()
        value = j.idem_values([key])[0]
        entry = None if value is None else decode_entry(key, value)
        if entry is None or (entry.order_id, entry.seq) != (oid, seq):
            report.add(
                "acked",
                f"client {client}: key {ik} acked as order {oid} at seq {seq}, "
                f"journaled as {entry}",
            )
            continue
        sent = r["orders"].get(str(ik))
        fp = np.frombuffer(entry.fingerprint, FINGERPRINT_DTYPE)
        display, expires = int(fp["display"][0]), int(fp["expires"][0])
        report.iceberg_acks += display > 0
        report.gtd_acks += expires > 0
        if sent is not None and display != sent[5]:
            report.add(
                "acked", f"client {client}: order {oid} sent showing {sent[5]}, journaled {display}"
            )
        if sent is not None and len(sent) > 6 and expires != sent[6]:
            report.add(
                "acked",
                f"client {client}: order {oid} sent expiring {sent[6]}, journaled {expires}",
            )
    for ik, found in oids.items():
        if len(found) > 1:
            report.add("one order per key", f"client {client}: key {ik} acked as {sorted(found)}")
    for sym, seq, idx, oid, side, px, qty, _, _ in r["fills"]:
        shard, inst = routes[sym]
        t = trades[shard].get((seq, idx))
        if t is None or t[0] != inst or oid not in t[1:3] or t[3:] != (px, qty):
            report.add(
                "fills", f"client {client}: fill {side} {qty}@{px} of {oid} at ({seq}, {idx}): {t}"
            )
    for cid, kind, code, fld, reason, _ in r["rejects"]:
        # a stop the last trade had reached when it arrived is refused, and so is a GTD
        # order that reached its book (a retry after a kill, say) after its time: the right
        # answers
        if kind == "new" and not reason.startswith(RIGHT_REFUSALS):
            report.add("answers", f"client {client}: order cid {cid} refused {code} {fld} {reason}")
    if r["unanswered"]:
        report.add("answers", f"client {client}: {len(r['unanswered'])} requests never answered")
    if kills:
        last_kill = max(t for t, _ in kills)
        if not any(not a[5] and a[6] > last_kill for a in r["acks"]):
            report.add(
                "kept trading", f"client {client}: no order acknowledged after the last kill"
            )
        if any(kill_kind(v) in GATEWAY_DOWN for _, v in kills) and not r["reconnects"]:
            report.add("kept trading", f"client {client}: never reconnected")
