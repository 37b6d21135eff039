"""The network's stand-in decision, applied once at the issuer (design.md §1): an approval holds the
card's tenge and books what the card cannot cover as stand-in exposure; a decline releases a hold
the issuer placed meanwhile."""

from __future__ import annotations

from services import ids
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    FundingMode,
    ReasonCode,
)
from services.issuer.books import EXPOSURE
from services.issuer.cards import (
    Authorization,
    AuthState,
    card_account,
)
from services.issuer.clearing import ClearingSteps
from services.ledger import (
    Transfer,
    TransferResult,
    linked,
)

__all__ = ["AdviceSteps"]

R = TransferResult


class AdviceSteps(ClearingSteps):
    """The advice steps over the issuer's books (a decline reverses, so it builds on clearing)."""

    def advice_seen(self, auth_id: str) -> bool:
        return auth_id in self._advised

    def advice_shortfall(self, req: AuthorizationRequest) -> int:
        """Tenge a JIT or stablecoin card lacks to cover a stand-in approval not yet held."""
        card = self.cards.get(req.card_id)
        known = self.auths.get(req.auth_id)
        if card is None or card.funding_mode is FundingMode.PREFUNDED or req.amount_kzt <= 0:
            return 0
        if known is not None and known.state is not AuthState.DECLINED:
            return 0
        return max(0, req.amount_kzt - self.available_kzt(card.card_id))

    def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool:
        """Apply the network's stand-in decision exactly once; ``False`` for a repeated advice.

        Approved: the issuer must honour it. It holds the card's tenge and books the part the card
        cannot cover as stand-in exposure. Declined: a hold the issuer placed in the meantime is
        released (the merchant was told no).
        """
        if req.auth_id in self._advised or req.amount_kzt <= 0:
            return False
        self._advised.add(req.auth_id)
        known = self.auths.get(req.auth_id)
        if not response.approved:
            if known is None:
                self.decline(req, response.code)
            elif known.state is AuthState.HELD:
                self.reverse(req.auth_id, code_text="stand_in_decline")
            return True
        if known is not None and known.state is not AuthState.DECLINED:
            known.stand_in = True
            return True
        card = self.cards.get(req.card_id)
        card_part = min(self.available_kzt(req.card_id), req.amount_kzt) if card else 0
        holds: list[Transfer] = []
        if card_part:
            holds.append(self._hold(ids.hold_id(req.auth_id), card_account(req.card_id), card_part, req.auth_id))
        if req.amount_kzt - card_part:
            holds.append(self._hold(f"{req.auth_id}:exposure", EXPOSURE, req.amount_kzt - card_part, req.auth_id))
        results = self.ledger.create_transfers(linked(holds))
        if any(r is not R.OK for r in results):
            raise AssertionError(f"stand-in holds for {req.auth_id} refused: {[r.name for r in results]}")
        if card is not None:
            self.tracker.record(card.card_id, card.kyc_tier, req.amount_kzt, self.clock.now())
        self.auths[req.auth_id] = Authorization(
            req.auth_id,
            req.card_id,
            req.merchant_id,
            req.acquirer_id,
            req.amount_kzt,
            AuthState.HELD,
            ReasonCode.APPROVED.value,
            response.approval_code,
            [h.id for h in holds],
            req.amount_kzt,
            0,
            stand_in=True,
            at_s=self.clock.now(),
        )
        return True
