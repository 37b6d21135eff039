"""Rate limits on the routes any caller could spam: a token bucket per caller and per kind of route.

Payments are bounded by the chain itself (a card, a key, a hold at a time); what is not are the
routes that cost the service something and that anyone who reaches the port can call as fast as
they like: the public ones (``/healthz``, ``/readyz``, ``/metrics``, the OpenAPI document), the
integrity reads (``/v1/ledger/invariants`` and ``/halves``, which read whole journals, and the
gateway's reconciliation), the operator's ``POST /v1/holds/expire`` and the gateway's runs API.
Each such route belongs to a **limit** (:data:`ROUTE_LIMITS`); each limit keeps one token bucket
per caller: the principal whose signature the guard verified (:mod:`services.api.auth_middleware`
runs first), else the peer's address. A request finding its bucket empty is answered **429** with
``Retry-After`` (whole seconds until a token is back) and a problem+json body naming the limit,
before the route runs. Every other route (payments, messages between parties, sells) is not
limited here: ``ccsim load`` and the chain's own traffic are never throttled.

Bounded memory: each limit tracks at most ``callers_max`` callers; past that the caller heard
from least recently is forgotten (its bucket, full or not, starts full if it comes back). An
attacker with many addresses can therefore get a fresh burst per address, never more than the
limit's rate per address; a firewall is the answer to a botnet (docs/threat-model.md).

The limits are settings (``CCSIM_RATE_LIMITS`` as JSON, e.g. ``{"checks": {"per_s": 1, "burst": 5}}``;
a ``per_s`` of 0 turns that limit off); the defaults are far above what the supervisor, the
gateway, the dashboard and an operator send, and far below what a loop can.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.problems import FieldError, ProblemError

__all__ = ["DEFAULT_RATE_LIMITS", "ROUTE_LIMITS", "RateLimit", "RateLimitMiddleware", "TokenBuckets", "limit_of"]


class RateLimit(BaseModel):
    """``per_s`` tokens a second, at most ``burst`` saved up; ``per_s`` 0: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_s: float = Field(ge=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


# (method, path, limit): a path ending in "/" covers every path under it.
ROUTE_LIMITS: Final[tuple[tuple[str, str, str], ...]] = (
    ("GET", "/healthz", "health"), ("GET", "/readyz", "health"),
    ("GET", "/metrics", "metrics"),
    ("GET", "/openapi.json", "docs"), ("GET", "/docs", "docs"), ("GET", "/redoc", "docs"),
    ("GET", "/v1/ledger/invariants", "checks"), ("GET", "/v1/ledger/halves", "checks"),
    ("GET", "/v1/reconciliation", "checks"),
    ("POST", "/v1/holds/expire", "operations"),
    ("POST", "/v1/runs", "runs"), ("DELETE", "/v1/runs/", "runs"),
)

DEFAULT_RATE_LIMITS: Final[dict[str, RateLimit]] = {
    "health": RateLimit(per_s=50, burst=200),  # the supervisor polls every 0.1 s; the dashboard, each second
    "metrics": RateLimit(per_s=10, burst=50),
    "docs": RateLimit(per_s=5, burst=20),
    "checks": RateLimit(per_s=2, burst=40),  # each reads whole journals; a check is a handful of calls
    "operations": RateLimit(per_s=5, burst=20),
    "runs": RateLimit(per_s=1, burst=10),  # each starts (or stops) a simulation
}
CALLERS_MAX_DEFAULT: Final = 10_000


def limit_of(method: str, path: str) -> str | None:
    """The limit a request counts against, or ``None`` (not limited here)."""
    for m, p, name in ROUTE_LIMITS:
        if m == method and (path == p or (p.endswith("/") and path.startswith(p))):
            return name
    return None


class TokenBuckets:
    """One limit's buckets, one per caller, at most ``callers_max`` of them (least recent goes)."""

    def __init__(self, limit: RateLimit, callers_max: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.callers_max = callers_max
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def take(self, caller: str) -> float:
        """Spend a token of ``caller``'s: 0.0 when there was one, else the seconds until there is."""
        now = self.clock()
        limit = self.limit
        tokens, at = self._buckets.pop(caller, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - at) * limit.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / limit.per_s
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self.callers_max:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimitMiddleware:
    """429 for a caller past its limit (see the module docstring); runs inside the guard, so a
    signed caller is known by its verified principal."""

    def __init__(self, app: ASGIApp, *, limits: Mapping[str, RateLimit] | None = None,
                 callers_max: int = CALLERS_MAX_DEFAULT, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        chosen = {**DEFAULT_RATE_LIMITS, **(limits or {})}
        self.buckets = {name: TokenBuckets(limit, callers_max, clock) for name, limit in chosen.items()
                        if limit.per_s > 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            name = limit_of(str(scope["method"]), str(scope["path"]))
            buckets = self.buckets.get(name) if name is not None else None
            if buckets is not None:
                caller = _caller(scope)
                wait = buckets.take(caller)
                if wait > 0:
                    limit = buckets.limit
                    raise ProblemError(
                        429, f"too many requests: the {name} limit allows {limit.per_s:g} a second "
                             f"(bursts of {limit.burst}) per caller; retry after the Retry-After seconds",
                        [FieldError(field="rate_limit", reason=f"{name}: {limit.per_s:g}/s, burst {limit.burst}, "
                                                               f"exceeded by {caller}")],
                        slug="rate-limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        await self.app(scope, receive, send)


def _caller(scope: Scope) -> str:
    """The verified principal, else the peer's address."""
    state = scope.get("state") or {}
    principal = state.get("principal") if isinstance(state, dict) else None
    if principal:
        return f"principal:{principal}"
    client = scope.get("client")
    return f"peer:{client[0] if client else 'unknown'}"
