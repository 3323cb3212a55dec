"""Rate limiting and fault injection for the emulator, seeded so a run can be replayed.

Fault kinds (each with its own probability, drawn once per API request from one seeded RNG):

- ``error_5xx``: HTTP 500 ``api_error`` *before* the write (nothing applied, nothing stored under
  the Idempotency-Key, like an edge failure; a retry with the same key executes normally).
- ``rate_limit``: HTTP 429 ``rate_limit`` before the write (on top of the token bucket's own 429s).
- ``latency``: the request is delayed by ``latency_seconds`` and then served normally.
- ``drop``: the connection is closed without an answer *before* the write.
- ``lost_response``: the write is applied (and stored under its Idempotency-Key), then the
  connection is closed without an answer. A GET gets a plain ``drop``.

``force(kind, times, method=None, path_prefix=None)`` queues deterministic faults for the next
matching requests (tests use it instead of probabilities).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

KINDS = ("error_5xx", "rate_limit", "latency", "drop", "lost_response")

# How ``--fault-rate F`` is split across kinds when no per-kind rates are given.
DEFAULT_SPLIT = {"error_5xx": 0.4, "rate_limit": 0.2, "drop": 0.1, "lost_response": 0.2, "latency": 0.1}


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` stored (default: one second's
    worth). ``take()`` is non-blocking: True if a token was available."""

    def __init__(self, rate: float, burst: float | None = None, clock: Any = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass
class FaultConfig:
    """Per-kind probabilities (0..1), the added latency, and the RNG seed."""

    rates: dict[str, float] = field(default_factory=dict)
    latency_seconds: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        for kind, rate in self.rates.items():
            if not 0 <= float(rate) <= 1:
                raise ValueError(f"fault rate for {kind} must be within 0..1, got {rate}")
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates add up to more than 1")

    @classmethod
    def from_total(cls, total: float, seed: int = 0, latency_seconds: float = 0.2) -> FaultConfig:
        """``--fault-rate F``: F of the requests get a fault, split as :data:`DEFAULT_SPLIT`."""
        if not 0 <= total <= 1:
            raise ValueError(f"fault rate must be within 0..1, got {total}")
        return cls({k: total * w for k, w in DEFAULT_SPLIT.items()} if total else {}, latency_seconds, seed)

    @classmethod
    def parse(cls, spec: str, seed: int = 0, latency_seconds: float = 0.2) -> FaultConfig:
        """``"error_5xx=0.1,rate_limit=0.05,lost_response=0.02"`` -> FaultConfig."""
        rates: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault spec {part!r} must look like kind=rate (kinds: {', '.join(KINDS)})")
            try:
                rates[kind.strip()] = float(value)
            except ValueError:
                raise ValueError(f"fault rate {value!r} for {kind} is not a number") from None
        return cls(rates, latency_seconds, seed)


@dataclass
class _Forced:
    kind: str
    remaining: int
    method: str | None
    path_prefix: str | None


class FaultInjector:
    """Decides, per API request, which fault (if any) it gets."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._forced: list[_Forced] = []
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def force(self, kind: str, times: int = 1, method: str | None = None, path_prefix: str | None = None) -> None:
        """The next ``times`` requests matching ``method`` / ``path_prefix`` get fault ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        with self._lock:
            self._forced.append(_Forced(kind, int(times), method.upper() if method else None, path_prefix))

    def clear(self) -> None:
        with self._lock:
            self._forced.clear()

    def draw(self, method: str, path: str) -> str | None:
        """The fault for this request, or None."""
        with self._lock:
            for forced in self._forced:
                if forced.remaining > 0 and (forced.method in (None, method)) and (
                    forced.path_prefix is None or path.startswith(forced.path_prefix)
                ):
                    forced.remaining -= 1
                    if forced.remaining == 0:
                        self._forced.remove(forced)
                    return forced.kind
            if not self.config.rates:
                return None
            roll = self._rng.random()
        acc = 0.0
        for kind in KINDS:
            acc += self.config.rates.get(kind, 0.0)
            if roll < acc:
                return kind
        return None

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rates": dict(self.config.rates),
                "latency_seconds": self.config.latency_seconds,
                "seed": self.config.seed,
                "forced": [f.__dict__.copy() for f in self._forced],
            }
