"""``exch``: the operator's and the bot writer's tools for the exchange daemon.

exch keys list | create ID | register ID KEY | revoke ID | server [--create|--rotate]
exch order SYMBOL buy|sell QTY [PRICE]         one order from the shell (--key: a client's cert)
exch cancel SYMBOL OID | exch cancel [SYMBOL] --all
exch book SYMBOL [--watch]                     the depth ladder and trading state, live too
exch trades SYMBOL [--from-seq N [--to-seq M]]  the trade prints: live, or a seq range again
exch instruments [SYMBOL]                      reference data: tick, lot, band, max qty, state
exch top [--once]                              every process: rates, rings, commit latency
exch demo [--seconds N]                        a maker and a taker bot trading through the daemon
exch kill [CLIENT] | exch unkill CLIENT        block a client (its orders cancelled), lift it
exch positions [CLIENT]                        positions, P&L, cash, open orders (from the journals)
exch journal verify [--shard S [--path DIR]]   check a journal's invariants; exit 4 if broken
exch journal book SYMBOL --at-seq N            a book as it was at seq N, rebuilt by replay
exch journal backup --shard S DEST             a consistent copy (while it runs), verified
exch journal new --shard S                     a new, empty journal for a shard that lost its own

Every command takes ``--config FILE`` (default: $EXCH_CONFIG, else the embedded
default config) and ``--help``; those that print data take ``--json``. Bad
input is one line on stderr naming the problem, exit 2, and nothing changed. A
journal that cannot be trusted (a record that fails its check, a replay that
does not give the journaled events) is one line naming the file and the reason,
exit 4 (``exchange.exitcodes``); ``exch journal verify`` lists every problem
it finds and exits 4 on any.
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import msgspec

from daemon.cli import CONFIG_OPTION, quiet_on_broken_pipe
from exchange import journalid, topology
from exchange.config import Config, ConfigError, load_config
from exchange.engine import RecoveryError
from exchange.exitcodes import EXIT_FAILURE, EXIT_UNTRUSTED, EXIT_USAGE
from exchange.journal import HistoryPruned, JournalDamaged, JournalError
from gateway.client import new_idempotency_key
from gateway.keys import KeysError, check_client_id
from gateway.protocol import Reject
from tools import (
    connect,
    demo,
    halttool,
    keytool,
    killtool,
    market,
    positionview,
    top,
    trading,
)
from tools.accounts import check_accounts
from tools.accounts import render as render_accounts
from tools.backup import backup
from tools.bookat import book_at
from tools.errors import ToolError
from tools.ladder import ladder_doc, render_ladder
from tools.progress import Progress
from tools.verify import render, verify_journal


def _config(args) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as e:
        raise ToolError(str(e)) from None


def _shard_of(config: Config, name: str) -> int:
    names = [s.name for s in config.shards]
    if name not in names:
        raise ToolError(f"no shard {name!r} in the config (shards: {', '.join(names)})")
    return names.index(name)


def _archives(config: Config) -> str | None:
    """Where the journals' pruned history is (``[journal] archive_dir``), if anywhere."""
    return config.journal.archive_dir or None


def _print_json(doc) -> None:
    print(json.dumps(doc), flush=True)


