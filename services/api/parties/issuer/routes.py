"""The issuer service's routes: parse, call the service, answer."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI, Request, Response

from services.api.idempotency import IdempotencyKey, run_idempotent
from services.api.parties.base import (
    MessageIn,
    json_response,
    problem,
    replayed,
    run_idempotent_async,
)
from services.api.parties.issuer.schemas import (
    AdviceIn,
    AdviceOut,
    AmountIn,
    AuthId,
    AuthorizationStateOut,
    BookedOut,
    CardIn,
    CardOut,
    CardStatusIn,
    CountOut,
    EmptyIn,
    InterchangeIn,
    RefundIn,
)
from services.api.parties.issuer.service import IssuerService
from services.api.parties.schemas import AuthorizationIn, AuthorizationOut, ClearingOut
from services.api.problems import problem_responses
from services.api.routing import Routes
from services.contracts import (
    AuthorizationResponse,
    ReasonCode,
)
from services.issuer import CardResult, CardStatus


def _svc(request: Request) -> IssuerService:
    return cast(IssuerService, request.app.state.issuer_service)


def issuer_routes(app: FastAPI, svc: IssuerService) -> None:
    routes = Routes(app, "issuer")
    ctx = svc.ctx
    keys = ctx.keys

    @routes.post("/v1/cards", status_code=201, response_model=CardOut,
                 responses={**replayed(CardOut), **problem_responses(409)})
    def open_card(body: CardIn) -> Response:
        return json_response(*svc.open_card(body))

    @routes.get("/v1/cards/{card_id}", responses=problem_responses(404))
    def get_card(card_id: AuthId) -> CardOut:
        return ctx.locked(svc.card, card_id)

    @routes.post("/v1/cards/{card_id}/status", responses=problem_responses(404))
    def set_card_status(card_id: AuthId, body: CardStatusIn) -> CardOut:
        if ctx.command(svc._set_status, card_id, CardStatus(body.status),
                      refused=lambda r: r is CardResult.UNKNOWN_CARD) is CardResult.UNKNOWN_CARD:
            raise problem(404, f"no card {card_id}", "card_id", "not found")
        return ctx.locked(svc.card, card_id)

    @routes.post("/v1/authorizations", response_model=AuthorizationOut, responses=problem_responses(409))
    async def authorize(body: AuthorizationIn, key: IdempotencyKey, request: Request) -> Response:
        req = body.to_request(ctx.assets, ctx.clock.now())

        def answer(response: AuthorizationResponse) -> Response:
            return json_response(200, AuthorizationOut.of(response, ctx.assets))

        async def work() -> Response:
            return answer(await svc.authorize(req))

        # The finalize step commits this answer with the authorization (IssuerPorts.finalize).
        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work, answer=answer)

    @routes.get("/v1/authorizations/{auth_id}", responses=problem_responses(404))
    def get_authorization(auth_id: AuthId) -> AuthorizationStateOut:
        return ctx.locked(svc.auth_state, auth_id)

    @routes.post("/v1/authorizations/{auth_id}/capture", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def capture(auth_id: AuthId, body: AmountIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.capture(auth_id, body)))

    @routes.post("/v1/authorizations/{auth_id}/reverse", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def reverse(auth_id: AuthId, body: EmptyIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.reverse(auth_id)))

    @routes.post("/v1/authorizations/{auth_id}/refund", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def refund(auth_id: AuthId, body: RefundIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.refund(auth_id, body)))

    @routes.post("/v1/advices", response_model=AdviceOut, responses=problem_responses(404))
    async def advice(body: AdviceIn, key: IdempotencyKey, request: Request) -> Response:
        req = body.request.to_request(ctx.assets, ctx.clock.now(), field="request.amount")
        if ctx.locked(lambda: req.card_id not in svc.issuer.cards):
            raise problem(404, f"an advice for card {req.card_id}, which this issuer does not have", "request.card_id",
                          "unknown card")
        try:
            code = ReasonCode(body.response.code)
        except ValueError:
            raise problem(422, "unknown response code", "response.code", "not an ISO 8583 code ccsim uses") from None
        response = AuthorizationResponse(req.auth_id, code, body.response.approval_code, stand_in=True)
        if ctx.locked(svc.advice_conflicts, req):
            raise problem(409, f"authorization {req.auth_id} exists for another card, merchant or amount",
                          "request.auth_id", "an authorization with other fields")

        async def work() -> Response:
            return json_response(200, await svc.advice(req, response))

        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @routes.post("/v1/interchange", response_model=BookedOut, responses=problem_responses(409))
    def interchange(body: InterchangeIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.interchange(body)))

    @routes.post("/v1/outgoing-payments", response_model=BookedOut, responses=problem_responses(409))
    def outgoing_payment(body: MessageIn, key: IdempotencyKey, request: Request) -> Response:
        msg = body.to_message(ctx.assets)
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.pay(msg)))

    @routes.post("/v1/holds/expire")
    def expire_holds() -> CountOut:
        # expiring nothing changes nothing: not a command for the log (a poller would fill it)
        return CountOut(count=ctx.command(svc._expire_holds, refused=lambda expired: expired == 0))

