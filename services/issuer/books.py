"""The issuer's books: its ledger, cards and authorizations, and the bookings every step shares.

The issuer's ledger (one per issuer, design.md §3):

* ``card:{card}:KZT`` — the card's tenge, owed to the cardholder (never below zero, holds count);
* ``settlement:KZT`` — what the issuer owes the network for captured payments (holds land here);
* ``funding:KZT`` — the issuer's money at its settlement bank (mirrors its deposit there);
* ``interchange:KZT`` — interchange income; ``equity:KZT`` — the opening float;
* ``stand_in_exposure:KZT`` — what the issuer paid for stand-in approvals the card could not cover.

Each command is one atomic batch on this ledger and returns a result value; bad input writes
nothing. Sale proceeds arrive as payment messages (:meth:`IssuerBooks.handle`), credited to the card
once per sale id. The steps live beside it: authorization (:mod:`services.issuer.authorization`),
clearing (:mod:`services.issuer.clearing`) and the stand-in advice (:mod:`services.issuer.advice`).
"""

from __future__ import annotations

from collections.abc import Callable

from services.clock import Clock
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    FundingMode,
    ReasonCode,
)
from services.ids import Step, transfer_id
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
    Transfer,
    TransferFlags,
    TransferResult,
)
from services.messaging import PaymentMessage, Purpose, book_half
from services.money import AssetRegistry

__all__ = ["EQUITY", "EXPOSURE", "FUNDING", "INTERCHANGE", "SETTLEMENT", "IssuerBooks"]

FUNDING = "funding:KZT"
SETTLEMENT = "settlement:KZT"
INTERCHANGE = "interchange:KZT"
EXPOSURE = "stand_in_exposure:KZT"
EQUITY = "equity:KZT"
_KZT = "KZT"
_BPS = 10_000
_PENDING = TransferFlags.PENDING
R = TransferResult



class IssuerBooks:
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

    def card_of_sale(self, sale_id: str) -> Card | None:
        card_id = self._orders.get(sale_id)
        return None if card_id is None else self.cards.get(card_id)

    def response(self, auth: Authorization) -> AuthorizationResponse:
        return AuthorizationResponse(
            auth.auth_id,
            ReasonCode(auth.code),
            auth.approval_code,
            auth.held_kzt if auth.state is not AuthState.DECLINED else 0,
            auth.stand_in,
        )

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

    def forget_sale(self, sale_id: str) -> None:
        """Forget which card a sale was for: its proceeds can no longer be credited or re-bought.
        The simulation calls it once nothing can deliver them any more (``services.bounded_books``)."""
        self._orders.pop(sale_id, None)

    def forget_authorization(self, auth_id: str) -> None:
        """Forget an authorization and its stand-in advice: later commands on it answer as for an
        unknown one. Its holds stay on the ledger while they are pending (they still expire)."""
        self.auths.pop(auth_id, None)
        self._advised.discard(auth_id)

    def handle(self, msg: PaymentMessage) -> bool:
        """Transport handler for money arriving at the issuer (its bank has already credited it)."""
        if msg.purpose is Purpose.PROCEEDS:
            card = self.card_of_sale(msg.id)
        elif msg.purpose is Purpose.CARD_LOAD:
            card = self.cards.get(msg.ref)
        elif msg.purpose is Purpose.SETTLEMENT_OUT:
            return book_half(self.ledger, transfer_id(msg.id, Step.RECV), FUNDING, SETTLEMENT, msg)
        else:
            return False
        if card is None:
            return False
        ok = book_half(self.ledger, transfer_id(msg.id, Step.RECV), FUNDING, card.account_id, msg)
        if ok and card.top_up_in_flight == msg.id:
            card.top_up_in_flight = ""
        return ok

    def book_payment(self, msg: PaymentMessage) -> bool:
        """The issuer's half of a payment it makes (settlement to the network, a re-buy)."""
        if msg.purpose is Purpose.SETTLEMENT_IN:
            return book_half(self.ledger, transfer_id(msg.id, Step.PAY), SETTLEMENT, FUNDING, msg)
        if msg.purpose is Purpose.REBUY:
            card = self.card_of_sale(msg.ref)
            pay_id = transfer_id(msg.id, Step.PAY)
            return card is not None and book_half(self.ledger, pay_id, card.account_id, FUNDING, msg)
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