def _client_id(text: str) -> int:
    try:
        return check_client_id(int(text))
    except (ValueError, KeysError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a client id: {e}") from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return n


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= x < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0")
    return x


# ------------------------------------------------------------ keys


def cmd_keys(args) -> int:

    keys_dir = args.keys_dir or _config(args).gateway.keys_dir
    if args.action == "list":
        doc = keytool.listing(keys_dir)
        if args.json:
            _print_json(doc)
            return 0
        print(f"keys directory {doc['keys_dir']}")
        print(f"server public key: {doc['server'] or '(none yet: exch keys server --create)'}")
        print(f"{len(doc['clients'])} registered client(s)")
        for c in doc["clients"]:
            print(f"  {c['client']:>10}  {c['public_key']}")
        return 0
    if args.action == "create":
        out = args.out or f"client-{args.client}.key_secret"
        doc = keytool.create(keys_dir, args.client, out)
        text = (
            f"client {args.client} registered (public key {doc['public_key']});\n"
            f"its secret certificate is {out}: give it to the bot only"
        )
    elif args.action == "register":
        doc = keytool.register(keys_dir, args.client, args.public_key)
        text = f"client {args.client} registered with public key {args.public_key}"
    elif args.action == "revoke":
        doc = keytool.revoke(keys_dir, args.client)
        text = f"client {args.client} revoked: the gateway refuses it within a second"
    else:
        doc = keytool.server(keys_dir, create_pair=args.create, rotate=args.rotate)
        text = doc["server"]
        if "retired" in doc:
            text += (
                f"\n(new pair; the old one is in {doc['retired']}: restart the gateway and "
                "give every bot this public key)"
            )
    if args.json:
        _print_json(doc)
    else:
        print(text)
    return 0


# ------------------------------------------------------------ kill switch and positions


def cmd_kill(args) -> int:

    keys_dir = args.keys_dir or _config(args).gateway.keys_dir
    if args.client is None:
        doc = killtool.listing(keys_dir)
        if args.json:
            _print_json(doc)
            return 0
        print(f"{len(doc['killed'])} client(s) blocked by the kill switch ({doc['dir']})")
        for k in doc["killed"]:
            print(f"  {k['client']:>10}  {k['note']}")
        return 0
    doc = killtool.kill(keys_dir, args.client, args.reason)
    if args.json:
        _print_json(doc)
    else:
        print(
            f"client {args.client} blocked: within a second the gateway cancels its orders on "
            f"every shard and refuses new ones, until `exch unkill {args.client}`"
        )
    return 0


def cmd_unkill(args) -> int:

    keys_dir = args.keys_dir or _config(args).gateway.keys_dir
    doc = killtool.unkill(keys_dir, args.client)
    if args.json:
        _print_json(doc)
    else:
        print(f"client {args.client} may trade again (the gateway sees it within a second)")
    return 0


def cmd_halt(args) -> int:
    config = _config(args)
    if args.symbol is None:
        doc = halttool.listing(config)
        if args.json:
            _print_json(doc)
            return 0
        print(f"{len(doc['halted'])} instrument(s) asked to be halted ({doc['dir']})")
        for h in doc["halted"]:
            print(f"  {h['symbol']:<10}  {h['note']}")
        return 0
    doc = halttool.halt(config, args.symbol, args.reason)
    if args.json:
        _print_json(doc)
    else:
        print(
            f"{args.symbol} halt asked: within a second shard {doc['shard']} halts it (only "
            f"orders that rest are taken, nothing trades) until `exch resume {args.symbol}`"
        )
    return 0


def cmd_resume(args) -> int:
    doc = halttool.resume(_config(args), args.symbol)
    if args.json:
        _print_json(doc)
    else:
        print(
            f"{args.symbol} resume asked: within a second shard {doc['shard']} reopens it with "
            "a call auction, then continuous trading"
        )
    return 0


def cmd_positions(args) -> int:

    config = _config(args)
    try:
        accounts = positionview.from_journals(config)
    except JournalDamaged:
        raise
    except JournalError as e:
        raise ToolError(f"cannot rebuild the positions from the journals: {e}") from None
    killed = {k["client"] for k in killtool.listing(config.gateway.keys_dir)["killed"]}
    who = [args.client] if args.client is not None else positionview.clients(accounts)
    docs = [positionview.report_doc(accounts, c, killed) for c in who]
    if args.json:
        _print_json({"journals": accounts.last_seqs, "clients": docs})
        return 0
    seqs = ", ".join(f"{name} seq {seq}" for name, seq in accounts.last_seqs.items())
    print(f"from the journals ({seqs})")
    if not docs:
        print("no client has traded or has orders")
    for doc in docs:
        print(positionview.render(doc))
    return 0


# ------------------------------------------------------------ orders and market data


def _connect(args):

    config = _config(args)
    return config, connect.identity(config, args.key, args.server_key)


def _answer(args, reply, notices) -> int:

    if args.json:
        _print_json(
            {"reply": trading.to_doc(reply), "notices": [trading.to_doc(n) for n in notices]}
        )
    else:
        for msg in (reply, *notices):
            print(trading.describe(msg))
    return 1 if isinstance(reply, Reject) else 0


def _expire_at(text: str) -> int:
    """``--expire-at``: ns since the epoch, an ISO 8601 time, or +N seconds from now."""
    try:
        if text.startswith("+"):
            return time.time_ns() + round(float(text[1:]) * 1e9)
        if text.isdigit():
            return int(text)
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return int(when.timestamp()) * 10**9 + when.microsecond * 1000
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ns since the epoch, an ISO 8601 time or +seconds"
        ) from None


