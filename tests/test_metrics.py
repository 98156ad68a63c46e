"""Prometheus metrics: scraped from a real daemon after real orders, checked against what
was done, and validated by Prometheus's own ``promtool check metrics`` where it exists."""

import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
from daemon_harness import REPO
from prometheus_client.parser import text_string_to_metric_families
from test_systemd_roles import Units

from daemon import metrics
from exchange.config import DEFAULT_TOML, parse_config
from exchange.shard import COUNTERS, GAUGES, HISTOGRAMS
from gateway import counters as gateway_counters
from gateway.protocol import Ack, Fill, Reject
from shm.counters import CounterBlock
from shm.counters_reader import read_block
from shm.names import unlink_namespace
from shm.ring import list_rings

PROMTOOL = shutil.which("promtool")


def scrape(listen: str) -> str:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_cumulative_at_powers_of_two():
    ns = "m" + uuid.uuid4().hex[:10]
    block = CounterBlock(ns, "h", histograms=("commit_us", "batch_size"))
    try:
        for us in (3, 15, 16, 17, 1000, 1023, 1024):
            block.record("commit_us", us)
        for n in (1, 4095, 4096):
            block.record("batch_size", n)
        hist = read_block(ns, "h").histograms
    finally:
        block.unlink()
        unlink_namespace(ns)
    commit = dict(metrics.cumulative_buckets(hist["commit_us"], 1e-6, 0))
    # a truncated microsecond count below 2**k is at most 2**k microseconds
    assert commit[repr(4 * 1e-6)] == 1  # 3
    assert commit[repr(16 * 1e-6)] == 2  # 3, 15
    assert commit[repr(32 * 1e-6)] == 4  # and 16, 17
    assert commit[repr(1024 * 1e-6)] == 6  # and 1000, 1023
    assert commit[repr(2048 * 1e-6)] == 7 == commit["+Inf"]
    batch = dict(metrics.cumulative_buckets(hist["batch_size"], 1, 1))
    assert (batch["1"], batch["4095"], batch["8191"], batch["+Inf"]) == (1, 2, 3, 3)


def test_every_counter_of_the_blocks_is_exported():
    """A counter added to a block must be named here too, not silently left out."""
    shard = {m for m, _, _ in metrics.SHARD_COUNTERS + metrics.SHARD_GAUGES}
    assert shard | {"request_depth"} == set(COUNTERS) | set(GAUGES)  # depth: from the ring
    assert set(HISTOGRAMS) == {"commit_us", "batch_size"}
    gw = {m for m, _, _ in metrics.GATEWAY_COUNTERS + metrics.GATEWAY_GAUGES}
    plain = {m for m in gateway_counters.COUNTERS if not m.startswith(gateway_counters.REJECTS)}
    ns = "m" + uuid.uuid4().hex[:10]
    block = gateway_counters.GatewayCounters(ns, ["s0"])
    try:
        gauges = set(read_block(ns, gateway_counters.BLOCK).gauges)
    finally:
        block.unlink()
        unlink_namespace(ns)
    assert gauges == {"clients", gateway_counters.STALLED + "s0"}  # stalls: shard_stalled_seconds
    assert gw == plain | {"clients"}


