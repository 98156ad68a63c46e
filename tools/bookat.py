"""``exch journal book SYMBOL --at-seq N``: one instrument's book as it was at seq N.

Rebuilt by replay through the real kernel (``ShardEngine.recover`` on the
journal cut at N): the latest snapshot if it is not past N, then the batches
after it, each checked against its journaled events. Nothing is written.
"""

import time
from collections.abc import Callable
from typing import NamedTuple

from exchange.bookconfig import BookConfig
from exchange.engine import ShardEngine
from exchange.journal import JournalReader
from exchange.records import STATE_CONTINUOUS, STATE_HALTED, STATE_NAMES
from tools.errors import ToolError
from tools.journalview import JournalView


class BookAt(NamedTuple):
    seq: int
    bids: list[tuple[int, int, int]]  # (price, qty, orders), best first
    asks: list[tuple[int, int, int]]
    state: str  # the book's trading state then: "continuous" or "halted"
    state_hash: str
    snapshot_seq: int  # where the replay started (0: the empty book)
    replayed: int  # commands replayed
    seconds: float


def book_at(
    path: str,
    books: list[BookConfig],
    instrument: int,
    seq: int | None = None,
    levels: int = 10,
    shard_index: int = 0,
    progress: Callable[[int, int], None] | None = None,
    archive_dir: str | None = None,
    shard: str | None = None,
) -> BookAt:
    """The book of ``books[instrument]`` after ``seq`` (None: the last journaled seq);
    ``progress(seq, upto)`` is called before each batch is replayed."""
    t0 = time.perf_counter()
    with JournalReader(path, archive_dir=archive_dir, name=shard) as journal:
        upto = journal.last_seq if seq is None else seq
        try:
            on_batch = progress and (lambda cmds, events: progress(int(cmds["seq"][-1]), upto))
            view = JournalView(journal, upto, on_batch)
        except ValueError as e:
            raise ToolError(str(e)) from None
        engine = ShardEngine(shard_index, books, journal)
        rec = engine.recover(view, use_snapshot=True)
    book = engine.books[instrument]
    bids, asks = book.depth(levels)
    return BookAt(
        upto,
        bids,
        asks,
        STATE_NAMES[STATE_HALTED if book.halted else STATE_CONTINUOUS],
        book.state_hash(),
        rec.snapshot_seq,
        rec.replayed,
        time.perf_counter() - t0,
    )
