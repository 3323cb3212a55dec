"""One global token bucket per process: every thread of the pusher and the exporter spends the same
Stripe budget (Stripe's limit is per account, not per connection).

The bucket refills continuously at ``rate`` tokens per second up to ``burst`` tokens. With the
default ``burst=1`` requests are evenly spaced, so no one-second window ever sees more than
``rate + 1`` requests (a server counting per second never answers 429 when ``rate`` is below its limit).

Example::

    bucket = global_bucket(cfg.stripe.rate_limit_per_second)
    bucket.acquire()          # blocks until a token is free
    client.v1.products.retrieve("prod_1")
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """A thread-safe token bucket. ``acquire`` blocks; waiting threads are served roughly in order."""

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self._lock = threading.Lock()
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self.acquired = 0  # total tokens handed out (for throughput figures)

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        with self._lock:
            self._refill(time.monotonic())
            self.rate = float(rate)
            if burst is not None:
                self.burst = max(1.0, float(burst))
                self._tokens = min(self._tokens, self.burst)

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens``, sleeping as long as needed; returns the seconds waited.

        A token is reserved before sleeping (the balance may go negative), so concurrent callers queue
        up behind each other instead of all waking at once.
        """
        with self._lock:
            now = time.monotonic()
            self._refill(now)
            self._tokens -= tokens
            self.acquired += 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            time.sleep(wait)
        return wait

    def penalise(self, seconds: float) -> None:
        """Stop everyone for ``seconds`` (after a 429: the whole account is over budget)."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens = min(self._tokens, 0.0) - seconds * self.rate


_GLOBAL: TokenBucket | None = None
_GLOBAL_LOCK = threading.Lock()


def global_bucket(rate: float, burst: float = 1.0) -> TokenBucket:
    """The process-wide bucket, created on first use; a later call with another rate re-sets it."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None:
            _GLOBAL = TokenBucket(rate, burst)
        elif _GLOBAL.rate != rate or _GLOBAL.burst != max(1.0, burst):
            _GLOBAL.set_rate(rate, burst)
        return _GLOBAL
