"""The live party services in-process: every endpoint over ``httpx.ASGITransport``, on SQLite and
PostgreSQL, the four apps calling each other through one routing transport (the same HTTP calls as
under uvicorn, without sockets). Bad inputs get a 4xx problem and write nothing."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from conftest import SQL_BACKENDS, require_postgres
from fastapi import FastAPI
from live_schema import StartParties, empty_schema, pg_copies
from signing import RoleAuth

from services.api import close_app
from services.api.parties import (
    PartySeed,
    PartySettings,
    create_bank_app,
    create_exchange_app,
    create_issuer_app,
    create_network_app,
    write_seed,
)
from services.api.parties.base import StartupError
from services.api.parties.seed import read_seed
from services.chain import ChainConfig
from services.clock import Clock
from services.contracts import CardholderSpec, FundingMode, Holding, Lot, MerchantSpec, Residency
from services.money import D
from services.reconciliation import Half, reconcile

PARTIES = ("exchange", "issuer", "network", "bank")
FACTORIES = {"exchange": create_exchange_app, "issuer": create_issuer_app, "network": create_network_app,
             "bank": create_bank_app}
URLS = {f"{p}_url": f"http://{p}" for p in PARTIES}


def make_seed() -> PartySeed:
    return PartySeed(
        config=ChainConfig(),
        prices_kzt={"BTC": D("45000000"), "ETH": D("1600000")},
        cardholders=(
            CardholderSpec("h1", "c1", Residency.RESIDENT, "standard", FundingMode.JIT, ("BTC",),
                           (Holding("BTC", (Lot(10_000_000, D("40000000"), 0.0),)),)),  # 0.1 BTC, no tenge
            CardholderSpec("h2", "c2", Residency.NON_RESIDENT, "standard", FundingMode.PREFUNDED, ("BTC",), (),
                           100_000_00),  # 100,000 KZT on the card
        ),
        merchants=(MerchantSpec("m1", "acq-1", "grocery"), MerchantSpec("m2", "acq-2", "hotel")),
    )


class Router(httpx.AsyncBaseTransport):
    """Routes ``http://<party>/…`` to that party's app; an unknown host cannot be reached.

    Faults by ``<host><path>``: an ``unreachable`` one refuses to connect; a ``late`` one is served,
    then its answer is lost to a read timeout (as when a caller's deadline passes)."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.unreachable: set[str] = set()
        self.late: set[str] = set()
        self.after_late: Callable[[], Awaitable[Any]] | None = None  # runs once a late answer is lost

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = f"{request.url.host}{request.url.path}"
        transport = self.apps.get(request.url.host)
        if transport is None or target in self.unreachable:
            raise httpx.ConnectError(f"no route to {target}", request=request)
        response = await transport.handle_async_request(request)
        if target in self.late:
            await response.aread()
            if self.after_late is not None:
                await self.after_late()
            raise httpx.ReadTimeout(f"{target} answered after the caller's deadline", request=request)
        return response


def start_parties(seed_path: Path) -> StartParties:
    """Starts and closes the four parties of ``seed_path`` on the database settings it is given (a
    ``table_prefix`` is the set's: each party's tables go under ``<prefix><party>_``, as in ``Live``)."""
    def start(db: dict[str, Any]) -> None:
        for party in PARTIES:
            own = {**db, "table_prefix": f"{db['table_prefix']}{party}_"} if "table_prefix" in db else db
            close_app(FACTORIES[party](PartySettings(**{"party": party, "seed_file": seed_path, **URLS, **own})))
    return start


class Live:
    """Four party apps, the client they call each other with, and a client for the test.

    On SQLite the parties start on a copy of :func:`empty_schema` (``fresh_schema=True`` makes them
    run the migrations themselves)."""

    def __init__(self, backend: str, tmp_path: Path, seed: PartySeed, *, clock: Clock | None = None,
                 fresh_schema: bool = False, **settings: Any) -> None:
        self.backend = backend
        self.seed_path = tmp_path / "seed.json"
        write_seed(seed, self.seed_path)
        if backend == "sqlite" and not fresh_schema and not (tmp_path / "data").exists():
            shutil.copytree(empty_schema(self.seed_path, start_parties(self.seed_path)), tmp_path / "data")
        self.router = Router()
        self.outbound = httpx.AsyncClient(transport=self.router)
        self.client = httpx.AsyncClient(transport=self.router, auth=RoleAuth())
        self.apps: dict[str, FastAPI] = {}
        self.tmp_path = tmp_path
        # On PostgreSQL a database of its own, a copy of the migrated template (``tests/live_schema.py``).
        self.pg, self.prefix, self._database = "", f"t_{uuid.uuid4().hex[:10]}_", ""
        if backend == "postgres":
            copies = pg_copies(require_postgres())
            template = None
            if not fresh_schema:
                template, self.prefix = copies.template(self.seed_path, start_parties(self.seed_path))
            self._database = copies.copy(template)
            self.pg = copies.url_of(self._database)
        for party in PARTIES:
            self.apps[party] = FACTORIES[party](self.settings(party, **settings), http_client=self.outbound,
                                                clock=clock)
            self.router.apps[party] = httpx.ASGITransport(app=self.apps[party])

    def settings(self, party: str, **extra: Any) -> PartySettings:
        db: dict[str, Any] = ({"database_url": self.pg, "table_prefix": f"{self.prefix}{party}_"} if self.pg
                              else {"data_dir": self.tmp_path / "data"})
        return PartySettings(party=party, seed_file=self.seed_path, **URLS, **db, **extra)

    def ledgers(self) -> list[Any]:
        s = self.apps
        return [s["exchange"].state.exchange_service.ledger, s["issuer"].state.issuer_service.ledger,
                *s["network"].state.network_service.ledgers, *s["bank"].state.bank_service.ledgers.values()]

    def journal_sizes(self) -> list[int]:
        return [len(ledger) for ledger in self.ledgers()]

    async def post(self, url: str, body: Any, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return await self.client.post(url, json=body, headers=headers, **kw)

    async def integrity(self) -> tuple[dict[str, Any], list[Any]]:
        invariants = {p: (await self.client.get(f"http://{p}/v1/ledger/invariants")).json() for p in PARTIES}
        halves: list[Half] = []
        transit: set[str] = set()
        kzt = self.apps["bank"].state.party.assets
        for p in PARTIES:
            body = (await self.client.get(f"http://{p}/v1/ledger/halves")).json()
            transit.update(body["in_transit"])
            halves += [Half(h["message_id"], h["purpose"], h["side"], h["party"], kzt.parse(h["amount"], "KZT"))
                       for h in body["halves"]]
        return invariants, reconcile(halves, transit)

    async def close(self) -> None:
        await self.client.aclose()
        await self.outbound.aclose()
        for app in self.apps.values():
            close_app(app)
        if self._database:  # its tables go with it
            pg_copies(require_postgres()).drop(self._database)


@asynccontextmanager
async def started(backend: str, tmp_path: Path, seed: PartySeed, **settings: Any) -> AsyncIterator[Live]:
    parties = Live(backend, tmp_path, seed, **settings)
    try:
        yield parties
    finally:
        await parties.close()


@pytest.fixture(params=SQL_BACKENDS)
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Live]:
    async with started(request.param, tmp_path, make_seed()) as parties:
        yield parties


def unchanged_live_fixture(seed: Callable[[], PartySeed]) -> Any:
    """An ``unchanged_live`` fixture: one set of ``seed`` per database for a class of cases that
    must change nothing, and check that they did not (a set per case was a start and a teardown
    each). Such a test is a method of a ``Test…`` class, run in the class's loop
    (``@pytest.mark.asyncio(loop_scope="class")``): the set closes when the class ends, so a
    worker never holds it beside the sets of the module's other tests (a PostgreSQL set holds
    about 26 connections of the server's 100)."""
    @pytest_asyncio.fixture(scope="class", loop_scope="class", params=SQL_BACKENDS, name="unchanged_live")
    async def fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
        async with started(request.param, tmp_path_factory.mktemp(f"unchanged-{request.param}"), seed()) as parties:
            yield parties
    return fixture


unchanged_live = unchanged_live_fixture(make_seed)


async def assert_clean(live: Live) -> None:
    invariants, breaks = await live.integrity()
    bad = {p: [x for x in v["parties"] if not x["ok"]] for p, v in invariants.items() if not v["ok"]}
    assert not bad, bad
    assert breaks == []


def pay_body(pid: str, card: str = "c1", amount: str = "5000.00", merchant: str = "m1") -> dict[str, Any]:
    return {"id": pid, "card_id": card, "merchant_id": merchant, "amount": amount}


# -- the whole flow ------------------------------------------------------------------------------


async def test_jit_payment_capture_refund_settlement_reconcile(live: Live) -> None:
    r = await live.post("http://network/v1/payments", pay_body("p1"), "k-p1")
    assert r.status_code == 200, r.text
    assert r.json()["approved"] and r.json()["code"] == "00" and not r.json()["stand_in"]
    wallet = (await live.client.get("http://exchange/v1/wallets/h1")).json()["balances"]
    assert D(wallet["BTC"]) < D("0.1")  # crypto was sold for the tenge
    auth = (await live.client.get("http://issuer/v1/authorizations/p1")).json()
    assert auth["state"] == "held" and D(auth["held"]) == D("5100.00")  # amount + 2 % padding
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5000.00"},
                        "k-c1")
    assert r.status_code == 201, r.text
    p2 = pay_body("p2", card="c2", merchant="m2", amount="2000.00")
    r = await live.post("http://network/v1/payments", p2, "k-p2")
    assert r.json()["approved"]
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p2", "amount": "2000.00"},
                        "k-c2")
    assert r.status_code == 201
    r = await live.post("http://network/v1/presentments", {"kind": "refund", "auth_id": "p2", "amount": "500.00"},
                        "k-r2")
    assert r.status_code == 201 and r.json()["presentment_id"] == "p2:refund:1"
    _, breaks = await live.integrity()
    assert breaks == []  # the open batch is in transit, not a break
    r = await live.post("http://network/v1/settlements", {"window_id": "w1"}, "k-w1")
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["presentments"] == 3 and report["undelivered"] == []
    assert sum(D(v) for v in report["net_positions"].values()) == 0
    assert set(report["merchant_credits"]) == {"m1", "m2"}
    assert (await live.client.get("http://network/v1/settlements/w1")).json() == report
    merchant = (await live.client.get("http://bank/v1/banks/bank-1/customers/merchant:m1")).json()
    assert D(merchant["balance"]) == D(report["merchant_credits"]["m1"])
    statement = (await live.client.get("http://bank/v1/banks/bank-1/customers/merchant:m1/statement")).json()
    assert [line["side"] for line in statement["lines"]] == ["credit"]
    tax = (await live.client.get("http://exchange/v1/tax/statements/h1")).json()
    assert tax["sales"] == 1 and D(tax["proceeds"]) > 0
    await assert_clean(live)


