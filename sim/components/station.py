"""One service of the chain (acquirer, network, issuer, exchange, custody, bank) as a SimPy station.

A station is a pool of workers (a SimPy ``Resource``; ``unlimited`` means no resource and no queue),
a service-time sampler on its own rng stream, outage windows, and the caller's timeout and retries.
The domain step that a leg stands for is called by the payment after :meth:`Station.call` returns,
at the virtual time the leg finished; a station only adds time, capacity and faults.

Timeout semantics: an attempt is abandoned when queueing plus service would pass ``timeout_ms``.
An attempt abandoned in service keeps its worker busy until the work ends (the server does not know
the caller left); the retry books the domain step again under the same id, so the domain's
idempotency makes the abandoned work harmless. During an outage a station serves nothing: a request
that reaches a worker waits, holding it, until the outage ends or its timeout passes.

Statistics are exact time integrals, not samples: the number waiting and the number in service are
integrated over the measurement window, so mean queue length and utilization need no sampling.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Generator
from typing import Any

import simpy
from simpy.events import Event

from sim.components.workers import Workers
from sim.scenario import ServiceSpec

__all__ = ["LegLog", "Station"]

LegLog = list[tuple[str, float, float]]  # (service, wait_s, service_s) per leg of a payment

_INF = math.inf


def _releaser(res: Workers) -> Callable[[Event], None]:
    """A callback that frees the worker of an attempt its caller abandoned mid-service."""

    def release(_ev: Event) -> None:
        res.release()

    return release


class Station:
    """A service with ``capacity`` workers, a sampler, outages, timeout and retries."""

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        spec: ServiceSpec,
        *,
        sample: Callable[[], float],
        sample_return: Callable[[], float] | None,
        window_s: tuple[float, float],
    ) -> None:
        self.env = env
        self.name = name
        self.spec = spec
        self.capacity: int | None = None if spec.capacity == "unlimited" else int(spec.capacity)
        self.resource = Workers(env, self.capacity) if self.capacity is not None else None
        self.sample = sample
        self.sample_return = sample_return
        self.timeout_s = spec.timeout_ms / 1000.0 if spec.timeout_ms is not None else None
        self.attempts = spec.retries + 1
        self.backoff_s = spec.backoff_ms / 1000.0
        self.outages = sorted((w.start_s, w.start_s + w.duration_s) for w in spec.outages)
        self.win_from_s, self.win_until_s = window_s
        # -- statistics ------------------------------------------------------------------------
        self.served = 0  # services completed, whole run
        self.failed_calls = 0  # calls that ran out of attempts, whole run
        self.timeouts = 0  # attempts abandoned, whole run
        self.waits_s: array[float] = array("d")  # per measured call: queue wait (incl. retries)
        self.service_sum_s = 0.0  # measured calls
        self.measured_calls = 0
        self.busy_area_s = 0.0  # ∫ workers in service dt over the window
        self._q_n = 0
        self._q_t = 0.0
        self.queue_area_s = 0.0  # ∫ requests waiting dt over the window
        self.queue_arrivals = 0  # requests made inside the window (for Little's law)

    # -- bookkeeping -------------------------------------------------------------------------
    def _overlap(self, t0: float, t1: float) -> float:
        lo = t0 if t0 > self.win_from_s else self.win_from_s
        hi = t1 if t1 < self.win_until_s else self.win_until_s
        return hi - lo if hi > lo else 0.0

    def _queue_change(self, delta: int) -> None:
        now = self.env.now
        if self._q_n:
            self.queue_area_s += self._q_n * self._overlap(self._q_t, now)
        self._q_n += delta
        self._q_t = now

    @property
    def queue_len(self) -> int:
        return len(self.resource.queue) if self.resource is not None else 0  # waiting, not in service

    @property
    def busy(self) -> int:
        return self.resource.count if self.resource is not None else 0

    def up_at(self, now: float) -> float:
        """When the station is next up: ``now`` if it is up now."""
        for start, end in self.outages:
            if start <= now < end:
                return end
            if start > now:
                break
        return now

    def finish(self) -> None:
        """Close the time integrals at the end of the run."""
        self._queue_change(0)

    # -- the leg -----------------------------------------------------------------------------
    def call(  # noqa: PLR0915 — every leg of every payment runs here; one frame per leg is the budget
        self, legs: LegLog, measured: bool, returning: bool = False,
        on_service: Callable[[], object] | None = None,
    ) -> Generator[simpy.Event, Any, bool]:
        """Serve one leg for a payment; ``True`` when served, ``False`` when every attempt failed.

        ``on_service`` (optional) is called when a worker starts serving an attempt, before its
        service time passes: the exchange prices a sale there, and the sale executes when the leg
        ends (a quote's time-to-live runs over the service time)."""
        env = self.env
        res = self.resource
        sample = self.sample_return if returning and self.sample_return is not None else self.sample
        timeout_s = self.timeout_s
        t_call = env.now
        for attempt in range(self.attempts):
            if attempt:
                yield env.timeout(self.backoff_s * (2 ** (attempt - 1)))
            limit = env.now + timeout_s if timeout_s is not None else _INF
            holding = False  # this attempt holds (or waits for) a worker
            if res is not None:
                req = res.request()
                holding = True
                if self.win_from_s <= env.now < self.win_until_s:
                    self.queue_arrivals += 1
                if req is not None and not req.triggered:
                    self._queue_change(1)
                    if timeout_s is None:
                        yield req
                    else:
                        yield req | env.timeout(limit - env.now)
                        if not req.triggered:
                            res.cancel(req)
                            self._queue_change(-1)
                            self.timeouts += 1
                            continue
                    self._queue_change(-1)
            if self.outages:
                up = self.up_at(env.now)
                if up > env.now:
                    if up >= limit:
                        yield env.timeout(limit - env.now)
                        if holding and res is not None:
                            res.release()
                        self.timeouts += 1
                        continue
                    yield env.timeout(up - env.now)
            start = env.now
            if on_service is not None:
                on_service()
            service_s = sample()
            self.busy_area_s += self._overlap(start, start + service_s)
            if start + service_s > limit:
                yield env.timeout(limit - start)
                if holding and res is not None:
                    rest = env.timeout(start + service_s - env.now)
                    rest.callbacks.append(_releaser(res))
                self.timeouts += 1
                continue
            if service_s > 0.0:
                yield env.timeout(service_s)
            if holding and res is not None:
                res.release()
            self.served += 1
            wait_s = start - t_call
            legs.append((self.name, wait_s, service_s))
            if measured:
                self.waits_s.append(wait_s)
                self.service_sum_s += service_s
                self.measured_calls += 1
            return True
        self.failed_calls += 1
        wait_s = env.now - t_call
        legs.append((self.name, wait_s, 0.0))
        if measured:
            self.waits_s.append(wait_s)
            self.measured_calls += 1
        return False
