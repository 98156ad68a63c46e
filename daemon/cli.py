"""``exchanged``: run the daemon, show its status, show its config.

exchanged run [--config FILE]                       supervisor + every process
exchanged run --role shard --name s0 [--config F]   one shard (what systemd runs)
exchanged run --role gateway [--config F]           the gateway (what systemd runs)
exchanged run --role rings [--config F]             the rings' owner under systemd
exchanged status [--config FILE] [--json]           exit 0 iff every expected process is up
exchanged config show [--config FILE]

``--config`` defaults to ``$EXCH_CONFIG`` (as for ``exch``), else the embedded config.
"""

import argparse
import json
import os
import sys

from exchange import logs
from exchange.config import ConfigError, dump_config, load_config
from exchange.exitcodes import EXIT_BROKEN_PIPE

CONFIG_OPTION = {
    "default": os.environ.get("EXCH_CONFIG"),
    "help": "TOML config (default: $EXCH_CONFIG, else the embedded one)",
}


def _load(path):
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"exchanged: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args) -> int:
    if args.role == "shard":
        from exchange import shard

        if not args.name:
            print("exchanged: --role shard needs --name", file=sys.stderr)
            return 2
        argv = ["--name", args.name] + (["--config", args.config] if args.config else [])
        return shard.main(argv)
    if args.role == "gateway":
        from gateway import server

        return server.main(["--config", args.config] if args.config else [])
    config = _load(args.config)
    if args.role == "rings":
        from daemon.supervisor import hold_rings

        logs.set_role("rings")
        return hold_rings(config)
    from daemon.supervisor import Supervisor

    logs.set_role("supervisor")
    gw = config.gateway
    shards = ", ".join(s.name for s in config.shards)
    print(
        f"exchanged: starting {len(config.shards)} shard(s) ({shards}) and the gateway\n"
        f"  orders (ROUTER, CURVE): {', '.join(gw.router)}\n"
        f"  market data (PUB):      {', '.join(gw.pub)}\n"
        f"  client keys:            {gw.keys_dir}\n"
        f"  journals:               {config.journal.dir} ({config.journal.durability})\n"
        "  Ctrl-C stops everything cleanly.",
        file=sys.stderr,
    )
    return Supervisor(config, args.config).run()


def cmd_status(args) -> int:
    from daemon.status import collect, render

    config = _load(args.config)
    doc = collect(config)
    print(json.dumps(doc) if args.json else render(doc))
    return 0 if doc["all_up"] else 1


def cmd_config(args) -> int:
    sys.stdout.write(dump_config(_load(args.config)))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="exchanged", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the daemon (or one of its processes)")
    run.add_argument("--config", **CONFIG_OPTION)
    run.add_argument("--role", choices=["all", "shard", "gateway", "rings"], default="all")
    run.add_argument("--name", help="the shard's name, with --role shard")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser(
        "status",
        help="processes, sequences, rates, ring depths; exit 0 iff every expected process is up",
    )
    st.add_argument("--config", **CONFIG_OPTION)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    cf = sub.add_parser("config", help="configuration")
    cf_sub = cf.add_subparsers(dest="what", required=True)
    show = cf_sub.add_parser("show", help="print the effective config as TOML")
    show.add_argument("--config", **CONFIG_OPTION)
    show.set_defaults(func=cmd_config)
    args = ap.parse_args(argv)
    return quiet_on_broken_pipe(args.func, args)


def quiet_on_broken_pipe(func, *args) -> int:
    """``func(*args)``; when stdout's reader has gone (``| head``), exit 141 as a process
    killed by SIGPIPE would, without a traceback (nor another at exit's flush)."""
    try:
        return func(*args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