async def test_replays_and_keys(live: Live) -> None:
    first = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    sizes = live.journal_sizes()
    again = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other_key = await live.post("http://network/v1/payments", pay_body("p1"), "k1-bis")  # same payment id
    assert other_key.json()["approval_code"] == first.json()["approval_code"]  # the issuer's first answer
    assert live.journal_sizes() == sizes  # no second debit, no second sale
    reused = await live.post("http://network/v1/payments", pay_body("p9"), "k1")
    assert reused.status_code == 422 and reused.headers["content-type"] == "application/problem+json"
    missing = await live.post("http://network/v1/payments", pay_body("p9"))
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "Idempotency-Key"
    assert live.journal_sizes() == sizes
    await assert_clean(live)


@pytest.mark.asyncio(loop_scope="class")
class TestBadInput:
    """Bad input: a 4xx problem naming the field, and nothing written (one set per database)."""

    @pytest.mark.parametrize(("url", "body", "status", "field"), [
        ("http://network/v1/payments", pay_body("b1", amount="0"), 422, "amount"),
        ("http://network/v1/payments", pay_body("b1", amount="-5.00"), 422, "amount"),
        ("http://network/v1/payments", pay_body("b1", amount="1.001"), 422, "amount"),
        ("http://network/v1/payments", pay_body("b1", amount="NaN"), 422, "amount"),
        ("http://network/v1/payments", {**pay_body("b1"), "amount": 5000}, 422, "amount"),
        ("http://network/v1/payments", pay_body("b1", merchant="nobody"), 404, "merchant_id"),
        ("http://network/v1/payments", {**pay_body("b1"), "currency": "USD"}, 422, "currency"),
        ("http://network/v1/presentments", {"kind": "capture", "auth_id": "nope", "amount": "1.00"}, 404, "auth_id"),
        ("http://exchange/v1/sells", {"id": "s1", "holder_id": "h1", "net": "1000.00", "asset_priority": ["DOGE"]},
         422, "asset_priority[0]"),
        ("http://exchange/v1/sells", {"id": "s1", "holder_id": "h1", "net": "99999999.00", "asset_priority": ["BTC"]},
         422, "asset_priority"),
        ("http://exchange/v1/sells", {"id": "s1", "holder_id": "ghost", "net": "10.00", "asset_priority": ["BTC"]},
         404, "holder_id"),
        ("http://exchange/v1/deposits", {"id": "d1", "holder_id": "h1", "asset": "BTC", "quantity": "0.000000001",
                                         "price_kzt": "1"}, 422, "quantity"),
        ("http://exchange/v1/deposits", {"id": "d1", "holder_id": "h1", "asset": "BTC", "quantity": "0.1"},
         422, "price_kzt"),
        ("http://issuer/v1/authorizations/nope/capture", {"amount": "1.00"}, 404, "auth_id"),
        ("http://bank/v1/inbox/bank-9", {"id": "m1", "purpose": "proceeds", "payer": "exchange", "payee": "issuer",
                                        "payer_bank": "bank-1", "payee_bank": "bank-2", "amount": "1.00"},
         404, "receiver"),
    ])
    async def test_bad_input_is_a_4xx_problem_and_writes_nothing(
        self, unchanged_live: Live, url: str, body: dict[str, Any], status: int, field: str,
    ) -> None:
        live = unchanged_live
        sizes = live.journal_sizes()
        r = await live.post(url, body, f"bad-{uuid.uuid4().hex[:8]}")
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in r.json()["errors"]], r.json()
        assert live.journal_sizes() == sizes


