"""The network service's routes: parse, call the service, answer."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from services.api.idempotency import IdempotencyKey, run_idempotent
from services.api.parties.base import (
    json_response,
    problem,
    run_idempotent_async,
)
from services.api.parties.network.schemas import (
    AuthId,
    EmptyIn,
    PaymentIn,
    PaymentOut,
    PendingAdvicesOut,
    PresentmentIn,
    PresentmentOut,
    SettlementIn,
    SettlementOut,
)
from services.api.parties.network.service import NetworkService
from services.api.parties.schemas import ClearingOut
from services.api.problems import problem_responses
from services.api.routing import Routes


def network_routes(app: FastAPI, svc: NetworkService) -> None:
    routes = Routes(app, "network")
    ctx = svc.ctx
    keys = ctx.keys

    @routes.post("/v1/payments", response_model=PaymentOut, responses=problem_responses(404, 409, 503))
    async def pay(body: PaymentIn, key: IdempotencyKey, request: Request) -> Response:
        """Authorize a payment with the issuer (or stand in when it is late). At capacity, a payment
        that could not start within a quarter of the deadline is refused at once: 503 with ``Retry-After``,
        nothing written (:mod:`services.api.parties.admission`)."""
        async with svc.admission.admit() as waited_s:
            async def work() -> Response:
                return json_response(200, await svc.pay(body, waited_s=waited_s))

            return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @routes.post("/v1/payments/{auth_id}/reverse", response_model=ClearingOut, responses=problem_responses(404, 409))
    async def reverse(auth_id: AuthId, body: EmptyIn, key: IdempotencyKey, request: Request) -> Response:
        async def work() -> Response:
            return json_response(200, await svc.reverse(auth_id, key))

        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @routes.get("/v1/advices/pending")
    def pending_advices() -> PendingAdvicesOut:
        return PendingAdvicesOut(pending=sorted(svc._advices))

    @routes.post("/v1/advices/retry")
    async def retry_advices() -> PendingAdvicesOut:
        return PendingAdvicesOut(pending=await svc.retry_advices())

    @routes.post("/v1/presentments", status_code=201, response_model=PresentmentOut,
                 responses=problem_responses(404, 409))
    async def present(body: PresentmentIn, key: IdempotencyKey, request: Request) -> Response:
        async def work() -> Response:
            return json_response(201, await svc.present(body, key))

        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @routes.post("/v1/settlements", status_code=201, response_model=SettlementOut)
    def settle(body: SettlementIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(201, svc.settlement_out(svc.settle(body.window_id))))

    @routes.get("/v1/settlements/{window_id}", responses=problem_responses(404))
    def get_settlement(window_id: AuthId) -> SettlementOut:
        report = svc._settled.get(window_id)
        if report is None:
            raise problem(404, f"no settled window {window_id}", "window_id", "not found")
        return svc.settlement_out(report)

