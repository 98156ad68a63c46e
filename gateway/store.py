"""The gateway's own state store: a checkpoint of what it derives from the shards' events.

The shards' journals are the truth and only their shards open them. This store is
the gateway's memory of having read their events: a restarted gateway loads its
checkpoint and asks each shard for the events after its watermark (``CMD_SYNC``),
so start-up reads a checkpoint plus a tail, never the whole history. One LMDB
environment in ``topology.gateway_state_dir(Config)``, one writer: the gateway.

db ``runs``   first age (8 bytes big-endian) -> a run: the end of its ages (8 bytes
              big-endian), then ``RUN_DTYPE`` records sorted by pair (idem key and
              client, 12 bytes big-endian): where each pair was used (instrument
              number in ``exchange.topology.symbols`` order, order id, seq)
db ``meta``   ``checkpoint`` -> a blake2b digest, then the msgpack ``Checkpoint``;
              ``age`` -> the next pair's age (one per pair taken)

The pairs are a log-structured index, not a B-tree of pairs: clients' keys are
random, and inserting a checkpoint's worth of random pairs into one big tree
dirtied a page per pair (16-33 µs a pair, and 40 MB written a second at 10,000
keyed orders/s). Each checkpoint writes its pairs as one sorted run instead;
the newest runs are merged while the older of two is at most twice the newer
(at most ``RUN_PAIRS`` pairs), so there are O(log) small runs and a run per
``RUN_PAIRS`` pairs of the window. Runs wholly older than the window (``[gateway]
key_window`` pairs) are dropped. A lookup binary-searches the runs, newest
first; the Bloom filter (``gateway.keyfilter``) spares it for nearly every new
key.

A checkpoint is written off the acknowledgement path, in one transaction: the
new run (and merges, drops), then the ``checkpoint`` record. LMDB's meta sync is
off: a crash of the machine may undo the last checkpoint but never tears one,
and an older checkpoint only means a longer tail to ask the shards for. A store
that cannot be opened, or whose checkpoint fails its digest, is moved aside
(``<dir>.old-N``) and the state is rebuilt from the shards from seq 0: refused
loudly, never served. So is one made for another numbering of the instruments.
"""

import hashlib
import os
import struct
import time
from typing import NamedTuple

import lmdb
import msgspec
import numpy as np

from exchange import lmdbfile, pages
from gateway.keyfilter import KeyFilter

FORMAT = 1
MAP_SIZE = 1 << 36  # address space only: the file grows with what is written
DIGEST_BYTES = 32
_PAIR = struct.Struct(">QI")  # idem key, client
_AGE = struct.Struct(">Q")
_PAIR_DTYPE = np.dtype([("key", ">u8"), ("client", ">u4")])
# a pair as bytes sorts as memcmp does, so that runs are binary-searched by it
RUN_DTYPE = np.dtype([("pair", "S12"), ("instrument", "<u2"), ("order_id", "<i8"), ("seq", "<i8")])
RUN_PAIRS = 1 << 18  # pairs in a run at most: a merge of two is a ~10 ms pause


class StoreError(Exception):
    """The store cannot be used as it is (names the directory and why)."""


class KeyUse(NamedTuple):
    instrument: int  # number in ``exchange.topology.symbols`` order
    order_id: int
    seq: int


class ShardMark(msgspec.Struct, frozen=True):
    """How far the gateway has read one shard, and whether that is all there is."""

    name: str
    seq: int  # the last journaled event folded in: (seq, idx)
    idx: int
    # every keyed NEW the gateway had written to the shard was answered and its pair
    # is in this checkpoint: no request in flight held a pair on its instruments
    quiet: bool
    ring: int  # the request ring's incarnation then ...
    published: int  # ... and the records written to it so far


class Checkpoint(msgspec.Struct, frozen=True):
    format: int
    symbols: list[str]  # the instrument numbering the state uses
    shards: list[ShardMark]
    clean: bool  # written by a clean stop (see ``gateway.checkpoints.Checkpoints.load``)
    clients: list[int]  # the positions' client rows, in order
    acct: bytes  # ``Positions.acct`` rows, int64
    cash: bytes
    last_px: bytes


def pair_key(client: int, key: int) -> bytes:
    return _PAIR.pack(key, client)


def taken_records(clients, keys, instruments, order_ids, seqs) -> np.ndarray:
    """``RUN_DTYPE`` records of pairs taken, from columns (arrays or lists)."""
    pairs = np.zeros(len(clients), _PAIR_DTYPE)
    pairs["key"], pairs["client"] = keys, clients
    records = np.zeros(len(clients), RUN_DTYPE)
    records["pair"] = pairs.view("S12")
    records["instrument"], records["order_id"], records["seq"] = instruments, order_ids, seqs
    return records


