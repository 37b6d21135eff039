"""Admission at the front of the chain: how many payments run at once, and a fast refusal when the
queue in front of them could not be served within its budget.

Why: a chain offered more than it can do does not get faster by accepting it. Every payment
admitted beyond capacity waits, its wait pushes the others past the network's deadline, a missed
deadline makes the network stand in and send an advice (more work exactly when the chain is
full), and throughput falls below what the chain could sustain. So the network lets at most
``in_flight_max`` payments run; the others queue, and a payment whose expected wait — the queue
ahead of it over the slots, times the recent time a payment holds a slot — exceeds ``wait_max_s``
(a quarter of the deadline) is refused at once with 503 and ``Retry-After``, before anything is written.
A payment admitted therefore waits at most about ``wait_max_s``, and the network gives the issuer
what is left of the deadline after that wait, so the answer comes within the deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from services.api.problems import FieldError, ProblemError

__all__ = ["AdmissionGate"]

_SMOOTHING: Final = 0.1  # weight of the newest service time in the running mean
_FIRST_GUESS_S: Final = 0.05  # the service time assumed before any payment finished


class AdmissionGate:
    """At most ``in_flight_max`` holders; a newcomer whose expected wait exceeds ``wait_max_s`` is
    refused (:class:`ProblemError` 503 with ``Retry-After``). ``in_flight_max`` 0: no limit."""

    def __init__(self, in_flight_max: int, wait_max_s: float) -> None:
        self.in_flight_max = in_flight_max
        self.wait_max_s = wait_max_s
        self.service_s = _FIRST_GUESS_S
        self.in_flight = 0
        self.waiting = 0
        self.refused = 0
        self._slots = asyncio.Semaphore(in_flight_max) if in_flight_max > 0 else None

    def expected_wait_s(self) -> float:
        """How long a newcomer would wait for a slot, from the queue and the recent service time."""
        if self.in_flight_max <= 0 or self.in_flight < self.in_flight_max:
            return 0.0
        return (self.waiting + 1) / self.in_flight_max * self.service_s

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Hold a slot for the block; it receives the seconds waited for it (which the holder's
        own deadline should count: the payment's clock started when it arrived)."""
        if self._slots is None:
            yield 0.0
            return
        if self.expected_wait_s() > self.wait_max_s:
            self.refused += 1
            retry_s = max(1, math.ceil(self.expected_wait_s()))
            raise ProblemError(503, "the network is at capacity; retry later",
                               [FieldError(field="payment", reason=f"about {self.waiting} payments already wait")],
                               slug="overloaded", headers={"Retry-After": str(retry_s)})
        arrived = time.monotonic()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        started = time.monotonic()
        try:
            yield started - arrived
        finally:
            self.in_flight -= 1
            self._slots.release()
            self.service_s += _SMOOTHING * (time.monotonic() - started - self.service_s)
