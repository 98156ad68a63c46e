"""``exch demo`` (``make demo``): a market maker and a noise taker trading through the real
daemon, and the book moving on the screen.

1. The config: ``--config``, or the demo's own (the embedded default with its
   journal and keys under ``--dir``, namespace ``demo`` and ports 61311/61312 (metrics 9465),
   so it runs beside ``make run``), written to ``<dir>/exchange.toml``.
2. Keys: the gateway's pair if there is none, and one client each for the
   maker, the taker and the viewer (``DEMO_CLIENTS``), their secret
   certificates in ``<dir>/bots``, reused on the next run.
3. The daemon (``exchanged run``, its log in ``<dir>/daemon.log``), unless
   ``--attach`` says one is running with that config already.
4. The bots, each its own process (``python -m tools.maker`` / ``tools.taker``).
5. The viewer: the symbol's depth ladder and last trades from the public feed,
   redrawn every ``FRAME_SECONDS`` until ``--seconds`` or Ctrl-C.
6. Everything it started is stopped: the bots (they cancel their quotes),
   then the daemon.
"""

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from exchange import topology
from exchange.config import (
    DEFAULT_TOML,
    Config,
    ConfigError,
    dump_config,
    load_config,
    parse_config,
)
from gateway.keys import list_clients, load_secret_certificate, register_client
from gateway.protocol import Trades
from tools import connect, keytool
from tools.errors import ToolError
from tools.ladder import ladder_doc, render_ladder
from tools.market import patient

DEMO_CLIENTS = {"maker": 9001, "taker": 9002, "viewer": 9003}
DEMO_PORTS = (61311, 61312)
DEMO_METRICS_PORT = 9465  # beside `make run`'s 9464
FRAME_SECONDS = 0.5
START_SECONDS = 300  # a first start compiles the kernels
STOP_SECONDS = 60
KEY_RELOAD_SECONDS = 1.5  # a running gateway reloads the keys directory every second
DEPTH = 8
LAST_TRADES = 8
CLEAR = "\x1b[H\x1b[2J"


def demo_config(folder: Path) -> Config:
    r = msgspec.structs.replace
    cfg = parse_config(DEFAULT_TOML)
    router, pub = (f"tcp://127.0.0.1:{port}" for port in DEMO_PORTS)
    return r(
        cfg,
        journal=r(cfg.journal, dir=str(folder / "journal")),
        gateway=r(cfg.gateway, router=[router], pub=[pub], keys_dir=str(folder / "keys")),
        shm=r(cfg.shm, namespace="demo"),
        metrics=r(cfg.metrics, listen=f"127.0.0.1:{DEMO_METRICS_PORT}"),
    )


def bot_keys(config: Config, folder: Path) -> tuple[dict[str, Path], bool]:
    """The demo clients' secret certificates, registered; and whether any was new."""
    keys_dir = config.gateway.keys_dir
    keytool.server(keys_dir, create_pair=True)
    (folder / "bots").mkdir(parents=True, exist_ok=True)
    registered = list_clients(keys_dir)
    paths, new = {}, False
    for name, client in DEMO_CLIENTS.items():
        path = folder / "bots" / f"{name}.key_secret"
        paths[name] = path
        public = load_secret_certificate(path)[0] if path.exists() else None
        if client in registered:
            if registered[client] != public:
                raise ToolError(
                    f"client {client} (the demo's {name}) is registered in {keys_dir} with "
                    f"another key than {path}; revoke it (`exch keys revoke {client}`) or "
                    "use another --dir"
                )
            continue
        if public is None:
            keytool.create(keys_dir, client, path)
        else:
            register_client(keys_dir, client, public)
        new = True
    return paths, new


class Processes:
    """The processes the demo started, stopped in reverse order with SIGTERM."""

    def __init__(self):
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
        self.started.append((name, proc))
        return proc

    def stop(self) -> dict[str, int]:
        codes = {}
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        self.started.clear()
        return codes


def _connect_viewer(config, ident, daemon: subprocess.Popen | None, log: Path, note):
    deadline = time.monotonic() + START_SECONDS
    note("waiting for the gateway (a first start compiles the kernels: up to a minute)...")
    while True:
        try:
            return connect.client(config, ident)
        except ToolError:
            if daemon is not None and daemon.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise ToolError(f"the daemon exited with {daemon.returncode}:\n{tail}") from None
            if time.monotonic() > deadline:
                raise


