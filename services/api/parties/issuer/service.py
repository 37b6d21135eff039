"""The issuer service: its domain objects behind the routes."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal, cast

from services import ids
from services.api.outbox import Outbox, Relay
from services.api.parties.base import (
    PartyContext,
    open_ledger,
    problem,
    send_staged,
    staging_hook,
)
from services.api.parties.breaker import CircuitBreaker
from services.api.parties.durable import StatefulService, SwitchLedger
from services.api.parties.issuer.ports import IssuerPorts
from services.api.parties.issuer.schemas import (
    AdviceOut,
    AmountIn,
    AuthorizationStateOut,
    BookedOut,
    CardIn,
    CardOut,
    InterchangeIn,
    RefundIn,
)
from services.api.parties.schemas import ClearingOut, SaleOut, SellOrderIn, kzt_in
from services.api.problems import FieldError, ProblemError
from services.api.transport_http import idempotency_key
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    FundingMode,
    Residency,
    SaleReason,
    SaleResult,
    SellOrder,
)
from services.flows import OrphanOutcome, apply_advice, authorize, orphaned_sale
from services.flows.opening import open_issuer
from services.ids import Step, transfer_id
from services.issuer import AuthState, CardResult, CardStatus, ClearingCode, Issuer
from services.ledger.sql import SqlLedger
from services.messaging import PaymentMessage, Purpose

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


def _sale_reason(text: str) -> SaleReason:
    """The exchange's refusal reason as the enum; one this build does not know is an unavailable exchange."""
    try:
        return SaleReason(text)
    except ValueError:
        return SaleReason.EXCHANGE_UNAVAILABLE


def _not_ok(result: tuple[ClearingCode, Any]) -> bool:
    return result[0] is not ClearingCode.OK


def _clearing_problem(auth_id: str, code: ClearingCode) -> ProblemError:
    status, field = _CLEARING_HTTP[code]
    return ProblemError(status, f"authorization {auth_id}: {code.value}", [FieldError(field=field, reason=code.value)],
                        slug=code.value.replace("_", "-"))