async def test_malformed_requests(live: Live) -> None:
    sizes = live.journal_sizes()
    headers = {"Idempotency-Key": "m1"}
    r = await live.client.post("http://network/v1/payments", content=b'{"id": 1e309}',
                               headers={**headers, "content-type": "application/json"})
    assert r.status_code == 400
    r = await live.client.post("http://network/v1/payments", content=b"\xff\xfe{", headers={
        **headers, "content-type": "application/json"})
    assert r.status_code == 400
    r = await live.client.post("http://network/v1/payments", content=b"id=1", headers={
        **headers, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = await live.client.post("http://issuer/v1/authorizations", content=b"x" * 70_000, headers={
        **headers, "content-type": "application/json"})
    assert r.status_code == 413
    assert live.journal_sizes() == sizes


async def test_the_same_capture_again_is_its_first_answer_and_books_nothing(live: Live) -> None:
    """A presenter whose answer was lost after the capture committed (the idempotency record not
    yet written) retries: the same capture is its first answer again, and the acquirer's
    presentment (keyed by the authorization) books nothing new."""
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    capture = {"kind": "capture", "auth_id": "p1", "amount": "5000.00"}
    first = await live.post("http://network/v1/presentments", capture, "k2")
    assert first.status_code == 201, first.text
    sizes = live.journal_sizes()
    again = await live.post("http://network/v1/presentments", capture, "k2-lost")  # as after a lost record
    assert again.status_code == 201 and again.json() == first.json()
    assert live.journal_sizes() == sizes
    await assert_clean(live)


async def test_second_capture_and_refund_above_capture_are_refused(live: Live) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5200.00"},
                        "k2")
    assert r.status_code == 422 and r.json()["errors"][0]["reason"] == "exceeds_padding"
    assert (await live.post("http://network/v1/presentments",
                            {"kind": "capture", "auth_id": "p1", "amount": "5000.00"}, "k3")).status_code == 201
    sizes = live.journal_sizes()
    second = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "1.00"},
                             "k4")
    assert second.status_code == 409 and second.json()["errors"][0]["reason"] == "already_resolved"
    above = await live.post("http://network/v1/presentments", {"kind": "refund", "auth_id": "p1", "amount": "5000.01"},
                            "k5")
    assert above.status_code == 422 and above.json()["errors"][0]["reason"] == "exceeds_captured"
    assert live.journal_sizes() == sizes
    await assert_clean(live)


