"""A one-line progress report for long-running tools, on stderr when it is a terminal."""

import sys
import time

EVERY_SECONDS = 0.2


class Progress:
    """``update(done, total)`` as often as wanted; it redraws at most every EVERY_SECONDS."""

    def __init__(self, label: str, total: int = 0, stream=None):
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        # a log file or a pipe gets the result, not a stream of carriage returns
        self.enabled = self.stream.isatty()
        self._shown = 0.0

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        now = time.monotonic()
        if not self.enabled or now - self._shown < EVERY_SECONDS:
            return
        self._shown = now
        pct = 100 * done // self.total if self.total else 100
        self.stream.write(f"\r{self.label}: {done:,} / {self.total:,} ({pct}%)\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
