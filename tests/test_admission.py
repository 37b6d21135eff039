"""The network's admission gate (``services.api.parties.admission``): at most N payments run; a
newcomer whose expected wait exceeds the budget is refused at once with 503 and Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from services.api.parties.admission import AdmissionGate
from services.api.problems import ProblemError


async def test_a_payment_that_could_not_start_in_time_is_refused_with_retry_after() -> None:
    gate = AdmissionGate(in_flight_max=1, wait_max_s=0.001)
    async with gate.admit():
        assert gate.in_flight == 1
        with pytest.raises(ProblemError) as refused:
            async with gate.admit():
                raise AssertionError("admitted beyond the budget")
    assert refused.value.status_code == 503
    assert refused.value.headers is not None and int(refused.value.headers["Retry-After"]) >= 1
    assert gate.refused == 1 and gate.in_flight == 0
    async with gate.admit():  # the slot is free again
        assert gate.in_flight == 1


async def test_within_the_budget_payments_queue_and_all_run() -> None:
    gate = AdmissionGate(in_flight_max=2, wait_max_s=60.0)
    release = asyncio.Event()
    peak = 0

    async def pay() -> None:
        nonlocal peak
        async with gate.admit():
            peak = max(peak, gate.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(pay()) for _ in range(6)]
    while gate.waiting < 4:
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2 and gate.refused == 0 and gate.in_flight == 0


async def test_no_limit_admits_everything() -> None:
    gate = AdmissionGate(in_flight_max=0, wait_max_s=0.0)
    async with gate.admit(), gate.admit(), gate.admit():
        assert gate.refused == 0