@pytest.mark.timeout(300)
def test_a_scrape_after_real_orders_says_what_happened(daemon, tmp_path):
    daemon.start()
    listen = daemon.config.metrics.listen
    maker, taker = daemon.client(1), daemon.client(2)
    try:
        assert isinstance(maker.new_order("ACME", "sell", 10, px=10_000), Ack)
        assert isinstance(taker.new_order("ACME", "buy", 4, px=10_000), Ack)
        btc = daemon.config.instrument("BTC-USD").ref_price
        assert isinstance(maker.new_order("BTC-USD", "sell", 1, px=btc), Ack)
        refused = taker.new_order("NOPE", "buy", 1, px=10_000)
        assert isinstance(refused, Reject) and refused.code == "not_found"
        fills = [n for n in maker.notices(timeout=2.0) if isinstance(n, Fill)]
        fills += [n for n in taker.notices(timeout=2.0) if isinstance(n, Fill)]
        assert len(fills) == 2
        time.sleep(0.3)  # the gateway flushes its counters once per turn
        text = scrape(listen)
    finally:
        maker.close()
        taker.close()
    got = samples(text)
    assert got[("exchange_gateway_orders_total", ())] == 4
    assert got[("exchange_gateway_fills_total", ())] == 2
    assert got[("exchange_gateway_rejects_total", (("code", "not_found"),))] == 1
    assert got[("exchange_gateway_rejects_total", (("code", "conflict"),))] == 0
    assert got[("exchange_gateway_clients", ())] == 2
    # s0 sequenced the SYNC and the two ACME orders; s1 its SYNC and the BTC-USD one
    for shard, orders in (("s0", 2), ("s1", 1)):
        labels = (("shard", shard),)
        commands = got[("exchange_shard_commands_total", labels)]
        assert commands >= orders
        assert got[("exchange_shard_last_seq", labels)] >= orders
        assert got[("exchange_shard_request_ring_depth", labels)] == 0
        assert got[("exchange_shard_stalled_seconds", labels)] == 0
        assert got[("exchange_shard_event_ring_depth", labels)] == 0
        batches = got[("exchange_shard_batches_total", labels)]
        assert got[("exchange_shard_commit_seconds_count", labels)] == batches
        assert got[("exchange_shard_batch_requests_count", labels)] == batches
        # the requests: the commands, and the gateway's SYNCs (control requests, each
        # answered with at least its EV_SYNCED). The gateway asks one at start and, when
        # that went into the ring before the shard process attached to it, one more of
        # the process it then finds (the supervisor starts them all at once): 1 or 2
        syncs = got[("exchange_shard_batch_requests_sum", labels)] - commands
        assert 1 <= syncs <= 2, (shard, syncs)
        assert got[("exchange_shard_replayed_total", labels)] >= syncs
        inf = (("le", "+Inf"), ("shard", shard))
        assert got[("exchange_shard_commit_seconds_bucket", inf)] == batches
    assert got[("exchange_shard_trades_total", (("shard", "s0"),))] == 1
    for name, role in (("s0", "shard"), ("s1", "shard"), ("gateway", "gateway")):
        assert got[("exchange_process_up", (("process", name), ("role", role)))] == 1
        assert got[("exchange_process_restarts_total", (("process", name),))] == 0
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): exposition not linted")
    path = tmp_path / "metrics.txt"
    path.write_text(text)
    with open(path) as f:
        lint = subprocess.run([PROMTOOL, "check", "metrics"], stdin=f, capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.timeout(300)
def test_the_rings_unit_serves_them_under_systemd(daemon):
    units = Units(daemon)
    try:
        units.start("rings", "--role", "rings")
        units.wait_log("rings", '"msg": "holding the rings"')
        got = samples(scrape(daemon.config.metrics.listen))
    finally:
        units.close()
    assert got[("exchange_process_up", (("process", "rings"), ("role", "rings")))] == 1
    assert got[("exchange_process_up", (("process", "s0"), ("role", "shard")))] == 0
    assert not [k for k in got if k[0] == "exchange_process_restarts_total"]  # systemd's


def test_an_address_in_use_is_refused_with_exit_2(daemon):
    assert parse_config(DEFAULT_TOML).metrics.listen == "127.0.0.1:9464"
    taken = socket.socket()
    try:
        host, port = metrics.parse_listen(daemon.config.metrics.listen)
        taken.bind((host, port))
        taken.listen()
        daemon.launch()
        assert daemon.proc.wait(timeout=120) == 2
    finally:
        taken.close()
    assert "cannot serve metrics" in daemon.log()
    assert not list_rings(daemon.ns)  # nothing left behind


def test_the_alert_rules_and_scrape_config_in_operations_md_are_valid(tmp_path):
    """The rules OPERATIONS.md gives are what promtool accepts, over metrics we serve."""
    text = (REPO / "docs" / "OPERATIONS.md").read_text()
    section = text.split("## Metrics (Prometheus)", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```yaml\n")[1:]
    scrape_cfg, rules = (b.split("```", 1)[0] for b in blocks)
    assert '"127.0.0.1:9464"' in scrape_cfg
    served = {name for _, name, _ in metrics.SHARD_COUNTERS + metrics.GATEWAY_COUNTERS}
    for used in ("process_up", "shard_commit_seconds_bucket", "gateway_rejects_total"):
        assert f"exchange_{used}" in rules
    assert "gateway_orders" in served
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): rules not checked")
    (tmp_path / "rules.yml").write_text(rules)
    checked = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")])
    assert checked.returncode == 0
    config = scrape_cfg + "rule_files: [rules.yml]\n"
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")])
    assert checked.returncode == 0
