"""Per-client token buckets: ``rate`` tokens a second, holding at most ``burst``.

A request that finds too few tokens is refused ``rate_limited`` and costs
nothing, so a client that slows down gets through again at once. Time comes in
as an argument (monotonic seconds): the buckets have no clock of their own.
"""


class RateLimiter:
    def __init__(self, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, list[float]] = {}  # client -> [tokens, as of]

    def take(self, client: int, n: int, now: float) -> int:
        """Take up to ``n`` tokens for ``client``; returns how many it got (0..n)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = [float(self.burst), now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        got = min(n, int(tokens))
        bucket[0] = tokens - got
        bucket[1] = now
        return got
