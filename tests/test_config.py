"""The daemon config: the embedded default, the TOML round trip, and one clear error per fault."""

import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import pytest

from exchange import journal, topology
from exchange.bookconfig import BookConfig
from exchange.config import (
    DEFAULT_TOML,
    Config,
    ConfigError,
    JournalSection,
    dump_config,
    load_config,
    next_session_end,
    parse_config,
    session_end_ns,
)

REPO = Path(__file__).resolve().parents[1]


def test_default_has_four_instruments_over_two_shards_on_loopback():
    config = load_config()
    assert isinstance(config, Config)
    assert [i.symbol for i in config.instruments] == ["ACME", "BOLT", "BTC-USD", "ETH-USD"]
    assert [s.name for s in config.shards] == ["s0", "s1"]
    for endpoint in config.gateway.router + config.gateway.pub:
        assert endpoint.startswith("tcp://127.0.0.1:")
        assert 61000 <= int(endpoint.rsplit(":", 1)[1]) <= 65535  # not an ephemeral port
    assert config.journal.dir.startswith("./var/")
    assert all(isinstance(i.book, BookConfig) for i in config.instruments)
    assert config.instrument("BOLT").book.tick_size == 5


def test_instrument_index_is_its_position_in_the_shard_list():
    assert topology.routes(load_config()) == {
        "ACME": ("s0", 0),
        "BOLT": ("s0", 1),
        "BTC-USD": ("s1", 0),
        "ETH-USD": ("s1", 1),
    }


def test_the_gateway_keeps_its_state_beside_the_journals_unless_told():
    cfg = parse_config(DEFAULT_TOML)
    assert topology.gateway_state_dir(cfg) == "var/gateway"  # beside ./var/journal
    r = msgspec.structs.replace
    moved = r(cfg, journal=r(cfg.journal, dir="/srv/x/journal/"))
    assert topology.gateway_state_dir(moved) == "/srv/x/gateway"
    told = r(cfg, gateway=r(cfg.gateway, state_dir="/elsewhere"))
    assert topology.gateway_state_dir(told) == "/elsewhere"


def test_unknown_instrument_is_a_key_error():
    with pytest.raises(KeyError, match="no instrument 'NOPE'"):
        load_config().instrument("NOPE")


def test_durability_modes_are_the_journals():
    [durability] = [f for f in msgspec.structs.fields(JournalSection) if f.name == "durability"]
    assert set(typing.get_args(durability.type)) == set(journal.DURABILITY_MODES)
    for mode in journal.DURABILITY_MODES:
        text = DEFAULT_TOML.replace('durability = "fsync"', f'durability = "{mode}"')
        assert parse_config(text).journal.durability == mode


def test_default_round_trips_through_dump():
    config = load_config()
    text = dump_config(config)
    assert parse_config(text) == config
    assert dump_config(parse_config(text)) == text


def test_a_file_round_trips_with_pinning_ipc_and_escapes(tmp_path):
    text = (
        DEFAULT_TOML.replace(
            'router = ["tcp://127.0.0.1:61301"]',
            'router = ["tcp://127.0.0.1:61301", "ipc://./var/router \\"a\\".ipc"]',
        )
        .replace('keys_dir = "./var/keys"\ncpus = []', 'keys_dir = "./var/keys"\ncpus = [0]')
        .replace('instruments = ["ACME", "BOLT"]\ncpus = []', 'instruments = ["ACME", "BOLT"]')
    )
    path = tmp_path / "exchanged.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.gateway.router[1] == 'ipc://./var/router "a".ipc'
    assert config.gateway.cpus == [0] and config.shards[0].cpus == []
    again = tmp_path / "again.toml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_wait_strategies_default_to_sleep_and_are_set_per_process():
    config = load_config()
    assert config.gateway.wait == "sleep"
    assert [s.wait for s in config.shards] == ["sleep", "sleep"]
    text = DEFAULT_TOML.replace(
        'instruments = ["ACME", "BOLT"]\ncpus = []\nwait = "sleep"',
        'instruments = ["ACME", "BOLT"]\ncpus = [1]\nwait = "spin"',
    ).replace('cpus = []\nwait = "sleep"\nstate_dir', 'cpus = [0]\nwait = "spin"\nstate_dir')
    config = parse_config(text)
    assert (config.gateway.wait, config.gateway.cpus) == ("spin", [0])
    assert [(s.wait, s.cpus) for s in config.shards] == [("spin", [1]), ("sleep", [])]
    assert parse_config(dump_config(config)) == config
    absent = parse_config(DEFAULT_TOML.replace('wait = "sleep"\n', ""))
    assert absent == load_config()


