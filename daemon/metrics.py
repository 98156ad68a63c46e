"""The daemon's counters as Prometheus metrics, over HTTP (``[metrics] listen``).

Served by the process that owns the rings (the supervisor under ``exchanged run``,
the rings unit under systemd) from a thread of its own, with the official
``prometheus_client``. Nothing is counted for it: a scrape reads the counter
blocks and the rings' headers the way ``exch top`` and ``exchanged status`` do
(``shm.counters_reader``, ``daemon.status``), so the shards and the gateway pay
nothing for it and a process's counters are exactly what ``exch top`` shows.

A process's counters start at zero when it starts (Prometheus reads that as a
counter reset). The shared-memory histograms have log-scale buckets, 8 per power
of two; a scrape gives them as cumulative buckets at powers of two: a commit of
``us`` microseconds (truncated) is at most ``le`` seconds when ``us < le * 1e6``,
and a batch of ``n`` requests counts for ``le = 2**k - 1`` when ``n < 2**k``.
"""

from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server

from daemon import status
from exchange import logs
from exchange.config import Config
from exchange.topology import counters_name, event_ring, request_ring
from gateway.counters import BLOCK as GATEWAY_BLOCK
from gateway.counters import REJECTS, STALLED
from shm.counters_reader import BlockSnapshot, HistogramSnapshot
from shm.histogram import bucket_of

PREFIX = "exchange_"
POWERS = range(1, 41)  # 2**k bucket bounds; the histograms count values below 2**40
# (block metric, Prometheus name, help) of what each block counts
SHARD_COUNTERS = (
    ("commands", "shard_commands", "Commands sequenced and journaled."),
    ("events", "shard_events", "Events journaled and published."),
    ("trades", "shard_trades", "Trade events (one per fill pair)."),
    ("replies", "shard_replies", "Private replies (duplicates, conflicts) published."),
    ("replayed", "shard_replayed", "Records published answering SYNC requests."),
    ("batches", "shard_batches", "Batches journaled (one LMDB commit each)."),
)
SHARD_GAUGES = (
    ("last_seq", "shard_last_seq", "The last journaled sequence number."),
    ("halted", "shard_halted_books", "Books of the shard halted now (exch halt)."),
)
GATEWAY_COUNTERS = (
    ("requests", "gateway_requests", "Request frames taken."),
    ("orders", "gateway_orders", "Orders in the requests (a batch counts its orders)."),
    ("fills", "gateway_fills", "Fill notices sent to clients."),
)
GATEWAY_GAUGES = (("clients", "gateway_clients", "Connected clients heard from."),)

Restarts = Callable[[], dict[str, int]]


def cumulative_buckets(h: HistogramSnapshot, scale: float, le_offset: int) -> list:
    """[(le, count of values below 2**k), ...] up to the highest non-empty power, then
    +Inf; ``le = (2**k - le_offset) * scale``."""
    cum = np.cumsum(h.buckets)
    top = int(h.buckets.nonzero()[0].max()) if h.count else 0
    out = []
    for k in POWERS:
        b = bucket_of(np.int64((1 << k) - 1))  # the last bucket of values below 2**k
        out.append((repr(((1 << k) - le_offset) * scale), int(cum[b])))
        if b >= top:
            break
    out.append(("+Inf", int(h.count)))
    return out


def _counter(name: str, help_: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_, labels=labels)


