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
from typing import Literal

import httpx
import pytest
from test_live_parties import Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported

from services.api.parties.network import service as network_service
from services.api.parties.network.service import ADVICES_IN_FLIGHT_MAX, NetworkService

BURST = 3 * ADVICES_IN_FLIGHT_MAX


class GatedAdvices(httpx.AsyncBaseTransport):
    """The issuer's app, with every ``/v1/advices`` request held until ``gate`` is set; counts how
    many were held at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.sent = 0  # advice requests in all
        self.reached = asyncio.Event()  # ADVICES_IN_FLIGHT_MAX held at once

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/advices":
            return await self.inner.handle_async_request(request)
        self.in_flight += 1
        self.sent += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= ADVICES_IN_FLIGHT_MAX:
            self.reached.set()
        try:
            await self.gate.wait()
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1


class QueuedSlots(asyncio.Semaphore):
    """The network's advice slots, setting ``all_queued`` once ``queued`` senders found none free
    (and ``also_queued`` once one more did)."""

    def __init__(self, value: int, *, queued: int) -> None:
        super().__init__(value)
        self.queued = queued
        self.waiting = 0
        self.all_queued = asyncio.Event()
        self.also_queued = asyncio.Event()

    async def acquire(self) -> Literal[True]:
        if self.locked():
            self.waiting += 1
            if self.waiting >= self.queued:
                self.all_queued.set()
            if self.waiting > self.queued:
                self.also_queued.set()
        return await super().acquire()


async def _burst(live: Live) -> tuple[GatedAdvices, NetworkService]:
    """``BURST`` stand-ins, their advices started and ``ADVICES_IN_FLIGHT_MAX`` of them held."""
    gated = GatedAdvices(live.router.apps["issuer"])
    live.router.apps["issuer"] = gated  # type: ignore[assignment]
    live.router.unreachable.add("issuer/v1/authorizations")
    network = live.apps["network"].state.network_service
    slots = network._advice_slots = QueuedSlots(ADVICES_IN_FLIGHT_MAX, queued=BURST - ADVICES_IN_FLIGHT_MAX)
    answers = await asyncio.gather(*(live.post("http://network/v1/payments",
                                               pay_body(f"p{i}", card="c2", amount="100.00"), f"k{i}")
                                     for i in range(BURST)))
    assert all(r.status_code == 200 and r.json()["stand_in"] for r in answers), [r.text for r in answers]
    assert len(network._advices) == BURST
    # Every advice task is either held at the gate or queued for a slot: nothing is left to run.
    await asyncio.wait_for(asyncio.gather(gated.reached.wait(), slots.all_queued.wait()), timeout=60.0)
    assert gated.in_flight == ADVICES_IN_FLIGHT_MAX
    return gated, network


async def test_a_burst_of_stand_ins_sends_a_bounded_number_of_advices_at_once(live: Live) -> None:
    gated, network = await _burst(live)
    gated.gate.set()
    await asyncio.gather(*network._advice_tasks)
    assert gated.most == ADVICES_IN_FLIGHT_MAX
    assert network._advices == {}
    for i in range(BURST):
        auth = (await live.client.get(f"http://issuer/v1/authorizations/p{i}")).json()
        assert auth["stand_in"], auth
    live.router.unreachable.clear()
    await assert_clean(live)


async def test_presentments_of_stand_ins_add_no_advice_to_a_burst(live: Live) -> None:
    """A capture of a stood-in payment waits for its advice. While that advice is being sent, or
    every slot is taken, the capture gets a retryable 503 at once and sends no advice of its own:
    the presenter's retries do not add to a burst the issuer is behind on."""
    gated, network = await _burst(live)
    held = [f"p{i}" for i in range(BURST) if network.outbox.is_in_line(f"advice:p{i}")]
    waiting = [f"p{i}" for i in range(BURST) if f"p{i}" not in held]
    assert len(held) == ADVICES_IN_FLIGHT_MAX and waiting
    for auth_id in (held[0], waiting[0]):  # one being sent, one waiting for a slot
        for attempt in range(3):
            # Bounded only so that a relapse (a capture sending an advice, held at the gate) fails
            # instead of hanging the suite.
            r = await asyncio.wait_for(live.post(
                "http://network/v1/presentments", {"kind": "capture", "auth_id": auth_id, "amount": "100.00"},
                f"cap-{auth_id}"), 60.0)
            assert r.status_code == 503 and r.json()["type"].endswith("advice-pending"), (attempt, r.text)
    assert gated.sent == ADVICES_IN_FLIGHT_MAX  # no advice beyond the held ones was sent

    gated.gate.set()
    await asyncio.gather(*network._advice_tasks)
    assert network._advices == {}
    for auth_id in (held[0], waiting[0]):  # the presenter's retry, once the advice is applied
        r = await live.post("http://network/v1/presentments",
                            {"kind": "capture", "auth_id": auth_id, "amount": "100.00"}, f"cap-{auth_id}")
        assert r.status_code == 201, r.text
    assert gated.sent == BURST  # each advice applied with one request: none was sent twice
    live.router.unreachable.clear()
    await assert_clean(live)


