"""A process's block of named counters, gauges and latency histograms in shared memory.

The process that owns the block (one per process, e.g. "shard-0") updates it on
its hot path, from Python by name or from ``@njit`` code by slot; any other
process reads it with ``shm.counters_reader`` without locks and without
disturbing the writer.

Layout of the segment ``exch.<namespace>.<name>.counters``:

    header     8 int64 words (magic, version, metric count, ...)
    directory  one 64-byte entry per metric: name (48 bytes, NUL-padded),
               kind, slot (the index of its first value word)
    values     int64 words: one per counter or gauge, HIST_WORDS per histogram

Counters only grow (atomic add); gauges are set; histograms count values (see
``shm.histogram``). Every word is written atomically, so a reader never sees a
torn value; it may see a histogram's count a step ahead of its buckets.
"""

import re
import time

import numpy as np
from numba import njit

from shm import names, proc, segment
from shm.atomics import fetch_add, snapshot, store_release
from shm.errors import SegmentExistsError, StaleSegmentError
from shm.histogram import HIST_WORDS, hist_record

SUFFIX = "counters"
MAGIC = 0x3130544E43484358  # b"XCHCNT01" read as a little-endian int64
VERSION = 1
HEADER_WORDS = 8
C_MAGIC = 0
C_VERSION = 1
C_COUNT = 2  # number of metrics
C_VALUES_AT = 3  # byte offset of the values
C_OWNER = 4  # process token of the writer
C_CREATED_NS = 5
ENTRY_BYTES = 64
NAME_BYTES = 48
ENTRY_DTYPE = np.dtype([("name", f"S{NAME_BYTES}"), ("kind", "<i8"), ("slot", "<i8")])
KIND_COUNTER = 1
KIND_GAUGE = 2
KIND_HISTOGRAM = 3
KIND_NAMES = {KIND_COUNTER: "counter", KIND_GAUGE: "gauge", KIND_HISTOGRAM: "histogram"}
_METRIC_RE = re.compile(r"[a-z][a-z0-9_.]*")

assert ENTRY_DTYPE.itemsize == ENTRY_BYTES


@njit(cache=True, nogil=True)
def counter_add(words, slot, n):
    fetch_add(words, slot, n)


@njit(cache=True, nogil=True)
def gauge_set(words, slot, value):
    store_release(words, slot, value)


def block_path(namespace: str, name: str) -> str:
    return names.segment_path(namespace, name, SUFFIX)


def _layout(counters, gauges, histograms) -> list[tuple[str, int, int]]:
    """(name, kind, slot) for every metric, checked; ValueError names the first problem."""
    entries, seen, slot = [], set(), 0
    for kind, group in (
        (KIND_COUNTER, counters),
        (KIND_GAUGE, gauges),
        (KIND_HISTOGRAM, histograms),
    ):
        if isinstance(group, str):
            raise ValueError(f"{KIND_NAMES[kind]} names must be a list of names, not one string")
        for metric in group:
            if not isinstance(metric, str) or not _METRIC_RE.fullmatch(metric):
                raise ValueError(
                    f"invalid metric name {metric!r}: lower-case letters, digits, '_' and '.', "
                    "starting with a letter"
                )
            if len(metric) > NAME_BYTES:
                raise ValueError(f"metric name {metric!r} is longer than {NAME_BYTES} bytes")
            if metric in seen:
                raise ValueError(f"metric name {metric!r} is used twice")
            seen.add(metric)
            entries.append((metric, kind, slot))
            slot += HIST_WORDS if kind == KIND_HISTOGRAM else 1
    return entries


class CounterBlock:
    """The writer side: creates the block and updates it.

    ``values`` is the int64 word array; pass it with ``slot(name)`` to the
    ``@njit`` functions ``counter_add``, ``gauge_set`` and
    ``shm.histogram.hist_record`` from compiled code.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        counters=(),
        gauges=(),
        histograms=(),
        replace_stale: bool = False,
    ):
        entries = _layout(counters, gauges, histograms)
        path = block_path(namespace, name)
        self.path = path
        values_at = HEADER_WORDS * 8 + len(entries) * ENTRY_BYTES
        values_at += -values_at % 64
        n_words = sum(HIST_WORDS if kind == KIND_HISTOGRAM else 1 for _, kind, _ in entries)
        owner = proc.token()

        def init(mapping):
            directory = np.frombuffer(mapping, ENTRY_DTYPE, len(entries), HEADER_WORDS * 8)
            for i, (metric, kind, slot) in enumerate(entries):
                directory[i] = (metric.encode(), kind, slot)
            header = np.frombuffer(mapping, np.int64, HEADER_WORDS)
            header[C_VERSION] = VERSION
            header[C_COUNT] = len(entries)
            header[C_VALUES_AT] = values_at
            header[C_OWNER] = owner
            header[C_CREATED_NS] = time.time_ns()
            header[C_MAGIC] = MAGIC

        size = values_at + max(n_words, 1) * 8
        try:
            mapping = segment.create(path, size, init)
        except SegmentExistsError:
            self._replace_dead(namespace, name, replace_stale)
            mapping = segment.create(path, size, init)
        self._mapping = mapping
        self.values = np.frombuffer(mapping, np.int64, n_words, values_at)
        self._metrics = {metric: (kind, slot) for metric, kind, slot in entries}

    def _replace_dead(self, namespace: str, name: str, replace_stale: bool) -> None:
        mapping = segment.attach(self.path, writable=False)
        try:
            header = snapshot(np.frombuffer(mapping, np.int64, HEADER_WORDS))
        finally:
            segment.close(mapping)
        owner = int(header[C_OWNER]) if header[C_MAGIC] == MAGIC else 0
        if proc.token_alive(owner):
            raise SegmentExistsError(
                f"counter block {self.path} exists, written by live pid {proc.token_pid(owner)}"
            )
        if not replace_stale:
            raise StaleSegmentError(
                f"counter block {self.path} was left by pid {proc.token_pid(owner)}, which is "
                "gone; create with replace_stale=True to start a new one"
            )
        segment.unlink(self.path)

    def slot(self, metric: str, kind: int | None = None) -> int:
        """The first value word of ``metric``, for compiled code; KeyError if unknown."""
        try:
            found, slot = self._metrics[metric]
        except KeyError:
            raise KeyError(f"no metric {metric!r} in counter block {self.path}") from None
        if kind is not None and found != kind:
            raise ValueError(
                f"metric {metric!r} is a {KIND_NAMES[found]}, not a {KIND_NAMES[kind]}"
            )
        return slot

    def add(self, metric: str, n: int = 1) -> None:
        counter_add(self.values, self.slot(metric, KIND_COUNTER), n)

    def set(self, metric: str, value: int) -> None:
        gauge_set(self.values, self.slot(metric, KIND_GAUGE), value)

    def record(self, metric: str, value: int) -> None:
        hist_record(self.values, self.slot(metric, KIND_HISTOGRAM), value)

    def close(self) -> None:
        """Unmap; the block stays readable (and reported as not alive once we exit)."""
        if self._mapping is not None:
            self.values = None
            segment.close(self._mapping)
            self._mapping = None

    def unlink(self) -> None:
        self.close()
        segment.unlink(self.path)
