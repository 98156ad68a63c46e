"""A shard process: request ring -> ``ShardEngine`` -> event ring, and nothing else.

    python -m exchange.shard --name s0 [--config FILE]

The rings (``<shard>-req`` from the gateway, ``<shard>-evt`` to it) are created
by the supervisor; the shard attaches to them. Each turn of the loop peeks a
batch of requests in place, has the engine sequence, match, journal and commit
it, publishes the events (waiting while the event ring is full: never
dropping), then the private replies, then the answer to each control command
CMD_SYNC of the batch (a replay of the journal and the books' resting orders,
read by the shard itself: nobody else opens its journal), and only then
releases the requests.

Time enters the books only through this loop, as journaled commands: every
``[expiry] every_ms`` it reads the wall clock and, when some book holds an order
(GTD or DAY) whose expiry is at or before that time, has the engine sequence a
CMD_EXPIRE carrying it, alone and before the waiting requests, so no request
sequenced after it meets an order due by then. Nothing else reads a clock for the
books: a replay expires the same orders at the same seqs. The ticks wait while no
gateway reads the event ring (a gateway restarting, or stopped before the shards
at shutdown): what a tick cancels is told at once, and a stopped venue's rings are
left empty (a tick is decided and published inside ``Producer.unasked``, which a
stopping gateway's ``Consumer.leave`` waits out before its last read). The first
tick after a gateway attaches is due at once.

An operator's halt and resume reach the books the same way: every
``exchange.halts.CHECK_SECONDS``, while a gateway reads the event ring, the loop
reads the halt requests of its instruments (``exch halt`` / ``exch resume``) and
has the engine sequence a CMD_HALT or CMD_RESUME for each book whose trading
state is not the one asked, alone and before the waiting requests.

Restarts lose nothing and repeat nothing: the read position in the request
ring is committed with each batch, so requests that were journaled before a
crash but not yet released are skipped; the events of the last journaled batch
are published again (consumers drop what they have by its (seq, idx)).

It waits for requests (and, when the event ring is full, for room in it) the
way its ``wait`` in the config says (``shm.wait``): sleeping on the ring's
doorbell after a short spin, or spinning only, on a core of its own.

SIGTERM or SIGINT: the shard drains what is in the request ring, commits,
publishes while someone reads the event ring, and exits 0. A full journal disk
stops intake: the shard logs why and exits 3, leaving the unjournaled requests
in the ring.
"""

import argparse
import ctypes
import math
import signal
import sys
import time

import numpy as np
import psutil

from exchange import halts, journalid, logs, memdebug, sdnotify
from exchange.config import ConfigError, load_config
from exchange.engine import RecoveryError, ShardEngine, warm_up
from exchange.exitcodes import EXIT_FAILURE, EXIT_JOURNAL_FULL, EXIT_UNTRUSTED, EXIT_USAGE
from exchange.journal import RELEASE_SECONDS, JournalError, JournalFull, JournalLocked
from exchange.openfiles import raise_open_file_limit
from exchange.records import COMMAND_DTYPE, EV_TRADE, EVENT_DTYPE
from exchange.topology import counters_name, event_ring, halts_dir, request_ring
from shm.consumer import Consumer
from shm.counters import CounterBlock
from shm.producer import Producer
from shm.ring import inspect_ring
from shm.wait import strategy
from shm.warmup import warm_up as warm_up_rings

MAX_BATCH = 4096  # commands per journal transaction at most
WAIT_SECONDS = 0.25  # longest sleep before the loop looks at the stop flag again
# how often the loop takes retention's steps (``ShardEngine.prune``, at most
# PRUNE_COMMANDS commands and MERGE_ROWS idempotency entries a step), and how many
# at most: enough to keep up with 65,536 keyed orders/s
PRUNE_SECONDS = 1.0
PRUNE_STEPS = 8
EXPIRE_SECONDS = 1.0  # the default of [expiry] every_ms
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 1 << 20

COUNTERS = ("commands", "events", "trades", "replies", "replayed", "batches")
GAUGES = ("last_seq", "request_depth", "halted")
HISTOGRAMS = ("commit_us", "batch_size")


