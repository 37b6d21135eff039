"""``GET /v1/snapshot/accounts?ids=…``: several balances from one snapshot (what the bank check reads).

Its point is consistency: while transfers move money between the accounts, every batch read must
sum to the same total, which reading the accounts one request at a time does not promise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from conftest import LedgerAppFactory
from fastapi import FastAPI

from services.api import PROBLEM_MEDIA_TYPE
from services.api.ledger_service import ACCOUNTS_PER_READ_MAX

WALLETS = [f"w{i}" for i in range(6)]
FUNDING = Decimal("1000.00")


@pytest.fixture
def app(ledger_app_factory: LedgerAppFactory) -> FastAPI:
    return ledger_app_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank") as c:
        yield c


async def seed(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/accounts", json={"id": "house", "asset": "KZT"})).status_code == 201
    for w in WALLETS:
        r = await client.post("/v1/accounts", json={"id": w, "asset": "KZT",
                                                     "flags": ["debits_must_not_exceed_credits"]})
        assert r.status_code == 201, r.text
    r = await client.post("/v1/transfers", headers={"Idempotency-Key": "fund"}, json={"transfers": [
        {"id": f"fund-{w}", "debit_account_id": "house", "credit_account_id": w,
         "amount": str(FUNDING), "asset": "KZT"} for w in WALLETS]})
    assert r.status_code == 201, r.text


async def test_batch_read_returns_the_accounts_in_order_once_each(client: httpx.AsyncClient) -> None:
    await seed(client)
    r = await client.get("/v1/snapshot/accounts", params={"ids": "w3,house,w0,w3"})
    assert r.status_code == 200, r.text
    accounts = r.json()["accounts"]
    assert [a["id"] for a in accounts] == ["w3", "house", "w0"]
    assert [a["credit_balance"] for a in accounts] == ["1000.00", "-6000.00", "1000.00"]
    single = (await client.get("/v1/accounts/w3")).json()
    assert accounts[0] == single


@pytest.mark.parametrize(("ids", "status"), [
    ("w0,nobody,w1,ghost", 404),  # unknown ids: each named
    ("", 422), ("w0,,w1", 422), ("w0, w1", 422), ("w0;w1", 422), ("-w0", 422),
    (",".join(f"w{i}" for i in range(ACCOUNTS_PER_READ_MAX + 1)), 422),  # too many
])
async def test_batch_read_refuses_bad_or_unknown_ids(client: httpx.AsyncClient, ids: str, status: int) -> None:
    await seed(client)
    r = await client.get("/v1/snapshot/accounts", params={"ids": ids})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    errors = r.json()["errors"]
    assert errors and all(e["field"] == "ids" for e in errors), errors
    if status == 404:
        assert [e["reason"] for e in errors] == ["not found: nobody", "not found: ghost"]


async def test_missing_ids_parameter_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/snapshot/accounts")
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_MEDIA_TYPE


async def test_every_batch_read_sums_to_the_total_while_transfers_run(client: httpx.AsyncClient) -> None:
    """Transfers between the wallets (threads in the app's pool) and batch reads interleave."""
    await seed(client)
    rng = random.Random(8)
    total = FUNDING * len(WALLETS)
    sums: list[Decimal] = []
    accepted = 0

    async def move(n: int) -> None:
        nonlocal accepted
        debit, credit = rng.sample(WALLETS, 2)
        r = await client.post("/v1/transfers", headers={"Idempotency-Key": f"k{n}"}, json={"transfers": [
            {"id": f"t{n}", "debit_account_id": debit, "credit_account_id": credit,
             "amount": f"{rng.randint(1, 40000) / 100:.2f}", "asset": "KZT"}]})
        assert r.status_code in (201, 422), r.text
        accepted += r.status_code == 201

    async def read() -> None:
        r = await client.get("/v1/snapshot/accounts", params={"ids": ",".join(WALLETS)})
        assert r.status_code == 200, r.text
        balances = [Decimal(a["credit_balance"]) for a in r.json()["accounts"]]
        assert min(balances) >= 0
        sums.append(sum(balances, Decimal(0)))

    await asyncio.gather(*(move(n) if n % 3 else read() for n in range(150)))
    assert accepted > 20  # money did move while the reads ran
    assert len(sums) == 50 and set(sums) == {total}