class Tape:
    """What the viewer saw of the trades."""

    def __init__(self):
        self.last = collections.deque(maxlen=LAST_TRADES)
        self.trades = 0
        self.volume = 0
        self.first = self.low = self.high = None

    def add(self, msg: Trades) -> None:
        for px, qty in msg.prints:
            self.last.appendleft((msg.seq, msg.side, qty, px))
            self.trades += 1
            self.volume += qty
            self.first = px if self.first is None else self.first
            self.low = px if self.low is None else min(self.low, px)
            self.high = px if self.high is None else max(self.high, px)


def _frame(sym, book, tape: Tape, elapsed: float, seconds: float, cfg_path) -> str:
    until = f" of {seconds:.0f}" if seconds else ""
    lines = [
        f"exch demo: {sym}, a market maker (client {DEMO_CLIENTS['maker']}) and a noise "
        f"taker (client {DEMO_CLIENTS['taker']}) through the real daemon",
        f"{elapsed:.0f} s{until}; Ctrl-C stops everything",
        "",
        render_ladder(sym, book.seq, book.bids, book.asks) if book else "(no book yet)",
        "",
        f"trades {tape.trades}, volume {tape.volume}"
        + (f", range {tape.low}..{tape.high}" if tape.trades else ""),
    ]
    lines += [f"  seq {seq:>8}  {side:<4} {qty:>6} @ {px}" for seq, side, qty, px in tape.last]
    lines += [
        "",
        f"in another terminal: exch top --config {cfg_path}, "
        f"exch journal verify --config {cfg_path}",
    ]
    return "\n".join(lines)


def run(
    *,
    folder: Path,
    config_path: str | None,
    attach: bool,
    symbol: str,
    seconds: float,
    as_json: bool,
    out,
    err,
) -> dict:
    """The demo; returns its summary (trades seen, price range, final book, exit codes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if config_path is None:
        config = demo_config(folder.resolve())
        config_path = str(folder / "exchange.toml")
        Path(config_path).write_text(dump_config(config))
    else:
        try:
            config = load_config(config_path)
        except ConfigError as e:
            raise ToolError(str(e)) from None
    if symbol not in topology.routes(config):
        raise ToolError(f"no instrument {symbol!r} in the config")

    def note(text):
        if not as_json:
            print(text, file=err, flush=True)

    paths, new_keys = bot_keys(config, folder)
    procs = Processes()
    log = folder / "daemon.log"
    viewer = sub = None
    try:
        daemon = None
        if not attach:
            note(f"starting the daemon (config {config_path}, log {log})")
            argv = [sys.executable, "-m", "daemon.cli", "run", "--config", config_path]
            daemon = procs.start("daemon", argv, log)
        elif new_keys:
            time.sleep(KEY_RELOAD_SECONDS)
        ident = connect.identity(config, str(paths["viewer"]))
        viewer = _connect_viewer(config, ident, daemon, log, note)
        for bot in ("maker", "taker"):
            argv = [sys.executable, "-m", f"tools.{bot}", "--config", config_path]
            argv += ["--key", str(paths[bot]), "--symbol", symbol]
            procs.start(bot, argv, folder / f"{bot}.log")
        sub = connect.subscriber(config, ident, [symbol], patient(viewer.book), DEPTH)
        tape = Tape()
        t0 = time.monotonic()
        live = out.isatty() and not as_json
        shown = 0.0
        try:
            while not seconds or time.monotonic() - t0 < seconds:
                for msg in sub.poll(FRAME_SECONDS):
                    if isinstance(msg, Trades):
                        tape.add(msg)
                elapsed = time.monotonic() - t0
                if live or (not as_json and elapsed - shown >= 5):
                    frame = _frame(
                        symbol, sub.books.get(symbol), tape, elapsed, seconds, config_path
                    )
                    out.write((CLEAR if live else "\n") + frame + "\n")
                    out.flush()
                    shown = elapsed
        except KeyboardInterrupt:
            pass
        book = sub.books.get(symbol)
        summary = {
            "symbol": symbol,
            "config": config_path,
            "seconds": round(time.monotonic() - t0, 1),
            "trades": tape.trades,
            "volume": tape.volume,
            "first_px": tape.first,
            "low": tape.low,
            "high": tape.high,
            "book": ladder_doc(symbol, book.seq, book.bids, book.asks) if book else None,
            "gaps": sub.gaps,
        }
    finally:
        if sub is not None:
            sub.close()
        if viewer is not None:
            viewer.close()
        note("stopping the bots" + ("" if attach else " and the daemon"))
        codes = procs.stop()
    summary["exit_codes"] = codes
    return summary
