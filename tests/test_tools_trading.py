"""``exch order/cancel/book/trades`` against the real daemon, and the journal tools on its
live journals. One daemon for the module; each tool speaks as a client whose key
``exch keys create`` made."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from daemon_harness import REPO, Daemon

from exchange.topology import counters_name
from shm.counters_reader import read_block
from tools import cli

KEY_RELOAD_SECONDS = 1.5  # the gateway looks at the keys directory every second


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"))
    try:
        d.start()
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def bots(daemon):
    """Two clients: a maker and a taker, as secret certificate paths."""
    paths = {}
    for name, client in (("maker", 21), ("taker", 22)):
        path = daemon.tmp / f"{name}.key_secret"
        argv = ["keys", "create", str(client), "--out", str(path), "--config", str(daemon.path)]
        assert cli.main(argv) == 0
        paths[name] = str(path)
    time.sleep(KEY_RELOAD_SECONDS)
    return paths


def run(daemon, capsys, key, *argv) -> tuple[int, dict]:
    code = cli.main([*argv, "--config", str(daemon.path), "--key", key, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _ctrl_c_stops_it() -> None:
    # A shell without job control starts a background job with SIGINT ignored, and its
    # children inherit that (Python then installs no KeyboardInterrupt handler): the
    # tool must meet Ctrl-C as it does at a terminal, however the suite was started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(daemon, key, *argv) -> subprocess.Popen:
    """The tool as its own process (``python -m tools.cli``), printing JSON lines."""
    argv = [sys.executable, "-m", "tools.cli", *argv, "--config", str(daemon.path), "--json"]
    env = {**os.environ, "EXCH_KEY": key}
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_stops_it
    )


def stop(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


@pytest.mark.timeout(180)
def test_order_fill_cancel_and_book(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    code, sell = run(daemon, capsys, maker, "order", "ACME", "sell", "10", "10100")
    assert code == 0 and sell["reply"]["t"] == "A", sell
    oid = sell["reply"]["oid"]

    code, book = run(daemon, capsys, taker, "book", "ACME", "--depth", "3")
    assert code == 0 and [10100, 10, 1] in book["asks"], book

    code, buy = run(daemon, capsys, taker, "order", "ACME", "buy", "4", "10100", "--tif", "ioc")
    assert code == 0 and buy["reply"]["t"] == "A"
    fills = [n for n in buy["notices"] if n["t"] == "F"]
    assert [(f["qty"], f["px"], f["liq"]) for f in fills] == [(4, 10100, "taker")]

    code, cancel = run(daemon, capsys, maker, "cancel", "ACME", str(oid))
    assert code == 0 and cancel["reply"]["t"] == "X" and cancel["reply"]["qty"] == 6
    code, again = run(daemon, capsys, maker, "cancel", "ACME", str(oid))
    assert code == 1 and again["reply"]["code"] == "not_found"

    # refused by the gateway: exit 1, the reason names the field, the book is as it was
    code, bad = run(daemon, capsys, maker, "order", "ACME", "sell", "10", "10100", "--post-only")
    assert code == 0  # resting: the book is empty on the buy side
    code, bad = run(daemon, capsys, maker, "order", "ACME", "buy", "5", "10101", "--post-only")
    assert code == 1 and bad["reply"]["field"] == "$.px", bad
    code, after = run(daemon, capsys, taker, "book", "ACME")
    assert after["bids"] == [] and after["asks"] == [[10100, 10, 1]]
    code, done = run(daemon, capsys, maker, "cancel", "ACME", "--all")
    assert code == 0 and done["reply"]["n"] == 1

    text = cli.main(["order", "ACME", "buy", "1", "9000", "--config", str(daemon.path)])
    assert text == 2  # no key given: one clear line, nothing sent
    assert "no client key" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_an_iceberg_order_shows_its_display_in_the_book(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    argv = ("order", "ACME", "sell", "10", "10200", "--display", "3")
    code, sell = run(daemon, capsys, maker, *argv)
    assert code == 0 and sell["reply"]["t"] == "A", sell
    code, book = run(daemon, capsys, taker, "book", "ACME")
    assert [10200, 3, 1] in book["asks"], book
    code, buy = run(daemon, capsys, taker, "order", "ACME", "buy", "4", "10200", "--tif", "ioc")
    fills = [n for n in buy["notices"] if n["t"] == "F"]
    assert code == 0 and [(f["qty"], f["leaves"]) for f in fills] == [(3, 1), (1, 0)], buy
    code, book = run(daemon, capsys, taker, "book", "ACME")
    assert [10200, 2, 1] in book["asks"], book  # a refill of 3, less the second fill
    argv = ("order", "ACME", "sell", "10", "10200", "--display", "3", "--tif", "ioc")
    code, bad = run(daemon, capsys, maker, *argv)
    assert code == 1 and bad["reply"]["field"] == "$.display", bad
    code, done = run(daemon, capsys, maker, "cancel", "ACME", "--all")
    assert code == 0 and done["reply"]["n"] == 1


@pytest.mark.timeout(180)
def test_a_gtd_order_from_the_tool_expires_and_a_day_order_rests(daemon, bots, capsys):
    maker = bots["maker"]
    argv = ("order", "ACME", "buy", "2", "9503", "--tif", "gtd", "--expire-at", "+1")
    code, gtd = run(daemon, capsys, maker, *argv, "--wait", "4")
    assert code == 0 and gtd["reply"]["t"] == "A", gtd
    gone = [n for n in gtd["notices"] if n["t"] == "X"]
    assert [(n["oid"], n["reason"]) for n in gone] == [(gtd["reply"]["oid"], "expired")], gtd
    code, book = run(daemon, capsys, maker, "book", "ACME")
    assert all(level[0] != 9503 for level in book["bids"]), book
    code, bad = run(daemon, capsys, maker, "order", "ACME", "buy", "2", "9503", "--tif", "gtd")
    assert code == 1 and bad["reply"]["field"] == "$.expire_at", bad
    code, day = run(daemon, capsys, maker, "order", "ACME", "buy", "2", "9503", "--tif", "day")
    assert code == 0 and day["reply"]["t"] == "A", day
    code, done = run(daemon, capsys, maker, "cancel", "ACME", "--all")
    assert code == 0 and done["reply"]["n"] == 1


class Lines:
    """A process's stdout read line by line (JSON) in a thread, as it comes."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.docs = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.docs.append(json.loads(line))

    def wait_for(self, found, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(found(d) for d in list(self.docs)):
                return True
            time.sleep(0.05)
        return False


@pytest.mark.timeout(180)
def test_trades_and_a_watched_book_follow_the_market(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    trades = spawn(daemon, taker, "trades", "ACME", "--count", "3", "--seconds", "60")
    watch = spawn(daemon, taker, "book", "ACME", "--watch")
    try:
        ladders = Lines(watch)
        # trade until the follower has seen three prints (it needs a moment to subscribe)
        px = 10_200
        deadline = time.monotonic() + 45
        while trades.poll() is None and time.monotonic() < deadline:
            run(daemon, capsys, maker, "order", "ACME", "sell", "2", str(px), "--wait", "0")
            run(daemon, capsys, taker, "order", "ACME", "buy", "2", str(px), "--wait", "0")
            px += 1
            time.sleep(0.3)
        prints = [json.loads(line) for line in stop(trades).splitlines()]
        run(daemon, capsys, maker, "order", "ACME", "sell", "7", "12345", "--wait", "0")
        assert ladders.wait_for(lambda d: [12345, 7, 1] in d["asks"])
        watch.send_signal(signal.SIGINT)  # how a person stops it: Ctrl-C
        assert watch.wait(timeout=30) == 130
        ladders.thread.join(timeout=30)
    finally:
        for p in (trades, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert trades.returncode == 0 and len(prints) >= 3
    assert all(p["sym"] == "ACME" and p["side"] == "buy" and p["qty"] == 2 for p in prints)
    seqs = [p["seq"] for p in prints]
    assert seqs == sorted(seqs) and prints[-1]["px"] > prints[0]["px"]
    seqs = [d["seq"] for d in ladders.docs]
    assert len(seqs) >= 2 and seqs == sorted(seqs)
    run(daemon, capsys, maker, "cancel", "--all")


@pytest.mark.timeout(180)
def test_journal_tools_on_the_live_daemon(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    run(daemon, capsys, maker, "order", "ACME", "sell", "3", "10500")
    run(daemon, capsys, maker, "order", "ACME", "buy", "3", "9500")
    code, live = run(daemon, capsys, taker, "book", "ACME")
    assert cli.main(["journal", "verify", "--config", str(daemon.path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [s["shard"] for s in doc["shards"]] == ["s0", "s1"]
    assert doc["shards"][0]["trades"] >= 1
    argv = ["journal", "book", "ACME", "--config", str(daemon.path), "--json"]
    assert cli.main(argv) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert (replayed["bids"][:10], replayed["asks"][:10]) == (live["bids"], live["asks"])
    assert replayed["seq"] >= live["seq"]
    # a backup while the shard runs: consistent, and it verifies
    dest = daemon.tmp / "backup-s0"
    argv = ["journal", "backup", str(dest), "--shard", "s0", "--config", str(daemon.path)]
    assert cli.main([*argv, "--json"]) == 0
    copied = json.loads(capsys.readouterr().out)
    assert copied["verified"]["ok"] and copied["last_seq"] >= replayed["seq"]
    run(daemon, capsys, maker, "cancel", "--all")


@pytest.mark.timeout(180)
def test_a_revoked_client_is_refused(daemon, bots, capsys):
    path = daemon.tmp / "gone.key_secret"
    cfg = ["--config", str(daemon.path)]
    assert cli.main(["keys", "create", "23", "--out", str(path), *cfg]) == 0
    capsys.readouterr()
    time.sleep(KEY_RELOAD_SECONDS)
    code, book = run(daemon, capsys, str(path), "book", "ACME")
    assert code == 0
    assert cli.main(["keys", "revoke", "23", *cfg]) == 0
    capsys.readouterr()
    time.sleep(KEY_RELOAD_SECONDS)
    assert cli.main(["book", "ACME", "--key", str(path), *cfg]) == 2
    assert "refused" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_top_shows_every_process_and_ring(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    run(daemon, capsys, maker, "order", "ACME", "sell", "1", "10900")
    run(daemon, capsys, taker, "order", "ACME", "buy", "1", "10900")
    assert cli.main(["top", "--once", "--json", "--config", str(daemon.path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] and {c["name"] for c in doc["supervisor"]["children"]} == {
        "s0",
        "s1",
        "gateway",
    }
    s0 = doc["processes"]["shard-s0"]
    assert s0["alive"] and s0["commands"] >= 2 and s0["commit_us_p99"] >= s0["commit_us_p50"]
    assert set(doc["rings"]) == {"s0-req", "s0-evt", "s1-req", "s1-evt"}
    assert cli.main(["top", "--once", "--config", str(daemon.path)]) == 0
    text = capsys.readouterr().out
    assert "shard-s0" in text and "s1-evt" in text and "supervised: s0 (pid" in text


@pytest.mark.timeout(180)
def test_an_unanswered_order_is_retried_safely_with_its_key(daemon, bots, capsys):
    """The shard stalls (SIGSTOP): the tool gives up and names the idempotency key;
    sent again with that key once the shard is back, the order exists exactly once."""
    maker = bots["maker"]
    shard = daemon.child_pid("s0")
    cfg = ["--config", str(daemon.path), "--key", maker]
    argv = ["order", "ACME", "sell", "2", "11111", *cfg]
    os.kill(shard, signal.SIGSTOP)
    try:
        assert cli.main([*argv, "--timeout", "0.5"]) == 2
    finally:
        os.kill(shard, signal.SIGCONT)
    err = capsys.readouterr().err
    assert "the order may or may not be in" in err
    ik = int(err.split("--ik ")[1].split()[0])
    code, again = run(daemon, capsys, maker, *argv[:5], "--ik", str(ik))
    assert code == 0 and again["reply"]["t"] == "A" and again["reply"]["dup"], again
    code, book = run(daemon, capsys, maker, "book", "ACME")
    assert [11111, 2, 1] in book["asks"]  # once, not twice
    run(daemon, capsys, maker, "cancel", "--all")


def test_trades_from_seq_prints_the_retransmitted_prints(daemon, bots, capsys):
    code, sell = run(daemon, capsys, bots["maker"], "order", "ACME", "sell", "3", "10300")
    assert code == 0
    code, buy = run(daemon, capsys, bots["taker"], "order", "ACME", "buy", "3", "10300")
    assert code == 0
    argv = ["trades", "ACME", "--from-seq", "1"]
    code = cli.main([*argv, "--config", str(daemon.path), "--key", bots["maker"], "--json"])
    prints = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    seqs = [p["seq"] for p in prints]
    assert seqs == sorted(seqs) and {p["sym"] for p in prints} == {"ACME"}
    assert [(p["side"], p["qty"]) for p in prints if p["px"] == 10_300] == [("buy", 3)]


def _until(probe, timeout: float = 10.0):
    """``probe()`` again until it returns something true (the shards read halt requests
    four times a second); that value, or the last one."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_a_halt_takes_only_resting_orders_and_the_resume_auction_uncrosses(daemon, bots, capsys):
    maker, taker = bots["maker"], bots["taker"]
    cfg = ["--config", str(daemon.path)]
    assert cli.main(["halt", "ACME", "--reason", "news pending", *cfg, "--json"]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert (asked["symbol"], asked["shard"], asked["halt"]) == ("ACME", "s0", True)

    def refused():
        code, ioc = run(daemon, capsys, taker, "order", "ACME", "buy", "1", "10300", "--tif", "ioc")
        return ioc["reply"] if ioc["reply"].get("code") == "halted" else None

    reject = _until(refused)
    assert reject and reject["field"] == "$.tif", reject
    assert reject["reason"].startswith("instrument_halted: ")
    # the orders that rest are taken, and cross without trading: 8 can trade at 10305
    # only (4 at 10300 and at 10310)
    for key, side, px in (
        (maker, "sell", "10300"),
        (maker, "sell", "10305"),
        (taker, "buy", "10305"),
        (taker, "buy", "10310"),
    ):
        code, ack = run(daemon, capsys, key, "order", "ACME", side, "4", px)
        assert code == 0 and ack["reply"]["t"] == "A" and not ack["notices"], ack
    code, book = run(daemon, capsys, taker, "book", "ACME")
    assert book["bids"][0][0] == 10310 and book["asks"][0][0] == 10300, book
    assert cli.main(["halt", *cfg]) == 0
    assert "ACME" in capsys.readouterr().out
    # the shard's counter block says how many of its books are halted (a metric)
    block = counters_name(daemon.config.shards[0].name)
    assert read_block(daemon.config.shm.namespace, block).gauges["halted"] == 1
    assert cli.main(["journal", "book", "ACME", *cfg, "--json"]) == 0
    past = json.loads(capsys.readouterr().out)
    assert past["state"] == "halted" and past["bids"][0][0] >= past["asks"][0][0], past
    assert cli.main(["journal", "book", "ACME", *cfg]) == 0
    text = capsys.readouterr().out
    assert "ACME at seq" in text and ", HALTED" in text and "crossed" in text, text

    assert cli.main(["resume", "ACME", *cfg]) == 0
    assert "call auction" in capsys.readouterr().out

    def uncrossed():
        code, book = run(daemon, capsys, taker, "book", "ACME")
        bids = [lvl for lvl in book["bids"] if lvl[0] >= 10300]
        return book if not bids and all(lvl[0] > 10305 for lvl in book["asks"]) else None

    assert _until(uncrossed)
    assert read_block(daemon.config.shm.namespace, block).gauges["halted"] == 0
    argv = ["trades", "ACME", "--from-seq", "1", *cfg, "--key", maker, "--json"]
    assert cli.main(argv) == 0
    prints = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["side"], p["px"], p["qty"]) for p in prints[-2:]] == [("buy", 10305, 4)] * 2
    code, again = run(daemon, capsys, taker, "order", "ACME", "buy", "1", "9000", "--tif", "ioc")
    assert again["reply"]["t"] == "A", again  # continuous again
    assert cli.main(["resume", "ACME", *cfg]) == 2  # nothing left to take back
    assert "no halt request" in capsys.readouterr().err
