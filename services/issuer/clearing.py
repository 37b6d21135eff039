"""After authorization, at the issuer: incremental authorization, capture (partial, or over-capture
within the padding), reversal, refund and chargeback, hold expiry. Each resolves holds once."""

from __future__ import annotations

from enum import StrEnum

from services.ids import Step, transfer_id
from services.issuer.books import EXPOSURE, SETTLEMENT, IssuerBooks
from services.issuer.cards import (
    Authorization,
    AuthState,
    CardStatus,
    card_account,
)
from services.ledger import (
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    linked,
)

__all__ = ["ClearingCode", "ClearingSteps"]

_KZT = "KZT"
_POST = TransferFlags.POST_PENDING
_VOID = TransferFlags.VOID_PENDING
R = TransferResult


class ClearingCode(StrEnum):
    """Results of the commands after authorization (``ClearingResult.reason``)."""

    OK = "ok"
    UNKNOWN_AUTH = "unknown_auth"
    NOT_APPROVED = "not_approved"
    INVALID_AMOUNT = "invalid_amount"
    EXCEEDS_PADDING = "exceeds_padding"  # a capture above the authorized amount plus padding
    EXCEEDS_HOLD = "exceeds_hold"  # within the padding, but more than the card could hold
    ALREADY_RESOLVED = "already_resolved"  # the hold was captured or reversed before
    HOLD_EXPIRED = "hold_expired"
    NOT_CAPTURED = "not_captured"
    EXCEEDS_CAPTURED = "exceeds_captured"  # refunds and chargebacks above what was captured
    CARD_NOT_ACTIVE = "card_not_active"
    LIMIT = "limit"
    INSUFFICIENT_FUNDS = "insufficient_funds"


