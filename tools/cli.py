"""``exch``: the operator's and the bot writer's tools for the exchange daemon.

exch journal verify [--shard S [--path DIR]]   check a journal's invariants; exit 1 if broken
exch journal book SYMBOL [--at-seq N]          a book as it was at seq N, rebuilt by replay

Every command takes ``--config FILE`` (default: $EXCH_CONFIG, else the embedded
default config) and ``--help``; those that print data take ``--json``. Bad
input is one line on stderr naming the problem, exit 2, and nothing changed.
"""

import argparse
import dataclasses
import json
import os
import sys

from exchange.config import Config, ConfigError, load_config
from exchange.engine import RecoveryError
from exchange.journal import JournalError
from tools.errors import ToolError
from tools.progress import Progress


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


def _journal_path(config: Config, shard: str) -> str:
    return os.path.join(config.journal.dir, shard)


def _print_json(doc) -> None:
    print(json.dumps(doc))


# ------------------------------------------------------------ journal


def cmd_journal_verify(args) -> int:
    from tools.verify import render, verify_journal

    config = _config(args)
    if args.path and not args.shard:
        raise ToolError("--path needs --shard: the shard's config says what its books are")
    names = [args.shard] if args.shard else [s.name for s in config.shards]
    reports = []
    for name in names:
        index = _shard_of(config, name)
        shard = config.shards[index]
        path = args.path or _journal_path(config, name)
        books = [config.instrument(sym).book for sym in shard.instruments]
        progress = Progress(f"verifying {name}", 0)

        def show(seq, last, progress=progress):
            progress.total = last
            progress.update(seq)

        try:
            report = verify_journal(
                path,
                books,
                symbols=list(shard.instruments),
                shard=name,
                shard_index=index,
                progress=show,
            )
        except JournalError as e:
            raise ToolError(str(e)) from None
        finally:
            progress.close()
        reports.append(report)
        if not args.json:
            print(render(report))
    ok = all(r.ok for r in reports)
    if args.json:
        shards = [{**dataclasses.asdict(r), "ok": r.ok} for r in reports]
        _print_json({"ok": ok, "shards": shards})
    return 0 if ok else 1


def cmd_journal_book(args) -> int:
    from tools.bookat import book_at
    from tools.ladder import ladder_doc, render_ladder

    config = _config(args)
    routes = config.routes()
    if args.symbol not in routes:
        raise ToolError(f"no instrument {args.symbol!r} in the config ({', '.join(routes)})")
    name, instrument = routes[args.symbol]
    index = _shard_of(config, name)
    books = [config.instrument(sym).book for sym in config.shards[index].instruments]
    if args.levels < 1:
        raise ToolError(f"--levels must be >= 1, got {args.levels}")
    try:
        at = book_at(
            args.path or _journal_path(config, name),
            books,
            instrument,
            args.at_seq,
            args.levels,
            index,
        )
    except JournalError as e:
        raise ToolError(str(e)) from None
    except RecoveryError as e:
        print(f"exch: the journal does not replay: {e}; run `exch journal verify`", file=sys.stderr)
        return 1
    if args.json:
        _print_json(
            {
                **ladder_doc(args.symbol, at.seq, at.bids, at.asks),
                "state_hash": at.state_hash,
                "snapshot_seq": at.snapshot_seq,
                "replayed": at.replayed,
            }
        )
    else:
        print(render_ladder(args.symbol, at.seq, at.bids, at.asks))
        print(
            f"(shard {name}: snapshot at seq {at.snapshot_seq} + {at.replayed} commands "
            f"replayed in {at.seconds:.2f} s; book hash {at.state_hash})"
        )
    return 0


# ------------------------------------------------------------ the parser


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("EXCH_CONFIG"),
        help="the daemon's TOML config (default: $EXCH_CONFIG, else the embedded default)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    ap = argparse.ArgumentParser(
        prog="exch",
        description="Operator and bot tools for the exchange daemon.",
        epilog="`exch COMMAND --help` tells more about each command.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    journal = sub.add_parser("journal", help="read a shard's journal (verify, past books)")
    jsub = journal.add_subparsers(dest="what", required=True, metavar="ACTION")
    verify = jsub.add_parser(
        "verify",
        parents=[common, as_json],
        help="check a journal's invariants and its replay; exit 1 on any violation",
        description="Check sequence, events, fills, idempotency, replay and snapshot of "
        "every shard's journal (or one). Safe while the daemon runs.",
    )
    verify.add_argument("--shard", help="only this shard (default: every shard of the config)")
    verify.add_argument("--path", help="the journal directory, e.g. a backup (needs --shard)")
    verify.set_defaults(func=cmd_journal_verify)
    book = jsub.add_parser(
        "book",
        parents=[common, as_json],
        help="a book as it was at a seq, rebuilt by replay",
        description="Rebuild SYMBOL's book at seq N of its shard's journal by replay.",
    )
    book.add_argument("symbol", metavar="SYMBOL")
    book.add_argument("--at-seq", type=int, metavar="N", help="default: the last journaled seq")
    book.add_argument("--levels", type=int, default=10, help="price levels per side (10)")
    book.add_argument("--path", help="the shard's journal directory (default: from the config)")
    book.set_defaults(func=cmd_journal_book)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ToolError as e:
        print(f"exch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
