"""The gateway's own state store: a checkpoint of what it derives from the shards' events.

The shards' journals are the truth and only their shards open them. This store is
the gateway's memory of having read their events: a restarted gateway loads its
checkpoint and asks each shard for the events after its watermark (``CMD_SYNC``),
so start-up reads a checkpoint plus a tail, never the whole history. One LMDB
environment in ``Config.gateway_state_dir()``, one writer: the gateway.

db ``keys``   pair (idem key, client: 12 bytes big-endian, the key first so that a
              client's growing keys share pages) -> ``KeyUse`` (instrument number
              in ``gateway.limits.symbols`` order, order id, seq, age)
db ``ages``   age (8 bytes big-endian) -> pair: the order the pairs were taken in,
              so that those older than the window (``[gateway] key_window``
              keyed orders) are let go of, oldest first
db ``meta``   ``checkpoint`` -> a blake2b digest, then the msgpack ``Checkpoint``;
              ``age`` -> the next pair's age

A checkpoint is written off the acknowledgement path: the new pairs and their
ages, the pruning, then the ``checkpoint`` record, in transactions of a bounded
size (``GatewayStore.write``). LMDB's meta sync is off: a crash of the machine
may undo the last transaction but never tears one; pairs written without the
checkpoint that follows them are of events after its watermark, which the
shards serve again; an older checkpoint only means a longer tail. A store
that cannot be opened, or whose checkpoint fails its digest, is moved aside
(``<dir>.old-N``) and the state is rebuilt from the shards from seq 0: refused
loudly, never served. So is one made for another numbering of the instruments.
"""

import hashlib
import itertools
import os
import struct
import time
from typing import NamedTuple

import lmdb
import msgspec
import numpy as np

from exchange import pages
from gateway.keyfilter import KeyFilter

FORMAT = 1
MAP_SIZE = 1 << 36  # address space only: the file grows with what is written
DIGEST_BYTES = 32
PAIRS_PER_TXN = 1024  # bounds LMDB's cache of dirty pages (``GatewayStore.write``)
_PAIR = struct.Struct(">QI")  # idem key, client
_USE = struct.Struct("<HqqQ")  # instrument, order id, seq, age
_AGE = struct.Struct(">Q")
_PAIR_DTYPE = np.dtype([("key", ">u8"), ("client", ">u4")])


class StoreError(Exception):
    """The store cannot be used as it is (names the directory and why)."""


class KeyUse(NamedTuple):
    instrument: int  # number in ``gateway.limits.symbols`` order
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
    ring: int  # the request ring's creation stamp then ...
    published: int  # ... and the records written to it so far


class Checkpoint(msgspec.Struct, frozen=True):
    format: int
    symbols: list[str]  # the instrument numbering the state uses
    shards: list[ShardMark]
    clean: bool  # written by a clean stop (see ``gateway.core.Gateway.load``)
    clients: list[int]  # the positions' client rows, in order
    acct: bytes  # ``Positions.acct`` rows, int64
    cash: bytes
    last_px: bytes


def pair_key(client: int, key: int) -> bytes:
    return _PAIR.pack(key, client)


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


