"""``Book``: one instrument's order book, backed by the Numba kernel.

The interface is shared with ``exchange.reference.ReferenceBook`` (the slow,
obviously-correct twin the tests compare it with): ``process``, ``top``,
``depth``, ``order``, ``canonical_rows``, ``stop_rows``, ``last_price``,
``state_hash``, ``snapshot`` and ``restore``. ``process_into`` is the
allocation-free form the shard loop uses.
"""

import io
import zipfile

import msgspec
import numpy as np

from exchange import kernel
from exchange.bookconfig import BookConfig
from exchange.records import (
    EVENT_DTYPE,
    SIDE_BUY,
    SIDE_SELL,
    check_commands,
    copy_records,
    join_records,
)
from exchange.statehash import hash_canonical

# 4: icebergs (display and reserve in the order rows); 5: expiries, now; 6: the trading
# state (HALTS in exchange.records: one more meta word; a format 5 snapshot is a book
# that was never halted, read as continuous)
SNAPSHOT_FORMAT = 6
_READABLE_FORMATS = (5, 6)
SNAPSHOT_DEFLATE_LEVEL = 1
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can say
EVENTS_PER_COMMAND = 4


class Book:
    def __init__(self, config: BookConfig, state: kernel.BookState | None = None):
        self.config = config
        self.state = state if state is not None else kernel.new_state(config)
        self._events = np.zeros(1024, EVENT_DTYPE)

    @property
    def last_seq(self) -> int:
        return int(self.state.meta[kernel.M_LAST_SEQ])

    def process_into(self, cmds: np.ndarray, start: int, events: np.ndarray) -> tuple[int, int]:
        """Apply commands from ``start`` into ``events``; returns (commands done, events written).

        Stops early, never half-way through a command, when the buffer could
        run out; raises when not even one command fits (the buffer is too small).
        """
        if start == 0:
            check_commands(cmds, self.last_seq)
        done, n, need = kernel.process(self.state, cmds, start, events)
        if need:
            raise BufferError(f"an events buffer of {need} records is needed, got {len(events)}")
        return done, n

    def process(self, cmds: np.ndarray) -> np.ndarray:
        """Apply all commands; returns a new array of all their events, in order."""
        check_commands(cmds, self.last_seq)
        return self.process_sequenced(cmds)

    def process_sequenced(self, cmds: np.ndarray) -> np.ndarray:
        """``process`` without its checks, for commands whose seqs the caller made (the
        shard's sequencer): on a one-command batch the checks cost more than the kernel."""
        # ~2.4 events per command on a busy book: one kernel call per batch as a rule
        want = EVENTS_PER_COMMAND * len(cmds) + 1024
        if len(self._events) < want:
            self._events = np.zeros(want, EVENT_DTYPE)
        chunks = []
        pos = 0
        while pos < len(cmds):
            done, n, need = kernel.process(self.state, cmds, pos, self._events)
            if need:
                self._events = np.zeros(max(need, 2 * len(self._events)), EVENT_DTYPE)
                continue
            chunks.append(copy_records(self._events[:n]))
            pos += done
        return chunks[0] if len(chunks) == 1 else join_records(chunks, EVENT_DTYPE)

    # ------------------------------------------------------------ queries

    def top(self) -> tuple[int, int, int, int]:
        bids, asks = self.depth(1)
        bid = bids[0] if bids else (0, 0, 0)
        ask = asks[0] if asks else (0, 0, 0)
        return bid[0], bid[1], ask[0], ask[1]

    def depth(self, n: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"depth needs a number of levels >= 0, got {n!r}")

        def rows(side):
            return [tuple(int(v) for v in r) for r in kernel.depth(self.state, side, n)]

        return rows(SIDE_BUY), rows(SIDE_SELL)

    def order(self, order_id: int) -> dict | None:
        st = self.state
        o = kernel.h_find(st, order_id)
        if o < 0:
            return None
        row = st.orders[o]
        return {
            "order_id": int(row[kernel.O_ID]),
            "client": int(row[kernel.O_CLIENT]),
            "side": int(row[kernel.O_SIDE]),
            "price": int(row[kernel.O_PRICE]),
            "qty": int(row[kernel.O_QTY]),
            "leaves": int(row[kernel.O_LEAVES]),
            "stp": int(row[kernel.O_STP]),
            "flags": int(row[kernel.O_FLAGS]),
            "display": int(row[kernel.O_DISPLAY]),
            "shown": int(row[kernel.O_LEAVES] - row[kernel.O_HIDDEN]),
            "tif": int(row[kernel.O_TIF]),
            "expires": int(row[kernel.O_EXPIRES]),
        }

    def canonical_rows(self) -> np.ndarray:
        return kernel.canonical_rows(self.state)

    def stop_rows(self) -> np.ndarray:
        return kernel.stop_rows(self.state)

    @property
    def last_price(self) -> int:
        return int(kernel.last_price(self.state))

    @property
    def now(self) -> int:
        """The greatest CMD_EXPIRE time processed (EXPIRY in exchange.records), 0 before."""
        return int(self.state.meta[kernel.M_NOW])

    @property
    def halted(self) -> bool:
        """Whether the book is halted (HALTS in exchange.records)."""
        return bool(self.state.meta[kernel.M_HALTED])

    def next_expiry(self) -> int | None:
        """At most the earliest expiry of a live order (None: no order has one): a
        CMD_EXPIRE before it expires nothing. A bound, not exact: it comes down when an
        order with an earlier expiry arrives and is recomputed by each EXPIRE that looks."""
        v = int(self.state.meta[kernel.M_EXP_MIN])
        return None if v == kernel.NO_EXPIRY else v

    def state_hash(self) -> str:
        return hash_canonical(
            self.last_seq,
            self.last_price,
            self.canonical_rows(),
            self.stop_rows(),
            self.now,
            self.halted,
        )

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state as bytes: an npz of the arrays and the config, deflated at level
        1 (most of a book's arrays are its empty capacity: 10-14 MB of the embedded
        config's books become ~0.2 MB, faster than copying them plain, and a journal
        that stores one every ``[snapshot] every_commands`` finds room for the next in
        the pages the last one freed), with no timestamps: a state gives the same bytes."""
        header = msgspec.json.encode({"format": SNAPSHOT_FORMAT, "config": self.config})
        arrays = {"header": np.frombuffer(header, np.uint8), **self.state._asdict()}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
            for name, a in arrays.items():
                npy = io.BytesIO()
                np.lib.format.write_array(npy, a, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
                zf.writestr(info, npy.getvalue(), zipfile.ZIP_DEFLATED, SNAPSHOT_DEFLATE_LEVEL)
        return buf.getvalue()

    @classmethod
    def restore(cls, data: bytes) -> "Book":
        """The book a ``snapshot()`` wrote; ValueError for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                header = msgspec.json.decode(z["header"].tobytes())
                arrays = {f: z[f] for f in kernel.BookState._fields}
        except Exception as e:  # np.load raises many kinds on garbage
            raise ValueError(f"not a book snapshot: {e}") from e
        if not isinstance(header, dict) or header.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"unknown book snapshot header {header!r:.80}")
        if header["format"] == 5 and arrays["meta"].shape == (kernel.META_SIZE - 1,):
            arrays["meta"] = np.append(arrays["meta"], np.int64(0))  # M_HALTED: continuous
        try:
            config = msgspec.convert(header["config"], BookConfig)
        except (KeyError, msgspec.ValidationError) as e:
            raise ValueError(f"book snapshot has a bad config: {e}") from e
        expected = kernel.new_state(config)
        for name, want in zip(kernel.BookState._fields, expected, strict=True):
            got = arrays[name]
            if want.dtype != got.dtype or want.shape != got.shape:
                raise ValueError(f"book snapshot field {name!r} does not fit its config")
        orders = kernel.line_aligned(arrays["orders"].shape)
        orders[:] = arrays["orders"]
        return cls(config, kernel.BookState(**{**arrays, "orders": orders}))