def _sealed(cp: Checkpoint) -> bytes:
    body = msgspec.msgpack.encode(cp)
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() + body


def _unsealed(value: bytes) -> Checkpoint:
    digest, body = value[:DIGEST_BYTES], value[DIGEST_BYTES:]
    if hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest() != digest:
        raise StoreError("the checkpoint does not match its digest")
    try:
        return msgspec.msgpack.decode(body, type=Checkpoint)
    except msgspec.DecodeError as e:
        raise StoreError(f"the checkpoint is unreadable: {e}") from e


class Run(NamedTuple):
    first: int  # the ages of its pairs: first <= age < end
    end: int
    pairs: int


class GatewayStore:
    def __init__(self, path: str, key_window: int, readonly: bool = False):
        """``readonly``: to look at a store another process writes (tests, tools)."""
        self.path = path
        self.key_window = key_window
        problem = lmdbfile.problem(path)  # before mapping: a short file is a SIGBUS
        if problem is not None:
            raise StoreError(problem)
        try:
            if not readonly:
                os.makedirs(path, exist_ok=True)
            self._env = lmdb.open(
                path, map_size=MAP_SIZE, max_dbs=2, metasync=False, readonly=readonly
            )
            self._db = {
                n: self._env.open_db(n.encode(), create=not readonly) for n in ("runs", "meta")
            }
        except (OSError, lmdb.Error) as e:
            raise StoreError(f"{path}: {e}") from e
        self._reader = self._env.begin(buffers=True)
        age = self._reader.get(b"age", db=self._db["meta"])
        self._age = 0 if age is None else _AGE.unpack(age)[0]  # the next pair's
        self._runs = [
            Run(_AGE.unpack(bytes(k))[0], _AGE.unpack(bytes(v[:8]))[0], _pairs(v))
            for k, v in self._reader.cursor(db=self._db["runs"])
        ]  # oldest first
        self.filter = KeyFilter(key_window)
        # the runs the filter has not taken yet: one a tick while serving, so that
        # start-up does not grow with the store (``fill_filter``)
        self._unfiltered = list(self._runs)
        # pairs the filter said the store does not hold, asked all at once (``screen``)
        self._absent: set[int] = set()

    def release_pages(self) -> int:
        """Give back the pages of the store this process has mapped (``exchange.pages``)."""
        return pages.release(os.path.join(self.path, "data.mdb"))

    def close(self) -> None:
        self._reader.abort()
        self._env.close()

    def checkpoint(self) -> Checkpoint | None:
        """The last checkpoint written (None: none yet). ``StoreError`` if it is damaged."""
        try:
            value = self._reader.get(b"checkpoint", db=self._db["meta"])
        except lmdb.Error as e:
            raise StoreError(f"{self.path}: {e}") from e
        return None if value is None else _unsealed(bytes(value))

    def _run(self, txn, run: Run) -> np.ndarray:
        """A run's records, read in place (valid while ``txn`` is)."""
        return np.frombuffer(txn.get(_AGE.pack(run.first), db=self._db["runs"])[8:], RUN_DTYPE)

    def fill_filter(self) -> bool:
        """Give the filter the next run the store held when it was opened (``write`` gives
        it the new ones); True once it has them all."""
        if not self._unfiltered:
            return True
        run = self._unfiltered.pop()
        self._absent = set()
        with self._env.begin(buffers=True) as txn:
            if run in self._runs:  # not merged or dropped meanwhile: then it was given
                self.filter.load(*_clients_keys(self._run(txn, run)["pair"].tobytes()))
        self.release_pages()
        return not self._unfiltered

    def screen(self, clients: list[int], keys: list[int]) -> None:
        """The pairs about to be looked up (a turn's keyed orders): the filter is asked
        for all of them in one call, and ``lookup`` answers those it does not hold from
        that, until the store or its filter next changes (``write``, ``fill_filter``)."""
        self._absent = set()
        if self._unfiltered or not keys:
            return  # the filter does not have every pair of the store yet
        c, k = np.array(clients, np.uint64), np.array(keys, np.uint64)
        held = self.filter.may_hold_many(c, k)
        self._absent = {
            key << 32 | client
            for client, key, h in zip(clients, keys, held.tolist(), strict=True)
            if not h
        }

    def lookup(self, client: int, key: int) -> KeyUse | None:
        """Where the pair was used, as of the last checkpoint."""
        if key << 32 | client in self._absent:
            return None
        if not self._unfiltered and not self.filter.may_hold(client, key):
            return None
        pair = pair_key(client, key)
        for run in reversed(self._runs):
            records = self._run(self._reader, run)
            i = int(np.searchsorted(records["pair"], pair))
            # an element of an "S" array comes without its trailing zero bytes
            if i < len(records) and records["pair"][i] == pair.rstrip(b"\0"):
                r = records[i]
                return KeyUse(int(r["instrument"]), int(r["order_id"]), int(r["seq"]))
        return None

    def write(self, cp: Checkpoint, taken: np.ndarray, durable: bool = False) -> float:
        """The pairs taken since the last checkpoint (``RUN_DTYPE`` records, a pair once)
        as a new run, merges, the runs past the window dropped, then ``cp``: one
        transaction; with ``durable``, on disk before it returns. Returns the seconds it
        took."""
        t0 = time.perf_counter()
        self._absent = set()  # the filter takes the new pairs
        runs = self._db["runs"]
        try:
            with self._env.begin(write=True, buffers=True) as txn:
                if len(taken):
                    records = np.sort(taken, order="pair")
                    self._put(txn, Run(self._age, self._age + len(records), len(records)), records)
                    self._age += len(records)
                    txn.put(b"age", _AGE.pack(self._age), db=self._db["meta"])
                    self._merge(txn)
                while self._runs and self._runs[0].end <= self._age - self.key_window:
                    txn.delete(_AGE.pack(self._runs.pop(0).first), db=runs)
                txn.put(b"checkpoint", _sealed(cp), db=self._db["meta"])
            if durable:
                self._env.sync(True)
        except lmdb.Error as e:
            raise StoreError(f"{self.path}: {e}") from e
        # a reader sees the store as of its start: renew it, so lookups see what was written
        self._reader.abort()
        self._reader = self._env.begin(buffers=True)
        if len(taken):
            self.filter.add(*_clients_keys(taken["pair"].tobytes()))
        self.release_pages()
        return time.perf_counter() - t0

    def _put(self, txn, run: Run, records: np.ndarray) -> None:
        txn.put(_AGE.pack(run.first), _AGE.pack(run.end) + records.tobytes(), db=self._db["runs"])
        self._runs.append(run)

    def _merge(self, txn) -> None:
        """Merge the two newest runs while the older is at most twice the newer and the
        two fit in ``RUN_PAIRS``: the run sizes stay a geometric series."""
        while len(self._runs) >= 2:
            older, newer = self._runs[-2], self._runs[-1]
            if older.pairs > 2 * newer.pairs or older.pairs + newer.pairs > RUN_PAIRS:
                return
            both = np.concatenate([self._run(txn, older), self._run(txn, newer)])
            # a pair in both (folded again after a crash): the newer's entry is kept
            order = np.argsort(both["pair"], kind="stable")
            both = both[order]
            keep = np.ones(len(both), bool)
            keep[:-1] = both["pair"][1:] != both["pair"][:-1]
            del self._runs[-2:]
            txn.delete(_AGE.pack(newer.first), db=self._db["runs"])
            merged = both[keep]
            self._put(txn, Run(older.first, newer.end, len(merged)), merged)
            if older in self._unfiltered or newer in self._unfiltered:
                # the filter is still to take the pairs of one of them: of the merge, then
                self._unfiltered = [r for r in self._unfiltered if r not in (older, newer)]
                self._unfiltered.append(self._runs[-1])

    def keys(self) -> int:
        """How many pairs the store holds (a pair taken twice may count twice)."""
        return sum(run.pairs for run in self._runs)


