"""The party-ledger service over HTTP (services/api/ledger_service.py), on SQLite and PostgreSQL:
every endpoint's happy path, the result-to-HTTP table, and the bad-input catalogue of issue 8 item 4
(each a 4xx problem naming the field, and no row written)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from conftest import SQL_BACKENDS, LedgerAppFactory
from fastapi import FastAPI

from services.api import PROBLEM_MEDIA_TYPE
from services.api.ledger_results import ACCOUNT_OUTCOMES, TRANSFER_OUTCOMES
from services.ledger import AccountResult, TransferResult


@pytest.fixture
def app(ledger_app_factory: LedgerAppFactory) -> FastAPI:
    return ledger_app_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank") as c:
        yield c


_keys = iter(range(10**9))


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{next(_keys)}"}


def transfer(tid: str, debit: str, credit: str, amount: str, asset: str = "KZT", **extra: Any) -> dict[str, Any]:
    return {"id": tid, "debit_account_id": debit, "credit_account_id": credit, "amount": amount,
            "asset": asset, **extra}


async def seed(client: httpx.AsyncClient) -> None:
    """cash (unflagged), wallet (flagged, 1,000.00 KZT), shop, eth-cash/eth-wallet, and a hold."""
    for body in [
        {"id": "cash", "asset": "KZT", "owner": "bank", "kind": "cash"},
        {"id": "wallet", "asset": "KZT", "owner": "Әлия", "kind": "wallet",
         "flags": ["debits_must_not_exceed_credits"]},
        {"id": "shop", "asset": "KZT", "owner": "shop", "kind": "merchant"},
        {"id": "eth-cash", "asset": "ETH"},
        {"id": "eth-wallet", "asset": "ETH", "flags": ["debits_must_not_exceed_credits"]},
    ]:
        assert (await client.post("/v1/accounts", json=body)).status_code == 201
    r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("fund", "cash", "wallet", "1000.00"),
        transfer("hold", "wallet", "shop", "100.00", pending=True, timeout_s=3600),
    ]})
    assert r.status_code == 201, r.text


def rows(app: FastAPI) -> tuple[int, int, int]:
    ledger = app.state.ledger
    return len(list(ledger.accounts())), len(ledger), app.state.ledger_service.keys.count()


def assert_problem(response: httpx.Response, status: int | None = None, field: str | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["type"].startswith("urn:ccsim:problem:")
    fields = [e["field"] for e in body["errors"]]
    assert fields or response.status_code == 405, body
    if field is not None:
        assert field in fields, body
    return body


# -- the one table ---------------------------------------------------------------------------------


def test_every_ledger_result_has_an_http_outcome() -> None:
    assert set(TRANSFER_OUTCOMES) == set(TransferResult)
    assert set(ACCOUNT_OUTCOMES) == set(AccountResult)
    for outcomes in (TRANSFER_OUTCOMES, ACCOUNT_OUTCOMES):
        for result, outcome in outcomes.items():
            assert outcome.ok == (result.name in ("OK", "EXISTS"))
            assert outcome.status in (200, 201, 404, 409, 422) and (outcome.ok or outcome.field)


# -- happy paths -----------------------------------------------------------------------------------


async def test_accounts_create_replay_conflict_and_read(client: httpx.AsyncClient) -> None:
    body = {"id": "w1", "asset": "KZT", "owner": "Ерлан", "flags": ["debits_must_not_exceed_credits"]}
    created = await client.post("/v1/accounts", json=body)
    assert created.status_code == 201
    assert created.json() | {"timestamp": 0} == {
        "id": "w1", "asset": "KZT", "owner": "Ерлан", "kind": "", "flags": ["debits_must_not_exceed_credits"],
        "debits_pending": "0.00", "debits_posted": "0.00", "credits_pending": "0.00", "credits_posted": "0.00",
        "credit_balance": "0.00", "debit_balance": "0.00", "available_credit_balance": "0.00", "timestamp": 0}
    again = await client.post("/v1/accounts", json=body)
    assert again.status_code == 200 and again.json() == created.json()
    assert_problem(await client.post("/v1/accounts", json=body | {"owner": "other"}), 409, "owner")
    assert_problem(await client.post("/v1/accounts", json=body | {"flags": []}), 409, "flags")
    assert (await client.get("/v1/accounts/w1")).json() == created.json()
    assert_problem(await client.get("/v1/accounts/nobody"), 404, "account_id")


async def test_transfers_single_linked_batch_and_replays(client: httpx.AsyncClient, app: FastAPI) -> None:
    await seed(client)
    r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("pay-1", "wallet", "shop", "250.50", code="purchase", user_data="order 7")]})
    assert r.status_code == 201
    (out,) = r.json()["transfers"]
    assert out | {"timestamp": 0} == {
        "id": "pay-1", "debit_account_id": "wallet", "credit_account_id": "shop", "amount": "250.50",
        "asset": "KZT", "code": "purchase", "user_data": "order 7", "flags": [], "pending_id": "",
        "timeout_s": 0.0, "timestamp": 0, "pending_state": None}
    # Another key, same transfer id and fields: the ledger's own idempotency says "exists" (200).
    r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("pay-1", "wallet", "shop", "250.50", code="purchase", user_data="order 7")]})
    assert r.status_code == 200 and r.json()["transfers"] == [out]
    assert_problem(await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("pay-1", "wallet", "shop", "250.51", code="purchase", user_data="order 7")]}),
        409, "transfers[0].amount")
    # A linked batch: fee and payment together.
    r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("pay-2", "wallet", "shop", "100.00"), transfer("fee-2", "wallet", "cash", "1.00")]})
    assert r.status_code == 201 and [t["id"] for t in r.json()["transfers"]] == ["pay-2", "fee-2"]
    assert [t["flags"] for t in r.json()["transfers"]] == [["linked"], []]
    wallet = (await client.get("/v1/accounts/wallet")).json()
    assert wallet["credit_balance"] == "648.50" and wallet["debits_pending"] == "100.00"
    assert wallet["available_credit_balance"] == "548.50"
    assert (await client.get("/v1/transfers/pay-2")).json()["amount"] == "100.00"
    assert_problem(await client.get("/v1/transfers/none"), 404, "transfer_id")
    assert rows(app)[1] == 5


async def test_a_failing_member_fails_the_whole_batch(client: httpx.AsyncClient, app: FastAPI) -> None:
    await seed(client)
    before = rows(app)
    body = assert_problem(await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("ok-1", "wallet", "shop", "1.00"), transfer("too-much", "wallet", "shop", "5000.00")]}),
        422, "transfers[1].amount")
    assert body["type"] == "urn:ccsim:problem:exceeds-credits" and "nothing in the batch" in body["detail"]
    assert rows(app) == before
    assert_problem(await client.get("/v1/transfers/ok-1"), 404)


async def test_holds_post_in_part_void_and_conflicts(client: httpx.AsyncClient) -> None:
    await seed(client)
    r = await client.post("/v1/transfers/hold/post", headers=key(), json={"id": "hold-post", "amount": "60.00"})
    assert r.status_code == 201, r.text
    assert r.json() | {"timestamp": 0} == {
        "id": "hold-post", "debit_account_id": "wallet", "credit_account_id": "shop", "amount": "60.00",
        "asset": "KZT", "code": "", "user_data": "", "flags": ["post_pending"], "pending_id": "hold",
        "timeout_s": 0.0, "timestamp": 0, "pending_state": None}
    assert (await client.get("/v1/transfers/hold")).json()["pending_state"] == "posted"
    wallet = (await client.get("/v1/accounts/wallet")).json()
    assert (wallet["credit_balance"], wallet["debits_pending"]) == ("940.00", "0.00")
    assert_problem(await client.post("/v1/transfers/hold/void", headers=key(), json={"id": "hold-void"}),
                   409, "pending_id")
    # A second hold, voided; then a post of it is a conflict.
    await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("hold-2", "wallet", "shop", "10.00", pending=True, timeout_s=60)]})
    r = await client.post("/v1/transfers/hold-2/void", headers=key(), json={"id": "hold-2-void", "code": "cancel"})
    assert r.status_code == 201 and r.json()["flags"] == ["void_pending"] and r.json()["amount"] == "10.00"
    body = assert_problem(await client.post("/v1/transfers/hold-2/post", headers=key(), json={"id": "hold-2-post"}),
                          409, "pending_id")
    assert body["type"] == "urn:ccsim:problem:pending-transfer-already-voided"
    # Resolving a transfer that is not a hold.
    assert_problem(await client.post("/v1/transfers/fund/post", headers=key(), json={"id": "fund-post"}),
                   422, "pending_id")


async def test_eth_amounts_above_2_63_are_exact(client: httpx.AsyncClient) -> None:
    await seed(client)
    amount = "12345.678901234567890123"  # 12345678901234567890123 wei > 2**63
    r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
        transfer("eth-1", "eth-cash", "eth-wallet", amount, "ETH")]})
    assert r.status_code == 201 and r.json()["transfers"][0]["amount"] == "12345.678901234567890123"
    assert (await client.get("/v1/accounts/eth-wallet")).json()["credit_balance"] == amount


async def test_statement_pages_through_an_accounts_journal(client: httpx.AsyncClient) -> None:
    await seed(client)
    for i in range(5):
        r = await client.post("/v1/transfers", headers=key(), json={"transfers": [
            transfer(f"p{i}", "wallet", "shop", f"{i + 1}.00")]})
        assert r.status_code == 201
    first = (await client.get("/v1/accounts/wallet/statement", params={"limit": 3})).json()
    assert first["account_id"] == "wallet" and first["asset"] == "KZT"
    assert [(x["transfer_id"], x["side"], x["counterparty_account_id"], x["amount"]) for x in first["lines"]] == [
        ("fund", "credit", "cash", "1000.00"), ("hold", "debit", "shop", "100.00"), ("p0", "debit", "shop", "1.00")]
    assert [x["flags"] for x in first["lines"]] == [["linked"], ["pending"], []]
    second = (await client.get("/v1/accounts/wallet/statement",
                               params={"after_seq": first["next_after_seq"], "limit": 3})).json()
    assert [x["transfer_id"] for x in second["lines"]] == ["p1", "p2", "p3"]
    last = (await client.get("/v1/accounts/wallet/statement",
                             params={"after_seq": second["next_after_seq"], "limit": 3})).json()
    assert [x["transfer_id"] for x in last["lines"]] == ["p4"] and last["next_after_seq"] is None
    shop = (await client.get("/v1/accounts/shop/statement")).json()
    assert all(x["side"] == "credit" for x in shop["lines"]) and len(shop["lines"]) == 6
    assert_problem(await client.get("/v1/accounts/nobody/statement"), 404, "account_id")
    assert_problem(await client.get("/v1/accounts/wallet/statement", params={"limit": 0}), 422, "limit")


async def test_invariants_endpoint(client: httpx.AsyncClient) -> None:
    await seed(client)
    assert (await client.get("/v1/ledger/invariants")).json() == {"party": "bank", "ok": True, "violations": []}


# -- the bad-input catalogue (issue 8, item 4) -----------------------------------------------------


@dataclass
class Bad:
    """One bad request: where it goes, what it sends, and the field the problem must name."""

    name: str
    path: str = "/v1/transfers"
    body: Any = None  # JSON-able; or bytes to send as they are
    headers: dict[str, Any] = field(default_factory=dict)
    field: str | None = None
    status: int | None = None
    key: bool = True  # add a fresh Idempotency-Key


def _t(**changes: Any) -> dict[str, Any]:
    return {"transfers": [transfer("bad-1", "wallet", "shop", "10.00") | changes]}


def _raw_amount(literal: str) -> bytes:
    return ('{"transfers": [{"id": "bad-1", "debit_account_id": "wallet", "credit_account_id": "shop", '
            f'"amount": {literal}, "asset": "KZT"}}]}}').encode()


CATALOGUE = [
    # amounts
    Bad("zero", body=_t(amount="0"), field="transfers[0].amount", status=422),
    Bad("zero with decimals", body=_t(amount="0.00"), field="transfers[0].amount", status=422),
    Bad("negative", body=_t(amount="-5.00"), field="transfers[0].amount", status=422),
    Bad("minus zero", body=_t(amount="-0"), field="transfers[0].amount", status=422),
    Bad("more decimals than the scale", body=_t(amount="1.001"), field="transfers[0].amount", status=422),
    Bad("NaN as text", body=_t(amount="NaN"), field="transfers[0].amount", status=422),
    Bad("Infinity as text", body=_t(amount="Infinity"), field="transfers[0].amount", status=422),
    Bad("1e309 as text", body=_t(amount="1e309"), field="transfers[0].amount", status=422),
    Bad("NaN literal", body=_raw_amount("NaN"), field="body", status=400),
    Bad("Infinity literal", body=_raw_amount("Infinity"), field="body", status=400),
    Bad("-Infinity literal", body=_raw_amount("-Infinity"), field="body", status=400),
    Bad("1e309 literal", body=_raw_amount("1e309"), field="body", status=400),
    Bad("2^63 as a number", body=_raw_amount(str(2**63)), field="transfers[0].amount", status=422),
    Bad("2^128 as a number", body=_raw_amount(str(2**128)), field="transfers[0].amount", status=422),
    Bad("2^63 as text, above the balance", body=_t(amount=str(2**63)), field="transfers[0].amount", status=422),
    Bad("2^128 as text, above the maximum", body=_t(amount=str(2**128)), field="transfers[0].amount",
        status=422),
    Bad("a float", body=_raw_amount("10.5"), field="transfers[0].amount", status=422),
    Bad("thousands separator", body=_t(amount="1,000"), field="transfers[0].amount", status=422),
    Bad("Arabic-Indic digits", body=_t(amount="١٠"), field="transfers[0].amount", status=422),
    Bad("full-width digits", body=_t(amount="１０"), field="transfers[0].amount", status=422),
    Bad("leading plus", body=_t(amount="+10"), field="transfers[0].amount", status=422),
    Bad("spaces", body=_t(amount=" 10"), field="transfers[0].amount", status=422),
    Bad("exponent", body=_t(amount="1e3"), field="transfers[0].amount", status=422),
    Bad("null amount", body=_t(amount=None), field="transfers[0].amount", status=422),
    # assets and ids
    Bad("unknown asset", body=_t(asset="XYZ"), field="transfers[0].asset", status=422),
    Bad("lower-case asset", body=_t(asset="kzt"), field="transfers[0].asset", status=422),
    Bad("asset other than the accounts'", body=_t(asset="BTC"), field="transfers[0].asset", status=422),
    Bad("accounts of two assets", body=_t(credit_account_id="eth-wallet"), field="transfers[0].credit_account_id",
        status=422),
    Bad("unknown debit account", body=_t(debit_account_id="ghost"), field="transfers[0].debit_account_id",
        status=404),
    Bad("unknown credit account", body=_t(credit_account_id="ghost"), field="transfers[0].credit_account_id",
        status=404),
    Bad("same account twice", body=_t(credit_account_id="wallet"), field="transfers[0].credit_account_id",
        status=422),
    Bad("id with a space", body=_t(id="bad 1"), field="transfers[0].id", status=422),
    Bad("id of 129 characters", body=_t(id="x" * 129), field="transfers[0].id", status=422),
    Bad("NUL escaped in an id", body=_t(id="bad\u00001"), field="transfers[0].id", status=422),
    Bad("NUL escaped in user data", body=_t(user_data="a\u0000b"), field="transfers[0].user_data", status=422),
    Bad("lone surrogate in user data", body=b'{"transfers": [{"id": "bad-1", "debit_account_id": "wallet", '
        b'"credit_account_id": "shop", "amount": "1.00", "asset": "KZT", "user_data": "\\ud800"}]}',
        field="transfers[0].user_data", status=422),
    # shape
    Bad("extra field", body=_t(colour="red"), field="transfers[0].colour", status=422),
    Bad("pending as text", body=_t(pending="true"), field="transfers[0].pending", status=422),
    Bad("timeout as text", body=_t(pending=True, timeout_s="10"), field="transfers[0].timeout_s", status=422),
    Bad("negative timeout", body=_t(pending=True, timeout_s=-1), field="transfers[0].timeout_s", status=422),
    Bad("timeout without a hold", body=_t(timeout_s=10), field="transfers[0].timeout_s", status=422),
    Bad("empty batch", body={"transfers": []}, field="transfers", status=422),
    Bad("batch of 65", body={"transfers": [transfer(f"b{i}", "wallet", "shop", "1.00") for i in range(65)]},
        field="transfers", status=422),
    Bad("second member bad", body={"transfers": [transfer("good", "wallet", "shop", "1.00"),
                                                 transfer("bad", "wallet", "ghost", "1.00")]},
        field="transfers[1].credit_account_id", status=404),
    Bad("not an object", body=[1, 2], field="body", status=422),
    Bad("empty body", body=b"", field="body", status=400),
    # idempotency key
    Bad("missing key", body=_t(), key=False, field="Idempotency-Key", status=400),
    Bad("empty key", body=_t(), key=False, headers={"Idempotency-Key": ""}, field="Idempotency-Key", status=400),
    Bad("key of 129 characters", body=_t(), key=False, headers={"Idempotency-Key": "k" * 129},
        field="Idempotency-Key", status=400),
    Bad("non-ASCII key", body=_t(), key=False, headers={"Idempotency-Key": "ключ".encode()},
        field="Idempotency-Key", status=400),
    Bad("replay with another body", body=_t(id="fund", amount="999.00"), key=False,
        headers={"Idempotency-Key": "seed-key"}, field="Idempotency-Key", status=422),
    # bytes on the wire
    Bad("body over the limit", body=json.dumps(_t(user_data="x" * 70_000)).encode(), field="body", status=413),
    Bad("JSON nested 100,000 deep", body=b"[" * 100_000 + b"]" * 100_000, field="body", status=413),
    Bad("JSON nested 1,000 deep", body=b'{"transfers": ' + b"[" * 1000 + b"]" * 1000 + b"}", field="body",
        status=400),
    Bad("wrong content type", body=json.dumps(_t()).encode(), headers={"content-type": "text/plain"},
        field="Content-Type", status=415),
    Bad("form content type", body=b"amount=10", headers={"content-type": "application/x-www-form-urlencoded"},
        field="Content-Type", status=415),
    Bad("invalid UTF-8", body=b'{"transfers": [{"id": "\xff\xfe"}]}', field="body", status=400),
    Bad("NUL byte", body=b'{"transfers": [{"id": "a\x00b"}]}', field="body", status=400),
    Bad("NUL byte outside strings", body=b'{"transfers": []}\x00', field="body", status=400),
    Bad("duplicate keys", body=b'{"transfers": [{"id": "a", "id": "b", "debit_account_id": "wallet", '
        b'"credit_account_id": "shop", "amount": "1.00", "asset": "KZT"}]}', field="body", status=400),
    Bad("duplicate top-level keys", body=b'{"transfers": [], "transfers": []}', field="body", status=400),
    Bad("truncated JSON", body=b'{"transfers": [', field="body", status=400),
    # resolutions of holds
    Bad("post above the hold", path="/v1/transfers/hold/post", body={"id": "hp", "amount": "100.01"},
        field="amount", status=422),
    Bad("post of zero", path="/v1/transfers/hold/post", body={"id": "hp", "amount": "0.00"}, field="amount",
        status=422),
    Bad("post with too many decimals", path="/v1/transfers/hold/post", body={"id": "hp", "amount": "1.005"},
        field="amount", status=422),
    Bad("post NaN", path="/v1/transfers/hold/post", body={"id": "hp", "amount": "NaN"}, field="amount", status=422),
    Bad("post of an unknown hold", path="/v1/transfers/ghost/post", body={"id": "hp"}, field="pending_id",
        status=404),
    Bad("void of an unknown hold", path="/v1/transfers/ghost/void", body={"id": "hv"}, field="pending_id",
        status=404),
    Bad("void with the hold's id", path="/v1/transfers/hold/void", body={"id": "hold"}, field="id", status=422),
    Bad("void with an amount", path="/v1/transfers/hold/void", body={"id": "hv", "amount": "1.00"}, field="amount",
        status=422),
    Bad("post without a key", path="/v1/transfers/hold/post", body={"id": "hp"}, key=False,
        field="Idempotency-Key", status=400),
    Bad("void with a bad key", path="/v1/transfers/hold/void", body={"id": "hv"}, key=False,
        headers={"Idempotency-Key": "with space"}, field="Idempotency-Key", status=400),
    Bad("post with a bad hold id", path="/v1/transfers/bad%20id/post", body={"id": "hp"}, field="pending_id",
        status=422),
    # accounts (not money-moving, but they take input too)
    Bad("account of an unknown asset", path="/v1/accounts", body={"id": "a1", "asset": "XYZ"}, field="asset",
        status=422, key=False),
    Bad("account with both flags", path="/v1/accounts", key=False, status=422, field="flags", body={
        "id": "a1", "asset": "KZT", "flags": ["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]}),
    Bad("account with an unknown flag", path="/v1/accounts", key=False, status=422, field="flags[0]",
        body={"id": "a1", "asset": "KZT", "flags": ["overdraft"]}),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=SQL_BACKENDS)
async def seeded(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One seeded ledger service per database for the whole catalogue (a service per case was 156
    starts). A rejected request writes nothing, and each case checks that it did not, so every case
    finds the service as it was seeded. The invariants are checked again at the end."""
    factory = LedgerAppFactory(request.param, tmp_path_factory.mktemp(f"catalogue-{request.param}"))
    try:
        app = factory()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank") as client:
            await seed(client)
            paid = await client.post("/v1/transfers", headers={"Idempotency-Key": "seed-key"},
                                     json={"transfers": [transfer("seed-pay", "wallet", "shop", "1.00")]})
            assert paid.status_code == 201, paid.text
            yield app, client
    finally:
        problems = factory.finish()
    assert not problems, "invariants violated at the end of the catalogue:\n" + "\n".join(problems)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