async def test_reverse_releases_the_hold(live: Live) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    assert (await live.client.get("http://issuer/v1/cards/c2")).json()["available"] == "94900.00"
    r = await live.post("http://network/v1/payments/p1/reverse", {}, "k2")
    assert r.status_code == 200 and r.json()["released"] == "5100.00"
    assert (await live.client.get("http://issuer/v1/cards/c2")).json()["available"] == "100000.00"
    again = await live.post("http://network/v1/payments/p1/reverse", {}, "k3")
    assert again.status_code == 409
    assert (await live.post("http://issuer/v1/holds/expire", {})).json() == {"count": 0}
    await assert_clean(live)


async def test_cards(live: Live) -> None:
    r = await live.client.post("http://issuer/v1/cards", json={
        "card_id": "c9", "holder_id": "h9", "residency": "resident", "kyc_tier": "basic", "funding_mode": "prefunded"})
    assert r.status_code == 201 and r.json()["available"] == "0.00"
    again = await live.client.post("http://issuer/v1/cards", json={
        "card_id": "c9", "holder_id": "h9", "residency": "resident", "kyc_tier": "basic", "funding_mode": "prefunded"})
    assert again.status_code == 200
    clash = await live.client.post("http://issuer/v1/cards", json={
        "card_id": "c9", "holder_id": "h9", "residency": "resident", "kyc_tier": "premium",
        "funding_mode": "prefunded"})
    assert clash.status_code == 409
    tier = await live.client.post("http://issuer/v1/cards", json={
        "card_id": "c8", "holder_id": "h8", "residency": "resident", "kyc_tier": "gold", "funding_mode": "prefunded"})
    assert tier.status_code == 422 and tier.json()["errors"][0]["field"] == "kyc_tier"
    blocked = await live.client.post("http://issuer/v1/cards/c2/status", json={"status": "blocked"})
    assert blocked.json()["status"] == "blocked"
    r = await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    assert r.json()["code"] == "62" and not r.json()["approved"]
    r = await live.post("http://network/v1/payments", pay_body("p2", card="nope"), "k2")
    assert r.json()["code"] == "14"
    assert (await live.client.get("http://issuer/v1/cards/nope")).status_code == 404
    await assert_clean(live)


