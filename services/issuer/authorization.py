"""Authorization at the issuer, in two steps around the exchange: :meth:`AuthorizationSteps.screen`
(validate → card state → limits → AML → funding: is a sale needed?) and
:meth:`AuthorizationSteps.finalize` (re-check, then the pending hold and the answer); an approval on
a pre-funded card below its threshold orders a top-up."""

from __future__ import annotations

from services import ids
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    FundingMode,
    ReasonCode,
    SaleReason,
    SaleResult,
    Screening,
    SellOrder,
)
from services.issuer.books import IssuerBooks
from services.issuer.cards import (
    Authorization,
    AuthState,
)
from services.ledger import TransferResult

__all__ = ["AuthorizationSteps"]

R = TransferResult

# What a failed sale means to the merchant (SaleResult.reason → ISO 8583 code).
_SALE_DECLINES: dict[SaleReason, ReasonCode] = {
    SaleReason.INSUFFICIENT_CRYPTO: ReasonCode.INSUFFICIENT_FUNDS,
    SaleReason.SLIPPAGE_CAP: ReasonCode.DO_NOT_HONOUR,
    SaleReason.QUOTE_EXPIRED: ReasonCode.DO_NOT_HONOUR,
}


class AuthorizationSteps(IssuerBooks):
    """The authorization steps over the issuer's books."""

    def screen(self, req: AuthorizationRequest) -> Screening:
        """First look: a decline now, approval from the card's tenge, or a sale to run first."""
        if req.auth_id in self.auths:
            return Screening(req.auth_id)  # already decided: finalize returns the first answer
        code = self._check(req)
        if code is not None:
            return Screening(req.auth_id, decline=code)
        card = self.cards[req.card_id]
        available = self.available_kzt(card.card_id)
        if available >= req.amount_kzt:
            return Screening(req.auth_id)
        if card.funding_mode is FundingMode.PREFUNDED:
            return Screening(req.auth_id, decline=ReasonCode.INSUFFICIENT_FUNDS)
        shortfall = req.amount_kzt - available + self.padding_kzt(req.amount_kzt)
        return Screening(
            req.auth_id,
            sell=self.sell_order(card.card_id, ids.sale_id(req.auth_id), shortfall, req.auth_id),
        )

    def sell_order(self, card_id: str, sale_id: str, net_kzt: int, auth_id: str = "") -> SellOrder:
        """An order to the exchange for this card's holder; its proceeds will credit this card."""
        card = self.cards[card_id]
        priority = (
            (self.config.stablecoin_asset,) if card.funding_mode is FundingMode.STABLECOIN else card.asset_priority
        )
        self._orders[sale_id] = card_id
        return SellOrder(
            sale_id,
            auth_id,
            card.holder_id,
            net_kzt,
            priority,
            self.config.max_slippage_bps,
            self.config.quote_ttl_s,
        )

    def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse:
        """Re-check (time has passed since screening), then hold and approve, or decline."""
        known = self.auths.get(req.auth_id)
        if known is not None:
            return self.response(known)
        code = self._check(req)
        if code is not None:
            return self.decline(req, code)
        card = self.cards[req.card_id]
        available = self.available_kzt(card.card_id)
        if available < req.amount_kzt:
            if sale is None:
                return self.decline(req, ReasonCode.INSUFFICIENT_FUNDS)
            if not sale.ok:
                return self.decline(req, _SALE_DECLINES.get(sale.reason, ReasonCode.ISSUER_UNAVAILABLE))
            return self.decline(req, ReasonCode.ISSUER_UNAVAILABLE)  # sold, proceeds not arrived
        padding = self.padding_kzt(req.amount_kzt)
        hold_kzt = min(req.amount_kzt + padding, available)
        hold_id = ids.hold_id(req.auth_id)
        result = self.ledger.create_transfers([self._hold(hold_id, card.account_id, hold_kzt, req.auth_id)])[0]
        if result is not R.OK:
            raise AssertionError(f"hold {hold_id} refused after the balance check: {result.name}")
        self.tracker.record(card.card_id, card.kyc_tier, req.amount_kzt, self.clock.now())
        self._approvals += 1
        auth = Authorization(
            req.auth_id,
            req.card_id,
            req.merchant_id,
            req.acquirer_id,
            req.amount_kzt,
            AuthState.HELD,
            ReasonCode.APPROVED.value,
            f"{self._approvals:06d}",
            [hold_id],
            hold_kzt,
            padding,
            at_s=self.clock.now(),
        )
        self.auths[req.auth_id] = auth
        return self.response(auth)

    def top_up_order(self, card_id: str) -> SellOrder | None:
        """Auto top-up of a pre-funded card below its threshold (one sale in flight at most)."""
        card = self.cards.get(card_id)
        if card is None or card.top_up is None or card.top_up_in_flight:
            return None
        available = self.available_kzt(card_id)
        if available >= card.top_up.below_kzt:
            return None
        self._approvals += 1
        sale_id = f"topup:{card_id}:{self._approvals}"
        card.top_up_in_flight = sale_id
        return self.sell_order(card_id, sale_id, card.top_up.to_kzt - available)

    def sale_failed(self, sale_id: str) -> None:
        card = self.card_of_sale(sale_id)
        if card is not None and card.top_up_in_flight == sale_id:
            card.top_up_in_flight = ""
