"""A presentment whose issuer half committed is completed, even if its request never finished.

The network resolves a capture at the issuer first, then books the acquirer's half. If the network
dies between the two (or the presenter stops retrying), the issuer's capture would stand alone: a
reconciliation break, and a merchant never paid. The network records each presentment in its outbox
before it starts, and its relay completes a row left pending (services/api/parties/network).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_live_parties import Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported


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
