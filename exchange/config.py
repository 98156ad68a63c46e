"""The daemon's configuration: one TOML file, or the embedded ``DEFAULT_TOML``.

``load_config(path)`` reads and checks everything before any process starts and
raises one ``ConfigError`` that names the key and the problem. ``dump_config``
writes the effective config back as TOML that loads to the same ``Config``
(what ``python -m exchange.config [PATH]`` prints).

Every key is required except ``cpus`` (CPU pinning, none when absent), ``wait``
(the wait strategy, ``shm.wait``: "sleep" when absent), the
keys of an instrument's ``book`` table, whose defaults are ``BookConfig``'s,
and the optional risk settings whose absence means "none": ``price_collar_ticks``
(no collar in ticks), ``starting_cash`` (0), ``[risk.positions]`` (no per-symbol
limit) and ``[[clients]]`` (no per-client overrides). Otherwise the embedded
default is the one place where default values are written down.
Relative paths are relative to the working directory of the process.

An instrument's index inside its shard (``instrument`` in COMMAND and EVENT
records) is its position in that shard's ``instruments`` list.
"""

import json
import os
import re
import sys
import tomllib
from typing import Annotated, Literal

import msgspec

from exchange.bookconfig import BookConfig

DEFAULT_TOML = """\
# exchanged configuration (the embedded default). Prices are integer price
# units and quantities integer quantity units, per instrument.

# One [[instruments]] table per instrument. ref_price is the reference for the
# gateway's price collar. [instruments.book] is the book's static parameters
# (exchange/bookconfig.py): a limit price is a multiple of tick_size in
# [min_price, max_price], a qty a multiple of lot_size up to max_qty; capacity
# is how many orders can rest at once. session_end ("HH:MM", UTC; optional) is when
# a DAY order on the instrument expires: the first such time after the gateway took
# it (the crypto pairs here have none: DAY orders are refused on them).
[[instruments]]
symbol = "ACME"
ref_price = 10_000
session_end = "21:00"
[instruments.book]
min_price = 5_000
max_price = 20_000
tick_size = 1
lot_size = 1
max_qty = 100_000
capacity = 65_536

[[instruments]]
symbol = "BOLT"
ref_price = 2_500
session_end = "21:00"
[instruments.book]
min_price = 1_000
max_price = 5_000
tick_size = 5
lot_size = 10
max_qty = 1_000_000
capacity = 65_536

[[instruments]]
symbol = "BTC-USD"
ref_price = 6_000_000
[instruments.book]
min_price = 3_000_000
max_price = 9_000_000
tick_size = 100
lot_size = 1
max_qty = 10_000
capacity = 65_536

[[instruments]]
symbol = "ETH-USD"
ref_price = 300_000
[instruments.book]
min_price = 150_000
max_price = 450_000
tick_size = 10
lot_size = 1
max_qty = 100_000
capacity = 65_536

# Each shard process holds the books of its instruments; every instrument is in
# exactly one shard, at the index of its position in the list. cpus pins the
# process to these CPUs ([]: no pinning), here and in [gateway].
# wait, here and in [gateway], is how the process waits for work (its wait
# strategy): "sleep" spins a few tens of microseconds, then sleeps until the
# other side rings its doorbell; right when processes share cores. "spin"
# busy-waits and never sleeps: it answers a few microseconds sooner and keeps a
# core at 100 % even when idle; only with cpus pinning the process to a core of
# its own, which nothing else uses (two for the gateway: its loop spins on one,
# ZeroMQ's I/O thread runs on the other).
[[shards]]
name = "s0"
instruments = ["ACME", "BOLT"]
cpus = []
wait = "sleep"

[[shards]]
name = "s1"
instruments = ["BTC-USD", "ETH-USD"]
cpus = []
wait = "sleep"

# Where bots connect: ROUTER for orders and private replies, PUB for market data
# (tcp://host:port or ipc://path, one or more each). The ports are above Linux's
# ephemeral range (32768-60999), so no outgoing connection can be holding them.
# keys_dir holds the gateway's CURVE key pair and the registered client keys.
# state_dir holds the gateway's own state (idempotency keys, positions, how far
# it has read each shard); "" puts it beside the journals, in <journal dir>/../gateway.
# key_window: the last this many keyed orders are remembered across instruments.
# max_connections_per_client: a client's handshakes are refused while it holds
# this many connections (ROUTER and PUB together); each takes a file descriptor.
# stall_ms: a shard that has taken none of the requests waiting in its ring, and
# published no event, for this long is reported stalled, and new requests for its
# instruments are refused "unavailable" until it moves again. Liveness only: what
# a shard journals never depends on it.
# md_interval_ms: Depth and TopOfBook go out once per turn of the gateway for the
# instruments whose levels moved; with md_interval_ms > 0, at most once every that
# many milliseconds (conflating more). Trades always go out at once.
[gateway]
router = ["tcp://127.0.0.1:61301"]
pub = ["tcp://127.0.0.1:61302"]
keys_dir = "./var/keys"
cpus = []
wait = "sleep"
state_dir = ""
key_window = 10_000_000
max_connections_per_client = 64
stall_ms = 2_000
md_interval_ms = 0

# One LMDB environment per shard under dir. durability "fsync": a batch is on
# stable storage before its events leave the shard; "os": in the OS page cache
# (survives a process crash, not a power loss).
# retain_commands: each shard keeps at least its last this many commands of history
# in its journal (0: all of it), and always what its recovery replays; older
# batches are written to archive_dir (one compressed, checksummed file per
# range, under <archive_dir>/<shard>) before they leave the journal, or dropped
# when archive_dir is "". See docs/OPERATIONS.md, "Journal retention".
[journal]
dir = "./var/journal"
durability = "fsync"
retain_commands = 1_000_000
archive_dir = ""

# A shard snapshots its books after this many commands or seconds, whichever first.
[snapshot]
every_commands = 100_000
every_seconds = 60

# Time enters a book only as a journaled command (CMD_EXPIRE, see exchange/records.py,
# EXPIRY): every every_ms, a shard reads its wall clock and, for each of its books
# holding an order (GTD or DAY) whose expiry is at or before that time, sequences an
# EXPIRE carrying it, which cancels those orders. A book with nothing due gets none: an
# idle shard journals nothing for the time. An order expires at most every_ms (and a
# quarter of a second, the loop's longest wait) after its time.
[expiry]
every_ms = 1_000

# A bot sends a Heartbeat at least every heartbeat_ms; a session silent for
# cancel_on_disconnect_ms has all its orders cancelled (0: never).
[session]
heartbeat_ms = 1_000
cancel_on_disconnect_ms = 5_000

# Per client: a token bucket of orders_per_second, holding at most burst.
[rate]
orders_per_second = 1_000
burst = 200

# The gateway's pre-trade checks, per client, unless the client's own [[clients]]
# table says otherwise. max_notional is qty x px (a market order counts at its
# instrument's max_price). A limit px must be within price_collar_bps basis points
# (1000 = 10%, at most 10_000) of the reference price (the last trade, before any:
# ref_price) and, when price_collar_ticks is given, within that many ticks of it
# too. max_open_orders counts the client's orders resting or in flight, over every
# instrument. max_position bounds each instrument's net position both ways,
# counting the worst case of open orders: position + open buys <= the limit,
# position - open sells >= -the limit; [risk.positions] sets it per symbol.
# starting_cash is each client's cash before its first fill (0 when absent).
# These defaults are a development exchange's, wide enough for any test bot:
# a venue sets its own (a 10% collar, a few thousand open orders...).
[risk]
max_order_qty = 100_000
max_notional = 10_000_000_000
price_collar_bps = 10_000
max_open_orders = 1_000_000
max_position = 1_000_000_000

# Per-client overrides (optional, any number): `client` is the client id; any
# key of [risk] or [rate] may follow, and a `positions` table (symbol -> limit).
# A symbol's position limit is the client's positions entry, else [risk.positions],
# else the client's max_position, else [risk] max_position. For example:
#
# [[clients]]
# client = 7
# max_open_orders = 50
# orders_per_second = 100
# positions = { "BTC-USD" = 20 }

# Shared memory: segment names start with namespace; ring capacities are in
# records and powers of two.
[shm]
namespace = "exchanged"
request_ring = 65_536
event_ring = 65_536

# Prometheus metrics over HTTP (host:port; "" turns them off), served by the
# process that owns the rings: the supervisor, or the rings unit under systemd.
[metrics]
listen = "127.0.0.1:9464"
"""