async def test_bad_input_is_a_4xx_problem_and_writes_nothing(bad: Bad,
                                                             seeded: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = seeded
    before = rows(app)
    headers = dict(bad.headers) | (key() if bad.key else {})
    if isinstance(bad.body, bytes):
        headers.setdefault("content-type", "application/json")
        response = await client.post(bad.path, content=bad.body, headers=headers)
    else:
        response = await client.post(bad.path, json=bad.body, headers=headers)
    assert_problem(response, bad.status, bad.field)
    assert rows(app) == before, "a rejected request wrote rows"
    assert app.state.ledger.check_invariants() == []  # in process: the HTTP route's checks bucket would run dry


def test_the_catalogue_covers_issue_8() -> None:
    names = {b.name for b in CATALOGUE}
    assert len(CATALOGUE) >= 70 and len(names) == len(CATALOGUE)


# -- concurrency (in process: the handlers run on the thread pool) ---------------------------------


async def test_one_key_sent_forty_times_at_once_has_one_effect(client: httpx.AsyncClient, app: FastAPI) -> None:

    await seed(client)
    body = {"transfers": [transfer("once", "wallet", "shop", "5.00")]}
    responses = await asyncio.gather(*[
        client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "same"}) for _ in range(40)])
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {201, 409}, statuses
    winners = [r for r in responses if r.status_code == 201]
    assert winners and all(r.json() == winners[0].json() for r in winners)
    assert sum("idempotent-replayed" not in r.headers for r in winners) == 1
    assert (await client.get("/v1/accounts/wallet")).json()["credit_balance"] == "995.00"


async def test_concurrent_debits_never_overdraw(client: httpx.AsyncClient) -> None:

    await seed(client)  # wallet: 1,000.00 with a hold of 100.00, so 900.00 available
    responses = await asyncio.gather(*[
        client.post("/v1/transfers", headers=key(), json={"transfers": [
            transfer(f"d{i}", "wallet", "shop", "100.00")]}) for i in range(30)])
    assert sorted(r.status_code for r in responses) == [201] * 9 + [422] * 21
    wallet = (await client.get("/v1/accounts/wallet")).json()
    assert (wallet["credit_balance"], wallet["available_credit_balance"]) == ("100.00", "0.00")