async def test_the_operators_retry_waits_its_turn_for_a_slot(live: Live) -> None:
    """``POST /v1/advices/retry`` during a burst sends nothing past the bound: it waits for a slot,
    leaves the advices being sent to their sender, and no advice reaches the issuer twice."""
    gated, network = await _burst(live)
    slots = network._advice_slots
    assert isinstance(slots, QueuedSlots)
    retry = asyncio.create_task(live.post("http://network/v1/advices/retry", {}))
    await asyncio.wait_for(slots.also_queued.wait(), timeout=60.0)  # the retry is in line for a slot
    assert not retry.done() and gated.sent == ADVICES_IN_FLIGHT_MAX

    gated.gate.set()
    assert (await retry).status_code == 200
    await asyncio.gather(*network._advice_tasks)
    assert network._advices == {}
    assert gated.most == ADVICES_IN_FLIGHT_MAX
    assert gated.sent == BURST  # each advice applied with one request: none was sent twice
    assert (await live.post("http://network/v1/advices/retry", {})).json()["pending"] == []
    live.router.unreachable.clear()
    await assert_clean(live)


async def test_the_operators_retry_attempts_a_bounded_number_per_call(live: Live,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog of advices is retried ``ADVICE_RETRIES_PER_CALL`` at a time; the answer lists the
    rest, and calling again goes on with them."""
    per_call = 5
    monkeypatch.setattr(network_service, "ADVICE_RETRIES_PER_CALL", per_call)
    monkeypatch.setattr(network_service, "_ADVICE_ROUNDS_MAX", 1)  # the background gives up at once
    network = live.apps["network"].state.network_service
    network.ctx.transport.retries_max = 0
    live.router.unreachable |= {"issuer/v1/authorizations", "issuer/v1/advices"}
    answers = await asyncio.gather(*(live.post("http://network/v1/payments",
                                               pay_body(f"p{i}", card="c2", amount="100.00"), f"k{i}")
                                     for i in range(BURST)))
    assert all(r.status_code == 200 and r.json()["stand_in"] for r in answers), [r.text for r in answers]
    await asyncio.gather(*network._advice_tasks)  # each made its one attempt and gave up
    assert len(network._advices) == BURST

    live.router.unreachable.discard("issuer/v1/advices")
    counted = GatedAdvices(live.router.apps["issuer"])
    counted.gate.set()
    live.router.apps["issuer"] = counted  # type: ignore[assignment]
    left = BURST
    while left:
        pending = (await live.post("http://network/v1/advices/retry", {})).json()["pending"]
        assert len(pending) == max(left - per_call, 0)
        left = len(pending)
    assert counted.sent == BURST
    live.router.unreachable.clear()
    await assert_clean(live)


async def test_a_reversal_of_a_stand_in_waits_for_its_advice(live: Live) -> None:
    """The POS cancels a payment the network stood in for before the issuer has applied the advice.
    Sent on at once, the reversal found the issuer holding its own late decline and was refused for
    good (409 not-approved); the advice then held the card's tenge with no one left to release it (a
    loaded PostgreSQL fault run: 3 refused, 5 stand-in approvals left held). Where the issuer knew
    nothing of the payment, a 404 the POS could only retry blindly. The reversal waits for the advice
    as a capture does: a retryable 503, then the reversal once the issuer has applied it."""
    network = live.apps["network"].state.network_service
    blocked = await live.client.post("http://issuer/v1/cards/c2/status", json={"status": "blocked"})
    assert blocked.status_code == 200, blocked.text
    live.router.unreachable.add("issuer/v1/advices")  # the advices wait (the issuer is behind)
    live.router.late.add("issuer/v1/authorizations")  # p1: the issuer declines (62), too late

    async def then_unreachable() -> None:
        live.router.unreachable.add("issuer/v1/authorizations")

    live.router.after_late = then_unreachable
    for pid in ("p1", "p2"):  # p2: the issuer never hears of it
        paid = await live.post("http://network/v1/payments", pay_body(pid, card="c2", amount="3000.00"), f"k-{pid}")
        assert paid.status_code == 200 and paid.json()["stand_in"] and paid.json()["approved"], paid.text
    own = (await live.client.get("http://issuer/v1/authorizations/p1")).json()
    assert own["state"] == "declined" and own["code"] == "62", own
    assert (await live.client.get("http://issuer/v1/authorizations/p2")).status_code == 404

    for pid in ("p1", "p2"):
        r = await live.post(f"http://network/v1/payments/{pid}/reverse", {}, f"rev-{pid}")
        assert r.status_code == 503 and r.json()["type"].endswith("advice-pending"), r.text
    live.router.unreachable.clear()
    live.router.late.clear()
    live.router.after_late = None
    await asyncio.gather(*network._advice_tasks)
    for pid in ("p1", "p2"):  # the POS's retry, with the same key
        r = await live.post(f"http://network/v1/payments/{pid}/reverse", {}, f"rev-{pid}")
        assert r.status_code == 200 and r.json()["released"] == "3000.00", r.text
        auth = (await live.client.get(f"http://issuer/v1/authorizations/{pid}")).json()
        assert auth["state"] == "reversed" and auth["stand_in"], auth
    assert (await live.client.get("http://issuer/v1/cards/c2")).json()["available"] == "100000.00"
    await assert_clean(live)