def cmd_order(args) -> int:

    config, ident = _connect(args)
    fields = {"tif": args.tif, "stp": args.stp, "post_only": args.post_only}
    limit = args.price is not None
    if args.trigger is None:
        fields["type"] = args.type or ("limit" if limit else "market")
    else:
        fields["type"] = args.type or ("stop_limit" if limit else "stop")
        fields["trigger"] = args.trigger
    if args.display is not None:
        fields["display"] = args.display
    if args.expire_at is not None:
        fields["expire_at"] = args.expire_at
    if args.coid:
        fields["coid"] = args.coid
    # chosen here, so that after a timeout the order can be retried without risk
    fields["ik"] = args.ik or new_idempotency_key()
    with connect.client(config, ident, args.endpoint, args.timeout) as c:
        try:
            reply, notices = trading.place(
                c, args.symbol, args.side, args.qty, args.price, args.wait, **fields
            )
        except TimeoutError:
            raise ToolError(
                f"no answer from the gateway in {args.timeout} s (asked twice): the order may "
                f"or may not be in; send it again with --ik {fields['ik']} and it is placed at "
                "most once"
            ) from None
    return _answer(args, reply, notices)


def cmd_cancel(args) -> int:

    if args.all == (args.oid is not None):
        raise ToolError("give either an order id or --all")
    if args.oid is not None and not args.symbol:
        raise ToolError("a cancel needs the order's SYMBOL")
    config, ident = _connect(args)
    with connect.client(config, ident, args.endpoint, args.timeout) as c:
        try:
            reply, notices = trading.cancel(c, args.symbol, args.oid, args.wait)
        except TimeoutError:
            raise ToolError(
                f"no answer from the gateway in {args.timeout} s (asked twice)"
            ) from None
    return _answer(args, reply, notices)


def cmd_book(args) -> int:

    config, ident = _connect(args)
    if args.symbol not in topology.routes(config):
        raise ToolError(f"no instrument {args.symbol!r} in the config")

    def show(seq, bids, asks, state):
        if args.json:
            _print_json(ladder_doc(args.symbol, seq, bids, asks, state))
        else:
            clear = market.CLEAR if args.watch and sys.stdout.isatty() else ""
            print(clear + render_ladder(args.symbol, seq, bids, asks, state), flush=True)

    with connect.client(config, ident, args.endpoint, args.timeout) as c:
        if not args.watch:
            book = market.snapshot(c, args.symbol, args.depth)
            show(book.seq, book.bids, book.asks, book.state)
            return 0
        ask = market.patient(c.book)
        sub = connect.subscriber(config, ident, [args.symbol], ask, args.depth, args.pub)
        try:
            market.watch_book(sub, args.symbol, show, args.seconds)
        finally:
            sub.close()
    return 0


def cmd_instruments(args) -> int:

    config, ident = _connect(args)
    with connect.client(config, ident, args.endpoint, args.timeout) as c:
        reply = c.instruments(args.symbol)
    if isinstance(reply, Reject):
        raise ToolError(f"{reply.code} {reply.field}: {reply.reason}")
    if args.json:
        _print_json(msgspec.to_builtins(reply))
        return 0
    print(f"reference data version {reply.version}")
    print(
        f"{'symbol':<10} {'tick':>6} {'lot':>6} {'min px':>10} {'max px':>10} {'max qty':>10} "
        f"{'ref px':>10}  state"
    )
    for i in reply.instruments:
        print(
            f"{i.sym:<10} {i.tick:>6} {i.lot:>6} {i.min_px:>10} {i.max_px:>10} {i.max_qty:>10} "
            f"{i.ref_px:>10}  {i.state}"
        )
    return 0


def cmd_trades(args) -> int:

    config, ident = _connect(args)
    if args.symbol not in topology.routes(config):
        raise ToolError(f"no instrument {args.symbol!r} in the config")

    def show(msg):
        for px, qty in msg.prints:
            if args.json:
                doc = {"sym": msg.sym, "seq": msg.seq, "side": msg.side, "px": px, "qty": qty}
                _print_json(doc)
            else:
                print(f"seq {msg.seq:>10}  {msg.side:<4} {qty:>10} @ {px}", flush=True)

    if args.from_seq is not None:
        with connect.client(config, ident, args.endpoint, args.timeout) as c:
            prints, end = c.trades(args.symbol, args.from_seq, args.to_seq)
            if isinstance(end, Reject):
                raise ToolError(f"{end.code}: {end.reason}")
            for msg in prints:
                show(msg)
            if not args.json:
                print(
                    f"{end.count} retransmitted, seqs {end.from_seq}..{end.to_seq}; "
                    f"the shard's last seq {end.last_seq}",
                    file=sys.stderr,
                )
        return 0

    def no_book(sym, depth):
        return None  # trades need no book: the subscriber's book stays unasked for

    sub = connect.subscriber(config, ident, [args.symbol], no_book, 1, args.pub)
    try:
        market.follow_trades(sub, args.symbol, show, args.seconds, args.count)
        if sub.gaps:
            print(f"exch: {sub.gaps} market data message(s) were lost", file=sys.stderr)
    finally:
        sub.close()
    return 0


