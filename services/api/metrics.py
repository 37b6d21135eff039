"""Prometheus metrics of one service, in a registry of its own.

A registry per app (not prometheus-client's global one) so several parties, or several test apps,
live in one process without clashing names. Party services add their own counters through
:meth:`ApiMetrics.counter` (authorizations by outcome, transfers by result, …).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics"]

# Seconds: from 1 ms (an in-memory answer) to 10 s (a request stuck behind a lock).
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """Request latency by route and status, plus whatever counters the party registers."""

    def __init__(self, party: str) -> None:
        self.party = party
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency_s = Histogram(
            "ccsim_http_request_duration_seconds", "Time to answer an HTTP request",
            ["party", "method", "route", "status"], registry=self.registry,
            buckets=_LATENCY_BUCKETS_S,
        )
        self.problems = Counter(
            "ccsim_http_problems", "Problem responses sent, by status and problem type",
            ["party", "status", "type"], registry=self.registry,
        )
        self._counters: dict[str, Counter] = {}

    def observe_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.request_latency_s.labels(self.party, method, route, str(status)).observe(duration_s)

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        """A counter named ``ccsim_<name>`` with a ``party`` label first; the same one on a repeat."""
        known = self._counters.get(name)
        if known is None:
            known = Counter(f"ccsim_{name}", documentation, ["party", *labels], registry=self.registry)
            self._counters[name] = known
        return known

    def render(self) -> bytes:
        return generate_latest(self.registry)
