"""The card issuer as a live service: cards, authorizations, clearing, advices, settlement payments.

Endpoints (``Idempotency-Key`` on the POSTs that move money)::

    POST /v1/cards                                  open a card (no balance: money comes by message)
    GET  /v1/cards/{card_id}                        POST /v1/cards/{card_id}/status
    POST /v1/authorizations                         run the authorization pipeline            (key)
    GET  /v1/authorizations/{auth_id}
    POST /v1/authorizations/{auth_id}/capture       post the holds, all, part or over-capture (key)
    POST /v1/authorizations/{auth_id}/reverse       release the holds                         (key)
    POST /v1/authorizations/{auth_id}/refund        a refund or chargeback of a capture       (key)
    POST /v1/advices                                the network's stand-in decision, once     (key)
    POST /v1/interchange                            interchange earned in a settlement window (key)
    POST /v1/outgoing-payments                      book the issuer's half of a payment it makes and
                                                    send it to its bank (settlement)          (key)
    POST /v1/holds/expire                           POST /v1/outbox/retry
    POST /v1/inbox/issuer                           money arriving: proceeds, card loads, settlement
    GET  /v1/ledger/invariants                      GET /v1/ledger/halves

The pipeline is the domain's (:class:`services.issuer.Issuer`), with the exchange over HTTP:
screen → (sell at the exchange, whose proceeds arrive at ``/v1/inbox/issuer`` through the banks
before the sale's answer comes back) → finalize. One card's authorizations are decided one at a
time (an ``asyncio.Lock`` per card, held across the exchange call), so two payments never spend
the same tenge; the domain lock is held only around each domain call, never while waiting.

Payments the issuer books (a re-buy of an orphaned sale, a settlement payment) are written to the
durable outbox in the same transaction as their booking and delivered by the relay
(:mod:`services.api.outbox`). Calls to the exchange pass a circuit breaker
(:mod:`services.api.parties.breaker`): while it is open, an authorization that needs a sale
declines at once with 91 instead of waiting on a dead exchange.

Cards and their status, authorizations, spend trackers (limits, AML), sale → card routing and
applied advices live in memory; every change to them is a logged command committed with its
bookings, so a restarted issuer (``resume``) rebuilds them by replaying its command log and
checking the result against its books (:mod:`services.api.parties.durable`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, Field

from services.api.common import on_shutdown
from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier
from services.api.idempotency import IdempotencyKey, run_idempotent
from services.api.outbox import Outbox, Relay
from services.api.parties.base import (
    MessageIn,
    PartyContext,
    create_party_base,
    inbox_router,
    integrity_router,
    json_response,
    open_ledger,
    open_outbox,
    outbox_router,
    problem,
    recovery_router,
    replayed,
    run_idempotent_async,
    send_staged,
    staging_hook,
)
from services.api.parties.breaker import CircuitBreaker
from services.api.parties.durable import StatefulService, SwitchLedger
from services.api.parties.schemas import AuthorizationIn, AuthorizationOut, ClearingOut, SaleOut, SellOrderIn, kzt_in
from services.api.parties.seed import seed_issuer
from services.api.parties.settings import PartySettings
from services.api.problems import FieldError, ProblemError, problem_responses
from services.api.routing import StrictJsonRoute
from services.api.transport_http import idempotency_key
from services.clock import Clock
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    FundingMode,
    OrphanPolicy,
    ReasonCode,
    Residency,
    SaleResult,
    SellOrder,
)
from services.issuer import AuthState, CardResult, CardStatus, ClearingCode, Issuer
from services.ledger.sql import SqlLedger
from services.messaging import PaymentMessage, Purpose
from services.reconciliation import party_halves

__all__ = ["IssuerService", "create_issuer_app", "create_issuer_app_from_env"]

# ClearingCode → (HTTP status, the request field at fault)
_CLEARING_HTTP: dict[ClearingCode, tuple[int, str]] = {
    ClearingCode.UNKNOWN_AUTH: (404, "auth_id"),
    ClearingCode.NOT_APPROVED: (409, "auth_id"),
    ClearingCode.INVALID_AMOUNT: (422, "amount"),
    ClearingCode.EXCEEDS_PADDING: (422, "amount"),
    ClearingCode.EXCEEDS_HOLD: (422, "amount"),
    ClearingCode.ALREADY_RESOLVED: (409, "auth_id"),
    ClearingCode.HOLD_EXPIRED: (409, "auth_id"),
    ClearingCode.NOT_CAPTURED: (409, "auth_id"),
    ClearingCode.EXCEEDS_CAPTURED: (422, "amount"),
    ClearingCode.CARD_NOT_ACTIVE: (409, "card_id"),
    ClearingCode.LIMIT: (422, "amount"),
    ClearingCode.INSUFFICIENT_FUNDS: (422, "amount"),
}
_CARD_HTTP: dict[CardResult, tuple[int, str]] = {
    CardResult.UNKNOWN_TIER: (422, "kyc_tier"),
    CardResult.EMPTY_ASSET_PRIORITY: (422, "asset_priority"),
    CardResult.UNKNOWN_ASSET: (422, "asset_priority"),
    CardResult.INVALID_AMOUNT: (422, "card_balance"),
    CardResult.INVALID_TOP_UP_RULE: (422, "top_up"),
    CardResult.EXISTS_WITH_DIFFERENT_FIELDS: (409, "card_id"),
    CardResult.UNKNOWN_CARD: (404, "card_id"),
}


def _not_ok(result: tuple[ClearingCode, Any]) -> bool:
    return result[0] is not ClearingCode.OK


def _clearing_problem(auth_id: str, code: ClearingCode) -> ProblemError:
    status, field = _CLEARING_HTTP[code]
    return ProblemError(status, f"authorization {auth_id}: {code.value}", [FieldError(field=field, reason=code.value)],
                        slug=code.value.replace("_", "-"))


ResidencyName = Literal["resident", "non_resident"]


class CardIn(BaseModel):
    model_config = API_MODEL_CONFIG
    card_id: Identifier
    holder_id: Identifier
    residency: ResidencyName
    kyc_tier: Identifier
    funding_mode: Literal["jit", "prefunded", "stablecoin"]
    asset_priority: list[AssetCode] = Field(default=[], max_length=8)


class CardOut(BaseModel):
    model_config = API_MODEL_CONFIG
    card_id: str
    holder_id: str
    status: str
    funding_mode: str
    kyc_tier: str
    available: str = Field(description="KZT on the card less its holds")


class CardStatusIn(BaseModel):
    model_config = API_MODEL_CONFIG
    status: Literal["active", "blocked", "expired"]


class AuthorizationStateOut(BaseModel):
    model_config = API_MODEL_CONFIG
    auth_id: str
    card_id: str
    merchant_id: str
    acquirer_id: str
    state: str
    code: str
    amount: str
    held: str
    captured: str
    returned: str
    stand_in: bool


class AmountIn(BaseModel):
    model_config = API_MODEL_CONFIG
    amount: AmountText = Field(description="KZT")


class RefundIn(BaseModel):
    model_config = API_MODEL_CONFIG
    amount: AmountText = Field(description="KZT")
    kind: Literal["refund", "chargeback"] = "refund"


class EmptyIn(BaseModel):
    model_config = API_MODEL_CONFIG


class AdviceResponseIn(BaseModel):
    model_config = API_MODEL_CONFIG
    code: Annotated[str, Field(pattern=r"^[0-9]{2}$")]
    approval_code: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{0,12}$")] = ""


class AdviceIn(BaseModel):
    """The network stood in for the issuer: what it asked and what it answered."""

    model_config = API_MODEL_CONFIG
    request: AuthorizationIn
    response: AdviceResponseIn


class AdviceOut(BaseModel):
    model_config = API_MODEL_CONFIG
    auth_id: str
    applied: bool = Field(description="false: this advice had been applied before")
    orphaned_sale: str = Field(description="the issuer's sale for a payment the network declined ('' if none)")


class InterchangeIn(BaseModel):
    model_config = API_MODEL_CONFIG
    window_id: Identifier
    amount: AmountText


class BookedOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    booked: bool
    delivered: bool


class CountOut(BaseModel):
    model_config = API_MODEL_CONFIG
    count: int


AuthId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class IssuerService(StatefulService):
    """The issuer domain behind the routes (see the module docstring for the locking)."""

    def __init__(self, ctx: PartyContext, outbox: Outbox, relay: Relay) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.relay = relay
        cfg = ctx.seed.config
        self.sql_ledger = open_ledger(ctx, cfg.issuer_id)
        self.ledger = SwitchLedger(self.sql_ledger)
        self.orphans_kept = 0
        self.orphans_rebought = 0
        self.durable, self.seed_digest, self.assets = ctx.durable, ctx.seed_digest, ctx.assets
        ctx.durable.on_rebuild(self._start)
        self._start()
        self._card_locks: dict[str, asyncio.Lock] = {}
        s = ctx.settings
        self.exchange_breaker = CircuitBreaker(s.party, "exchange", failures_max=s.breaker_failures,
                                               cooldown_s=s.breaker_cooldown_s, registry=ctx.metrics.registry)
        self.exchange_calls = 0  # calls that went out to the exchange (the breaker's tests count them)
        self.auth_total = ctx.metrics.counter("authorizations", "Authorizations decided by the issuer, by outcome",
                                              ("outcome",))

    # -- state -------------------------------------------------------------------------------
    def _build(self) -> None:
        """Fresh domain objects on the switch ledger, registered as command targets."""
        cfg = self.ctx.seed.config
        self.issuer = Issuer(cfg.issuer_config(), self.ctx.clock, self.ctx.assets,
                             tradable=cfg.exchange_config().books.__contains__, ledger=self.ledger)
        self.orphans_kept = self.orphans_rebought = 0
        self.ctx.durable.register("issuer", self.issuer)
        self.ctx.durable.register("service", self)

    def _seed(self) -> None:
        seed_issuer(self.issuer, self.ctx.seed, self.ctx.topology)

    def _ledger_pairs(self) -> list[tuple[SwitchLedger, SqlLedger]]:
        return [(self.ledger, self.sql_ledger)]

    # -- authorization -----------------------------------------------------------------------
    def _card_lock(self, card_id: str) -> asyncio.Lock:
        lock = self._card_locks.get(card_id)
        if lock is None:
            lock = self._card_locks[card_id] = asyncio.Lock()
        return lock

    async def authorize(self, req: AuthorizationRequest) -> AuthorizationResponse:
        run = self.ctx.run_command
        async with self._card_lock(req.card_id):
            screening = await run(self._screen, req)
            sale = None
            if screening.decline is None and screening.sell is not None:
                sale = await self._sell(screening.sell)
            response = await run(self._finalize, req, sale)
            if response.approved:
                order = await run(self._top_up_order, req.card_id)
                if order is not None:
                    await self._sell(order)
        outcome = "approved" if response.approved else f"declined_{response.code.value}"
        self.auth_total.labels(self.ctx.settings.party, outcome).inc()
        return response

    async def _sell(self, order: SellOrder) -> SaleResult:
        """Ask the exchange to sell; its proceeds reach the card (by message) before it answers."""
        transport = self.ctx.transport
        body = SellOrderIn.of(order, self.ctx.assets).model_dump(mode="json")
        response = None
        breaker = self.exchange_breaker
        if breaker.allow():
            self.exchange_calls += 1
            response = await transport.apost(self.ctx.url("exchange"), "/v1/sells", body,
                                             key=idempotency_key("sell", order.id))
            if response is None or response.status_code >= 500:
                breaker.failure()
            else:
                breaker.success()
        if response is not None and response.status_code in (200, 201):
            sale = SaleOut.model_validate_json(response.content).to_result(self.ctx.assets)
        else:
            reason = "exchange_unavailable"
            if response is not None:
                errors = response.json().get("errors") or [{}]
                reason = str(errors[0].get("reason", f"http_{response.status_code}"))
            sale = SaleResult(order.id, order.auth_id, order.holder_id, False, reason=reason)
        if not sale.ok:
            await self.ctx.run_command(self._sale_failed, order.id)
        return sale

    # -- advices and orphaned sales -----------------------------------------------------------
    async def advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> AdviceOut:
        run, command = self.ctx.run, self.ctx.run_command
        async with self._card_lock(req.card_id):
            if await run(lambda: self.issuer.advice_seen(req.auth_id)):
                return AdviceOut(auth_id=req.auth_id, applied=False, orphaned_sale="")
            if response.approved:
                shortfall = await run(lambda: self.issuer.advice_shortfall(req))
                if shortfall:
                    order = await command(self._sell_order, req.card_id, f"{req.auth_id}:advice-sale",
                                          shortfall, req.auth_id)
                    await self._sell(order)
            applied = await command(self._apply_advice, req, response)
            orphan = "" if response.approved else await command(self._orphaned_sale, req)
        if orphan:  # a re-buy message may be staged: it leaves now, outside the locks
            await self.relay.run_once(force=True)
        return AdviceOut(auth_id=req.auth_id, applied=applied, orphaned_sale=orphan)

    # The domain calls that change state, as commands of this service (the domain object is
    # rebuilt on a restart; these look it up when they run).
    def _screen(self, req: AuthorizationRequest) -> Any:
        return self.issuer.screen(req)

    def _finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse:
        return self.issuer.finalize(req, sale)

    def _top_up_order(self, card_id: str) -> SellOrder | None:
        return self.issuer.top_up_order(card_id)

    def _sale_failed(self, sale_id: str) -> None:
        self.issuer.sale_failed(sale_id)

    def _sell_order(self, card_id: str, sale_id: str, net_kzt: int, auth_id: str) -> SellOrder:
        return self.issuer.sell_order(card_id, sale_id, net_kzt, auth_id)

    def _apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool:
        return self.issuer.apply_advice(req, response)

    def _handle(self, msg: PaymentMessage) -> bool:
        """Money arriving; what the issuer cannot place is refused (4xx) before anything is booked."""
        if msg.purpose is Purpose.PROCEEDS and self.issuer.card_of_sale(msg.id) is None:
            raise problem(404, f"proceeds of sale {msg.id}, which this issuer never ordered", "id", "unknown sale")
        if msg.purpose is Purpose.CARD_LOAD and msg.ref not in self.issuer.cards:
            raise problem(404, f"a card load for card {msg.ref!r}, which this issuer does not have", "ref",
                          "unknown card")
        if msg.purpose not in (Purpose.PROCEEDS, Purpose.CARD_LOAD, Purpose.SETTLEMENT_OUT):
            raise problem(422, f"the issuer does not receive {msg.purpose.value} messages", "purpose",
                          "not received here")
        return self.issuer.handle(msg)

    def _open_card(self, spec: CardholderSpec) -> CardResult:
        return self.issuer.open_card(spec)

    def _set_status(self, card_id: str, status: CardStatus) -> CardResult:
        return self.issuer.set_status(card_id, status)

    def _capture(self, auth_id: str, amount_kzt: int) -> tuple[ClearingCode, int]:
        return self.issuer.capture(auth_id, amount_kzt)

    def _reverse(self, auth_id: str) -> tuple[ClearingCode, int]:
        return self.issuer.reverse(auth_id)

    def _give_back(self, auth_id: str, amount_kzt: int, kind: str) -> tuple[ClearingCode, str]:
        return self.issuer.give_back(auth_id, amount_kzt, kind)

    def _book_interchange(self, window_id: str, amount_kzt: int) -> bool:
        return self.issuer.book_interchange(window_id, amount_kzt)

    def _expire_holds(self) -> int:
        return self.issuer.expire_holds()

    def _book_payment(self, msg: PaymentMessage) -> bool:
        with self.ledger.also_in_transaction(staging_hook(self.outbox, msg, f"{msg.id}:pay")):
            return self.issuer.book_payment(msg)

    def _orphaned_sale(self, req: AuthorizationRequest) -> str:
        """The network told the merchant no, but this authorization's sale went through: its tenge
        is on the card. KEEP_TENGE leaves it there; REBUY sends it back to buy the crypto back."""
        sale_id = f"{req.auth_id}:sale"
        credited = self.ledger.transfer(f"{sale_id}:recv")
        if credited is None:
            return ""
        card = self.issuer.card_of_sale(sale_id)
        if (self.ctx.seed.config.orphan_policy is OrphanPolicy.KEEP_TENGE or card is None
                or self.issuer.available_kzt(card.card_id) < credited.amount):
            self.orphans_kept += 1
            return sale_id
        cfg = self.ctx.seed.config
        msg = self.ctx.topology.message(f"{sale_id}:rebuy", Purpose.REBUY, cfg.issuer_id, cfg.exchange_id,
                                        credited.amount, ref=sale_id)
        with self.ledger.also_in_transaction(staging_hook(self.outbox, msg, f"{msg.id}:pay")):
            booked = self.issuer.book_payment(msg)
        if booked:
            self.orphans_rebought += 1
        else:
            self.orphans_kept += 1
        return sale_id

    # -- messages ----------------------------------------------------------------------------
    def receive(self, msg: PaymentMessage) -> bool:
        return self.ctx.command(self._handle, msg)

    def pay(self, msg: PaymentMessage) -> BookedOut:
        """Book the issuer's half of a payment it makes, then hand it to its bank."""
        if msg.purpose is not Purpose.SETTLEMENT_IN or msg.payer != self.issuer.id:
            raise ProblemError(422, "the issuer pays only its own settlement through this endpoint",
                               [FieldError(field="purpose", reason="not an issuer settlement payment")])
        if msg.payer_bank != self.ctx.topology.bank_of.get(self.issuer.id):
            raise ProblemError(422, "the payer's bank is not the issuer's bank",
                               [FieldError(field="payer_bank", reason="wrong bank")])
        if not self.ctx.command(self._book_payment, msg, refused=lambda r: not r):
            if self.ctx.locked(self.ledger.transfer, f"{msg.id}:pay") is not None:
                raise ProblemError(409, f"payment {msg.id} was booked before with other fields",
                                   [FieldError(field="id", reason="already used for another payment")])
            raise ProblemError(422, f"payment {msg.id} is more than the issuer's settlement balance",
                               [FieldError(field="amount", reason="exceeds the issuer's balance")])
        return BookedOut(id=msg.id, booked=True, delivered=send_staged(self.ctx, self.outbox, msg))

    # -- cards -------------------------------------------------------------------------------
    def open_card(self, body: CardIn) -> tuple[int, CardOut]:
        spec = CardholderSpec(holder_id=body.holder_id, card_id=body.card_id, residency=Residency(body.residency),
                              kyc_tier=body.kyc_tier, funding_mode=FundingMode(body.funding_mode),
                              asset_priority=tuple(body.asset_priority))
        result = self.ctx.command(self._open_card, spec, refused=lambda r: r not in (CardResult.OK, CardResult.EXISTS))
        if result not in (CardResult.OK, CardResult.EXISTS):
            status, field = _CARD_HTTP[result]
            raise ProblemError(status, f"card {body.card_id}: {result.value}",
                               [FieldError(field=field, reason=result.value)])
        return (201 if result is CardResult.OK else 200), self.card(body.card_id)

    def card(self, card_id: str) -> CardOut:
        card = self.issuer.cards.get(card_id)
        if card is None:
            raise problem(404, f"no card {card_id}", "card_id", "not found")
        return CardOut(card_id=card.card_id, holder_id=card.holder_id, status=card.status.value,
                       funding_mode=card.funding_mode.value, kyc_tier=card.kyc_tier,
                       available=self.ctx.assets.format(self.issuer.available_kzt(card_id), "KZT"))

    def auth_state(self, auth_id: str) -> AuthorizationStateOut:
        auth = self.issuer.auths.get(auth_id)
        if auth is None:
            raise problem(404, f"no authorization {auth_id}", "auth_id", "not found")
        fmt = self.ctx.assets.format
        return AuthorizationStateOut(
            auth_id=auth.auth_id, card_id=auth.card_id, merchant_id=auth.merchant_id, acquirer_id=auth.acquirer_id,
            state=auth.state.value, code=auth.code, amount=fmt(auth.amount_kzt, "KZT"),
            held=fmt(auth.held_kzt if auth.state is not AuthState.DECLINED else 0, "KZT"),
            captured=fmt(auth.captured_kzt, "KZT"), returned=fmt(auth.returned_kzt, "KZT"), stand_in=auth.stand_in)

    # -- clearing ----------------------------------------------------------------------------
    def _clearing(
        self, auth_id: str, kind: str, presentment_id: str, amount_kzt: int, released_kzt: int,
    ) -> ClearingOut:
        auth = self.issuer.auths[auth_id]
        fmt = self.ctx.assets.format
        return ClearingOut(auth_id=auth_id, presentment_id=presentment_id,
                           kind=cast(Literal["capture", "reversal", "refund", "chargeback"], kind),
                           amount=fmt(amount_kzt, "KZT"), released=fmt(released_kzt, "KZT"),
                           merchant_id=auth.merchant_id, acquirer_id=auth.acquirer_id)

    def capture(self, auth_id: str, body: AmountIn) -> ClearingOut:
        amount = kzt_in(body.amount, self.ctx.assets)

        code, released = self.ctx.command(self._capture, auth_id, amount, refused=_not_ok)
        if code is not ClearingCode.OK:
            raise _clearing_problem(auth_id, code)
        return self.ctx.locked(self._clearing, auth_id, "capture", auth_id, amount, released)

    def reverse(self, auth_id: str) -> ClearingOut:
        code, released = self.ctx.command(self._reverse, auth_id, refused=_not_ok)
        if code is not ClearingCode.OK:
            raise _clearing_problem(auth_id, code)
        return self.ctx.locked(self._clearing, auth_id, "reversal", "", 0, released)

    def refund(self, auth_id: str, body: RefundIn) -> ClearingOut:
        amount = kzt_in(body.amount, self.ctx.assets)

        code, presentment_id = self.ctx.command(self._give_back, auth_id, amount, body.kind, refused=_not_ok)
        if code is not ClearingCode.OK:
            raise _clearing_problem(auth_id, code)
        return self.ctx.locked(self._clearing, auth_id, body.kind, presentment_id, amount, 0)

    def interchange(self, body: InterchangeIn) -> BookedOut:
        amount = kzt_in(body.amount, self.ctx.assets)
        booked = self.ctx.command(self._book_interchange, body.window_id, amount, refused=lambda r: not r)
        if not booked:
            raise ProblemError(409, f"interchange of window {body.window_id} was booked with another amount",
                               [FieldError(field="amount", reason="exists with a different amount")])
        return BookedOut(id=f"{body.window_id}:interchange", booked=True, delivered=True)