# ------------------------------------------------------------ journal


def cmd_journal_verify(args) -> int:

    config = _config(args)
    if args.path and not args.shard:
        raise ToolError("--path needs --shard: the shard's config says what its books are")
    names = [args.shard] if args.shard else [s.name for s in config.shards]
    reports = []
    for name in names:
        index = _shard_of(config, name)
        shard = config.shards[index]
        path = args.path or topology.journal_path(config, name)
        books = [config.instrument(sym).book for sym in shard.instruments]
        progress = Progress(f"verifying {name}")
        try:
            report = verify_journal(
                path,
                books,
                symbols=list(shard.instruments),
                shard=name,
                shard_index=index,
                progress=progress.update,
                archive_dir=_archives(config),
            )
        except JournalDamaged:
            raise
        except JournalError as e:
            raise ToolError(str(e)) from None
        finally:
            progress.close()
        reports.append(report)
        if not args.json:
            print(render(report))
    paths = {name: args.path or topology.journal_path(config, name) for name in names}
    if any(r.history_after for r in reports):
        # the accounts are every fill since seq 1: not there when history was dropped
        if not args.json:
            print("accounts: not checked (a journal's history was dropped by retention)")
        ok = all(r.ok for r in reports)
        if args.json:
            shards = [{**dataclasses.asdict(r), "ok": r.ok} for r in reports]
            _print_json({"ok": ok, "shards": shards, "accounts": None})
        return 0 if ok else EXIT_UNTRUSTED
    try:
        accounts = check_accounts(config, paths)
    except JournalDamaged:
        raise
    except JournalError as e:
        raise ToolError(f"cannot read the journals for the accounts check: {e}") from None
    if not args.json:
        print(render_accounts(accounts))
    ok = all(r.ok for r in reports) and accounts.ok
    if args.json:
        shards = [{**dataclasses.asdict(r), "ok": r.ok} for r in reports]
        doc = {**dataclasses.asdict(accounts), "ok": accounts.ok}
        _print_json({"ok": ok, "shards": shards, "accounts": doc})
    return 0 if ok else EXIT_UNTRUSTED


def cmd_journal_book(args) -> int:

    config = _config(args)
    routes = topology.routes(config)
    if args.symbol not in routes:
        raise ToolError(f"no instrument {args.symbol!r} in the config ({', '.join(routes)})")
    name, instrument = routes[args.symbol]
    index = _shard_of(config, name)
    books = [config.instrument(sym).book for sym in config.shards[index].instruments]
    progress = Progress(f"replaying {name}")
    try:
        at = book_at(
            args.path or topology.journal_path(config, name),
            books,
            instrument,
            args.at_seq,
            args.levels,
            index,
            progress.update,
            archive_dir=_archives(config),
            shard=name,
        )
    except JournalDamaged:
        raise
    except JournalError as e:
        raise ToolError(str(e)) from None
    except RecoveryError as e:
        print(f"exch: the journal does not replay: {e}; run `exch journal verify`", file=sys.stderr)
        return EXIT_UNTRUSTED
    finally:
        progress.close()
    if args.json:
        _print_json(
            {
                **ladder_doc(args.symbol, at.seq, at.bids, at.asks, at.state),
                "state_hash": at.state_hash,
                "snapshot_seq": at.snapshot_seq,
                "replayed": at.replayed,
            }
        )
    else:
        print(render_ladder(args.symbol, at.seq, at.bids, at.asks, at.state))
        print(
            f"(shard {name}: snapshot at seq {at.snapshot_seq} + {at.replayed} commands "
            f"replayed in {at.seconds:.2f} s; book hash {at.state_hash})"
        )
    return 0