def test_config_show_prints_the_effective_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(DEFAULT_TOML.replace("burst = 200", "burst = 7"))
    run = subprocess.run(
        [sys.executable, "-m", "exchange.config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert parse_config(run.stdout).rate.burst == 7
    assert run.stdout == dump_config(load_config(path))


def test_config_show_fails_with_the_key_and_changes_nothing(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(DEFAULT_TOML.replace('durability = "fsync"', 'durability = "never"'))
    run = subprocess.run(
        [sys.executable, "-m", "exchange.config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert "`journal.durability`" in run.stderr and str(path) in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def _bad(old: str, new: str) -> str:
    assert DEFAULT_TOML.count(old) == 1, f"{old!r} must occur once in DEFAULT_TOML"
    return DEFAULT_TOML.replace(old, new)


BOLT_BOOK = "min_price = 1_000\nmax_price = 5_000\ntick_size = 5"
BAD = {
    "unknown top-level key": (DEFAULT_TOML + "\n[extra]\nx = 1\n", "extra", "unknown key"),
    "unknown key in a section": (
        _bad('durability = "fsync"', 'durability = "fsync"\ndurabilty = "os"'),
        "journal.durabilty",
        "unknown key",
    ),
    "unknown key in a book": (
        _bad("tick_size = 5\n", "tick_size = 5\ntick = 5\n"),
        "instruments[1].book.tick",
        "unknown key",
    ),
    "unknown durability": (
        _bad('durability = "fsync"', 'durability = "sometimes"'),
        "journal.durability",
        "Invalid enum value 'sometimes'",
    ),
    "missing key": (
        _bad('keys_dir = "./var/keys"\n', ""),
        "gateway.keys_dir",
        "missing required key",
    ),
    "key window not positive": (
        _bad("key_window = 10_000_000\n", "key_window = 0\n"),
        "gateway.key_window",
        ">= 1",
    ),
    "stall time not positive": (
        _bad("stall_ms = 2_000\n", "stall_ms = 0\n"),
        "gateway.stall_ms",
        ">= 1",
    ),
    "missing section": (
        _bad("[rate]\norders_per_second = 1_000\nburst = 200\n", ""),
        "rate",
        "missing required key",
    ),
    "wrong type": (_bad("burst = 200", 'burst = "200"'), "rate.burst", "Expected `int`, got `str`"),
    "zero tick": (
        _bad("tick_size = 5", "tick_size = 0"),
        "instruments[1].book",
        "tick_size must be > 0",
    ),
    "band off the tick": (
        _bad(BOLT_BOOK, BOLT_BOOK.replace("1_000", "1_001")),
        "instruments[1].book",
        "multiples of tick_size",
    ),
    "inverted band": (
        _bad(BOLT_BOOK, BOLT_BOOK.replace("max_price = 5_000", "max_price = 500")),
        "instruments[1].book",
        "below min_price",
    ),
    "ref price outside the band": (
        _bad("ref_price = 2_500", "ref_price = 9_000"),
        "instruments[1].ref_price",
        "outside the price band",
    ),
    "ref price off the tick": (
        _bad("ref_price = 2_500", "ref_price = 2_501"),
        "instruments[1].ref_price",
        "not a multiple of the tick size 5",
    ),
    "duplicate symbol": (
        _bad('symbol = "BOLT"', 'symbol = "ACME"'),
        "instruments[1].symbol",
        "duplicate symbol 'ACME'",
    ),
    "bad symbol": (_bad('symbol = "BOLT"', 'symbol = "BO LT"'), "instruments[1].symbol", "regex"),
    "instrument in two shards": (
        _bad('["BTC-USD", "ETH-USD"]', '["BTC-USD", "ETH-USD", "ACME"]'),
        "shards[1].instruments[2]",
        "in shard 's0' already",
    ),
    "instrument in no shard": (
        _bad('["ACME", "BOLT"]', '["ACME"]'),
        "instruments[1].symbol",
        "'BOLT' is in no shard",
    ),
    "unknown instrument in a shard": (
        _bad('["ACME", "BOLT"]', '["ACME", "BOLT", "NOPE"]'),
        "shards[0].instruments[2]",
        "'NOPE' is not one of the instruments",
    ),
    "empty shard": (
        _bad('["ACME", "BOLT"]', "[]")
        + '\n[[shards]]\nname = "s2"\ninstruments = ["ACME", "BOLT"]\n',
        "shards[0].instruments",
        "length >= 1",
    ),
    "duplicate shard name": (
        _bad('name = "s1"', 'name = "s0"'),
        "shards[1].name",
        "duplicate shard name 's0'",
    ),
    "bad shard name": (_bad('name = "s1"', 'name = "S 1"'), "shards[1].name", "regex"),
    "bad endpoint": (
        _bad('["tcp://127.0.0.1:61301"]', '["udp://127.0.0.1:61301"]'),
        "gateway.router[0]",
        "regex",
    ),
    "port out of range": (
        _bad('["tcp://127.0.0.1:61301"]', '["tcp://127.0.0.1:70000"]'),
        "gateway.router[0]",
        "port must be in 1..65535",
    ),
    "same endpoint twice": (
        _bad('pub = ["tcp://127.0.0.1:61302"]', 'pub = ["tcp://127.0.0.1:61301"]'),
        "gateway.pub[0]",
        "is also gateway.router[0]",
    ),
    "no endpoint": (_bad('pub = ["tcp://127.0.0.1:61302"]', "pub = []"), "gateway.pub", ">= 1"),
    "ring not a power of two": (
        _bad("request_ring = 65_536", "request_ring = 65_000"),
        "shm.request_ring",
        "not a power of two",
    ),
    "collar out of range": (
        _bad("price_collar_bps = 10_000", "price_collar_bps = 0"),
        "risk.price_collar_bps",
        ">= 1",
    ),
    "negative limit": (
        _bad("max_open_orders = 1_000", "max_open_orders = -1"),
        "risk.max_open_orders",
        ">= 1",
    ),
    "disconnect timeout under the heartbeat": (
        _bad("cancel_on_disconnect_ms = 5_000", "cancel_on_disconnect_ms = 500"),
        "session.cancel_on_disconnect_ms",
        "longer than session.heartbeat_ms",
    ),
    "negative cpu": (
        _bad(
            'instruments = ["ACME", "BOLT"]\ncpus = []',
            'instruments = ["ACME", "BOLT"]\ncpus = [1, -1]',
        ),
        "shards[0].cpus[1]",
        ">= 0",
    ),
    "cpu twice": (
        _bad('keys_dir = "./var/keys"\ncpus = []', 'keys_dir = "./var/keys"\ncpus = [0, 0]'),
        "gateway.cpus",
        "lists a cpu twice",
    ),
    "unknown wait strategy": (
        _bad(
            'keys_dir = "./var/keys"\ncpus = []\nwait = "sleep"',
            'keys_dir = "./var/keys"\ncpus = []\nwait = "yield"',
        ),
        "gateway.wait",
        "Invalid enum value 'yield'",
    ),
    "float where an int goes": (
        _bad("every_seconds = 60", "every_seconds = 0.5"),
        "snapshot.every_seconds",
        "Expected `int`, got `float`",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_config_names_its_key(case):
    text, key, problem = BAD[case]
    with pytest.raises(ConfigError) as err:
        parse_config(text, "bad.toml")
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"invalid config bad.toml: `{key}`: ")


def test_toml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 3"):
        parse_config("[rate]\nburst = 1\norders_per_second = = 2\n")


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it") as err:
        load_config(tmp_path / "missing.toml")
    assert str(tmp_path / "missing.toml") in str(err.value)


def test_session_end_and_a_day_orders_expiry():
    cfg = parse_config(DEFAULT_TOML)
    ends = {i.symbol: i.session_end for i in cfg.instruments}
    assert ends == {"ACME": "21:00", "BOLT": "21:00", "BTC-USD": "", "ETH-USD": ""}
    assert session_end_ns("21:00") == 21 * 3600 * 10**9 and session_end_ns("") is None
    day = 1_796_256_000 * 10**9  # 2026-12-03T00:00:00Z
    end = session_end_ns("21:00")
    assert next_session_end(day + 3600 * 10**9, end) == day + end  # 01:00 -> 21:00 today
    assert next_session_end(day + end, end) == day + end + 86_400 * 10**9  # at 21:00: tomorrow
    assert next_session_end(day + end - 1, end) == day + end
    for bad in ("24:00", "9:00", "21:60", "noon"):
        text = DEFAULT_TOML.replace('session_end = "21:00"', f'session_end = "{bad}"', 1)
        with pytest.raises(ConfigError, match="session_end"):
            parse_config(text)