class DaemonCollector:
    """One scrape: every counter block and ring of the config's namespace."""

    def __init__(self, config: Config, restarts: Restarts | None = None):
        self.config = config
        self.restarts = restarts  # the supervisor's count per child; None under systemd

    def collect(self) -> Iterator[Metric]:
        ns = self.config.shm.namespace
        blocks = status.read_blocks(ns)
        rings = status.read_rings(ns)
        shards = [s.name for s in self.config.shards]
        shard_blocks = {s: blocks.get(counters_name(s)) for s in shards}
        yield from self._block_metrics(shard_blocks, "shard", SHARD_COUNTERS, SHARD_GAUGES)
        for which, ring in (("request", request_ring), ("event", event_ring)):
            g = GaugeMetricFamily(
                PREFIX + f"shard_{which}_ring_depth",
                f"Records in the shard's {which} ring not yet released by its reader.",
                labels=["shard"],
            )
            for s in shards:
                st = rings.get(ring(s))
                if st is not None:
                    g.add_metric([s], st.depth)
            yield g
        yield from self._histograms(shard_blocks)
        gw = {"gateway": blocks.get(GATEWAY_BLOCK)}
        yield from self._block_metrics(gw, None, GATEWAY_COUNTERS, GATEWAY_GAUGES)
        rejects = _counter("gateway_rejects", "Requests refused, by stable error code.", ["code"])
        stalled = GaugeMetricFamily(
            PREFIX + "shard_stalled_seconds",
            "How long the gateway has seen the shard take none of the requests waiting for "
            "it (0: not stalled; its new requests are refused meanwhile).",
            labels=["shard"],
        )
        b = gw["gateway"]
        if b is not None:
            for metric, n in sorted(b.counters.items()):
                if metric.startswith(REJECTS):
                    rejects.add_metric([metric[len(REJECTS) :]], n)
            if b.alive:  # a dead gateway's last word on stalls is stale
                for s in shards:
                    stalled.add_metric([s], b.gauges[STALLED + s] / 1000)
        yield rejects
        yield stalled
        yield from self._processes(blocks, rings)

    def _block_metrics(self, by_label, label, counters, gauges) -> Iterator[Metric]:
        labels = [label] if label else []
        for metric, name, help_ in counters:
            fam = _counter(name, help_, labels)
            for value, b in by_label.items():
                if b is not None:
                    fam.add_metric([value] if label else [], b.counters[metric])
            yield fam
        for metric, name, help_ in gauges:
            fam = GaugeMetricFamily(PREFIX + name, help_, labels=labels)
            for value, b in by_label.items():
                if b is not None:
                    fam.add_metric([value] if label else [], b.gauges[metric])
            yield fam

    def _histograms(self, shard_blocks: dict[str, BlockSnapshot | None]) -> Iterator[Metric]:
        commit = HistogramMetricFamily(
            PREFIX + "shard_commit_seconds",
            "Journal commit latency of a batch (the write transaction, fsync included).",
            labels=["shard"],
        )
        batch = HistogramMetricFamily(
            PREFIX + "shard_batch_requests",
            "Requests taken from the request ring per batch (control requests included).",
            labels=["shard"],
        )
        for s, b in shard_blocks.items():
            if b is None:
                continue
            h = b.histograms["commit_us"]
            commit.add_metric([s], cumulative_buckets(h, 1e-6, 0), sum_value=h.total * 1e-6)
            h = b.histograms["batch_size"]
            batch.add_metric([s], cumulative_buckets(h, 1, 1), sum_value=h.total)
        yield commit
        yield batch

    def _processes(self, blocks, rings) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "process_up",
            "1 while the process runs and serves (its counter block's writer, or the "
            "rings' owner, is alive), else 0.",
            labels=["process", "role"],
        )
        sup = status.read_supervisor(self.config) if self.restarts is not None else None
        for p in status.expected_processes(self.config, sup, blocks, rings):
            up.add_metric([p["name"], p["role"]], 1 if p["state"] == status.UP else 0)
        yield up
        if self.restarts is not None:
            restarts = _counter(
                "process_restarts", "Restarts of the process by the supervisor.", ["process"]
            )
            for name, n in sorted(self.restarts().items()):
                restarts.add_metric([name], n)
            yield restarts


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


def serve(config: Config, restarts: Restarts | None = None):
    """Start serving ``config``'s metrics from a thread; the server (``.shutdown()``
    and ``.server_close()`` stop it), or None when ``[metrics] listen`` is empty.
    ``OSError`` if the address cannot be bound."""
    if not config.metrics.listen:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(config, restarts))
    host, port = parse_listen(config.metrics.listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    logs.info("serving metrics", url=f"http://{config.metrics.listen}/metrics")
    return server


def stop(server) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