def _pairs(value) -> int:
    return (len(value) - 8) // RUN_DTYPE.itemsize


def _clients_keys(pairs: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The clients and keys of ``pair_key`` bytes one after the other, as arrays."""
    both = np.frombuffer(pairs, _PAIR_DTYPE)
    return both["client"], both["key"]


def open_store(
    path: str, key_window: int, symbols: list[str]
) -> tuple[GatewayStore, Checkpoint | None, str | None]:
    """The store and its checkpoint. One that is damaged, or numbers the instruments
    otherwise than ``symbols`` (the config changed them), is moved aside and a new one
    made; the third value then says why (None: nothing was wrong)."""
    try:
        store = GatewayStore(path, key_window)
    except StoreError as e:
        if not os.path.isdir(path):
            raise  # nothing there to move aside: it cannot be made at all
        problem = str(e)
    else:
        try:
            cp = store.checkpoint()
        except StoreError as e:
            problem = str(e)
        else:
            if cp is None or cp.symbols == symbols:
                return store, cp, None
            problem = f"it numbers the instruments {cp.symbols}; the config has {symbols}"
        store.close()
    n = 1
    while os.path.exists(f"{path}.old-{n}"):
        n += 1
    os.rename(path, f"{path}.old-{n}")
    return GatewayStore(path, key_window), None, f"{problem}; moved to {path}.old-{n}"
