"""Per-client token buckets: ``rate`` tokens a second, holding at most ``burst``.

A request that finds too few tokens is refused ``rate_limited`` and costs
nothing, so a client that slows down gets through again at once. Time comes in
as an argument (monotonic seconds): the buckets have no clock of their own.
``own`` gives some clients their own (rate, burst) (the config's ``[[clients]]``).
"""


class RateLimiter:
    def __init__(self, rate: float, burst: int, own: dict[int, tuple[float, int]] | None = None):
        own = own or {}
        for r, b in [(rate, burst), *own.values()]:
            if r <= 0 or b < 1:
                raise ValueError(f"rate must be > 0 and burst >= 1, got {r}, {b}")
        self.rate = rate
        self.burst = burst
        self._own = own
        self._buckets: dict[int, list[float]] = {}  # client -> [tokens, as of, rate, burst]

    def limits(self, client: int) -> tuple[float, int]:
        """The client's (rate, burst)."""
        return self._own.get(client, (self.rate, self.burst))

    def take(self, client: int, n: int, now: float) -> int:
        """Take up to ``n`` tokens for ``client``; returns how many it got (0..n)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            rate, burst = self.limits(client)
            bucket = self._buckets[client] = [float(burst), now, rate, burst]
        tokens = min(bucket[3], bucket[0] + (now - bucket[1]) * bucket[2])
        got = min(n, int(tokens))
        bucket[0] = tokens - got
        bucket[1] = now
        return got
