"""CryptoCity's direct rail at the live exchange (``/v1/direct/*``), over ASGI on SQLite and
PostgreSQL: a payment, its refund and the merchant's conversion end to end with the books checked;
replays; bad input answered 4xx naming the field with nothing written; the conversion's tenge
entering the merchant's books only from the bank service; a restart on the books."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SQL_BACKENDS
from test_auth import signed_as
from test_differential_direct import make_seed
from test_live_parties import FACTORIES, Live, assert_clean, started, unchanged_live_fixture

from services.api import close_app
from services.money import D


@pytest.fixture(params=SQL_BACKENDS)
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Live]:
    async with started(request.param, tmp_path, make_seed()) as parties:
        yield parties


unchanged_live = unchanged_live_fixture(make_seed)  # the bad-input cases: each checks it changed nothing


def invoice(inv: str, amount: str = "60000.00", holder: str = "h1", merchant: str = "z1",
            priority: tuple[str, ...] = ("BTC",)) -> dict[str, Any]:
    return {"invoice_id": inv, "holder_id": holder, "merchant_id": merchant, "amount": amount,
            "asset_priority": list(priority)}


def sizes(live: Live) -> list[int]:
    """Every journal's length, the zone merchants' included, and the exchange's command log's."""
    svc = live.apps["exchange"].state.exchange_service
    return [*live.journal_sizes(), len(svc.merchants_ledger), len(live.apps["exchange"].state.party.durable)]


async def pay(live: Live, inv: str, **kw: Any) -> httpx.Response:
    q = await live.post("http://exchange/v1/direct/quotes", invoice(inv, **kw), f"q-{inv}")
    assert q.status_code == 201, q.text
    return await live.post("http://exchange/v1/direct/payments", {"invoice_id": inv}, f"p-{inv}")


async def merchant(live: Live, merchant_id: str = "z1") -> dict[str, Any]:
    r = await live.client.get(f"http://exchange/v1/direct/merchants/{merchant_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_payment_its_refund_and_the_merchants_conversion(live: Live) -> None:
    q = await live.post("http://exchange/v1/direct/quotes", invoice("d1"), "q1")
    assert q.status_code == 201, q.text
    quote = q.json()
    # 60,000 KZT at 45,000,000 KZT/BTC = 0.00133334 BTC (rounded up: the payee gets at least the invoice)
    assert quote["asset"] == "BTC" and D(quote["quantity"]) == D("0.00133334")
    assert quote["expires_at_s"] - quote["quoted_at_s"] == 30.0  # the chain's direct_quote_ttl_s
    r = await live.post("http://exchange/v1/direct/payments", {"invoice_id": "d1"}, "p1")
    assert r.status_code == 201, r.text
    paid = r.json()
    assert paid["quantity"] == quote["quantity"] and D(paid["fee"]) == D("0.00000667")  # 50 bps, rounded up
    before = sizes(live)
    again = await live.post("http://exchange/v1/direct/payments", {"invoice_id": "d1"}, "p1")
    assert again.content == r.content and again.headers["Idempotent-Replayed"] == "true"
    other_key = await live.post("http://exchange/v1/direct/payments", {"invoice_id": "d1"}, "p1-bis")
    assert other_key.status_code == 200 and other_key.json() == paid  # the first payment, nothing new
    assert sizes(live)[:-1] == before[:-1]
    assert (await live.client.get("http://exchange/v1/direct/payments/d1")).json() == paid
    z1 = await merchant(live)
    assert z1["books"]["BTC"] == z1["wallets"]["BTC"] == f"{D(paid['quantity']) - D(paid['fee']):.8f}"
    r = await live.post("http://exchange/v1/direct/refunds", {"id": "d1:r1", "invoice_id": "d1", "amount": "30000.00"},
                        "r1")
    assert r.status_code == 201 and D(r.json()["quantity"]) == D("0.00066667"), r.text  # half, rounded down
    held = (await merchant(live))["wallets"]["BTC"]
    r = await live.post("http://exchange/v1/direct/conversions", {"merchant_id": "z1", "asset": "BTC",
                                                                  "quantity": held}, "c1")
    assert r.status_code == 201, r.text
    sale = r.json()
    assert sale["id"] == "conv:z1:1" and sale["delivered"] is True and D(sale["net"]) > 0
    z1 = await merchant(live)
    assert D(z1["wallets"]["BTC"]) == 0 and z1["books"]["BTC"] == z1["wallets"]["BTC"]
    assert z1["bank"] == sale["net"]  # the tenge reached its books through the banks
    statement = (await live.client.get("http://bank/v1/banks/bank-1/customers/merchant:z1")).json()
    assert statement["balance"] == sale["net"]  # and its bank account
    await assert_clean(live)


async def test_a_decline_names_its_reason_and_changes_nothing(live: Live) -> None:
    before = sizes(live)
    r = await live.post("http://exchange/v1/direct/quotes", invoice("d2", "250000.00", "h3", priority=("ETH",)), "q2")
    assert r.status_code == 422 and r.json()["errors"][0] == {"field": "amount", "reason": "exceeds_amount_limit"}
    r = await live.post("http://exchange/v1/direct/quotes", invoice("d3", "5000.00", "h2"), "q3")
    assert r.status_code == 422 and r.json()["errors"][0]["reason"] == "insufficient_balance"
    assert sizes(live) == before


@pytest.mark.asyncio(loop_scope="class")
class TestBadInput:
    """Bad input at the direct rail: a 4xx naming the field, nothing written (one set per database)."""

    @pytest.mark.parametrize(("path", "body", "status", "field"), [
        ("quotes", invoice("b1", amount="0"), 422, "amount"),
        ("quotes", invoice("b1", amount="1.001"), 422, "amount"),
        ("quotes", {**invoice("b1"), "amount": 60000}, 422, "amount"),
        ("quotes", invoice("b1", holder="ghost"), 404, "holder_id"),
        ("quotes", invoice("b1", merchant="m2"), 404, "merchant_id"),  # not in the zone
        ("quotes", invoice("b1", priority=("DOGE",)), 422, "asset_priority[0]"),
        ("quotes", invoice("b1", priority=()), 422, "asset_priority"),
        ("quotes", {**invoice("b1"), "ttl_s": 86_400.0}, 422, "ttl_s"),
        ("quotes", {**invoice("b1"), "tip": "1.00"}, 422, "tip"),
        ("payments", {"invoice_id": "never-quoted"}, 404, "invoice_id"),
        ("refunds", {"id": "r9", "invoice_id": "never-paid", "amount": "1.00"}, 404, "invoice_id"),
        ("refunds", {"id": "r9", "invoice_id": "x", "amount": "-1.00"}, 422, "amount"),
        ("conversions", {"merchant_id": "m2", "asset": "BTC", "quantity": "0.001"}, 404, "merchant_id"),
        ("conversions", {"merchant_id": "z1", "asset": "BTC", "quantity": "0.000000001"}, 422, "quantity"),
        ("conversions", {"merchant_id": "z1", "asset": "BTC", "quantity": "0.001"}, 422, "quantity"),  # holds none
        ("conversions", {"merchant_id": "z1", "asset": "DOGE", "quantity": "1"}, 422, "asset"),
    ])
    async def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(
        self, unchanged_live: Live, path: str, body: dict[str, Any], status: int, field: str,
    ) -> None:
        live = unchanged_live
        before = sizes(live)
        r = await live.post(f"http://exchange/v1/direct/{path}", body, f"k-bad-{uuid.uuid4().hex[:8]}")
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == field
        assert sizes(live) == before
        for url in ("http://exchange/v1/direct/payments/nope", "http://exchange/v1/direct/merchants/m2"):
            assert (await live.client.get(url)).status_code == 404


async def test_a_conversions_tenge_enters_a_merchants_books_only_from_the_bank_service(live: Live) -> None:
    msg = {"id": "conv:z1:1", "purpose": "conversion", "payer": "exchange", "payee": "merchant:z1",
           "payer_bank": "bank-1", "payee_bank": "bank-1", "amount": "100.00"}
    before = sizes(live)
    url = "http://exchange/v1/inbox/merchant:z1"
    raw, headers = signed_as("exchange", "POST", url, msg, "k-forged")
    r = await live.client.post(url, content=raw, headers=headers)
    assert r.status_code == 403, r.text  # the exchange cannot make a merchant's books say it was paid
    raw, headers = signed_as("bank", "POST", url, msg, "k-unknown")
    r = await live.client.post(url, content=raw, headers=headers)
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "id"  # no such conversion
    assert sizes(live) == before


async def test_the_exchange_restarts_on_its_books_and_the_merchants(live: Live) -> None:
    assert (await pay(live, "d1")).status_code == 201
    assert (await live.post("http://exchange/v1/direct/refunds", {"id": "d1:r1", "invoice_id": "d1",
                                                                  "amount": "10000.00"}, "r1")).status_code == 201
    r = await live.post("http://exchange/v1/direct/conversions", {"merchant_id": "z1", "asset": "BTC",
                                                                  "quantity": "0.0005"}, "c1")
    assert r.status_code == 201, r.text
    q = await live.post("http://exchange/v1/direct/quotes", invoice("d2", "20000.00"), "q-d2")
    assert q.status_code == 201  # an open quote: it survives the restart
    before = await merchant(live)
    close_app(live.apps["exchange"])  # the process is gone; its database stays
    app = FACTORIES["exchange"](live.settings("exchange", resume=True), http_client=live.outbound,
                                clock=None)
    live.apps["exchange"] = app
    live.router.apps["exchange"] = httpx.ASGITransport(app=app)
    assert app.state.party.durable.report.started == "replayed"
    assert await merchant(live) == before
    r = await live.post("http://exchange/v1/direct/payments", {"invoice_id": "d2"}, "p-d2")
    assert r.status_code == 201, r.text
    r = await live.post("http://exchange/v1/direct/conversions", {"merchant_id": "z1", "asset": "BTC",
                                                                  "quantity": "0.0001"}, "c2")
    assert r.status_code == 201 and r.json()["id"] == "conv:z1:2", r.text  # numbered on from the log
    await assert_clean(live)
