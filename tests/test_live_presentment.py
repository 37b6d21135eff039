"""A presentment whose issuer half committed is completed, even if its request never finished.

The network resolves a capture at the issuer first, then books the acquirer's half. If the network
dies between the two (or the presenter stops retrying), the issuer's capture would stand alone: a
reconciliation break, and a merchant never paid. The network records each presentment in its outbox
before it starts, and its relay completes a row left pending (services/api/parties/network).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from test_live_parties import Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported

from services.api.outbox import RecoveryReport


async def test_the_relay_completes_a_capture_whose_acquirer_half_did_not_happen(
        live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    network = live.apps["network"].state
    svc = network.network_service

    def dies(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the network process died here")

    capture = {"kind": "capture", "auth_id": "p1", "amount": "5000.00"}
    with monkeypatch.context() as patch:
        patch.setattr(svc.ctx, "run_command", dies)  # the acquirer's booking is the one command of a presentment
        try:
            failed = await live.post("http://network/v1/presentments", capture, "k2")
        except RuntimeError:
            pass  # the test client passes the app's exception on
        else:
            assert failed.status_code >= 500, failed.text
    _, breaks = await live.integrity()
    assert [b.message_id for b in breaks] == ["p1"]  # the issuer captured, the acquirer did not book
    assert network.outbox.state("presentment:k2") == "pending"

    assert await network.relay.run_once(force=True) == []
    assert network.outbox.state("presentment:k2") == "delivered"
    await assert_clean(live)
    again = await live.post("http://network/v1/presentments", capture, "k2")  # the presenter's retry
    assert again.status_code == 201, again.text
    assert again.json()["auth_id"] == "p1"
    await assert_clean(live)


async def test_a_refused_presentment_is_not_owed(live: Live) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    network = live.apps["network"].state
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1",
                                                            "amount": "900000.00"}, "k2")
    assert r.status_code == 422, r.text  # beyond the padding: the issuer's refusal, passed on
    assert network.outbox.state("presentment:k2") is None  # a definite refusal: nothing owed, no row left
    assert await network.relay.run_once(force=True) == []
    await assert_clean(live)


async def test_a_relay_pass_completes_a_presentment_whose_advice_it_still_owes(live: Live) -> None:
    """After a restart the network knows a stand-in's advice only as an outbox row. A presentment
    of that payment, completed by the relay, must deliver the advice first, without waiting on the
    relay pass it runs in (that pass would never end: nothing would be delivered again)."""
    network = live.apps["network"].state
    svc = network.network_service
    svc.ctx.settings.issuer_url = "http://issuer-down"
    paid = await live.post("http://network/v1/payments", pay_body("p1", card="c2", amount="3000.00"), "k1")
    assert paid.json()["stand_in"] and paid.json()["approved"]
    await asyncio.gather(*svc._advice_tasks)  # its in-line tries gave up: the issuer is down
    svc._advices.clear()  # as after a restart: the advice is its outbox row only
    capture = {"kind": "capture", "auth_id": "p1", "amount": "3000.00"}
    held = await live.post("http://network/v1/presentments", capture, "k2")
    assert held.status_code == 503 and held.json()["type"].endswith("advice-pending"), held.text
    assert network.outbox.state("presentment:k2") == "pending"

    svc.ctx.settings.issuer_url = "http://issuer"
    now = asyncio.get_running_loop().time()
    network.relay._next_at.update({"advice:p1": now + 3_600.0, "presentment:k2": 0.0})  # the presentment first
    # Bounded only so that a relapse fails instead of hanging the suite.
    assert await asyncio.wait_for(network.relay.run_once(), 120.0) == ["advice:p1"]
    assert network.outbox.state("presentment:k2") == "delivered"
    assert network.outbox.state("advice:p1") == "delivered"  # delivered by the presentment, before it
    auth = (await live.client.get("http://issuer/v1/authorizations/p1")).json()
    assert auth["stand_in"] and auth["state"] == "captured", auth
    await assert_clean(live)


async def test_a_row_in_doubt_ended_by_its_presenter_s_retry_counts_as_resolved(
        live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the network reports its outbox rows in doubt until each is no longer owed,
    whoever ends it: here the presenter's retry completes the presentment in its own request."""
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    network = live.apps["network"].state
    capture = {"kind": "capture", "auth_id": "p1", "amount": "5000.00"}
    with monkeypatch.context() as patch:
        patch.setattr(network.network_service.ctx, "run_command", lambda *_a, **_k: 1 / 0)  # dies mid-way
        with contextlib.suppress(ZeroDivisionError):
            await live.post("http://network/v1/presentments", capture, "k2")
    report = RecoveryReport(service="network", outbox_found=network.outbox.undelivered())  # as at a restart
    assert report.as_dict(network.outbox)["in_doubt_left"] == 1
    retry = await live.post("http://network/v1/presentments", capture, "k2")
    assert retry.status_code == 201, retry.text
    assert report.as_dict(network.outbox)["in_doubt_left"] == 0
    await assert_clean(live)