def cmd_journal_backup(args) -> int:

    config = _config(args)
    index = _shard_of(config, args.shard)
    shard = config.shards[index]
    done = backup(args.path or topology.journal_path(config, args.shard), args.dest)
    books = [config.instrument(sym).book for sym in shard.instruments]
    report = verify_journal(
        args.dest,
        books,
        symbols=list(shard.instruments),
        shard=args.shard,
        shard_index=index,
        archive_dir=_archives(config),
    )
    if args.json:
        _print_json({**done, "verified": {**dataclasses.asdict(report), "ok": report.ok}})
    else:
        print(
            f"{args.shard}: seqs 1..{done['last_seq']} copied to {args.dest} "
            f"({done['bytes']:,} bytes in {done['seconds']} s); the copy:"
        )
        print(render(report))
    return 0 if report.ok else EXIT_UNTRUSTED


def cmd_journal_new(args) -> int:

    config = _config(args)
    _shard_of(config, args.shard)
    try:
        identity = journalid.new_journal(config, args.shard)
    except JournalError as e:
        raise ToolError(str(e)) from None
    doc = {
        "shard": args.shard,
        "journal": topology.journal_path(config, args.shard),
        "identity": identity,
        "record": journalid.record_path(config, args.shard),
    }
    if args.json:
        _print_json(doc)
    else:
        print(
            f"{args.shard}: new empty journal {identity} at {doc['journal']}, recorded in "
            f"{doc['record']}; the shard starts from seq 0 at its next start"
        )
    return 0


# ------------------------------------------------------------ top


def cmd_top(args) -> int:

    return top.run(
        _config(args), sys.stdout, interval=args.interval, once=args.once, as_json=args.json
    )


# ------------------------------------------------------------ demo


def cmd_demo(args) -> int:

    summary = demo.run(
        folder=Path(args.dir),
        config_path=args.config,
        attach=args.attach,
        symbol=args.symbol,
        seconds=args.seconds,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
    )
    if args.json:
        _print_json(summary)
    else:
        moved = f", prices {summary['low']}..{summary['high']}" if summary["trades"] else ""
        print(
            f"demo over: {summary['trades']} trades (volume {summary['volume']}) in "
            f"{summary['seconds']} s{moved}; exit codes {summary['exit_codes']}"
        )
    clean = all(code == 0 for code in summary["exit_codes"].values())
    return 0 if clean and summary["trades"] else 1


