"""Random command streams through every book implementation, compared event by event.

The reference book is the oracle: every other implementation must produce the
same event array, byte for byte, and the same state hash after every batch.
Every book is also checked against the invariants of ``bookcheck`` after every
batch. Streams come from ``streams.random_stream``; batch sizes are random.
"""

import numpy as np
import pytest
from bookcheck import BookChecker, BookCheckError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import random_batches, random_config, random_stream

from exchange.bookconfig import BookConfig
from exchange.records import (
    CMD_CANCEL,
    CMD_EXPIRE,
    CMD_HALT,
    CMD_MASS_CANCEL,
    CMD_NEW,
    CMD_REPLACE,
    CMD_RESUME,
    EV_DEPTH,
    EV_TRADE,
    EVENT_DTYPE,
    EVENT_NAMES,
    SIDE_BUY,
    commands,
)
from exchange.reference import ReferenceBook

STREAM_SEEDS = range(24)
STREAM_LENGTH = 5_000  # x 24 seeds: 120,000 commands in the default run
LONG_SEEDS = range(1000, 1040)
LONG_LENGTH = 50_000  # x 40 seeds: 2,000,000 commands


def assert_same_events(want: np.ndarray, got: np.ndarray, cmds: np.ndarray, who: str) -> None:
    """``got`` must equal ``want`` byte for byte; on failure, name the first difference."""
    assert got.dtype == EVENT_DTYPE, f"{who}: events have dtype {got.dtype}"
    if got.tobytes() == want.tobytes():
        return
    for i in range(min(len(want), len(got))):
        if want[i].item() != got[i].item():
            names = [n for n in EVENT_DTYPE.names if want[i][n] != got[i][n]]
            cmd = cmds[cmds["seq"] == want[i]["seq"]]
            pytest.fail(
                f"{who}: event {i} differs in {names}\n"
                f"  reference: {_describe(want[i])}\n  {who}: {_describe(got[i])}\n"
                f"  command: {_describe(cmd[0]) if len(cmd) else '?'}"
            )
    assert len(got) == len(want), f"{who}: {len(got)} events, the reference made {len(want)}"
    assert got.tobytes() == want.tobytes(), f"{who}: events equal field by field, not byte by byte"


def _describe(record) -> str:
    fields = {n: record[n].item() for n in record.dtype.names if record[n] != 0}
    if "kind" in fields and record.dtype == EVENT_DTYPE:
        fields["kind"] = EVENT_NAMES.get(fields["kind"], fields["kind"])
    return str(fields)


def run_stream(classes, config: BookConfig, cmds: np.ndarray, rng, restore_rate=0.0) -> str:
    """Feed cmds in random batches to one book per class; returns the final state hash.

    With ``restore_rate`` > 0, between batches each book is sometimes replaced
    by ``restore(snapshot())`` of itself, and the run must not notice.
    """
    books = [cls(config) for cls in classes]
    checkers = [BookChecker(book) for book in books]
    for cut in random_batches(rng, len(cmds)):
        batch = cmds[cut]
        want = None
        for i, cls in enumerate(classes):
            events = books[i].process(batch)
            checkers[i].check(batch, events)
            if want is None:
                want, want_hash = events, books[i].state_hash()
            else:
                assert_same_events(want, events, batch, cls.__name__)
                assert books[i].state_hash() == want_hash, f"{cls.__name__}: state hash differs"
            if restore_rate and rng.random() < restore_rate:
                books[i] = cls.restore(books[i].snapshot())
                checkers[i].book = books[i]
                assert books[i].state_hash() == want_hash, f"{cls.__name__}: restore changed it"
    return want_hash


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", STREAM_SEEDS)
def test_random_streams_agree(book_classes, seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    run_stream(book_classes, config, random_stream(rng, config, STREAM_LENGTH), rng)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(100, 104))
def test_snapshot_restore_mid_stream_changes_nothing(book_classes, seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    cmds = random_stream(rng, config, 4_000)
    batches_seed = int(rng.integers(2**32))
    straight = run_stream(book_classes, config, cmds, np.random.default_rng(batches_seed))
    restored = run_stream(
        book_classes, config, cmds, np.random.default_rng(batches_seed), restore_rate=0.2
    )
    assert restored == straight


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", LONG_SEEDS)
def test_long_random_streams_agree(book_classes, seed):
    rng = np.random.default_rng(seed)
    config = random_config(rng)
    cmds = random_stream(rng, config, LONG_LENGTH, clients=int(rng.integers(1, 6)))
    run_stream(book_classes, config, cmds, rng, restore_rate=0.01)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(200, 206))
