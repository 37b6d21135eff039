"""Stand-in advices under a burst: the network sends at most ``ADVICES_IN_FLIGHT_MAX`` to the issuer
at once, and every one is still applied once.

A burst of stand-ins (the issuer down, or too slow for the deadline) used to send every advice at
once; an issuer just back then answered each too late for the caller's timeout, every advice was
sent again, and the issuer spent its time on advices while the network stood in for ever more
payments. In-process on SQLite and PostgreSQL (``test_live_parties.Live``): the issuer's
authorizations are unreachable, so every payment is stood in for, and its advices wait at a gate
the test opens.
"""

from __future__ import annotations

import asyncio

import httpx
from test_live_parties import Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported

from services.api.parties.network.service import ADVICES_IN_FLIGHT_MAX

BURST = 3 * ADVICES_IN_FLIGHT_MAX


class GatedAdvices(httpx.AsyncBaseTransport):
    """The issuer's app, with every ``/v1/advices`` request held until ``gate`` is set; counts how
    many were held at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.reached = asyncio.Event()  # ADVICES_IN_FLIGHT_MAX held at once

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/advices":
            return await self.inner.handle_async_request(request)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= ADVICES_IN_FLIGHT_MAX:
            self.reached.set()
        try:
            await self.gate.wait()
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1


async def test_a_burst_of_stand_ins_sends_a_bounded_number_of_advices_at_once(live: Live) -> None:
    gated = GatedAdvices(live.router.apps["issuer"])
    live.router.apps["issuer"] = gated  # type: ignore[assignment]
    live.router.unreachable.add("issuer/v1/authorizations")
    network = live.apps["network"].state.network_service
    answers = await asyncio.gather(*(live.post("http://network/v1/payments",
                                               pay_body(f"p{i}", card="c2", amount="100.00"), f"k{i}")
                                     for i in range(BURST)))
    assert all(r.status_code == 200 and r.json()["stand_in"] for r in answers), [r.text for r in answers]
    assert len(network._advices) == BURST
    await asyncio.wait_for(gated.reached.wait(), timeout=60.0)
    # Every advice task has been started; let each run as far as it can (no thread or timer is
    # between a task's start and the gate: these are turns of the event loop, not time).
    for _ in range(200):
        await asyncio.sleep(0)
    assert gated.in_flight == ADVICES_IN_FLIGHT_MAX
    gated.gate.set()
    await asyncio.gather(*network._advice_tasks)
    assert gated.most == ADVICES_IN_FLIGHT_MAX
    assert network._advices == {}
    for i in range(BURST):
        auth = (await live.client.get(f"http://issuer/v1/authorizations/p{i}")).json()
        assert auth["stand_in"], auth
    live.router.unreachable.clear()
    await assert_clean(live)