# ------------------------------------------------------------ the parser


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", **CONFIG_OPTION)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument(
        "--key",
        default=os.environ.get("EXCH_KEY"),
        help="the client's secret certificate (default: $EXCH_KEY)",
    )
    conn.add_argument(
        "--server-key",
        help="the gateway's public key, or its server.key file (default: from the keys_dir); "
        "write --server-key=KEY for a key that starts with '-'",
    )
    conn.add_argument("--endpoint", help="the gateway's ROUTER (default: the config's first)")
    conn.add_argument("--pub", help="the gateway's PUB (default: the config's first)")
    conn.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds to wait for an answer before asking again, once (10)",
    )
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--wait",
        type=_seconds,
        default=0.5,
        help="seconds to wait for fills and cancels after the answer (0.5)",
    )

    ap = argparse.ArgumentParser(
        prog="exch",
        description="Operator and bot tools for the exchange daemon.",
        epilog="`exch COMMAND --help` tells more about each command.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    keys_cmd = sub.add_parser(
        "keys",
        help="client and gateway CURVE keys",
        description="Create, register, list and revoke client keys; show, create or "
        "rotate the gateway's key pair. Works on the config's keys_dir.",
    )
    ksub = keys_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    kdir = argparse.ArgumentParser(add_help=False)
    kdir.add_argument("--keys-dir", help="default: the config's gateway.keys_dir")
    k = ksub.add_parser("list", parents=[common, as_json, kdir], help="registered clients")
    k = ksub.add_parser(
        "create",
        parents=[common, as_json, kdir],
        help="a new key pair for a client: registered here, the secret written for the bot",
    )
    k.add_argument("client", type=_client_id, metavar="ID", help="client id, 1..2**32-1")
    k.add_argument("--out", help="the secret certificate (default: ./client-ID.key_secret)")
    k = ksub.add_parser(
        "register",
        parents=[common, as_json, kdir],
        help="register a bot's own public key (the bot keeps its secret)",
    )
    k.add_argument("client", type=_client_id, metavar="ID")
    k.add_argument("public_key", metavar="PUBLIC_KEY", help="40 Z85 characters")
    k = ksub.add_parser("revoke", parents=[common, as_json, kdir], help="remove a client's key")
    k.add_argument("client", type=_client_id, metavar="ID")
    k = ksub.add_parser(
        "server", parents=[common, as_json, kdir], help="the gateway's public key (for bots)"
    )
    how = k.add_mutually_exclusive_group()
    how.add_argument("--create", action="store_true", help="make the pair if there is none")
    how.add_argument(
        "--rotate", action="store_true", help="a new pair; the old is kept in retired/"
    )
    keys_cmd.set_defaults(func=cmd_keys)

    order_cmd = sub.add_parser(
        "order",
        parents=[common, as_json, conn, waiting],
        help="submit one order",
        description="Submit one order as the client of --key; exit 1 if it is rejected.",
    )
    order_cmd.add_argument("symbol", metavar="SYMBOL")
    order_cmd.add_argument("side", choices=["buy", "sell"])
    order_cmd.add_argument("qty", type=int, metavar="QTY")
    order_cmd.add_argument(
        "price", type=int, nargs="?", metavar="PRICE", help="none: a market order"
    )
    order_cmd.add_argument(
        "--tif",
        choices=["gtc", "ioc", "fok", "gtd", "day"],
        default="gtc",
        help="gtd: until --expire-at; day: until the instrument's session end",
    )
    order_cmd.add_argument(
        "--expire-at",
        type=_expire_at,
        metavar="WHEN",
        help="a gtd order's expiry: ns since the Unix epoch, an ISO 8601 time (UTC unless it "
        "says otherwise, e.g. 2026-12-03T21:00:00Z), or +N (N seconds from now)",
    )
    order_cmd.add_argument(
        "--type",
        choices=["limit", "market", "stop", "stop_limit"],
        help="default: by PRICE and --trigger",
    )
    order_cmd.add_argument(
        "--trigger",
        type=int,
        metavar="PRICE",
        help="a stop: waits until the last trade reaches PRICE (buy: at or above, sell: at or "
        "below), then enters as a market order, or a limit one at PRICE given (stop_limit)",
    )
    order_cmd.add_argument(
        "--display",
        type=int,
        metavar="N",
        help="an iceberg (a gtc limit order): the book shows N of it at a time, the rest in "
        "reserve; each time the shown part is filled, N more (or what is left) is shown, at "
        "the back of its price level",
    )
    order_cmd.add_argument("--post-only", action="store_true")
    order_cmd.add_argument(
        "--stp",
        choices=["none", "cancel_newest", "cancel_oldest", "cancel_both", "decrement"],
        default="cancel_newest",
        help="self-trade prevention (cancel_newest)",
    )
    order_cmd.add_argument("--coid", help="your own order id, echoed in the answers")
    order_cmd.add_argument("--ik", type=int, help="idempotency key (default: a random one)")
    order_cmd.set_defaults(func=cmd_order)
    cancel_cmd = sub.add_parser(
        "cancel",
        parents=[common, as_json, conn, waiting],
        help="cancel an order, or all of them",
        description="Cancel one order, or with --all every order of the client "
        "(on SYMBOL, or on every symbol).",
    )
    cancel_cmd.add_argument("symbol", nargs="?", metavar="SYMBOL")
    cancel_cmd.add_argument("oid", type=int, nargs="?", metavar="OID")
    cancel_cmd.add_argument("--all", action="store_true", help="a mass cancel")
    cancel_cmd.set_defaults(func=cmd_cancel)
    book_cmd = sub.add_parser(
        "book",
        parents=[common, as_json, conn],
        help="the depth ladder of a symbol and its trading state, live with --watch",
    )
    book_cmd.add_argument("symbol", metavar="SYMBOL")
    book_cmd.add_argument("--depth", type=_positive, default=10, help="levels per side (10)")
    book_cmd.add_argument("--watch", action="store_true", help="follow it (Ctrl-C stops)")
    book_cmd.add_argument(
        "--seconds", type=_seconds, default=0, help="with --watch: stop after this long"
    )
    book_cmd.set_defaults(func=cmd_book)
    instruments_cmd = sub.add_parser(
        "instruments",
        parents=[common, as_json, conn],
        help="the instruments and their trading parameters, asked of the gateway",
        description="Each instrument's tick, lot, price band, max qty, the price collar's "
        "reference now and whether it trades now, fetched over the protocol "
        "(InstrumentsRequest) as a client of --key: what a bot on another host sees.",
    )
    instruments_cmd.add_argument("symbol", metavar="SYMBOL", nargs="?", help="only this one")
    instruments_cmd.set_defaults(func=cmd_instruments)
    trades_cmd = sub.add_parser(
        "trades",
        parents=[common, as_json, conn],
        help="follow a symbol's trade prints",
        description="Print SYMBOL's trades as they happen (Ctrl-C stops).",
    )
    trades_cmd.add_argument("symbol", metavar="SYMBOL")
    trades_cmd.add_argument("--seconds", type=_seconds, default=0, help="stop after this long")
    trades_cmd.add_argument("--count", type=_positive, help="stop after this many prints")
    trades_cmd.add_argument(
        "--from-seq",
        type=_positive,
        help="print the prints of seqs from this one on, retransmitted (TradesRequest), and exit",
    )
    trades_cmd.add_argument(
        "--to-seq", type=_positive, help="with --from-seq: the last seq (default: 99,999 after)"
    )
    trades_cmd.set_defaults(func=cmd_trades)

    top_cmd = sub.add_parser(
        "top",
        parents=[common, as_json],
        help="a live view of every process (Ctrl-C stops)",
        description="Orders/s, fills/s, ring depths, commit latency p50/p99, clients and "
        "rejects of every process, from their shared-memory counters.",
    )
    top_cmd.add_argument("--once", action="store_true", help="one frame, then exit")
    top_cmd.add_argument(
        "--interval", type=_seconds, default=1.0, help="seconds between frames (1)"
    )
    top_cmd.set_defaults(func=cmd_top)

    demo_cmd = sub.add_parser(
        "demo",
        parents=[as_json],
        help="a market maker and a noise taker trading through the real daemon",
        description="Start the daemon (unless --attach), a market-maker bot and a "
        "noise-taker bot, and show the book moving; Ctrl-C stops everything.",
    )
    demo_cmd.add_argument(
        "--config",
        help="the daemon's config (default: the demo's own, beside `make run`: "
        "namespace demo, ports 61311/61312, files under --dir)",
    )
    demo_cmd.add_argument("--dir", default="var/demo", help="the demo's files (var/demo)")
    demo_cmd.add_argument(
        "--attach", action="store_true", help="use the daemon running with --config"
    )
    demo_cmd.add_argument("--symbol", default="ACME", help="the instrument to trade (ACME)")
    demo_cmd.add_argument("--seconds", type=_seconds, default=0, help="stop after this long")
    demo_cmd.set_defaults(func=cmd_demo)

    kill_cmd = sub.add_parser(
        "kill",
        parents=[common, as_json],
        help="block a client: its orders cancelled on every shard, new ones refused",
        description="Block CLIENT with the kill switch: within a second the gateway cancels "
        "all of its orders on every shard and refuses its new orders and replaces until "
        "`exch unkill CLIENT`. Without CLIENT: list the blocked clients.",
    )
    kill_cmd.add_argument("client", type=_client_id, nargs="?", metavar="CLIENT")
    kill_cmd.add_argument("--reason", help="a note kept with the block, for the next operator")
    kill_cmd.add_argument("--keys-dir", help="default: the config's gateway.keys_dir")
    kill_cmd.set_defaults(func=cmd_kill)
    unkill_cmd = sub.add_parser(
        "unkill",
        parents=[common, as_json],
        help="lift a client's kill switch",
        description="Let CLIENT trade again (the gateway sees it within a second).",
    )
    unkill_cmd.add_argument("client", type=_client_id, metavar="CLIENT")
    unkill_cmd.add_argument("--keys-dir", help="default: the config's gateway.keys_dir")
    unkill_cmd.set_defaults(func=cmd_unkill)
    halt_cmd = sub.add_parser(
        "halt",
        parents=[common, as_json],
        help="halt an instrument: nothing trades, only orders that rest are taken",
        description="Ask the shard of SYMBOL to halt it: within a second it journals the "
        "halt; market, IOC and FOK orders are refused (`halted`), limit orders that rest and "
        "stops are taken without matching, cancels work, until `exch resume SYMBOL`. The "
        "request is a file the shard reads, so one made while the shard is down takes "
        "effect when it is back. Without SYMBOL: list the halt requests.",
    )
    halt_cmd.add_argument("symbol", nargs="?", metavar="SYMBOL")
    halt_cmd.add_argument("--reason", help="a note kept with the request, for the next operator")
    halt_cmd.set_defaults(func=cmd_halt)
    resume_cmd = sub.add_parser(
        "resume",
        parents=[common, as_json],
        help="reopen a halted instrument with a call auction",
        description="Take back the halt of SYMBOL: within a second its shard uncrosses the "
        "book in a call auction at the price of greatest quantity, then trading is "
        "continuous again.",
    )
    resume_cmd.add_argument("symbol", metavar="SYMBOL")
    resume_cmd.set_defaults(func=cmd_resume)
    positions_cmd = sub.add_parser(
        "positions",
        parents=[common, as_json],
        help="a client's positions, P&L, cash and open orders, from the journals",
        description="Rebuild positions, average cost, realised and unrealised P&L, cash and "
        "open orders from every shard's journal (the source of truth; safe while the "
        "daemon runs): CLIENT's, or every client's that traded or has orders.",
    )
    positions_cmd.add_argument("client", type=_client_id, nargs="?", metavar="CLIENT")
    positions_cmd.set_defaults(func=cmd_positions)

    journal_cmd = sub.add_parser("journal", help="read a shard's journal (verify, past books)")
    jsub = journal_cmd.add_subparsers(dest="what", required=True, metavar="ACTION")
    verify_cmd = jsub.add_parser(
        "verify",
        parents=[common, as_json],
        help="check a journal's invariants and its replay; exit 4 on any violation",
        description="Check the checksum of every record, then sequence, events, fills, "
        "idempotency, the tables against the batches, replay and snapshot of every shard's "
        "journal (or one), then the clients' accounts across them: makers on the other "
        "side, positions and cash summing to zero, no position past its limit. Safe while "
        "the daemon runs. Exit 4 if any check fails (the journal cannot be trusted), 2 on "
        "bad input.",
    )
    verify_cmd.add_argument("--shard", help="only this shard (default: every shard of the config)")
    verify_cmd.add_argument("--path", help="the journal directory, e.g. a backup (needs --shard)")
    verify_cmd.set_defaults(func=cmd_journal_verify)
    jbook_cmd = jsub.add_parser(
        "book",
        parents=[common, as_json],
        help="a book as it was at a seq, rebuilt by replay",
        description="Rebuild SYMBOL's book at seq N of its shard's journal by replay.",
    )
    jbook_cmd.add_argument("symbol", metavar="SYMBOL")
    jbook_cmd.add_argument(
        "--at-seq", type=int, metavar="N", help="default: the last journaled seq"
    )
    jbook_cmd.add_argument(
        "--levels", type=_positive, default=10, help="price levels per side (10)"
    )
    jbook_cmd.add_argument(
        "--path", help="the shard's journal directory (default: from the config)"
    )
    jbook_cmd.set_defaults(func=cmd_journal_book)
    backup_cmd = jsub.add_parser(
        "backup",
        parents=[common, as_json],
        help="a consistent copy of a shard's journal (safe while it runs), then verified",
        description="Copy a shard's journal into the new directory DEST in one LMDB read "
        "transaction (whole batches only; the shard keeps running), then verify the copy. "
        "Exit 4 if the copy does not verify.",
    )
    backup_cmd.add_argument("dest", metavar="DEST", help="a new directory for the copy")
    backup_cmd.add_argument("--shard", required=True, help="the shard's name in the config")
    backup_cmd.add_argument(
        "--path", help="the shard's journal directory (default: from the config)"
    )
    backup_cmd.set_defaults(func=cmd_journal_backup)
    new_cmd = jsub.add_parser(
        "new",
        parents=[common, as_json],
        help="start a shard on a new, empty journal (when its journal is lost for good)",
        description="Make a new, empty journal for a shard whose journal is gone, and "
        "record it as the shard's (a shard refuses to start when its recorded journal is "
        "missing). Its seqs and order ids start again from 1: clients' old order ids and "
        "idempotency keys mean nothing to it. Refused while a journal is in its place.",
    )
    new_cmd.add_argument("--shard", required=True, help="the shard's name in the config")
    new_cmd.set_defaults(func=cmd_journal_new)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return quiet_on_broken_pipe(args.func, args)
    except ToolError as e:
        print(f"exch: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (JournalDamaged, RecoveryError) as e:  # a journal that cannot be trusted
        print(f"exch: {e}", file=sys.stderr)
        return EXIT_UNTRUSTED
    except HistoryPruned as e:  # not damage: history the configuration did not keep
        print(f"exch: this needs history that is no longer kept: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