def test_the_kernel_reserves_enough_events_and_counts_its_refills(seed):
    """Command by command: no command writes more events than ``_events_bound`` said it
    could (the kernel writes into its buffer unchecked), and the refills counted per
    side are those the resting icebergs' reserves can make."""
    from exchange import kernel
    from exchange.book import Book

    rng = np.random.default_rng(seed)
    config = random_config(rng)
    book = Book(config)
    cmds = random_stream(rng, config, 4_000)
    st_ = book.state
    for i in range(len(cmds)):
        need = kernel._events_bound(st_, cmds[i])
        got = len(book.process(cmds[i : i + 1]))
        assert got <= need, f"command {i} wrote {got} events, {need} were reserved"
        rows = book.canonical_rows()
        display, hidden = rows[:, 8], rows[:, 5] - rows[:, 9]
        turns = np.where(hidden > 0, -(-hidden // np.maximum(display, 1)), 0)
        for side, slot in ((1, kernel.M_TURNS_BID), (2, kernel.M_TURNS_ASK)):
            assert st_.meta[slot] == turns[rows[:, 0] == side].sum(), f"command {i}"


# ---------------------------------------------------------------- hypothesis

_command = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            [CMD_NEW] * 6
            + [CMD_CANCEL, CMD_REPLACE, CMD_MASS_CANCEL, CMD_EXPIRE, CMD_HALT, CMD_RESUME, 0]
        ),
        "order_id": st.integers(1, 8),
        "side": st.integers(0, 3),
        "price": st.integers(95, 105),
        "qty": st.integers(-1, 6),
        "client": st.integers(1, 2),
        "tif": st.integers(0, 5),
        "ord_type": st.integers(0, 4),
        "trigger_tick": st.sampled_from([0, 0, 0, 95, 97, 99, 100, 101, 103, 105]),
        "display": st.sampled_from([0, 0, 0, 1, 1, 2, 3, -1, 7]),
        "flags": st.integers(0, 2),
        "stp": st.integers(0, 5),
        "expires": st.sampled_from([0, 0, 0, 1, 2, 3, 4, -1]),
    }
)
_small_config = BookConfig(min_price=96, max_price=104, max_qty=5, capacity=5)