class GatewayStore:
    def __init__(self, path: str, key_window: int):
        self.path = path
        self.key_window = key_window
        try:
            os.makedirs(path, exist_ok=True)
            self._env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=3, metasync=False)
            self._db = {n: self._env.open_db(n.encode()) for n in ("keys", "ages", "meta")}
        except (OSError, lmdb.Error) as e:
            raise StoreError(f"{path}: {e}") from e
        self._reader = self._env.begin()
        age = self._reader.get(b"age", db=self._db["meta"])
        self._age = 0 if age is None else _AGE.unpack(age)[0]  # the next pair's
        self.filter = KeyFilter(key_window)
        # the first pair the filter has not taken from the store yet (None: it has them
        # all): filled a chunk at a time while serving, so that start-up does not grow
        # with the store (``fill_filter``)
        self._unfiltered: bytes | None = b""

    def release_pages(self) -> int:
        """Give back the pages of the store this process has mapped (``exchange.pages``):
        the filter keeps lookups off it, but a checkpoint's writes and the filter's
        false positives still read it at random."""
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

    def fill_filter(self, pairs: int) -> bool:
        """Give the filter up to ``pairs`` more of the pairs the store held when it was
        opened (those written since, ``write`` gives it); True once it has them all."""
        if self._unfiltered is None:
            return True
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._db["keys"])
            cur.set_range(self._unfiltered)
            chunk = list(itertools.islice(cur.iternext(values=False), pairs + 1))
        self._unfiltered = chunk.pop() if len(chunk) > pairs else None
        self.filter.load(*_clients_keys(chunk))
        self.release_pages()
        return self._unfiltered is None

    def lookup(self, client: int, key: int) -> KeyUse | None:
        """Where the pair was used, as of the last checkpoint."""
        if self._unfiltered is None and not self.filter.may_hold(client, key):
            return None
        value = self._reader.get(pair_key(client, key), db=self._db["keys"])
        if value is None:
            return None
        inst, order_id, seq, _ = _USE.unpack(value)
        return KeyUse(inst, order_id, seq)

    def write(self, cp: Checkpoint, uses: dict[bytes, KeyUse], durable: bool = False) -> float:
        """The pairs taken since the last checkpoint (in the order taken), those past the
        window let go of, then ``cp``; with ``durable``, on disk before it returns.
        Returns the seconds it took.

        At most ``PAIRS_PER_TXN`` pairs a transaction: LMDB keeps the pages a write
        transaction dirtied in a cache of its own for later ones, which never shrinks,
        and random keys dirty a page each. The checkpoint goes last: a crash before it
        leaves pairs of events after its watermark, which the shards serve again."""
        t0 = time.perf_counter()
        taken = list(uses.items())
        try:
            for at in range(0, len(taken), PAIRS_PER_TXN):
                with self._env.begin(write=True) as txn:
                    self._take(txn, taken[at : at + PAIRS_PER_TXN])
            while True:
                with self._env.begin(write=True) as txn:
                    if self._let_go(txn, self._age - self.key_window, PAIRS_PER_TXN):
                        txn.put(b"checkpoint", _sealed(cp), db=self._db["meta"])
                        break
            if durable:
                self._env.sync(True)
        except lmdb.Error as e:
            raise StoreError(f"{self.path}: {e}") from e
        # a reader sees the store as of its start: renew it, so lookups see what was written
        self._reader.abort()
        self._reader = self._env.begin()
        self.filter.add(*_clients_keys(uses))
        self.release_pages()
        return time.perf_counter() - t0

    def _take(self, txn, taken: list[tuple[bytes, KeyUse]]) -> None:
        keys, ages = self._db["keys"], self._db["ages"]
        for pair, use in taken:
            txn.put(pair, _USE.pack(*use, self._age), db=keys)
            txn.put(_AGE.pack(self._age), pair, db=ages)
            self._age += 1
        txn.put(b"age", _AGE.pack(self._age), db=self._db["meta"])

    def _let_go(self, txn, below: int, most: int) -> bool:
        """Forget at most ``most`` pairs taken before age ``below`` (a pair used again
        since keeps its newer entry); True once none is left."""
        keys, ages = self._db["keys"], self._db["ages"]
        cur = txn.cursor(db=ages)
        for _ in range(most):
            if not cur.first():
                return True
            (age,) = _AGE.unpack(cur.key())
            if age >= below:
                return True
            pair = cur.value()
            value = txn.get(pair, db=keys)
            if value is not None and _USE.unpack(value)[3] == age:
                txn.delete(pair, db=keys)
            cur.delete()
        return False

    def keys(self) -> int:
        """How many pairs the store holds."""
        return self._reader.stat(self._db["keys"])["entries"]


def _clients_keys(pairs) -> tuple[np.ndarray, np.ndarray]:
    """The clients and keys of ``pair_key`` bytes, as arrays."""
    both = np.frombuffer(b"".join(pairs), _PAIR_DTYPE)
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