def _svc(request: Request) -> IssuerService:
    return cast(IssuerService, request.app.state.issuer_service)


def issuer_router(svc: IssuerService) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, tags=["issuer"])
    ctx = svc.ctx
    keys = ctx.keys

    @router.post("/v1/cards", status_code=201, response_model=CardOut,
                 responses={**replayed(CardOut), **problem_responses(409)})
    def open_card(body: CardIn) -> Response:
        return json_response(*svc.open_card(body))

    @router.get("/v1/cards/{card_id}", responses=problem_responses(404))
    def get_card(card_id: AuthId) -> CardOut:
        return ctx.locked(svc.card, card_id)

    @router.post("/v1/cards/{card_id}/status", responses=problem_responses(404))
    def set_card_status(card_id: AuthId, body: CardStatusIn) -> CardOut:
        if ctx.command(svc._set_status, card_id, CardStatus(body.status),
                      refused=lambda r: r is CardResult.UNKNOWN_CARD) is CardResult.UNKNOWN_CARD:
            raise problem(404, f"no card {card_id}", "card_id", "not found")
        return ctx.locked(svc.card, card_id)

    @router.post("/v1/authorizations", response_model=AuthorizationOut, responses=problem_responses(409))
    async def authorize(body: AuthorizationIn, key: IdempotencyKey, request: Request) -> Response:
        req = body.to_request(ctx.assets, ctx.clock.now())

        async def work() -> Response:
            response = await svc.authorize(req)
            return json_response(200, AuthorizationOut.of(response, ctx.assets))

        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @router.get("/v1/authorizations/{auth_id}", responses=problem_responses(404))
    def get_authorization(auth_id: AuthId) -> AuthorizationStateOut:
        return ctx.locked(svc.auth_state, auth_id)

    @router.post("/v1/authorizations/{auth_id}/capture", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def capture(auth_id: AuthId, body: AmountIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.capture(auth_id, body)))

    @router.post("/v1/authorizations/{auth_id}/reverse", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def reverse(auth_id: AuthId, body: EmptyIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.reverse(auth_id)))

    @router.post("/v1/authorizations/{auth_id}/refund", response_model=ClearingOut,
                 responses=problem_responses(404, 409))
    def refund(auth_id: AuthId, body: RefundIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.refund(auth_id, body)))

    @router.post("/v1/advices", response_model=AdviceOut, responses=problem_responses(404))
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

        async def work() -> Response:
            return json_response(200, await svc.advice(req, response))

        return await run_idempotent_async(keys, key, request, body.model_dump(mode="json"), work)

    @router.post("/v1/interchange", response_model=BookedOut, responses=problem_responses(409))
    def interchange(body: InterchangeIn, key: IdempotencyKey, request: Request) -> Response:
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.interchange(body)))

    @router.post("/v1/outgoing-payments", response_model=BookedOut, responses=problem_responses(409))
    def outgoing_payment(body: MessageIn, key: IdempotencyKey, request: Request) -> Response:
        msg = body.to_message(ctx.assets)
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(200, svc.pay(msg)))

    @router.post("/v1/holds/expire")
    def expire_holds() -> CountOut:
        # expiring nothing changes nothing: not a command for the log (a poller would fill it)
        return CountOut(count=ctx.command(svc._expire_holds, refused=lambda expired: expired == 0))

    return router


