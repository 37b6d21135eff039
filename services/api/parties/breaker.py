"""A circuit breaker for one outbound dependency (the issuer's calls to the exchange).

Why: when the exchange is dead, every JIT authorization would wait out the transport's timeouts
and retries, holding the card's lock and a worker, until the network's deadline passes and it
stands in anyway. After ``failures_max`` consecutive failures (no answer, a timeout, a 5xx) the
breaker *opens*: for ``cooldown_s`` calls are refused at once, without touching the network, so
authorizations that need a sale decline fast (91, issuer/exchange unavailable) instead of piling
up. After the cool-down it is *half-open*: one probe call is let through; its success closes the
breaker, its failure opens it for another cool-down. A business refusal (a 4xx such as
``insufficient_crypto``) is an answer, not a failure.

State is exported as ``ccsim_breaker_state{party,peer}`` (0 closed, 1 half-open, 2 open) and
``ccsim_breaker_rejected_total{party,peer}`` (calls refused while open).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed → open after ``failures_max`` consecutive failures → half-open after ``cooldown_s``."""

    def __init__(
        self, party: str, peer: str, *, failures_max: int, cooldown_s: float,
        registry: CollectorRegistry | None = None, now_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_max < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs failures_max >= 1 and cooldown_s > 0")
        self.party, self.peer = party, peer
        self.failures_max = failures_max
        self.cooldown_s = cooldown_s
        self._now_s = now_s
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at_s = 0.0
        self._probing = False
        self.rejected = 0
        self.opened = 0
        self._gauge: Gauge | None = None
        self._rejected: Counter | None = None
        if registry is not None:
            self._gauge = Gauge("ccsim_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                                ["party", "peer"], registry=registry)
            self._rejected = Counter("ccsim_breaker_rejected", "Calls refused by an open circuit breaker",
                                     ["party", "peer"], registry=registry)
            self._gauge.labels(party, peer).set(0)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and self._now_s() - self._opened_at_s >= self.cooldown_s:
                return BreakerState.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """May a call go out now? ``False`` while open (and while a half-open probe is running)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._now_s() - self._opened_at_s >= self.cooldown_s:
                self._set(BreakerState.HALF_OPEN)
                self._probing = False
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            self.rejected += 1
            if self._rejected is not None:
                self._rejected.labels(self.party, self.peer).inc()
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state is BreakerState.HALF_OPEN or self._failures >= self.failures_max:
                if self._state is not BreakerState.OPEN:
                    self.opened += 1
                self._opened_at_s = self._now_s()
                self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._gauge is not None:
            self._gauge.labels(self.party, self.peer).set(int(state))