async def test_exchange_endpoints(live: Live) -> None:
    prices_url = "http://exchange/v1/prices"
    prices = (await live.client.post(prices_url, json={"asset": "BTC", "price_kzt": "46000000"})).json()
    assert prices["prices_kzt"]["BTC"] == "46000000"
    assert (await live.client.post(prices_url, json={"asset": "BTC", "price_kzt": "0"})).status_code == 422
    order = {"id": "q1", "holder_id": "h1", "net": "1000.00", "asset_priority": ["BTC"]}
    quote = (await live.client.post("http://exchange/v1/quotes", json=order)).json()
    assert D(quote["net"]) >= D("1000.00") and quote["legs"][0]["asset"] == "BTC"
    r = await live.post("http://exchange/v1/wallets", {"holder_id": "h7", "residency": "resident", "holdings": [
        {"asset": "ETH", "lots": [{"quantity": "1.5", "price_kzt": "1500000"}]}]}, "w1")
    assert r.status_code == 201 and r.json()["balances"]["ETH"] == "1.500000000000000000"
    r = await live.post("http://exchange/v1/deposits", {"id": "d1", "holder_id": "h7", "asset": "ETH",
                                                        "quantity": "0.5", "price_kzt": "1550000"}, "d1")
    assert r.status_code == 201 and D(r.json()["balance"]) == 2
    halt = await live.client.post("http://exchange/v1/halts", json={"asset": "ETH", "halted": True})
    assert halt.status_code == 200
    sizes = live.journal_sizes()
    refused = await live.post("http://exchange/v1/sells", {**order, "id": "s-eth", "holder_id": "h7",
                                                           "asset_priority": ["ETH"]}, "s1")
    assert refused.status_code == 422 and refused.json()["errors"][0]["reason"] == "halted"
    assert live.journal_sizes() == sizes
    await live.client.post("http://exchange/v1/halts", json={"asset": "ETH", "halted": False})
    assert (await live.client.get("http://exchange/v1/wallets/nobody")).status_code == 404
    # A holder the seed opened, opened again: its own fields are a replay, others a conflict.
    seeded = {"holder_id": "h1", "residency": "resident", "holdings": [
        {"asset": "BTC", "lots": [{"quantity": "0.1", "price_kzt": "40000000"}]}]}
    assert (await live.post("http://exchange/v1/wallets", seeded, "w-h1")).status_code == 200
    sizes = live.journal_sizes()
    other = await live.post("http://exchange/v1/wallets", {**seeded, "residency": "non_resident"}, "w-h1b")
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "holder_id"
    assert live.journal_sizes() == sizes
    assert (await live.client.get("http://exchange/v1/sells/none")).status_code == 404
    assert (await live.client.post("http://exchange/v1/outbox/retry", json={})).json() == {"undelivered": []}
    await assert_clean(live)