class IssuerService(StatefulService):
    """The issuer domain behind the routes (see the module docstring for the locking)."""

    def __init__(self, ctx: PartyContext, outbox: Outbox, relay: Relay) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.relay = relay
        cfg = ctx.seed.config
        self.sql_ledger = open_ledger(ctx, cfg.issuer_id)
        self.ledger = SwitchLedger(self.sql_ledger)
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
        self.orphans: set[str] = set()
        self.orphan_outcomes: Counter[OrphanOutcome] = Counter()
        self.ctx.durable.register("issuer", self.issuer)
        self.ctx.durable.register("service", self)

    def _seed(self) -> None:
        open_issuer(self.issuer, self.ctx.seed.config, self.ctx.seed.cardholders, self.ctx.topology)

    def _ledger_pairs(self) -> list[tuple[SwitchLedger, SqlLedger]]:
        return [(self.ledger, self.sql_ledger)]

    # -- authorization -----------------------------------------------------------------------
    def _card_lock(self, card_id: str) -> asyncio.Lock:
        lock = self._card_locks.get(card_id)
        if lock is None:
            lock = self._card_locks[card_id] = asyncio.Lock()
        return lock

    async def authorize(self, req: AuthorizationRequest) -> AuthorizationResponse:
        """:func:`services.flows.authorize` over this service's ports, one card at a time."""
        async with self._card_lock(req.card_id):
            response = await authorize(req, IssuerPorts(self))
        outcome = "approved" if response.approved else f"declined_{response.code.value}"
        self.auth_total.labels(self.ctx.settings.party, outcome).inc()
        return response

    async def exchange_sell(self, order: SellOrder) -> SaleResult:
        """Ask the exchange to sell; its proceeds reach the card (by message) before it answers.
        A refusal, an unreachable exchange or an open breaker is a failed sale, with its reason."""
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
            return SaleOut.model_validate_json(response.content).to_result(self.ctx.assets)
        reason = SaleReason.EXCHANGE_UNAVAILABLE
        if response is not None and response.status_code < 500:
            errors = response.json().get("errors") or [{}]
            reason = _sale_reason(str(errors[0].get("reason", "")))
        return SaleResult(order.id, order.auth_id, order.holder_id, False, reason=reason)

    # -- advices and orphaned sales -----------------------------------------------------------
    def advice_conflicts(self, req: AuthorizationRequest) -> bool:
        """An advice whose request is not the authorization this issuer knows by that id."""
        known = self.issuer.auths.get(req.auth_id)
        return known is not None and (known.card_id, known.merchant_id, known.amount_kzt) != (
            req.card_id, req.merchant_id, req.amount_kzt)

    async def advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> AdviceOut:
        """Apply the network's decision once (:func:`services.flows.apply_advice`); a sale this
        authorization completed is then an orphaned sale (:func:`services.flows.orphaned_sale`)."""
        ports = IssuerPorts(self)
        orphan = ""
        async with self._card_lock(req.card_id):
            applied = await apply_advice(req, response, ports)
            if applied:
                sale_id = ids.sale_id(req.auth_id)
                outcome = await orphaned_sale(req.auth_id, sale_id, self.ctx.seed.config.orphan_policy, ports)
                if outcome is not OrphanOutcome.SEEN:
                    orphan = sale_id
        await ports.flush()  # a re-buy message may be staged: it leaves now, outside the locks
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
        with self.ledger.also_in_transaction(staging_hook(self.outbox, msg, transfer_id(msg.id, Step.PAY))):
            return self.issuer.book_payment(msg)

    def _claim_orphan(self, sale_id: str) -> bool:
        """An orphaned sale is handled once, and only once its tenge is on the card."""
        if sale_id in self.orphans or self.ledger.transfer(transfer_id(sale_id, Step.RECV)) is None:
            return False
        self.orphans.add(sale_id)
        return True

    def _record_orphan(self, outcome: OrphanOutcome) -> None:
        self.orphan_outcomes[outcome] += 1

    # -- messages ----------------------------------------------------------------------------
    def receive(self, msg: PaymentMessage) -> bool:
        return self.ctx.command(self._handle, msg, answers=True)  # the acknowledgement commits with it

    def pay(self, msg: PaymentMessage) -> BookedOut:
        """Book the issuer's half of a payment it makes, then hand it to its bank."""
        if msg.purpose is not Purpose.SETTLEMENT_IN or msg.payer != self.issuer.id:
            raise ProblemError(422, "the issuer pays only its own settlement through this endpoint",
                               [FieldError(field="purpose", reason="not an issuer settlement payment")])
        if msg.payer_bank != self.ctx.topology.bank_of.get(self.issuer.id):
            raise ProblemError(422, "the payer's bank is not the issuer's bank",
                               [FieldError(field="payer_bank", reason="wrong bank")])
        if not self.ctx.command(self._book_payment, msg, refused=lambda r: not r):
            if self.ctx.locked(self.ledger.transfer, transfer_id(msg.id, Step.PAY)) is not None:
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
        if code is ClearingCode.ALREADY_RESOLVED:
            replay = self.ctx.locked(self._captured_before, auth_id, amount)
            if replay is not None:  # the same capture again: its first answer, nothing booked
                code, released = ClearingCode.OK, replay
        if code is not ClearingCode.OK:
            raise _clearing_problem(auth_id, code)
        return self.ctx.locked(self._clearing, auth_id, "capture", auth_id, amount, released)

    def _captured_before(self, auth_id: str, amount_kzt: int) -> int | None:
        """A capture is identified by its authorization: one already captured for exactly this
        amount is this capture, repeated — the retry of a presenter whose first answer was lost
        after the capture committed (say, a database crash before its idempotency record was
        written). Its first answer's release; ``None`` when it is another capture (409)."""
        auth = self.issuer.auths.get(auth_id)
        if auth is None or auth.state is not AuthState.CAPTURED or auth.captured_kzt != amount_kzt:
            return None
        return auth.held_kzt - amount_kzt

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