@settings(
    max_examples=300,
    deadline=None,
    # book_classes is the same list for every example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(specs=st.lists(_command, max_size=30), batch=st.integers(1, 30))
def test_small_streams_agree(book_classes, specs, batch):
    """Few ids, few prices, tiny capacity: collisions everywhere; shrinks to a minimal case."""
    cmds = commands(len(specs))
    for i, spec in enumerate(specs):
        for name, value in spec.items():
            cmds[i][name] = value
    cmds["seq"] = np.arange(1, len(specs) + 1)
    books = [cls(_small_config) for cls in book_classes]
    checkers = [BookChecker(book) for book in books]
    for start in range(0, len(cmds), batch):
        part = cmds[start : start + batch]
        want = books[0].process(part)
        checkers[0].check(part, want)
        for book, checker in zip(books[1:], checkers[1:], strict=True):
            got = book.process(part)
            checker.check(part, got)
            assert_same_events(want, got, part, type(book).__name__)
            assert book.state_hash() == books[0].state_hash()


# ---------------------------------------------------------------- the checker itself


class _LifoBook(ReferenceBook):
    """A reference book with one bug: new orders join the front of their level."""

    def _append(self, order, out):
        order.show()
        self._levels[order.side].setdefault(order.price, []).insert(0, order)
        out.touch(order.side, order.price)


class _RefillInPlaceBook(ReferenceBook):
    """A reference book with one bug: a refilled iceberg keeps its place."""

    def _refill(self, iceberg):
        iceberg.show()


class _ShowAllBook(ReferenceBook):
    """A reference book with one bug: an iceberg shows its reserve too."""

    def _append(self, order, out):
        self._levels[order.side].setdefault(order.price, []).append(order)
        out.touch(order.side, order.price)


class _AuctionAtTheBidBook(ReferenceBook):
    """A reference book with one bug: its auction trades at the best bid."""

    def _auction_price(self):
        return super()._auction_price() and self._best(SIDE_BUY)


class _TradesWhileHaltedBook(ReferenceBook):
    """A reference book with one bug: a halted book trades a crossing order at once."""

    def _new(self, c, out):
        halted, self.halted = self.halted, False
        try:
            super()._new(c, out)
        finally:
            self.halted = halted


def test_checker_catches_auction_bugs():
    rng = np.random.default_rng(5)
    config = BookConfig(min_price=100, max_price=200, max_qty=1000)
    cmds = random_stream(rng, config, 4_000)
    halts = np.flatnonzero(cmds["kind"] == CMD_HALT)
    assert len(halts), "the stream has no halt"
    _checked_run(ReferenceBook(config), cmds)
    with pytest.raises(BookCheckError, match="auction price"):
        _checked_run(_AuctionAtTheBidBook(config), cmds)
    with pytest.raises(BookCheckError, match="halted book"):
        _checked_run(_TradesWhileHaltedBook(config), cmds)


def _iceberg_stream():
    rng = np.random.default_rng(12)
    config = BookConfig(min_price=100, max_price=200, max_qty=1000)
    cmds = random_stream(rng, config, 3_000)
    gtc = (cmds["kind"] == CMD_NEW) & (cmds["tif"] == 0) & (cmds["ord_type"] == 0)
    cmds["display"] = np.where(gtc & (cmds["qty"] > 1), 1, 0)
    return config, cmds


@pytest.mark.parametrize(
    "book, message",
    [
        (_RefillInPlaceBook, "queues behind a later order"),
        (_ShowAllBook, "taken off a resting order showing"),
    ],
)
def test_checker_catches_iceberg_bugs(book, message):
    config, cmds = _iceberg_stream()
    _checked_run(ReferenceBook(config), cmds)
    with pytest.raises(BookCheckError, match=message):
        _checked_run(book(config), cmds)


def _checked_run(book, cmds, tamper=None):
    checker = BookChecker(book)
    for start in range(0, len(cmds), 50):
        part = cmds[start : start + 50]
        events = book.process(part)
        if tamper is not None:
            events = tamper(events)
        checker.check(part, events)


def _busy_stream():
    rng = np.random.default_rng(7)
    config = BookConfig(min_price=100, max_price=200, max_qty=1000)
    return config, random_stream(rng, config, 2_000)


def test_checker_passes_the_reference_and_catches_a_fifo_bug():
    config, cmds = _busy_stream()
    _checked_run(ReferenceBook(config), cmds)
    with pytest.raises(BookCheckError, match="queues behind a later order"):
        _checked_run(_LifoBook(config), cmds)


def _bump_depth(events):
    events["qty"][np.flatnonzero(events["kind"] == EV_DEPTH)[-1:]] += 1
    return events


def _reprice_trade(events):
    events["price"][np.flatnonzero(events["kind"] == EV_TRADE)[:1]] -= 1
    return events


def _drop_last(events):
    return events[:-1]


def _unknown_kind(events):
    events["kind"][-1:] = 0
    return events


def _renumber(events):
    events["idx"][-1:] += 1
    return events


def _dirty_padding(events):
    events.view(np.uint8)[-1:] = 1
    return events


@pytest.mark.parametrize(
    "tamper", [_bump_depth, _reprice_trade, _drop_last, _unknown_kind, _renumber, _dirty_padding]
)
def test_checker_catches_tampered_events(tamper):
    config, cmds = _busy_stream()
    with pytest.raises(BookCheckError):
        _checked_run(ReferenceBook(config), cmds, tamper)
