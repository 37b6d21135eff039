"""The exchange service's routes: parse, call the service, answer."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI, Request, Response

from services.api.idempotency import IdempotencyKey, run_idempotent
from services.api.outbox import PENDING
from services.api.parties.base import (
    json_response,
    problem,
    replayed,
)
from services.api.parties.exchange.schemas import (
    DepositIn,
    DepositOut,
    HaltIn,
    HolderId,
    PriceIn,
    QuoteOut,
    TaxStatementOut,
    WalletIn,
    WalletOut,
)
from services.api.parties.exchange.service import ExchangeService
from services.api.parties.schemas import PricesOut, SaleOut, SellOrderIn
from services.api.problems import problem_responses
from services.api.routing import Routes


def _svc(request: Request) -> ExchangeService:
    return cast(ExchangeService, request.app.state.exchange_service)


def exchange_routes(app: FastAPI, svc: ExchangeService) -> None:
    routes = Routes(app, "exchange")
    keys = svc.ctx.keys

    @routes.post("/v1/wallets", status_code=201, response_model=WalletOut,
                 responses={**replayed(WalletOut), **problem_responses(409)})
    def open_wallet(body: WalletIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.open_wallet(body)))

    @routes.get("/v1/wallets/{holder_id}", responses=problem_responses(404))
    def get_wallet(holder_id: HolderId) -> WalletOut:
        return svc.wallet(holder_id)

    @routes.post("/v1/deposits", status_code=201, response_model=DepositOut,
                 responses={**replayed(DepositOut), **problem_responses(404, 409)})
    def deposit(body: DepositIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.deposit(body)))

    @routes.post("/v1/prices")
    def set_price(body: PriceIn) -> PricesOut:
        return svc.set_price(body)

    @routes.get("/v1/prices")
    def get_prices() -> PricesOut:
        return svc.prices()

    @routes.post("/v1/halts")
    def set_halt(body: HaltIn) -> HaltIn:
        return svc.set_halt(body)

    @routes.post("/v1/quotes", responses=problem_responses(404))
    def quote(body: SellOrderIn) -> QuoteOut:
        return svc.quote(body)

    @routes.post("/v1/sells", status_code=201, response_model=SaleOut,
                 responses={**replayed(SaleOut), **problem_responses(404, 409)})
    def sell(body: SellOrderIn, key: IdempotencyKey, request: Request) -> Response:
        # The sale's answer commits with its proceeds' outbox mark (ExchangeService._pay_proceeds).
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.sell(body)), answer=lambda result: json_response(*result))

    @routes.get("/v1/sells/{sale_id}", responses=problem_responses(404))
    def get_sale(sale_id: HolderId) -> SaleOut:
        sale = svc.ctx.locked(svc.exchange.sale, sale_id)
        if sale is None:
            raise problem(404, f"no sale {sale_id}", "sale_id", "not found")
        return SaleOut.of(sale, svc.ctx.assets, delivered=svc.outbox.state(sale_id) != PENDING)

    @routes.get("/v1/tax/statements/{holder_id}", responses=problem_responses(404))
    def tax_statement(holder_id: HolderId) -> TaxStatementOut:
        return svc.tax_statement(holder_id)