class ClearingSteps(IssuerBooks):
    """The clearing steps over the issuer's books."""

    def increment_shortfall(self, auth_id: str, extra_kzt: int) -> int:
        """Tenge the card lacks for an increment (with its padding); 0 when it has enough."""
        auth = self.auths.get(auth_id)
        if auth is None or auth.state is not AuthState.HELD or extra_kzt <= 0:
            return 0
        need = extra_kzt + self.padding_kzt(extra_kzt)
        return max(0, need - self.available_kzt(auth.card_id))

    def increment(self, auth_id: str, extra_kzt: int) -> ClearingCode:
        """Raise an approved authorization by ``extra_kzt``: one more hold on the card."""
        auth = self.auths.get(auth_id)
        if auth is None:
            return ClearingCode.UNKNOWN_AUTH
        if auth.state is AuthState.DECLINED:
            return ClearingCode.NOT_APPROVED
        if auth.state is not AuthState.HELD:
            return ClearingCode.ALREADY_RESOLVED
        if isinstance(extra_kzt, bool) or not isinstance(extra_kzt, int) or extra_kzt <= 0:
            return ClearingCode.INVALID_AMOUNT
        card = self.cards.get(auth.card_id)
        if card is None or card.status is not CardStatus.ACTIVE:
            return ClearingCode.CARD_NOT_ACTIVE
        per_txn = self.config.tier_limits_kzt[card.kyc_tier][0]
        now = self.clock.now()
        day_kzt, month_kzt = self.tracker.spent_kzt(card.card_id, now)
        _, daily, monthly = self.config.tier_limits_kzt[card.kyc_tier]
        if auth.amount_kzt + extra_kzt > per_txn or day_kzt + extra_kzt > daily or month_kzt + extra_kzt > monthly:
            return ClearingCode.LIMIT
        available = self.available_kzt(card.card_id)
        if available < extra_kzt:
            return ClearingCode.INSUFFICIENT_FUNDS
        padding = self.padding_kzt(extra_kzt)
        hold_kzt = min(extra_kzt + padding, available)
        hold_id = f"{auth_id}:inc{auth.increments + 1}"
        result = self.ledger.create_transfers([self._hold(hold_id, card.account_id, hold_kzt, auth_id)])[0]
        if result is not R.OK:
            raise AssertionError(f"increment hold {hold_id} refused after the balance check: {result.name}")
        self.tracker.record(card.card_id, card.kyc_tier, extra_kzt, now)
        auth.increments += 1
        auth.holds.append(hold_id)
        auth.amount_kzt += extra_kzt
        auth.held_kzt += hold_kzt
        auth.padding_kzt += padding
        return ClearingCode.OK

    def capture(self, auth_id: str, amount_kzt: int) -> tuple[ClearingCode, int]:
        """Post ``amount_kzt`` of the holds (partial, full or over-capture within the padding);
        the rest of every hold is released. Returns the code and the tenge released."""
        auth = self.auths.get(auth_id)
        code = self._resolvable(auth)
        if code is not ClearingCode.OK or auth is None:
            return code, 0
        if isinstance(amount_kzt, bool) or not isinstance(amount_kzt, int) or amount_kzt <= 0:
            return ClearingCode.INVALID_AMOUNT, 0
        if amount_kzt > auth.amount_kzt + auth.padding_kzt:
            return ClearingCode.EXCEEDS_PADDING, 0
        if amount_kzt > auth.held_kzt:
            return ClearingCode.EXCEEDS_HOLD, 0
        batch: list[Transfer] = []
        remaining = amount_kzt
        for hold_id in auth.holds:
            held = self._held_amount(hold_id)
            post = min(remaining, held)
            remaining -= post
            if post:
                batch.append(
                    Transfer(
                        transfer_id(hold_id, Step.POST),
                        "",
                        "",
                        post,
                        "",
                        code="capture",
                        flags=_POST,
                        pending_id=hold_id,
                        user_data=auth_id,
                    )
                )
            else:
                batch.append(
                    Transfer(
                        transfer_id(hold_id, Step.VOID),
                        "",
                        "",
                        0,
                        "",
                        code="release",
                        flags=_VOID,
                        pending_id=hold_id,
                        user_data=auth_id,
                    )
                )
        code = self._resolve(batch)
        if code is ClearingCode.OK:
            auth.state = AuthState.CAPTURED
            auth.captured_kzt = amount_kzt
        elif code is ClearingCode.HOLD_EXPIRED:
            auth.state = AuthState.EXPIRED
        return code, auth.held_kzt - amount_kzt if code is ClearingCode.OK else 0

    def reverse(self, auth_id: str, code_text: str = "reversal") -> tuple[ClearingCode, int]:
        """Release every hold of an approved, uncaptured authorization."""
        auth = self.auths.get(auth_id)
        code = self._resolvable(auth)
        if code is not ClearingCode.OK or auth is None:
            return code, 0
        code = self._resolve(
            [
                Transfer(
                    transfer_id(hold_id, Step.VOID),
                    "",
                    "",
                    0,
                    "",
                    code=code_text,
                    flags=_VOID,
                    pending_id=hold_id,
                    user_data=auth_id,
                )
                for hold_id in auth.holds
            ]
        )
        if code is ClearingCode.OK:
            auth.state = AuthState.REVERSED
            return code, auth.held_kzt
        if code is ClearingCode.HOLD_EXPIRED:
            auth.state = AuthState.EXPIRED
        return code, 0

    def give_back(self, auth_id: str, amount_kzt: int, kind: str) -> tuple[ClearingCode, str]:
        """A refund (merchant-initiated) or chargeback (issuer-initiated) of a captured payment:
        the card gets ``amount_kzt`` back. Returns the code and the presentment id."""
        auth = self.auths.get(auth_id)
        if auth is None:
            return ClearingCode.UNKNOWN_AUTH, ""
        if auth.state is not AuthState.CAPTURED:
            return ClearingCode.NOT_CAPTURED, ""
        if isinstance(amount_kzt, bool) or not isinstance(amount_kzt, int) or amount_kzt <= 0:
            return ClearingCode.INVALID_AMOUNT, ""
        if auth.returned_kzt + amount_kzt > auth.captured_kzt:
            return ClearingCode.EXCEEDS_CAPTURED, ""
        presentment_id = f"{auth_id}:{kind}:{auth.returns + 1}"
        target = card_account(auth.card_id) if auth.card_id in self.cards else EXPOSURE
        t = Transfer(
            transfer_id(presentment_id, Step.PRESENT),
            SETTLEMENT,
            target,
            amount_kzt,
            _KZT,
            code=kind,
            user_data=presentment_id,
        )
        result = self.ledger.create_transfers([t])[0]
        if result is not R.OK:
            raise AssertionError(f"{kind} {presentment_id} refused: {result.name}")
        auth.returns += 1
        auth.returned_kzt += amount_kzt
        return ClearingCode.OK, presentment_id

    def expire_holds(self) -> int:
        """Release holds past their timeout; returns how many authorizations expired."""
        expired = 0
        for t in self.ledger.expire_pending():
            hold = self.ledger.transfer(t.pending_id)
            auth = self.auths.get(hold.user_data) if hold is not None else None
            if auth is None or auth.state is not AuthState.HELD:
                continue
            if all(self.ledger.pending_state(h) is not PendingState.PENDING for h in auth.holds):
                auth.state = AuthState.EXPIRED
                expired += 1
        return expired

    def _resolvable(self, auth: Authorization | None) -> ClearingCode:
        if auth is None:
            return ClearingCode.UNKNOWN_AUTH
        if auth.state is AuthState.DECLINED:
            return ClearingCode.NOT_APPROVED
        if auth.state is AuthState.EXPIRED:
            return ClearingCode.HOLD_EXPIRED
        if auth.state is not AuthState.HELD:
            return ClearingCode.ALREADY_RESOLVED
        return ClearingCode.OK

    def _held_amount(self, hold_id: str) -> int:
        hold = self.ledger.transfer(hold_id)
        return 0 if hold is None else hold.amount

    def _resolve(self, batch: list[Transfer]) -> ClearingCode:
        results = self.ledger.create_transfers(linked(batch))
        failed = [r for r in results if r is not R.OK and r is not R.LINKED_EVENT_FAILED]
        if not failed:
            return ClearingCode.OK
        if failed[0] is R.PENDING_TRANSFER_EXPIRED:
            return ClearingCode.HOLD_EXPIRED
        if failed[0] in (
            R.PENDING_TRANSFER_ALREADY_POSTED,
            R.PENDING_TRANSFER_ALREADY_VOIDED,
            R.EXISTS,
        ):
            return ClearingCode.ALREADY_RESOLVED
        raise AssertionError(f"resolution refused by the ledger: {failed[0].name}")
