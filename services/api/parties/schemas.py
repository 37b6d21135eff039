"""Bodies the party services exchange: sell orders and sales, authorizations, clearing.

Amounts are decimal strings with the asset's scale (KZT 2, BTC 8, ETH 18…); prices and basis
points are decimal strings too. Conversions to and from the domain's ``int`` minor units and
``Decimal`` prices live here, next to the schemas, so a service and its caller agree on them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier, Text, amount_in
from services.api.problems import FieldError, ProblemError
from services.api.transport_http import Answer
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    ReasonCode,
    SaleLeg,
    SaleReason,
    SaleResult,
    SellOrder,
)
from services.money import AssetRegistry, D, parse_amount

__all__ = [
    "AuthorizationIn",
    "AuthorizationOut",
    "ClearingOut",
    "OptionalId",
    "PriceText",
    "SaleLegOut",
    "SaleOut",
    "SellOrderIn",
    "SignedAmountText",
    "clearing_or_problem",
    "kzt_in",
]

OptionalId = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9._:-]{0,127})?$")]
# A price is below AMOUNT_UNITS_MAX (10^15) tenge per whole unit: at most 15 digits before the point.
PriceText = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,15}(\.[0-9]{1,18})?$"), Field(
    description="KZT per one whole unit of the asset, a decimal string", examples=["45000000.00"])]
SignedAmountText = Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,40}(\.[0-9]{1,18})?$")]


def kzt_in(text: str, assets: AssetRegistry, field: str = "amount") -> int:
    """Tiyn of a positive KZT amount field (below ``AMOUNT_UNITS_MAX`` tenge), or a 422 problem
    naming ``field``."""
    return amount_in(text, assets.get("KZT"), field)


def price_in(text: str, field: str = "price_kzt") -> Decimal:
    """A price in KZT per whole unit (a :data:`PriceText`, so below 10^15), or a 422 problem if zero."""
    price = D(text)
    if price <= 0:
        raise ProblemError(422, "the price must be greater than zero", [FieldError(field=field, reason="not > 0")])
    return price


class SellOrderIn(BaseModel):
    """Issuer → exchange: sell enough of the holder's crypto to net ``net`` KZT after fees."""

    model_config = API_MODEL_CONFIG
    id: Identifier = Field(description="the sale id: idempotency key here and on the proceeds message")
    auth_id: OptionalId = ""
    holder_id: Identifier
    net: AmountText = Field(description="KZT the sale must net after fees (and withheld tax)")
    asset_priority: list[AssetCode] = Field(min_length=1, max_length=8)
    max_slippage_bps: int = Field(0, ge=0, le=9_999, description="0: the exchange's own cap")
    quote_ttl_ms: int = Field(0, ge=0, le=600_000, description="0: the exchange's own time-to-live")

    def to_order(self, assets: AssetRegistry) -> SellOrder:
        return SellOrder(self.id, self.auth_id, self.holder_id, kzt_in(self.net, assets, "net"),
                         tuple(self.asset_priority), self.max_slippage_bps, self.quote_ttl_ms / 1000.0)

    @classmethod
    def of(cls, order: SellOrder, assets: AssetRegistry) -> SellOrderIn:
        return cls(id=order.id, auth_id=order.auth_id, holder_id=order.holder_id,
                   net=assets.format(order.net_kzt, "KZT"), asset_priority=list(order.asset_priority),
                   max_slippage_bps=order.max_slippage_bps, quote_ttl_ms=round(order.quote_ttl_s * 1000))


class SaleLegOut(BaseModel):
    model_config = API_MODEL_CONFIG
    asset: str
    quantity: str = Field(description="crypto taken from the wallet, in the asset's scale")
    gross: str
    fee: str
    avg_price_kzt: str
    slippage_bps: str
    realized_gain: str = Field(description="KZT; negative for a loss")
    pit: str


class SaleOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    auth_id: str
    holder_id: str
    ok: bool
    reason: str
    net: str = Field(description="KZT credited towards the card")
    fee: str
    legs: list[SaleLegOut]
    proceeds_delivered: bool = Field(description="the proceeds message was acknowledged by every hop")

    @classmethod
    def of(cls, sale: SaleResult, assets: AssetRegistry, *, delivered: bool) -> SaleOut:
        kzt = assets.get("KZT")

        def fmt(minor: int) -> str:
            return assets.format(minor, "KZT")

        return cls(
            id=sale.id, auth_id=sale.auth_id, holder_id=sale.holder_id, ok=sale.ok, reason=sale.reason,
            net=fmt(sale.net_kzt), fee=fmt(sale.fee_kzt), proceeds_delivered=delivered,
            legs=[SaleLegOut(asset=leg.asset, quantity=assets.format(leg.quantity_minor, leg.asset),
                             gross=fmt(leg.gross_kzt), fee=fmt(leg.fee_kzt), avg_price_kzt=str(leg.avg_price_kzt),
                             slippage_bps=str(leg.slippage_bps),
                             realized_gain=("-" if leg.realized_gain_kzt < 0 else "")
                             + assets.format(abs(leg.realized_gain_kzt), kzt.code),
                             pit=fmt(leg.pit_kzt)) for leg in sale.legs],
        )

    def to_result(self, assets: AssetRegistry) -> SaleResult:
        kzt = assets.get("KZT")
        legs = tuple(SaleLeg(
            leg.asset, parse_amount(leg.quantity, assets.get(leg.asset)), parse_amount(leg.gross, kzt),
            parse_amount(leg.fee, kzt), D(leg.avg_price_kzt), D(leg.slippage_bps),
            parse_amount(leg.realized_gain, kzt, allow_negative=True), parse_amount(leg.pit, kzt),
        ) for leg in self.legs)
        return SaleResult(self.id, self.auth_id, self.holder_id, self.ok, SaleReason(self.reason), legs,
                          parse_amount(self.net, kzt))


class AuthorizationIn(BaseModel):
    """Network → issuer: one authorization request (``auth_id`` is the key end to end)."""

    model_config = API_MODEL_CONFIG
    auth_id: Identifier
    card_id: Identifier
    merchant_id: Identifier
    acquirer_id: Identifier
    amount: AmountText = Field(description="KZT")
    category: Text = ""

    def to_request(self, assets: AssetRegistry, at_s: float, field: str = "amount") -> AuthorizationRequest:
        """The domain request; a bad amount is a 422 problem naming ``field`` (``request.amount``
        when this request is nested in an advice)."""
        return AuthorizationRequest(self.auth_id, self.card_id, self.merchant_id, self.acquirer_id,
                                    kzt_in(self.amount, assets, field), self.category, at_s)

    @classmethod
    def of(cls, req: AuthorizationRequest, assets: AssetRegistry) -> AuthorizationIn:
        return cls(auth_id=req.auth_id, card_id=req.card_id, merchant_id=req.merchant_id,
                   acquirer_id=req.acquirer_id, amount=assets.format(req.amount_kzt, "KZT"),
                   category=req.category)


class AuthorizationOut(BaseModel):
    model_config = API_MODEL_CONFIG
    auth_id: str
    code: str = Field(description="ISO 8583 response code: 00 approved, 51 insufficient funds, 91 …")
    approved: bool
    approval_code: str
    held: str = Field(description="KZT held on the card (amount plus padding, at most the balance)")
    stand_in: bool

    @classmethod
    def of(cls, r: AuthorizationResponse, assets: AssetRegistry) -> AuthorizationOut:
        return cls(auth_id=r.auth_id, code=r.code.value, approved=r.approved, approval_code=r.approval_code,
                   held=assets.format(r.held_kzt, "KZT"), stand_in=r.stand_in)

    def to_response(self, assets: AssetRegistry) -> AuthorizationResponse:
        return AuthorizationResponse(self.auth_id, ReasonCode(self.code), self.approval_code,
                                     parse_amount(self.held, assets.get("KZT")), self.stand_in)


class ClearingOut(BaseModel):
    """The issuer's answer to a capture, reversal, refund or chargeback."""

    model_config = API_MODEL_CONFIG
    auth_id: str
    presentment_id: str = Field(description="the clearing record's id at every party ('' for a reversal)")
    kind: Literal["capture", "reversal", "refund", "chargeback"]
    amount: str
    released: str = Field(description="KZT of the holds released")
    merchant_id: str
    acquirer_id: str


class PricesOut(BaseModel):
    model_config = API_MODEL_CONFIG
    prices_kzt: dict[str, str | None] = Field(description="mid price per traded asset (null: no price yet)")
    halted: list[str] = Field(default=[], description="assets whose trading is halted (no sale, no re-buy)")


def clearing_or_problem(answer: Answer | None) -> ClearingOut:
    """The issuer's clearing answer, or its refusal (or silence) as this service's problem."""
    if answer is None:
        raise ProblemError(503, "the issuer did not answer; retry with the same Idempotency-Key",
                           [FieldError(field="auth_id", reason="issuer unavailable")], slug="issuer-unavailable")
    if answer.status_code != 200:
        problem = answer.json()
        errors = [FieldError(field=str(e.get("field", "")), reason=str(e.get("reason", "")))
                  for e in problem.get("errors", []) if isinstance(e, dict)]
        raise ProblemError(answer.status_code, f"the issuer refused: {problem.get('detail', '')}", errors,
                           slug=str(problem.get("type", "")).rpartition(":")[2] or "")
    return ClearingOut.model_validate_json(answer.content)
