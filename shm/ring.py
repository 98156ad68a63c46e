"""Ring segments: create, attach (checked), inspect, list, unlink; what both ends share.

A ring ``name`` in ``namespace`` is three files in the shm directory: the
segment (header + slots, layout in ``shm.ring_ops``) and two doorbells, one the
producer rings when data arrives and one the consumer rings when space frees.

The creator is the segment's owner (typically the supervisor) and must outlive
the ends: attaching to a segment whose owner is dead raises StaleSegmentError,
because nobody vouches for what is in it. A restarted owner that wants the
records back calls ``adopt_ring`` (or attaches an end with ``adopt=True``) and
becomes the owner; one that wants a fresh ring calls
``create_ring(..., replace_stale=True)``.
"""

import hashlib
import os
import secrets
from dataclasses import dataclass

import numpy as np

from shm import doorbell, names, proc, segment
from shm import ring_ops as ops
from shm.atomics import load_word, snapshot, swap_word
from shm.errors import (
    HeaderMismatchError,
    RoleTakenError,
    SegmentExistsError,
    StaleSegmentError,
)
from shm.wait import SLEEPING, WaitStrategy

RING_SUFFIX = "ring"
DATA_BELL_SUFFIX = "data-bell"  # rung by the producer, slept on by the consumer
SPACE_BELL_SUFFIX = "space-bell"  # rung by the consumer, slept on by the producer
# A slot is a multiple of 16 bytes: the records' int64 fields stay aligned in every slot
# (the slots start on a page). Not of 64: an 80-byte command straddles cache lines, so a
# producer writing one slot and a consumer reading the one before can share a line; that
# costs less than 48 bytes more per command in every ring and journal (bench.ring).
RECORD_ALIGN = 16
MAX_CAPACITY = 1 << 30


@dataclass(frozen=True)
class RingPaths:
    segment: str
    data_bell: str
    space_bell: str


@dataclass(frozen=True)
class RingStatus:
    """What ``inspect_ring`` reads from a ring's header (pids are 0 when nobody is attached)."""

    name: str
    path: str
    record_size: int
    capacity: int
    incarnation: int  # this ring's identity (``ring_ops.H_INCARNATION``)
    owner_pid: int
    owner_alive: bool
    producer_pid: int
    producer_alive: bool
    consumer_pid: int
    consumer_alive: bool
    published: int
    released: int
    consumer_sleeping: bool
    producer_sleeping: bool
    consumer_sleeps: int  # sleeps the consumer announced (``shm.wait``: 0 when it spins)
    producer_sleeps: int  # the same, of the producer waiting for space
    data_rings: int  # times the producer rang the data bell (a consumer asleep)
    space_rings: int  # times the consumer rang the space bell (a producer asleep)

    @property
    def depth(self) -> int:
        return self.published - self.released


def ring_paths(namespace: str, name: str) -> RingPaths:
    return RingPaths(
        segment=names.segment_path(namespace, name, RING_SUFFIX),
        data_bell=names.segment_path(namespace, name, DATA_BELL_SUFFIX),
        space_bell=names.segment_path(namespace, name, SPACE_BELL_SUFFIX),
    )


def record_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype, if it can be a ring record; else ValueError."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"invalid record dtype {dtype!r}: {exc}") from None
    if dtype.itemsize == 0 or dtype.itemsize % RECORD_ALIGN:
        raise ValueError(
            f"record dtype is {dtype.itemsize} bytes; it must be a non-zero multiple of "
            f"{RECORD_ALIGN} bytes"
        )
    if dtype.hasobject:
        raise ValueError("record dtype holds Python objects; it cannot live in shared memory")
    return dtype