class Stopped(Exception):
    """Stopping, with events to publish and no process reading the event ring."""


class StopFlag:
    """Raised by SIGTERM/SIGINT from the first line of ``main`` on, read by the loop."""

    def __init__(self):
        self.raised = False

    def raise_(self, signum=None, frame=None) -> None:
        self.raised = True


class ShardLoop:
    """The pipe: drain, apply, publish, release. No business rules here."""

    def __init__(
        self,
        engine: ShardEngine,
        requests: Consumer,
        events: Producer,
        namespace: str,
        stop: StopFlag,
    ):
        self.engine = engine
        self.requests = requests
        self.events = events
        self.stop = stop
        # consumed counts are committed under the ring's incarnation, so a ring created anew
        # is never skipped into
        incarnation = inspect_ring(namespace, requests.name).incarnation
        self.consumed_key = f"{requests.name}@{incarnation}"
        self.counters: CounterBlock | None = None
        self.watchdog = sdnotify.Watchdog()
        # EXPIRE ticks (exchange.records, EXPIRY): every expire_seconds, the wall clock's
        # time goes to the engine, which sequences an EXPIRE for each book with an order
        # due by then; the clock is read here only, and what it said is journaled
        self.expire_seconds = EXPIRE_SECONDS
        self.clock = time.time_ns
        self._expire_at = 0.0
        # halt requests (exchange.halts): where they are, and the shard's instruments'
        # symbols in instrument index order; None: the loop reads none
        self.halts_dir: str | None = None
        self.symbols: list[str] = []
        self._halts_at = 0.0

    def status(self) -> str:
        """What systemd shows for the unit (STATUS=)."""
        return f"serving, seq {self.engine.last_seq}, {self.requests.readable()} requests waiting"

    def resume(self, tail: np.ndarray) -> int:
        """Skip requests already journaled; publish the last batch's events again."""
        done = self.engine.journal.consumed().get(self.consumed_key, 0)
        skip = max(0, done - self.requests.cursor)
        if skip:
            self.requests.release(skip)
        self.publish(tail)
        return skip

    def publish(self, records: np.ndarray) -> None:
        pos = 0
        while pos < len(records):
            pos += self.events.write(records[pos:])
            if pos < len(records):
                want = min(len(records) - pos, self.events.capacity)
                self.events.wait_writable(want, timeout=WAIT_SECONDS)
                self.watchdog.kick(self.status)  # waiting on a reader is not hanging
                # stopping: deliver while someone reads; with nobody to read, the
                # events stay journaled and are published again at the next start
                if self.stop.raised and not self.events.peer_alive():
                    raise Stopped

    def _clock_due(self, at: float) -> int | None:
        """The wall clock's time when an EXPIRE tick is due and some book holds an order
        expiring by then, else None."""
        if at < self._expire_at:
            return None
        self._expire_at = at + self.expire_seconds
        now = self.clock()
        due = self.engine.expiries_due(now)
        return now if len(due) else None

    def _halts_due(self, at: float) -> set[int] | None:
        """The instrument indexes an operator asks to be halted, when it is time to look
        and the books are not in the states asked, else None."""
        if self.halts_dir is None:
            self._halts_at = math.inf  # nothing to look at, ever
            return None
        if at < self._halts_at:
            return None
        self._halts_at = at + halts.CHECK_SECONDS
        asked = halts.requested(self.halts_dir)
        want = {i for i, symbol in enumerate(self.symbols) if symbol in asked}
        if want == self.engine.halted():
            return None
        logs.info("trading states asked", halted=sorted(self.symbols[i] for i in want))
        return want

    def step(self) -> int:
        """A due tick's EXPIREs, the halts and resumes asked, then one batch if any is
        readable; returns how many requests it took."""
        batch = self.requests.peek(MAX_BATCH)
        at = time.monotonic()
        if at >= min(self._expire_at, self._halts_at):
            # the shard's own commands, only while a gateway reads what they cause: one
            # leaving waits until what was decided here is published (Consumer.leave)
            with self.events.unasked() as reading:
                if reading:
                    self._own_commands(batch[:0], at)
        if not len(batch):
            return 0
        self._apply(batch)
        self.requests.release(len(batch))
        return len(batch)

    def _own_commands(self, none: np.ndarray, at: float) -> None:
        """The EXPIREs of a due tick, then the halts and resumes asked, each applied
        alone (``none``: an empty batch)."""
        clock_ns = self._clock_due(at)
        if clock_ns is not None:
            self._apply(none, clock_ns=clock_ns)
        halted = self._halts_due(at)
        if halted is not None:
            self._apply(none, halted=halted)
            self.count_halted()

    def count_halted(self) -> None:
        """The books halted now, in the counter block (operators see them in metrics)."""
        if self.counters is not None:
            self.counters.set("halted", len(self.engine.halted()))

    def _apply(
        self, batch: np.ndarray, clock_ns: int | None = None, halted: set[int] | None = None
    ) -> None:
        """Sequence, journal and publish: the events, the replies, then the sync answers."""
        end = self.requests.cursor + len(batch)
        applied = self.engine.apply(
            batch, consumed={self.consumed_key: end}, clock_ns=clock_ns, halted=halted
        )
        self.publish(applied.events)
        self.publish(applied.replies)
        replayed = 0
        for sync in applied.syncs:
            for chunk in self.engine.sync_answer(sync):
                self.publish(chunk)
                replayed += len(chunk)
        if self.counters is not None:
            c = self.counters
            c.add("commands", applied.commands)
            c.add("events", len(applied.events))
            c.add("trades", int(np.count_nonzero(applied.events["kind"] == EV_TRADE)))
            c.add("replies", len(applied.replies))
            c.add("replayed", replayed)
            c.add("batches")
            c.set("last_seq", self.engine.last_seq)
            c.set("request_depth", self.requests.readable())
            c.record("commit_us", int(applied.commit_seconds * 1e6))
            c.record("batch_size", len(batch))

    def prune(self) -> None:
        """Steps of retention while there is history to take out, ``PRUNE_STEPS`` at most.
        An archive that cannot be written (a full disk, say) leaves the batches in the
        journal: logged, and tried again at the next turn."""
        first = last = None
        for _ in range(PRUNE_STEPS):
            try:
                taken = self.engine.prune()
            except OSError as e:
                logs.error("journal retention: the archive was not written", error=str(e))
                break
            if taken is None:
                break
            first, last = first or taken[0], taken[1]
        if first is not None:
            archive = self.engine.archive_dir
            logs.info("journal pruned", seqs=[first, last], archived=archive is not None)

    def run(self) -> None:
        """Until stopped; then drain what is left in the request ring."""
        release_at = time.monotonic() + RELEASE_SECONDS
        prune_at = time.monotonic() + PRUNE_SECONDS
        try:
            while not self.stop.raised:
                if not self.step():
                    self.requests.wait(timeout=WAIT_SECONDS)
                self.watchdog.kick(self.status)
                # housekeeping only: no clock in the data
                if time.monotonic() >= prune_at:
                    self.prune()
                    prune_at = time.monotonic() + PRUNE_SECONDS
                if time.monotonic() >= release_at:
                    self.engine.journal.release_pages()
                    release_at = time.monotonic() + RELEASE_SECONDS
            sdnotify.notify("STOPPING=1", "STATUS=draining the request ring")
            while self.step():
                pass
        except Stopped:
            logs.warning("stopped while the event ring was full; the last batch is republished")