MAX_RING = 1 << 24

Positive = Annotated[int, msgspec.Meta(ge=1, le=(1 << 63) - 1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
# shard names become parts of shared-memory, journal and systemd unit names
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Endpoint = Annotated[str, msgspec.Meta(pattern=r"^(tcp://[^\s:/]+:[0-9]{1,5}|ipc://.+)$")]
Endpoints = Annotated[list[Endpoint], msgspec.Meta(min_length=1)]
Listen = Annotated[str, msgspec.Meta(pattern=r"^([^\s:/]+:[0-9]{1,5})?$")]
RingCapacity = Annotated[int, msgspec.Meta(ge=2, le=MAX_RING)]
Cpus = list[Annotated[int, msgspec.Meta(ge=0, le=4095)]]
Wait = Literal["sleep", "spin"]  # names of ``shm.wait`` strategies


class ConfigError(Exception):
    """The config cannot be used: ``key`` is the dotted path of the key at fault."""

    def __init__(self, key: str, problem: str, source: str = "<default>"):
        where = f"{source}: `{key}`" if key else source
        super().__init__(f"invalid config {where}: {problem}")
        self.key = key
        self.problem = problem
        self.source = source


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


SessionEnd = Annotated[str, msgspec.Meta(pattern=r"^$|^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class InstrumentSection(_Section, kw_only=True, omit_defaults=True):
    symbol: Symbol
    ref_price: Positive
    book: BookConfig
    # "HH:MM", UTC: when a DAY order on it expires (the next such time after the gateway
    # took the order); "": DAY orders are refused on it
    session_end: SessionEnd = ""


NS_PER_DAY = 86_400 * 10**9


def session_end_ns(session_end: str) -> int | None:
    """An instrument's session end as ns after midnight UTC, None for none ("")."""
    if not session_end:
        return None
    hours, minutes = session_end.split(":")
    return (int(hours) * 3600 + int(minutes) * 60) * 10**9


def next_session_end(now_ns: int, end_of_day_ns: int) -> int:
    """The first time of day ``end_of_day_ns`` (UTC) strictly after ``now_ns`` (ns since
    the epoch): a DAY order's expiry."""
    day = now_ns - now_ns % NS_PER_DAY
    end = day + end_of_day_ns
    return end if end > now_ns else end + NS_PER_DAY


class ShardSection(_Section, kw_only=True):
    name: Name
    instruments: Annotated[list[Symbol], msgspec.Meta(min_length=1, max_length=1 << 16)]
    cpus: Cpus = []
    wait: Wait = "sleep"


class GatewaySection(_Section, kw_only=True):
    router: Endpoints
    pub: Endpoints
    keys_dir: str
    cpus: Cpus = []
    wait: Wait = "sleep"
    state_dir: str = ""
    key_window: Positive = 10_000_000
    max_connections_per_client: Positive = 64
    stall_ms: Positive = 2_000
    md_interval_ms: NonNegative = 0


class JournalSection(_Section, kw_only=True):
    dir: str
    durability: Literal["fsync", "os"]
    retain_commands: NonNegative = 0
    archive_dir: str = ""


class SnapshotSection(_Section, kw_only=True):
    every_commands: Positive
    every_seconds: Positive


class ExpirySection(_Section, kw_only=True):
    every_ms: Positive = 1_000


class SessionSection(_Section, kw_only=True):
    heartbeat_ms: Positive
    cancel_on_disconnect_ms: NonNegative


class RateSection(_Section, kw_only=True):
    orders_per_second: Positive
    burst: Positive


Bps = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
ClientId = Annotated[int, msgspec.Meta(ge=1, le=(1 << 32) - 1)]
Cash = Annotated[int, msgspec.Meta(ge=-(1 << 62), le=1 << 62)]


class RiskSection(_Section, kw_only=True, omit_defaults=True):
    max_order_qty: Positive
    max_notional: Positive
    price_collar_bps: Bps
    price_collar_ticks: NonNegative = 0  # 0: no collar in ticks
    max_open_orders: Positive
    max_position: Positive
    positions: dict[Symbol, Positive] = {}
    starting_cash: Cash = 0


class ClientLimits(_Section, kw_only=True, omit_defaults=True):
    """One client's overrides of [risk] and [rate]; None: the default applies."""

    client: ClientId
    max_order_qty: Positive | None = None
    max_notional: Positive | None = None
    price_collar_bps: Bps | None = None
    price_collar_ticks: NonNegative | None = None
    max_open_orders: Positive | None = None
    max_position: Positive | None = None
    positions: dict[Symbol, Positive] = {}
    starting_cash: Cash | None = None
    orders_per_second: Positive | None = None
    burst: Positive | None = None


class ShmSection(_Section, kw_only=True):
    namespace: Name
    request_ring: RingCapacity
    event_ring: RingCapacity


class MetricsSection(_Section, kw_only=True):
    listen: Listen = "127.0.0.1:9464"


class Config(_Section, kw_only=True, omit_defaults=True):
    instruments: Annotated[list[InstrumentSection], msgspec.Meta(min_length=1)]
    shards: Annotated[list[ShardSection], msgspec.Meta(min_length=1)]
    gateway: GatewaySection
    journal: JournalSection
    snapshot: SnapshotSection
    expiry: ExpirySection = ExpirySection()
    session: SessionSection
    rate: RateSection
    risk: RiskSection
    clients: list[ClientLimits] = []
    shm: ShmSection
    metrics: MetricsSection = MetricsSection()

    def instrument(self, symbol: str) -> InstrumentSection:
        for inst in self.instruments:
            if inst.symbol == symbol:
                return inst
        raise KeyError(f"no instrument {symbol!r} in the config")


_BOOK_KEYS = frozenset(BookConfig.__struct_fields__)
_AT = re.compile(r" - at (`key` in )?`\$\.?([^`]*)`$")
_NAMED_FIELD = re.compile(r"^Object (missing required|contains unknown) field `([^`]*)`")


def load_config(path=None) -> Config:
    """The config in the TOML file at ``path``, or the embedded default when None."""
    if path is None:
        return parse_config(DEFAULT_TOML)
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read it: {e}", str(path)) from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<default>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"not valid TOML: {e}", source) from None
    _check_book_keys(raw, source)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise _validation_error(str(e), source) from None
    _check(config, source)
    return config


def _validation_error(text: str, source: str) -> ConfigError:
    at = _AT.search(text)
    key = at.group(2) if at else ""
    problem = text[: at.start()] if at else text
    if at and at.group(1):
        problem += " (in a key of this table)"
    named = _NAMED_FIELD.match(problem)
    if named:
        key = f"{key}.{named.group(2)}" if key else named.group(2)
        problem = "missing required key" if named.group(1).startswith("missing") else "unknown key"
    return ConfigError(key, problem, source)


def _check_book_keys(raw: dict, source: str) -> None:
    """BookConfig ignores unknown keys; a misspelt tick_size must not pass silently."""
    instruments = raw.get("instruments")
    if not isinstance(instruments, list):
        return
    for i, inst in enumerate(instruments):
        book = inst.get("book") if isinstance(inst, dict) else None
        if isinstance(book, dict):
            for key in book.keys() - _BOOK_KEYS:
                raise ConfigError(f"instruments[{i}].book.{key}", "unknown key", source)


def _check(config: Config, source: str) -> None:
    """The rules that span keys; the first problem found is raised."""

    def fail(key: str, problem: str):
        raise ConfigError(key, problem, source)

    first_at = {}
    for i, inst in enumerate(config.instruments):
        if inst.symbol in first_at:
            fail(
                f"instruments[{i}].symbol",
                f"duplicate symbol {inst.symbol!r} (also instruments[{first_at[inst.symbol]}])",
            )
        first_at[inst.symbol] = i
        book = inst.book
        if not book.min_price <= inst.ref_price <= book.max_price:
            fail(
                f"instruments[{i}].ref_price",
                f"{inst.ref_price} is outside the price band [{book.min_price}, {book.max_price}]",
            )
        if inst.ref_price % book.tick_size:
            fail(
                f"instruments[{i}].ref_price",
                f"{inst.ref_price} is not a multiple of the tick size {book.tick_size}",
            )
    shard_of = {}
    names = set()
    for k, shard in enumerate(config.shards):
        if shard.name in names:
            fail(f"shards[{k}].name", f"duplicate shard name {shard.name!r}")
        names.add(shard.name)
        for j, sym in enumerate(shard.instruments):
            key = f"shards[{k}].instruments[{j}]"
            if sym not in first_at:
                fail(key, f"{sym!r} is not one of the instruments")
            if sym in shard_of:
                fail(
                    key, f"{sym!r} is in shard {shard_of[sym]!r} already; one shard per instrument"
                )
            shard_of[sym] = shard.name
    archives = config.journal.archive_dir
    if archives and os.path.normpath(archives) == os.path.normpath(config.journal.dir):
        # <archive_dir>/<shard> would be the shard's journal directory
        fail("journal.archive_dir", f"{archives!r} is the journal directory; use another")
    for i, inst in enumerate(config.instruments):
        if inst.symbol not in shard_of:
            fail(f"instruments[{i}].symbol", f"{inst.symbol!r} is in no shard")
    seen = {}
    for kind in ("router", "pub"):
        for j, endpoint in enumerate(getattr(config.gateway, kind)):
            key = f"gateway.{kind}[{j}]"
            if endpoint in seen:
                fail(key, f"{endpoint} is also {seen[endpoint]}")
            seen[endpoint] = key
            if endpoint.startswith("tcp://") and not 1 <= int(endpoint.rsplit(":", 1)[1]) <= 65535:
                fail(key, f"{endpoint}: the port must be in 1..65535")
    for kind in ("request_ring", "event_ring"):
        n = getattr(config.shm, kind)
        if n & (n - 1):
            fail(f"shm.{kind}", f"{n} is not a power of two")
    if 0 < config.session.cancel_on_disconnect_ms <= config.session.heartbeat_ms:
        fail(
            "session.cancel_on_disconnect_ms",
            "must be 0 (off) or longer than session.heartbeat_ms, or every session would be "
            "cancelled between two heartbeats",
        )
    tables = [("risk", config.risk.positions)]
    tables += [(f"clients[{k}]", c.positions) for k, c in enumerate(config.clients)]
    for key, positions in tables:
        for sym in positions:
            if sym not in first_at:
                fail(f"{key}.positions.{sym}", f"{sym!r} is not one of the instruments")
    client_at = {}
    for k, c in enumerate(config.clients):
        if c.client in client_at:
            fail(
                f"clients[{k}].client",
                f"client {c.client} has a table already (clients[{client_at[c.client]}])",
            )
        client_at[c.client] = k
    pinned = [(f"shards[{k}].cpus", s.cpus) for k, s in enumerate(config.shards)]
    for key, cpus in [*pinned, ("gateway.cpus", config.gateway.cpus)]:
        if len(set(cpus)) != len(cpus):
            fail(key, f"{cpus} lists a cpu twice")


def dump_config(config: Config) -> str:
    """The config as TOML text that ``parse_config`` reads back to an equal Config."""
    lines = []
    _emit_table(lines, "", msgspec.to_builtins(config))
    return "\n".join(lines).strip() + "\n"


def _emit_table(lines: list[str], path: str, table: dict) -> None:
    """Keys with values first (TOML puts them before any header), then tables in order."""
    nested = {k: v for k, v in table.items() if isinstance(v, dict) or _is_table_array(v)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested.items():
        sub = f"{path}.{_key(key)}" if path else _key(key)
        for item in [value] if isinstance(value, dict) else value:
            lines += ["", f"[{sub}]" if isinstance(value, dict) else f"[[{sub}]]"]
            _emit_table(lines, sub, item)


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string: same quotes, same escapes
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def main(argv: list[str]) -> int:
    """``python -m exchange.config [PATH]``: print the effective config."""
    try:
        config = load_config(argv[0] if argv else None)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    sys.stdout.write(dump_config(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
