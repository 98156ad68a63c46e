"""``exch kill/unkill``, ``exch positions`` and the accounts checks of ``exch journal verify``,
on real journals written by real shard engines (no daemon: the journals are the truth)."""

import json
import os
import shutil

import lmdb
import msgspec
import numpy as np
import pytest
from streams import random_batches, random_stream

from exchange.batchcodec import decode_batch, encode_batch
from exchange.config import DEFAULT_TOML, ClientLimits, dump_config, load_config, parse_config
from exchange.engine import ShardEngine
from exchange.journal import Journal, batch_items, delete_pieces, put_pieces
from exchange.records import CMD_MASS_CANCEL, EV_TRADE, SHARD_COMMANDS, SIDE_BUY, SIDE_SELL
from gateway import killswitch
from tools import cli

CLIENTS = 4
START_CASH = 50_000


def write_config(tmp_path, **risk) -> str:
    config = parse_config(DEFAULT_TOML)
    r = msgspec.structs.replace
    config = r(
        config,
        journal=r(config.journal, dir=str(tmp_path / "journal"), durability="os"),
        gateway=r(config.gateway, keys_dir=str(tmp_path / "keys")),
        risk=r(config.risk, starting_cash=START_CASH, **risk),
        clients=[ClientLimits(client=2, starting_cash=7)],
    )
    path = tmp_path / f"exchange-{len(risk)}.toml"
    path.write_text(dump_config(config))
    return str(path)


@pytest.fixture(scope="module")
def journals(tmp_path_factory):
    """Both shards of the default config, journaled by real engines from random streams;
    returns (tmp dir, events per shard, books per shard)."""
    tmp = tmp_path_factory.mktemp("accounts")
    config = load_config(write_config(tmp))
    rng = np.random.default_rng(11)
    events, books = {}, {}
    for index, shard in enumerate(config.shards):
        configs = [config.instrument(s).book for s in shard.instruments]
        streams = []
        for inst, book in enumerate(configs):
            cmds = random_stream(rng, book, 1_500, clients=CLIENTS)
            cmds["instrument"] = inst
            streams.append(cmds)
        cmds = np.concatenate(streams)[rng.permutation(3_000)]
        # time and halts are the shard's own: the engine refuses them from a stream
        ticks = np.isin(cmds["kind"], SHARD_COMMANDS)
        cmds["kind"][ticks], cmds["instrument"][ticks] = CMD_MASS_CANCEL, 0
        with Journal(tmp / "journal" / shard.name, durability="os") as journal:
            engine = ShardEngine(index, configs, journal, snapshot_every=1_000)
            got = [engine.apply(cmds[cut]).events for cut in random_batches(rng, len(cmds))]
        events[shard.name] = np.concatenate(got)
        books[shard.name] = engine.books
    return tmp, events, books