def _return_large_blocks() -> None:
    """Have glibc hand blocks of ``MMAP_THRESHOLD`` bytes or more back to the system when
    they are freed. A snapshot copies the books (tens of MB) and frees the copies; by
    default glibc raises its mmap threshold past the first such block it frees and
    keeps every later one in the heap, which then never shrinks (measured in
    ``bench.soak``: +6 % of a shard's anonymous memory after the first snapshot)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; others differ
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _pin(cpus: list[int]) -> None:
    if cpus:
        psutil.Process().cpu_affinity(cpus)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run one shard process.")
    ap.add_argument("--name", required=True, help="the shard's name in the config")
    ap.add_argument("--config", help="TOML config file (default: the embedded one)")
    args = ap.parse_args(argv)
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.raise_)
    signal.signal(signal.SIGINT, stop.raise_)
    logs.set_role("shard", shard=args.name)
    raise_open_file_limit()
    try:
        config = load_config(args.config)
    except ConfigError as e:
        logs.error("bad config", error=str(e))
        return EXIT_USAGE
    names = [s.name for s in config.shards]
    if args.name not in names:
        logs.error("no such shard in the config", shards=names)
        return EXIT_USAGE
    index = names.index(args.name)
    shard = config.shards[index]
    _pin(shard.cpus)
    _return_large_blocks()
    books = [config.instrument(sym).book for sym in shard.instruments]
    ns = config.shm.namespace

    logs.info("compiled", seconds=round(warm_up() + warm_up_rings(), 3))
    # traced from here: loading the compiled code is no growth, and takes ~25 s traced
    memdebug.install(f"shard {args.name}")
    try:
        journal = journalid.open_journal(config, args.name)
    except JournalLocked as e:  # its previous process is still on its way out
        logs.error("journal busy", error=str(e))
        return EXIT_FAILURE
    except JournalError as e:
        logs.error("journal refused", error=str(e))
        return EXIT_UNTRUSTED
    engine = ShardEngine(
        index,
        books,
        journal,
        snapshot_every=config.snapshot.every_commands,
        snapshot_seconds=config.snapshot.every_seconds,
        retain_commands=config.journal.retain_commands or None,
        archive_dir=config.journal.archive_dir or None,
    )
    try:
        rec = engine.recover()
    except JournalError as e:  # a record recovery read failed its check
        logs.error("journal refused", error=str(e))
        journal.close()
        return EXIT_UNTRUSTED
    except RecoveryError as e:  # the journal does not replay into its own events
        logs.error("recovery failed; refusing to run on this journal", error=str(e))
        journal.close()
        return EXIT_UNTRUSTED
    logs.info(
        "recovered",
        seq=rec.last_seq,
        snapshot_seq=rec.snapshot_seq,
        replayed=rec.replayed,
        seconds=round(rec.seconds, 3),
    )
    wait = strategy(shard.wait)
    if wait.spins and not shard.cpus:
        logs.warning("wait = spin without cpus: this shard busy-waits on a core it shares")
    requests = Consumer(ns, request_ring(args.name), COMMAND_DTYPE, wait=wait)
    events = Producer(ns, event_ring(args.name), EVENT_DTYPE, wait=wait)
    loop = ShardLoop(engine, requests, events, ns, stop)
    loop.expire_seconds = config.expiry.every_ms / 1000
    loop.halts_dir, loop.symbols = halts_dir(config), list(shard.instruments)
    loop.counters = CounterBlock(
        ns,
        counters_name(args.name),
        counters=COUNTERS,
        gauges=GAUGES,
        histograms=HISTOGRAMS,
        replace_stale=True,
    )
    loop.count_halted()  # as recovered
    code = 0
    try:
        skipped = loop.resume(rec.tail_events)
        logs.info("running", seq=engine.last_seq, skipped_requests=skipped, wait=wait.name)
        sdnotify.notify("READY=1", f"STATUS={loop.status()}")  # recovered, rings attached
        loop.run()
        logs.info("stopped", seq=engine.last_seq)
    except JournalFull as e:
        logs.error("journal full: intake stopped", error=str(e), seq=engine.last_seq)
        code = EXIT_JOURNAL_FULL
    except JournalError as e:  # a record failed its check: stop serving, loudly
        logs.error("journal refused: intake stopped", error=str(e), seq=engine.last_seq)
        code = EXIT_UNTRUSTED
    except Stopped:
        logs.warning("stopped before the recovered tail was published", seq=engine.last_seq)
    finally:
        requests.close()
        events.close()
        loop.counters.unlink()
        journal.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
