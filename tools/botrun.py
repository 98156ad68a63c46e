"""What the demo bots share: their arguments, their connection, and the loop that runs
them until SIGTERM, SIGINT or the end of their time, then lets them clean up."""

import argparse
import signal
import sys
import time

from exchange.config import ConfigError, load_config
from tools import connect
from tools.errors import ToolError


def run_bot(bot, seconds: float, step_seconds: float) -> int:
    """``bot.step()`` every ``step_seconds`` until SIGTERM/SIGINT or ``seconds`` (0: no end),
    then ``bot.stop()``; the process's exit code."""
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    end = time.monotonic() + seconds if seconds else float("inf")
    try:
        while not stopping and time.monotonic() < end:
            t0 = time.monotonic()
            bot.step()
            time.sleep(max(0.0, step_seconds - (time.monotonic() - t0)))
        bot.stop()
    except TimeoutError as e:
        print(f"{sys.argv[0]}: the gateway stopped answering ({e})", file=sys.stderr)
        return 1
    return 0


def bot_args(description: str, argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", help="the daemon's TOML config (default: the embedded one)")
    ap.add_argument("--key", required=True, help="the bot's secret certificate")
    ap.add_argument("--symbol", default="ACME")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    ap.add_argument("--seed", type=int, help="for a reproducible run")
    return ap.parse_args(argv)


def bot_client(args):
    """(instrument, connected Client) of a bot's arguments; exits 2 on bad input."""
    try:
        config = load_config(args.config)
        inst = config.instrument(args.symbol)
        ident = connect.identity(config, args.key)
        return inst, connect.client(config, ident)
    except (ConfigError, KeyError, ToolError) as e:
        print(f"{sys.argv[0]}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
