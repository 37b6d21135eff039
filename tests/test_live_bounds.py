"""Checks that never stall payments, bodies bounded in time, disconnects that are not errors, and a
command log that keeps only what changed something (issue 15: F3, F4, F5).

In process (``test_live_parties.Live``), on SQLite and PostgreSQL. Every wait is for an event
(a check that has started, a request that has ended), never for an amount of time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from signing import session_credentials
from structlog.testing import capture_logs
from test_live_parties import FACTORIES, Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported

from services.api.auth import sign_headers
from services.api.parties import PartySettings


async def test_a_payment_is_decided_while_an_invariant_check_is_running(live: Live) -> None:
    """F3: the network's check is held inside its read of the books (after the snapshot is pinned);
    a payment through the network is decided meanwhile, and the check then answers clean."""
    svc = live.apps["network"].state.network_service
    ledger = svc.network_ledger
    original = ledger.check_invariants
    reading, release = threading.Event(), threading.Event()

    def held_check() -> Any:
        reading.set()
        if not release.wait(timeout=120):  # a limit, not a pace: the test releases it
            raise AssertionError("never released")
        return original()

    ledger.check_invariants = held_check
    check = asyncio.create_task(live.client.get("http://network/v1/ledger/invariants"))
    try:
        assert await asyncio.to_thread(reading.wait, 120)
        paid = await asyncio.wait_for(live.post("http://network/v1/payments", pay_body("p-during", card="c2"),
                                                "k-during"), timeout=120)
        assert paid.status_code == 200 and paid.json()["approved"], paid.text
        assert not check.done()  # the check is still reading: the payment did not wait for it
    finally:
        release.set()
    answer = await check
    ledger.check_invariants = original
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    await assert_clean(live)


async def test_a_sale_made_during_the_exchanges_check_is_no_false_violation(live: Live) -> None:
    """F3 at the exchange, whose own rules compare its books with running totals in memory: the
    totals are copied at the snapshot's instant, so a sale booked while the check reads is in
    neither, and the check answers clean at once, without a second pass under the lock."""
    ledger = live.apps["exchange"].state.exchange_service.ledger
    original = ledger.check_invariants
    reading, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def held_check() -> Any:
        calls.append(1)
        reading.set()
        if not release.wait(timeout=120):
            raise AssertionError("never released")
        return original()

    ledger.check_invariants = held_check
    check = asyncio.create_task(live.client.get("http://exchange/v1/ledger/invariants"))
    try:
        assert await asyncio.to_thread(reading.wait, 120)
        paid = await asyncio.wait_for(live.post("http://network/v1/payments", pay_body("p-jit"), "k-jit"), 120)
        assert paid.status_code == 200 and paid.json()["approved"] and not paid.json()["stand_in"], paid.text
        assert (await live.client.get("http://exchange/v1/sells/p-jit:sale")).status_code == 200  # sold meanwhile
    finally:
        release.set()
    answer = await check
    ledger.check_invariants = original
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    assert calls == [1]  # no confirmation pass: nothing looked wrong
    await assert_clean(live)


async def test_the_banks_check_does_not_wait_for_a_delivery_in_flight(live: Live) -> None:
    """F3 at the bank: a settlement's payout is booked at both banks and held on its way to the
    merchant (the last hop); the bank's check answers clean meanwhile, from its snapshot, instead
    of waiting for the delivery to end (the old gate paused the inbox for a check and a check for
    every delivery in flight)."""
    await live.post("http://network/v1/payments", pay_body("p-bank", card="c2"), "k-bank-1")
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p-bank",
                                                            "amount": "5000.00"}, "k-bank-2")
    assert r.status_code == 201, r.text
    local = live.apps["bank"].state.bank_service.ctx.transport.local
    original = local["merchant:"]
    delivering, release = threading.Event(), threading.Event()

    def held(msg: Any) -> bool:
        delivering.set()
        if not release.wait(timeout=120):  # a limit, not a pace: the test releases it
            raise AssertionError("never released")
        return original(msg)

    local["merchant:"] = held
    settle = asyncio.create_task(live.post("http://network/v1/settlements", {"window_id": "w-bank"}, "k-bank-3"))
    try:
        assert await asyncio.to_thread(delivering.wait, 120)
        check = await asyncio.wait_for(live.client.get("http://bank/v1/ledger/invariants"), timeout=120)
        assert not settle.done()  # the delivery is still held: the check did not wait for it
        assert check.status_code == 200 and check.json()["ok"], check.text
    finally:
        release.set()
    settled = await settle
    local["merchant:"] = original
    assert settled.status_code == 201, settled.text
    await assert_clean(live)


async def test_halves_and_in_transit_are_read_at_one_instant(live: Live) -> None:
    """A captured payment is in transit (open batch) until settled; the halves read on the snapshot
    and the batch read at the pin agree, so the reconciliation shows no break either side of it."""
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5000.00"},
                        "k2")
    assert r.status_code == 201, r.text
    halves = (await live.client.get("http://network/v1/ledger/halves")).json()
    assert halves["in_transit"] == ["p1"]
    await assert_clean(live)
    assert (await live.post("http://network/v1/settlements", {"window_id": "w1"}, "k3")).status_code == 201
    assert (await live.client.get("http://network/v1/ledger/halves")).json()["in_transit"] == []
    await assert_clean(live)


def _scope(host: str, path: str, principal: str, intended: bytes, key: str) -> dict[str, Any]:
    """A request signed for ``intended`` (whose bytes the test then does not all send)."""
    signed = sign_headers(session_credentials().principal(principal), "POST", host, path, intended,
                          idempotency_key=key)
    headers = [(b"host", host.encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(intended)).encode()), (b"idempotency-key", key.encode()),
               (b"authorization", signed["Authorization"].encode())]
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "http_version": "1.1", "scheme": "http", "server": (host, 80),
            "client": ("127.0.0.1", 1), "root_path": ""}


class Wire:
    """The client's side of one request: the first bytes, then a disconnect (or nothing at all)."""

    def __init__(self, first: bytes, *, then_disconnect: bool) -> None:
        self.first: bytes | None = first
        self.then_disconnect = then_disconnect
        self.sent: list[Any] = []
        self.never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.first is not None:
            chunk, self.first = self.first, None
            return {"type": "http.request", "body": chunk, "more_body": True}
        if not self.then_disconnect:
            await self.never.wait()  # the rest never comes
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_a_client_that_disconnects_mid_body_is_a_499_line_without_traceback(live: Live) -> None:
    """F4: ``Content-Length: 100``, ``{"a":``, then gone: one log line with status 499, no
    traceback, no 500 counted; the service answers the next caller at once."""
    app = live.apps["network"]
    intended = b'{"window_id": "w-gone"}'.ljust(100)
    wire = Wire(intended[:5], then_disconnect=True)
    with capture_logs() as logs:
        await app(_scope("network", "/v1/settlements", "operator", intended, "k-gone"), wire.receive, wire.send)
    assert wire.sent == []  # nobody to answer
    lines = [e for e in logs if e.get("event") == "http_request"]
    assert [e["status"] for e in lines] == [499]
    assert not any(e.get("exc_info") or e["log_level"] == "error" for e in logs), logs
    metrics = app.state.metrics.render().decode()
    assert 'status="499"' in metrics and 'status="500"' not in metrics
    assert (await live.client.get("http://network/healthz")).status_code == 200