async def test_stand_in_then_advice_applied_once(live: Live) -> None:
    network = live.apps["network"].state.network_service
    network.ctx.settings.issuer_url = "http://issuer-down"
    r = await live.post("http://network/v1/payments", pay_body("p1", card="c2", amount="3000.00"), "k1")
    assert r.json()["stand_in"] and r.json()["approved"]  # under the network's stand-in limit
    assert (await live.client.get("http://network/v1/advices/pending")).json()["pending"] == ["p1"]
    network.ctx.settings.issuer_url = "http://issuer"
    # The operator's retry sends it, unless its background sender has it in flight (then that one does).
    assert (await live.post("http://network/v1/advices/retry", {})).status_code == 200
    await asyncio.gather(*network._advice_tasks)
    assert (await live.client.get("http://network/v1/advices/pending")).json()["pending"] == []
    auth = (await live.client.get("http://issuer/v1/authorizations/p1")).json()
    assert auth["stand_in"] and auth["state"] == "held"
    replay = await live.post("http://issuer/v1/advices", {
        "request": {"auth_id": "p1", "card_id": "c2", "merchant_id": "m1", "acquirer_id": "acq-1",
                    "amount": "3000.00"}, "response": {"code": "00"}}, "another-key")
    assert replay.json()["applied"] is False
    await assert_clean(live)


async def test_inbox_acknowledges_and_metrics(live: Live) -> None:
    r = await live.client.get("http://issuer/metrics")
    assert r.status_code == 200
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    text = (await live.client.get("http://issuer/metrics")).text
    assert 'ccsim_authorizations_total{outcome="approved",party="issuer"} 1.0' in text
    assert (await live.client.get("http://bank/healthz")).json() == {"status": "ok", "party": "bank"}
    loaded = (await live.client.get("http://bank/v1/banks/bank-2/customers/holder:h2")).json()
    assert loaded["balance"] == "0.00"  # its opening 100,000 KZT went onto the card: the issuer holds it
    issuer = (await live.client.get("http://bank/v1/banks/bank-2/customers/issuer")).json()
    assert D(issuer["balance"]) == D("1000000000.00") + D("100000.00")  # float + the card load
    assert (await live.client.get("http://bank/v1/banks/bank-7/customers/x")).status_code == 404


async def test_restart_over_old_books_is_refused_unless_reset(live: Live) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    with pytest.raises(StartupError, match="--reset"):
        create_issuer_app(live.settings("issuer"))
    fresh = create_issuer_app(live.settings("issuer", reset=True))
    try:
        assert len(fresh.state.issuer_service.ledger) > 0  # the seed was booked again, from scratch
    finally:
        close_app(fresh)


def test_seed_round_trips(tmp_path: Path) -> None:
    seed = replace(make_seed(), deadline_ms=2_000)
    write_seed(seed, tmp_path / "s.json")
    assert read_seed(tmp_path / "s.json") == seed
