"""The card issuer: its books, the authorization pipeline and everything after authorization.

The issuer's ledger (one per issuer, design.md §3):

* ``card:{card}:KZT`` — the card's tenge, owed to the cardholder (never below zero, holds count);
* ``settlement:KZT`` — what the issuer owes the network for captured payments (holds land here);
* ``funding:KZT`` — the issuer's money at its settlement bank (mirrors its deposit there);
* ``interchange:KZT`` — interchange income; ``equity:KZT`` — the opening float;
* ``stand_in_exposure:KZT`` — what the issuer paid for stand-in approvals the card could not cover.

Each command is one atomic batch on this ledger and returns a result value; bad input writes
nothing. Authorization runs in two steps around the exchange: :meth:`Issuer.screen` (validate →
card state → limits → AML → funding: is a sale needed?) and :meth:`Issuer.finalize` (re-check, then
the pending hold and the answer). Sale proceeds arrive as payment messages (:meth:`Issuer.handle`),
credited to the card once per sale id.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from services.clock import Clock
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    FundingMode,
    ReasonCode,
    SaleReason,
    SaleResult,
    Screening,
    SellOrder,
)
from services.issuer.cards import (
    Authorization,
    AuthState,
    Card,
    CardResult,
    CardStatus,
    IssuerConfig,
    TopUpRule,
    card_account,
)
from services.issuer.rules import SpendTracker
from services.ledger import (
    Account,
    AccountFlags,
    InMemoryLedger,
    LedgerRepository,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    linked,
)
from services.messaging import PaymentMessage, Purpose, book_half
from services.money import AssetRegistry

__all__ = ["EQUITY", "EXPOSURE", "FUNDING", "INTERCHANGE", "SETTLEMENT", "ClearingCode", "Issuer"]

FUNDING = "funding:KZT"
SETTLEMENT = "settlement:KZT"
INTERCHANGE = "interchange:KZT"
EXPOSURE = "stand_in_exposure:KZT"
EQUITY = "equity:KZT"
_KZT = "KZT"
_BPS = 10_000
_PENDING = TransferFlags.PENDING
_POST = TransferFlags.POST_PENDING
_VOID = TransferFlags.VOID_PENDING
R = TransferResult

# What a failed sale means to the merchant (SaleResult.reason → ISO 8583 code).
_SALE_DECLINES: dict[SaleReason, ReasonCode] = {
    SaleReason.INSUFFICIENT_CRYPTO: ReasonCode.INSUFFICIENT_FUNDS,
    SaleReason.SLIPPAGE_CAP: ReasonCode.DO_NOT_HONOUR,
    SaleReason.QUOTE_EXPIRED: ReasonCode.DO_NOT_HONOUR,
}


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


class Issuer:
    """One card issuer's books, cards and authorizations. Not thread-safe (one driver)."""

    def __init__(
        self,
        config: IssuerConfig,
        clock: Clock,
        assets: AssetRegistry | None = None,
        tradable: Callable[[str], bool] | None = None,
        *,
        ledger: LedgerRepository | None = None,
    ) -> None:
        self.config = config
        self.id = config.issuer_id
        self.clock = clock
        # Live services pass a SqlLedger; simulations and tests get an in-memory one.
        self.ledger: LedgerRepository = ledger if ledger is not None else InMemoryLedger(
            assets, clock, name=config.issuer_id)
        self.cards: dict[str, Card] = {}
        self.auths: dict[str, Authorization] = {}
        self.tracker = SpendTracker(config)
        self._tradable = tradable or (lambda asset: True)
        self._orders: dict[str, str] = {}  # sale id -> card id
        self._advised: set[str] = set()
        self._approvals = 0
        self.ledger.create_accounts(
            [
                Account(FUNDING, _KZT, self.id, "funding", AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
                Account(SETTLEMENT, _KZT, self.id, "settlement"),
                Account(INTERCHANGE, _KZT, self.id, "income"),
                Account(EXPOSURE, _KZT, self.id, "stand_in"),
                Account(EQUITY, _KZT, self.id, "equity"),
            ]
        )

    # -- set-up ------------------------------------------------------------------------------
    def fund(self, deposit_id: str, amount_kzt: int) -> bool:
        """Opening float: the issuer's own money at its bank (the bank books the other side)."""
        t = Transfer(f"{deposit_id}:float", FUNDING, EQUITY, amount_kzt, _KZT, code="float")
        return self.ledger.create_transfers([t])[0].ok

    def open_card(self, spec: CardholderSpec, top_up: TopUpRule | None = None) -> CardResult:
        """Open a card; validates everything before writing anything."""
        if spec.kyc_tier not in self.config.tier_limits_kzt:
            return CardResult.UNKNOWN_TIER
        if spec.funding_mode is FundingMode.JIT and not spec.asset_priority:
            return CardResult.EMPTY_ASSET_PRIORITY
        if any(not self._tradable(asset) for asset in spec.asset_priority):
            return CardResult.UNKNOWN_ASSET
        if spec.card_balance_kzt < 0:
            return CardResult.INVALID_AMOUNT
        if top_up is not None and not 0 < top_up.below_kzt <= top_up.to_kzt:
            return CardResult.INVALID_TOP_UP_RULE
        card = Card(
            spec.card_id,
            spec.holder_id,
            spec.residency,
            spec.kyc_tier,
            spec.funding_mode,
            tuple(spec.asset_priority),
            top_up=top_up,
        )
        known = self.cards.get(spec.card_id)
        if known is not None:
            same = (known.holder_id, known.kyc_tier, known.funding_mode, known.asset_priority) == (
                card.holder_id,
                card.kyc_tier,
                card.funding_mode,
                card.asset_priority,
            )
            return CardResult.EXISTS if same else CardResult.EXISTS_WITH_DIFFERENT_FIELDS
        self.ledger.create_accounts(
            [
                Account(
                    card.account_id,
                    _KZT,
                    spec.holder_id,
                    "card",
                    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
                ),
            ]
        )
        self.cards[card.card_id] = card
        return CardResult.OK

    def set_status(self, card_id: str, status: CardStatus) -> CardResult:
        card = self.cards.get(card_id)
        if card is None:
            return CardResult.UNKNOWN_CARD
        card.status = status
        return CardResult.OK

    # -- readings ----------------------------------------------------------------------------
    def available_kzt(self, card_id: str) -> int:
        acc = self.ledger.account(card_account(card_id))
        return 0 if acc is None else acc.available_credit_balance

    def funding_kzt(self) -> int:
        acc = self.ledger.account(FUNDING)
        return 0 if acc is None else acc.debit_balance

    def exposure_kzt(self) -> int:
        """Stand-in approvals not covered by the card: held or posted, net of refunds."""
        acc = self.ledger.account(EXPOSURE)
        return 0 if acc is None else acc.debits_pending + acc.debits_posted - acc.credits_posted

    def padding_kzt(self, amount_kzt: int) -> int:
        return amount_kzt * self.config.hold_padding_bps // _BPS

    # -- authorization -----------------------------------------------------------------------
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
            sell=self.sell_order(card.card_id, f"{req.auth_id}:sale", shortfall, req.auth_id),
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

    def card_of_sale(self, sale_id: str) -> Card | None:
        card_id = self._orders.get(sale_id)
        return None if card_id is None else self.cards.get(card_id)

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
        hold_id = f"{req.auth_id}:hold"
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

    def response(self, auth: Authorization) -> AuthorizationResponse:
        return AuthorizationResponse(
            auth.auth_id,
            ReasonCode(auth.code),
            auth.approval_code,
            auth.held_kzt if auth.state is not AuthState.DECLINED else 0,
            auth.stand_in,
        )

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

    def _check(self, req: AuthorizationRequest) -> ReasonCode | None:
        if not req.auth_id:
            return ReasonCode.INVALID_TRANSACTION
        if isinstance(req.amount_kzt, bool) or not isinstance(req.amount_kzt, int) or req.amount_kzt <= 0:
            return ReasonCode.INVALID_AMOUNT
        card = self.cards.get(req.card_id)
        if card is None:
            return ReasonCode.NO_SUCH_CARD
        if card.status is CardStatus.BLOCKED:
            return ReasonCode.RESTRICTED_CARD
        if card.status is CardStatus.EXPIRED:
            return ReasonCode.EXPIRED_CARD
        return self.tracker.check(card.card_id, card.kyc_tier, req.amount_kzt, self.clock.now())

    def decline(self, req: AuthorizationRequest, code: ReasonCode) -> AuthorizationResponse:
        auth = Authorization(
            req.auth_id,
            req.card_id,
            req.merchant_id,
            req.acquirer_id,
            req.amount_kzt,
            AuthState.DECLINED,
            code.value,
            at_s=self.clock.now(),
        )
        self.auths[req.auth_id] = auth
        return self.response(auth)

    def _hold(self, hold_id: str, debit_id: str, amount_kzt: int, auth_id: str) -> Transfer:
        return Transfer(
            hold_id,
            debit_id,
            SETTLEMENT,
            amount_kzt,
            _KZT,
            code="hold",
            flags=_PENDING,
            timeout_s=self.config.hold_expiry_s,
            user_data=auth_id,
        )

    # -- incremental authorization -----------------------------------------------------------
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

    # -- clearing, reversal, refunds, expiry -------------------------------------------------
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
                        f"{hold_id}:post",
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
                        f"{hold_id}:void",
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
                    f"{hold_id}:void",
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
            f"{presentment_id}:present",
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

    # -- stand-in advice ---------------------------------------------------------------------
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
            holds.append(self._hold(f"{req.auth_id}:hold", card_account(req.card_id), card_part, req.auth_id))
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

    # -- forgetting (opt-in: a long simulation; live services never call these) ---------------
    def forget_sale(self, sale_id: str) -> None:
        """Forget which card a sale was for: its proceeds can no longer be credited or re-bought.
        The simulation calls it once nothing can deliver them any more (``services.bounded_books``)."""
        self._orders.pop(sale_id, None)

    def forget_authorization(self, auth_id: str) -> None:
        """Forget an authorization and its stand-in advice: later commands on it answer as for an
        unknown one. Its holds stay on the ledger while they are pending (they still expire)."""
        self.auths.pop(auth_id, None)
        self._advised.discard(auth_id)

    # -- messages and settlement -------------------------------------------------------------
    def handle(self, msg: PaymentMessage) -> bool:
        """Transport handler for money arriving at the issuer (its bank has already credited it)."""
        if msg.purpose is Purpose.PROCEEDS:
            card = self.card_of_sale(msg.id)
        elif msg.purpose is Purpose.CARD_LOAD:
            card = self.cards.get(msg.ref)
        elif msg.purpose is Purpose.SETTLEMENT_OUT:
            return book_half(self.ledger, f"{msg.id}:recv", FUNDING, SETTLEMENT, msg)
        else:
            return False
        if card is None:
            return False
        ok = book_half(self.ledger, f"{msg.id}:recv", FUNDING, card.account_id, msg)
        if ok and card.top_up_in_flight == msg.id:
            card.top_up_in_flight = ""
        return ok

    def book_payment(self, msg: PaymentMessage) -> bool:
        """The issuer's half of a payment it makes (settlement to the network, a re-buy)."""
        if msg.purpose is Purpose.SETTLEMENT_IN:
            return book_half(self.ledger, f"{msg.id}:pay", SETTLEMENT, FUNDING, msg)
        if msg.purpose is Purpose.REBUY:
            card = self.card_of_sale(msg.ref)
            return card is not None and book_half(self.ledger, f"{msg.id}:pay", card.account_id, FUNDING, msg)
        return False

    def book_interchange(self, window_id: str, amount_kzt: int) -> bool:
        """Interchange earned in a settlement window: the issuer owes the network that much less."""
        if amount_kzt <= 0:
            return True
        t = Transfer(
            f"{window_id}:interchange",
            SETTLEMENT,
            INTERCHANGE,
            amount_kzt,
            _KZT,
            code="interchange",
            user_data=window_id,
        )
        return self.ledger.create_transfers([t])[0].ok