async def test_a_body_that_never_arrives_is_answered_408(live: Live) -> None:
    """F4: a caller that sends half a body and then nothing holds no worker past the body timeout."""
    base = live.settings("bank").model_dump()
    if live.pg:
        base["table_prefix"] = f"{live.prefix}slow_"
    else:
        base.update(data_dir=live.tmp_path / "slow", database_url="")
    app = FACTORIES["bank"](PartySettings(**{**base, "body_timeout_s": 0.2}), http_client=live.outbound)
    live.apps["slow"] = app  # closed (and its tables dropped) with the others
    try:
        intended = b'{"id": "m-slow"}'.ljust(200)
        wire = Wire(intended[:6], then_disconnect=False)
        await app(_scope("bank", "/v1/inbox/bank-1", "network", intended, "k-slow"), wire.receive, wire.send)
        assert wire.sent[0]["status"] == 408
        body = json.loads(b"".join(m.get("body", b"") for m in wire.sent[1:]))
        assert body["type"] == "urn:ccsim:problem:body-timeout" and body["errors"][0]["field"] == "body"
    finally:
        wire.never.set()


@pytest.mark.parametrize("expired", [0])
async def test_expiring_no_hold_is_not_a_command(live: Live, expired: int) -> None:
    """F5: a poller calling ``POST /v1/holds/expire`` with nothing to expire adds nothing to the log."""
    durable = live.apps["issuer"].state.party.durable
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    before = len(durable)
    for _ in range(3):
        r = await live.post("http://issuer/v1/holds/expire", {})
        assert r.status_code == 200 and r.json() == {"count": expired}
    assert len(durable) == before
    await assert_clean(live)


def test_a_signed_httpx_client_and_the_session_credentials_agree() -> None:
    from signing import RoleAuth  # noqa: PLC0415

    request = httpx.Request("POST", "http://network/v1/payments", json=pay_body("p1"))
    signed = next(RoleAuth().auth_flow(request))
    assert signed.headers["authorization"].startswith("CCSIM-HMAC-SHA256 Credential=pos,")