def create_issuer_app(settings: PartySettings, *, clock: Clock | None = None,
                      http_client: Any | None = None) -> FastAPI:
    """The issuer service over its own database (``settings.database_url``)."""
    app, ctx = create_party_base(settings, title="ccsim issuer", clock=clock, http_client=http_client)
    outbox, relay, report = open_outbox(app, ctx)
    svc = IssuerService(ctx, outbox, relay)
    on_shutdown(app, svc.sql_ledger.close)
    app.state.issuer_service = svc
    issuer_id = ctx.seed.config.issuer_id
    app.include_router(issuer_router(svc))
    app.include_router(inbox_router(ctx, {issuer_id: svc.receive}))
    app.include_router(integrity_router(
        ctx, lambda: {issuer_id: svc.ledger.check_invariants()},
        lambda: party_halves(issuer_id, "issuer", svc.ledger.journal())))
    app.include_router(outbox_router(svc.relay))
    app.include_router(recovery_router(ctx, lambda: {**report.as_dict(outbox), "breakers": {
        "exchange": {"state": svc.exchange_breaker.state.name.lower(), "opened": svc.exchange_breaker.opened,
                     "rejected": svc.exchange_breaker.rejected}}}))
    return app


def create_issuer_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_issuer_app(PartySettings(party="issuer"))