def run(capsys, *argv) -> tuple[int, dict | str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    if "--json" in argv and out.out:  # answered (0, or 4: the journals fail a check)
        return code, json.loads(out.out)
    return code, out.out + out.err


# ------------------------------------------------------------ positions


def expected(config, events, books) -> dict:
    """client -> {sym: (pos, volume, open buy, open sell, orders)} and cash, computed here
    from the events and the books, in plain Python."""
    out = {}
    for shard in config.shards:
        ev = events[shard.name]
        for e in ev[ev["kind"] == EV_TRADE].tolist():
            taker, maker, side, px, qty = e[9], e[10], e[14], e[4], e[5]
            sym = shard.instruments[e[12]]
            buyer, seller = (taker, maker) if side == SIDE_BUY else (maker, taker)
            for client, d in ((buyer, qty), (seller, -qty)):
                c = out.setdefault(client, {"cash": 0, "syms": {}})
                s = c["syms"].setdefault(sym, [0, 0, 0, 0, 0])
                s[0] += d
                s[1] += qty
                c["cash"] -= d * px
        for sym, book in zip(shard.instruments, books[shard.name], strict=True):
            for side, _, _, client, _, leaves, *_ in book.canonical_rows().tolist():
                c = out.setdefault(client, {"cash": 0, "syms": {}})
                s = c["syms"].setdefault(sym, [0, 0, 0, 0, 0])
                s[2 if side == SIDE_BUY else 3] += leaves
                s[4] += 1
    return out


def test_positions_from_the_journals_are_the_fills_and_the_books(journals, capsys):
    tmp, events, books = journals
    path = write_config(tmp)
    config = load_config(path)
    code, doc = run(capsys, "positions", "--config", path, "--json")
    assert code == 0
    assert doc["journals"] == {"s0": 3_000, "s1": 3_000}
    want = expected(config, events, books)
    assert sorted(c["client"] for c in doc["clients"]) == sorted(want)
    traded = 0
    for c in doc["clients"]:
        mine = want[c["client"]]
        start = 7 if c["client"] == 2 else START_CASH
        assert c["cash"] == start + mine["cash"]
        assert not c["killed"]
        got = {
            p["sym"]: [p["pos"], p["volume"], p["open_buy"], p["open_sell"], p["orders"]]
            for p in c["positions"]
        }
        assert got == mine["syms"]
        assert c["orders"] == sum(s[4] for s in mine["syms"].values())
        for p in c["positions"]:
            # realised = cash made in this instrument + cost basis; unrealised at the mark
            assert p["unrealised"] == p["pos"] * p["mark"] - p["cost"]
            traded += p["volume"]
    assert traded > 1_000
    # one client, as text
    killswitch.kill(tmp / "keys", 3, "the test")
    code, text = run(capsys, "positions", "3", "--config", path)
    assert code == 0 and "client 3: cash" in text and "BLOCKED" in text
    assert "ACME" in text and "avg" in text
    killswitch.unkill(tmp / "keys", 3)
    code, doc = run(capsys, "positions", "99", "--config", path, "--json")
    assert code == 0 and doc["clients"] == [
        {"client": 99, "cash": START_CASH, "killed": False, "orders": 0, "positions": []}
    ]


# ------------------------------------------------------------ journal verify: accounts


def test_verify_checks_the_accounts_across_shards(journals, capsys):
    tmp, _, _ = journals
    path = write_config(tmp)
    code, doc = run(capsys, "journal", "verify", "--config", path, "--json")
    assert code == 0 and doc["ok"], doc
    accounts = doc["accounts"]
    assert accounts["ok"] and accounts["shards"] == ["s0", "s1"]
    assert accounts["clients"] == CLIENTS and accounts["trades"] > 500
    code, text = run(capsys, "journal", "verify", "--config", path)
    assert code == 0
    assert "accounts (s0, s1): OK" in text and "no position past its limit" in text


def test_verify_finds_a_position_past_its_limit(journals, capsys):
    tmp, events, _ = journals
    # the journals were written with no checks: held against a limit of 5, some went past
    path = write_config(tmp, max_position=5)
    code, doc = run(capsys, "journal", "verify", "--config", path, "--json")
    assert code == 4 and not doc["ok"]
    assert all(s["ok"] for s in doc["shards"])  # each journal is sound on its own
    accounts = doc["accounts"]
    assert set(accounts["counts"]) == {"limits"}
    [check, seq, message] = accounts["problems"][0]
    assert check == "limits" and "past its position limit of 5" in message


def flip_taker_side(path) -> int:
    """Turn the first trade of a journal copy around (buy <-> sell); returns its seq."""
    env = lmdb.open(str(path), max_dbs=16, map_size=1 << 30)
    psize = env.stat()["psize"]
    try:
        with env.begin(write=True) as txn:
            for key, value in list(batch_items(env, txn)):
                rec = decode_batch(value)
                ev = rec.events.copy()
                trades = np.flatnonzero(ev["kind"] == EV_TRADE)
                if len(trades):
                    k = trades[0]
                    ev["side"][k] = SIDE_SELL if ev["side"][k] == SIDE_BUY else SIDE_BUY
                    db = env.open_db(None)
                    delete_pieces(txn, db, key)
                    put_pieces(txn, db, key, encode_batch(rec._replace(events=ev)), psize)
                    return int(ev["seq"][k])
    finally:
        env.close()
    raise AssertionError("no trade in the journal")


def test_verify_finds_a_trade_whose_maker_is_on_its_side(journals, tmp_path, capsys):
    tmp, _, _ = journals
    copy = tmp_path / "s1"
    shutil.copytree(tmp / "journal" / "s1", copy)
    os.unlink(copy / "writer.lock")
    seq = flip_taker_side(copy)
    path = write_config(tmp)
    argv = ["journal", "verify", "--config", path, "--shard", "s1", "--path", str(copy)]
    code, doc = run(capsys, *argv, "--json")
    assert code == 4
    accounts = doc["accounts"]
    assert accounts["shards"] == ["s1"]
    assert "makers" in accounts["counts"] and "positions" in accounts["counts"]
    makers = [p for p in accounts["problems"] if p[0] == "makers"]
    assert makers[0][1] == seq and "on the same side" in makers[0][2]
    code, text = run(capsys, *argv)
    assert code == 4 and "accounts (s1): FAIL" in text


# ------------------------------------------------------------ kill / unkill


def test_kill_and_unkill_write_and_remove_the_block(tmp_path, capsys):
    keys = str(tmp_path / "keys")
    code, doc = run(capsys, "kill", "7", "--keys-dir", keys, "--reason", "runaway", "--json")
    assert code == 0 and doc["killed"] and doc["file"].endswith("killed/7")
    assert killswitch.killed(keys)[7].endswith("runaway")
    code, text = run(capsys, "kill", "8", "--keys-dir", keys)
    assert code == 0 and "client 8 blocked" in text and "exch unkill 8" in text
    code, doc = run(capsys, "kill", "--keys-dir", keys, "--json")
    assert [k["client"] for k in doc["killed"]] == [7, 8]
    code, text = run(capsys, "kill", "--keys-dir", keys)
    assert code == 0 and "2 client(s) blocked" in text
    code, doc = run(capsys, "unkill", "7", "--keys-dir", keys, "--json")
    assert code == 0 and doc == {"client": 7, "killed": False}
    assert set(killswitch.killed(keys)) == {8}
    # an unkill of a client that is not blocked, a stray file: exit 2, named, nothing changed
    code, text = run(capsys, "unkill", "7", "--keys-dir", keys)
    assert code == 2 and "client 7 is not blocked" in text
    (tmp_path / "keys" / "killed" / "bob").write_text("?")
    code, text = run(capsys, "kill", "--keys-dir", keys)
    assert code == 2 and "killed/bob" in text and "named by a client id" in text
    assert set(os.listdir(tmp_path / "keys" / "killed")) == {"8", "bob"}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["kill", "0", "--keys-dir", keys])
    assert exit_.value.code == 2
    assert "is not a client id" in capsys.readouterr().err
