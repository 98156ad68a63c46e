"""Read the counter blocks of a namespace from any process, without locks or writes.

This is what ``exchanged status`` and ``exch top`` use: ``list_blocks`` names
the blocks, ``read_block`` maps one read-only and copies its values word by
word with atomic loads, so the writer is never slowed down or disturbed.
"""

from dataclasses import dataclass, field

import numpy as np

from shm import counters as c
from shm import names, proc, segment
from shm.atomics import snapshot
from shm.errors import HeaderMismatchError
from shm.histogram import H_BUCKETS, H_COUNT, H_SUM, HIST_WORDS, percentile


@dataclass(frozen=True)
class HistogramSnapshot:
    count: int
    total: int  # sum of the recorded values
    buckets: np.ndarray = field(repr=False)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> int:
        """Upper bound of the q quantile (see ``shm.histogram.percentile``)."""
        return percentile(self.buckets, q)

    @property
    def p50(self) -> int:
        return self.quantile(0.5)

    @property
    def p99(self) -> int:
        return self.quantile(0.99)

    @property
    def p999(self) -> int:
        return self.quantile(0.999)


@dataclass(frozen=True)
class BlockSnapshot:
    name: str
    pid: int
    alive: bool  # whether the writing process still runs
    created_ns: int
    counters: dict[str, int]
    gauges: dict[str, int]
    histograms: dict[str, HistogramSnapshot]


def list_blocks(namespace: str) -> list[str]:
    return names.list_names(namespace, c.SUFFIX)


def read_block(namespace: str, name: str) -> BlockSnapshot:
    path = c.block_path(namespace, name)
    mapping = segment.attach(path, writable=False)
    try:
        size = len(mapping)
        if size < c.HEADER_WORDS * 8:
            raise HeaderMismatchError(f"{path} is {size} bytes, too small for a counter block")
        header = snapshot(np.frombuffer(mapping, np.int64, c.HEADER_WORDS))
        _check_header(header, path, size)
        count, values_at = int(header[c.C_COUNT]), int(header[c.C_VALUES_AT])
        directory = np.frombuffer(mapping, c.ENTRY_DTYPE, count, c.HEADER_WORDS * 8).copy()
        n_words = (size - values_at) // 8
        values = snapshot(np.frombuffer(mapping, np.int64, n_words, values_at))
    finally:
        segment.close(mapping)
    groups = {c.KIND_COUNTER: {}, c.KIND_GAUGE: {}, c.KIND_HISTOGRAM: {}}
    for entry in directory:
        metric, kind, slot = entry["name"].decode(), int(entry["kind"]), int(entry["slot"])
        width = HIST_WORDS if kind == c.KIND_HISTOGRAM else 1
        if kind not in groups or not 0 <= slot <= n_words - width:
            raise HeaderMismatchError(f"{path} has a corrupt entry for metric {metric!r}")
        if kind == c.KIND_HISTOGRAM:
            groups[kind][metric] = HistogramSnapshot(
                count=int(values[slot + H_COUNT]),
                total=int(values[slot + H_SUM]),
                buckets=values[slot + H_BUCKETS : slot + HIST_WORDS],
            )
        else:
            groups[kind][metric] = int(values[slot])
    owner = int(header[c.C_OWNER])
    return BlockSnapshot(
        name=name,
        pid=proc.token_pid(owner),
        alive=proc.token_alive(owner),
        created_ns=int(header[c.C_CREATED_NS]),
        counters=groups[c.KIND_COUNTER],
        gauges=groups[c.KIND_GAUGE],
        histograms=groups[c.KIND_HISTOGRAM],
    )


def _check_header(header: np.ndarray, path: str, size: int) -> None:
    if header[c.C_MAGIC] != c.MAGIC:
        raise HeaderMismatchError(f"{path} is not a counter block (bad magic)")
    if header[c.C_VERSION] != c.VERSION:
        raise HeaderMismatchError(
            f"{path} has counter layout version {int(header[c.C_VERSION])}; "
            f"this code reads version {c.VERSION}"
        )
    count, values_at = int(header[c.C_COUNT]), int(header[c.C_VALUES_AT])
    if count < 0 or not c.HEADER_WORDS * 8 + count * c.ENTRY_BYTES <= values_at <= size:
        raise HeaderMismatchError(f"{path} has a corrupt header")
