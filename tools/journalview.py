"""A read-only journal as of one sequence number, for ``ShardEngine.recover`` in the tools.

``ShardEngine.recover`` reads what ``exchange.engine.History`` declares:
``latest_snapshot()``, ``iter_batches()`` and ``last_seq``. This view gives it the
journal cut at ``upto``:
batches after it are left out (a batch that straddles it is cut, commands and
events alike: the kernel is deterministic command by command, so a batch's
first commands give exactly its first events), and the latest snapshot is used
only if it is not past ``upto``. Cutting at the seq read at the start also
makes the tools safe on a journal that the shard is still writing.

``on_batch(cmds, events)`` sees every batch before the engine does (how
``exch journal verify`` checks a journal in the same pass as its replay);
``reached`` is the last seq handed out.
"""

from collections.abc import Callable, Iterator

import numpy as np

from exchange.journal import JournalReader


class JournalView:
    def __init__(
        self,
        journal: JournalReader,
        upto: int,
        on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
    ):
        last = journal.last_seq
        if not 0 <= upto <= last:
            raise ValueError(f"seq {upto} is not in the journal {journal.path} (seqs 0..{last})")
        self.journal = journal
        self.last_seq = upto
        self.on_batch = on_batch
        self.reached = 0

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        snap = self.journal.latest_snapshot()
        return snap if snap is not None and snap[0] <= self.last_seq else None

    def iter_batches(self, after_seq: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for cmds, events in self.journal.iter_batches(after_seq):
            if cmds["seq"][0] > self.last_seq:
                return
            if cmds["seq"][-1] > self.last_seq:
                cmds = cmds[cmds["seq"] <= self.last_seq]
                events = events[events["seq"] <= self.last_seq]
            if self.on_batch is not None:
                self.on_batch(cmds, events)
            self.reached = int(cmds["seq"][-1])
            yield cmds, events