def layout_hash(dtype: np.dtype) -> int:
    """A fingerprint of the record's fields, so two same-sized but different layouts differ."""
    digest = hashlib.blake2b(repr(dtype.descr).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def create_ring(
    namespace: str, name: str, dtype, capacity: int, *, replace_stale: bool = False
) -> RingPaths:
    """Create an empty ring owned by this process.

    Raises SegmentExistsError if the ring exists with a live owner, and
    StaleSegmentError if it exists with a dead one (unless ``replace_stale``,
    which unlinks it first: its records are lost).
    """
    dtype = record_dtype(dtype)
    if not isinstance(capacity, int) or not 2 <= capacity <= MAX_CAPACITY:
        raise ValueError(f"ring capacity {capacity!r} must be an int in [2, {MAX_CAPACITY}]")
    if capacity & (capacity - 1):
        raise ValueError(f"ring capacity {capacity} is not a power of two")
    paths = ring_paths(namespace, name)
    if os.path.exists(paths.segment):
        _refuse_or_clear_existing(name, paths, replace_stale)
    else:
        # Bells without a segment are leftovers of an interrupted create or unlink;
        # they hold no records.
        segment.unlink(paths.data_bell)
        segment.unlink(paths.space_bell)
    owner = proc.token()
    incarnation = secrets.randbits(63)  # an int64 that is never negative

    def init(mapping):
        hdr = np.frombuffer(mapping, np.int64, ops.HEADER_WORDS)
        hdr[ops.H_VERSION] = ops.VERSION
        hdr[ops.H_HEADER_BYTES] = ops.HEADER_BYTES
        hdr[ops.H_RECORD_SIZE] = dtype.itemsize
        hdr[ops.H_CAPACITY] = capacity
        hdr[ops.H_LAYOUT_HASH] = layout_hash(dtype)
        hdr[ops.H_OWNER] = owner
        hdr[ops.H_INCARNATION] = incarnation
        hdr[ops.H_MAGIC] = ops.MAGIC  # last: a header with the magic is complete

    doorbell.create(paths.data_bell)
    try:
        doorbell.create(paths.space_bell)
        segment.close(
            segment.create(paths.segment, ops.HEADER_BYTES + capacity * dtype.itemsize, init)
        )
    except BaseException:
        segment.unlink(paths.data_bell)
        segment.unlink(paths.space_bell)
        raise
    return paths


def adopt_ring(namespace: str, name: str, dtype) -> RingStatus:
    """Become the owner of a ring whose owner is dead, keeping its records.

    For a restarted supervisor. Raises SegmentExistsError if the owner is alive
    (or another process adopts it at the same moment), HeaderMismatchError if
    the ring does not hold ``dtype`` records; either way nothing changes.
    """
    dtype = record_dtype(dtype)
    path = ring_paths(namespace, name).segment
    mapping = segment.attach(path)
    try:
        if len(mapping) < ops.HEADER_BYTES:
            raise HeaderMismatchError(f"{path} is {len(mapping)} bytes, too small for a ring")
        hdr = np.frombuffer(mapping, np.int64, ops.HEADER_WORDS)
        check_header(hdr, path, len(mapping), dtype)
        owner = int(load_word(hdr, ops.H_OWNER))
        if proc.token_alive(owner) or swap_word(hdr, ops.H_OWNER, owner, proc.token()) != owner:
            raise SegmentExistsError(
                f"ring {path} is owned by live pid {proc.token_pid(int(hdr[ops.H_OWNER]))}"
            )
    finally:
        hdr = None
        segment.close(mapping)
    return inspect_ring(namespace, name)


def _refuse_or_clear_existing(name: str, paths: RingPaths, replace_stale: bool) -> None:
    try:
        status = _read_status(name, paths.segment)
    except HeaderMismatchError as exc:
        if not replace_stale:
            raise StaleSegmentError(f"{exc}; unlink it or create with replace_stale=True") from None
    else:
        if status.owner_alive:
            raise SegmentExistsError(
                f"ring {paths.segment} exists, owned by live pid {status.owner_pid}"
            )
        if not replace_stale:
            raise StaleSegmentError(
                f"ring {paths.segment} was left by pid {status.owner_pid}, which is gone "
                f"({status.depth} records unread); adopt_ring keeps them, "
                "create_ring(..., replace_stale=True) starts empty"
            )
    _unlink_paths(paths)


def unlink_ring(namespace: str, name: str) -> bool:
    """Remove the ring's files; attached ends keep working on their mapping. False if absent."""
    return _unlink_paths(ring_paths(namespace, name))


def _unlink_paths(paths: RingPaths) -> bool:
    existed = segment.unlink(paths.segment)
    segment.unlink(paths.data_bell)
    segment.unlink(paths.space_bell)
    return existed


def list_rings(namespace: str) -> list[str]:
    return names.list_names(namespace, RING_SUFFIX)


def inspect_ring(namespace: str, name: str) -> RingStatus:
    """Read a ring's header without attaching to it (read-only; changes nothing)."""
    return _read_status(name, ring_paths(namespace, name).segment)


def _read_status(name: str, path: str) -> RingStatus:
    mapping = segment.attach(path, writable=False)
    size = len(mapping)
    try:
        if size < ops.HEADER_BYTES:
            raise HeaderMismatchError(f"{path} is {size} bytes, too small for a ring")
        view = np.frombuffer(mapping, np.int64, ops.HEADER_WORDS)
        hdr = snapshot(view)
        # Read after ``released``, so the depth it gives is never negative.
        hdr[ops.H_PUBLISHED] = load_word(view, ops.H_PUBLISHED)
        view = None
    finally:
        segment.close(mapping)
    check_header(hdr, path, size)
    return RingStatus(
        name=name,
        path=path,
        record_size=int(hdr[ops.H_RECORD_SIZE]),
        capacity=int(hdr[ops.H_CAPACITY]),
        incarnation=int(hdr[ops.H_INCARNATION]),
        owner_pid=proc.token_pid(int(hdr[ops.H_OWNER])),
        owner_alive=proc.token_alive(int(hdr[ops.H_OWNER])),
        producer_pid=proc.token_pid(int(hdr[ops.H_PRODUCER])),
        producer_alive=proc.token_alive(int(hdr[ops.H_PRODUCER])),
        consumer_pid=proc.token_pid(int(hdr[ops.H_CONSUMER])),
        consumer_alive=proc.token_alive(int(hdr[ops.H_CONSUMER])),
        published=int(hdr[ops.H_PUBLISHED]),
        released=int(hdr[ops.H_RELEASED]),
        consumer_sleeping=bool(hdr[ops.H_CONSUMER_SLEEPING]),
        producer_sleeping=bool(hdr[ops.H_PRODUCER_SLEEPING]),
        consumer_sleeps=int(hdr[ops.H_CONSUMER_SLEEPS]),
        producer_sleeps=int(hdr[ops.H_PRODUCER_SLEEPS]),
        data_rings=int(hdr[ops.H_DATA_RINGS]),
        space_rings=int(hdr[ops.H_SPACE_RINGS]),
    )


def check_header(hdr: np.ndarray, path: str, size: int, dtype: np.dtype | None = None) -> None:
    """Raise HeaderMismatchError unless ``hdr`` is a complete ring header of this version,
    consistent with the segment ``size`` and, if given, with the record ``dtype``."""
    if hdr[ops.H_MAGIC] != ops.MAGIC:
        raise HeaderMismatchError(f"{path} is not a ring (bad magic {int(hdr[ops.H_MAGIC]):#x})")
    if hdr[ops.H_VERSION] != ops.VERSION:
        raise HeaderMismatchError(
            f"{path} has ring layout version {int(hdr[ops.H_VERSION])}; "
            f"this code reads version {ops.VERSION}"
        )
    record_size, capacity = int(hdr[ops.H_RECORD_SIZE]), int(hdr[ops.H_CAPACITY])
    if (
        hdr[ops.H_HEADER_BYTES] != ops.HEADER_BYTES
        or record_size <= 0
        or record_size % RECORD_ALIGN
        or not 2 <= capacity <= MAX_CAPACITY
        or capacity & (capacity - 1)
        or size != ops.HEADER_BYTES + capacity * record_size
    ):
        raise HeaderMismatchError(
            f"{path} has a corrupt header (header {int(hdr[ops.H_HEADER_BYTES])} bytes, "
            f"records {record_size} bytes x {capacity}, file {size} bytes)"
        )
    if dtype is None:
        return
    if record_size != dtype.itemsize:
        raise HeaderMismatchError(
            f"{path} holds {record_size}-byte records; the caller expects {dtype.itemsize}-byte"
        )
    if hdr[ops.H_LAYOUT_HASH] != layout_hash(dtype):
        raise HeaderMismatchError(
            f"{path} holds records of another layout than the caller's dtype "
            f"(same size, different fields)"
        )


def check_count(n, what: str) -> int:
    """``n`` as an int if it is a valid record count, else ValueError naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{what}: count must be a non-negative int, got {n!r}")
    return int(n)


class RingEnd:
    """One attached end of a ring: the mapping, the doorbells, the claim on a side.

    Subclasses say which side they are; at most one live process holds each side.
    ``wait`` is how this end waits for the other (``shm.wait``: sleep or spin).
    A side left by a dead process is taken over, so a killed producer or consumer
    can be restarted and resumes at the shared cursor.
    """

    SIDE: int  # ops.PRODUCER or ops.CONSUMER

    def __init__(
        self,
        namespace: str,
        name: str,
        dtype,
        *,
        adopt: bool = False,
        wait: WaitStrategy = SLEEPING,
    ):
        self.dtype = record_dtype(dtype)
        self.wait_strategy = wait  # how ``wait`` / ``wait_writable`` wait (``shm.wait``)
        self.name = name
        self.paths = ring_paths(namespace, name)
        self._token = proc.token()
        producer = self.SIDE == ops.PRODUCER
        self._side_word = ops.H_PRODUCER if producer else ops.H_CONSUMER
        mapping = segment.attach(self.paths.segment)
        hdr = bells = None
        try:
            if len(mapping) < ops.HEADER_BYTES:
                raise HeaderMismatchError(
                    f"{self.paths.segment} is {len(mapping)} bytes, too small for a ring"
                )
            hdr = np.frombuffer(mapping, np.int64, ops.HEADER_WORDS)
            check_header(hdr, self.paths.segment, len(mapping), self.dtype)
            dead_owner = self._check_owner(hdr, adopt)
            bells = [doorbell.Doorbell(self.paths.data_bell)]
            bells.append(doorbell.Doorbell(self.paths.space_bell))
            self._claim_side(hdr)
            if dead_owner is not None:
                swap_word(hdr, ops.H_OWNER, dead_owner, self._token)
        except BaseException:
            for bell in bells or ():
                bell.close()
            hdr = None
            segment.close(mapping)
            raise
        self._mapping = mapping
        self.header = hdr
        self.capacity = int(hdr[ops.H_CAPACITY])
        self.records = np.frombuffer(mapping, self.dtype, self.capacity, ops.HEADER_BYTES)
        self.words = self.records.view(np.int64).reshape(self.capacity, self.dtype.itemsize // 8)
        data_bell, space_bell = bells
        self._sleep_bell, self._wake_bell = (
            (space_bell, data_bell) if producer else (data_bell, space_bell)
        )
        self._sleep_bell.drain()  # rings meant for a previous holder of this side
        self.wake_fd = self._wake_bell.fd  # what compiled code passes to publish / release

    def _check_owner(self, hdr: np.ndarray, adopt: bool) -> int | None:
        """None if the owner is alive; its token if it is dead and we may adopt the ring."""
        owner = int(load_word(hdr, ops.H_OWNER))
        if proc.token_alive(owner):
            return None
        if not adopt:
            raise StaleSegmentError(
                f"ring {self.paths.segment} was created by pid {proc.token_pid(owner)}, which "
                "is gone; attach with adopt=True to take it over with its records"
            )
        return owner

    def _claim_side(self, hdr: np.ndarray) -> None:
        side = "producer" if self.SIDE == ops.PRODUCER else "consumer"
        while True:
            holder = int(load_word(hdr, self._side_word))
            if holder == self._token:
                raise RoleTakenError(
                    f"this process already holds the {side} side of ring {self.paths.segment}"
                )
            if holder != 0 and proc.token_alive(holder):
                raise RoleTakenError(
                    f"ring {self.paths.segment} already has a live {side}, "
                    f"pid {proc.token_pid(holder)}"
                )
            if swap_word(hdr, self._side_word, holder, self._token) == holder:
                break
        # A dead holder may have left its "sleeping" flag up; we are awake.
        ops.sleep_end(hdr, self.SIDE)

    @property
    def cursor(self) -> int:
        """This side's cursor: records ever published (producer) or released (consumer)."""
        cursor = ops.H_PUBLISHED if self.SIDE == ops.PRODUCER else ops.H_RELEASED
        return int(load_word(self.header, cursor))

    def peer_alive(self) -> bool:
        """Whether a live process holds the other side of the ring right now."""
        peer = ops.H_CONSUMER if self.SIDE == ops.PRODUCER else ops.H_PRODUCER
        return proc.token_alive(int(load_word(self.header, peer)))

    def fileno(self) -> int:
        """The doorbell fd this end sleeps on (for zmq.Poller, select or asyncio)."""
        return self._sleep_bell.fd

    def close(self) -> None:
        """Detach: give the side up, close the bells, unmap. The ring itself stays."""
        if self.header is None:
            return
        swap_word(self.header, self._side_word, self._token, 0)
        self._sleep_bell.close()
        self._wake_bell.close()
        self.header = self.records = self.words = None
        segment.close(self._mapping)
        self._mapping = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
