"""Messages between the parties of the Crypto Card, and the payment chain's step interface.

Every message carries an ``id`` chosen by its sender; it is the idempotency key on the receiving
side, so a replayed message books nothing. Amounts are ``int`` minor units; prices are ``Decimal``.

The simulation and the live services drive the same :class:`PaymentChain` steps: the simulation
calls each step at the virtual time its leg finishes (so SimPy adds queues, service times and
faults between them), the live issuer service calls them over HTTP, and tests call
:meth:`PaymentChain.authorize` which runs them back to back.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from services.frozen import quick_init
from services.ledger.model import Violation

__all__ = [
    "AuthorizationRequest",
    "AuthorizationResponse",
    "CardholderSpec",
    "ClearingResult",
    "FundingMode",
    "Holding",
    "Lot",
    "MerchantSpec",
    "OrphanPolicy",
    "PaymentChain",
    "ReasonCode",
    "ReconciliationBreak",
    "Residency",
    "SaleLeg",
    "SaleReason",
    "SaleResult",
    "Screening",
    "SellOrder",
    "SettlementReport",
    "TaxPolicy",
]


class FundingMode(StrEnum):
    JIT = "jit"  # sell crypto at authorization time
    PREFUNDED = "prefunded"  # crypto sold ahead of time; authorizations touch tenge only
    STABLECOIN = "stablecoin"  # redeem the tenge stablecoin 1:1 for a fee at authorization time


class Residency(StrEnum):
    RESIDENT = "resident"  # PIT 10 % (seed §2.1.2)
    NON_RESIDENT = "non_resident"  # PIT 20 % (seed §2.1.2)


class OrphanPolicy(StrEnum):
    KEEP_TENGE = "keep_tenge"  # proceeds of a sale that finished after the deadline stay on the card
    REBUY = "rebuy"  # the exchange buys the crypto back into the wallet


class TaxPolicy(StrEnum):
    WITHHOLD = "withhold"  # the exchange withholds PIT at source on each sale
    SELF_DECLARE = "self_declare"  # the cardholder declares; a compliance rate applies


class SaleReason(StrEnum):
    """Why the exchange refused a sale, redemption or re-buy (``SaleResult.reason``).

    Operating errors, not faults: each refusal books nothing, consumes no lot and no book depth.
    """

    NONE = ""  # the sale went through
    INVALID_AMOUNT = "invalid_amount"  # net_kzt <= 0
    UNKNOWN_ASSET = "unknown_asset"  # an asset in the priority list has no order book
    UNKNOWN_HOLDER = "unknown_holder"  # no wallet was opened for the holder
    NO_PRICE = "no_price"  # no mid price has been set for the asset yet
    HALTED = "halted"  # trading in every asset that could fund the order is halted
    INSUFFICIENT_CRYPTO = "insufficient_crypto"  # the wallets do not hold enough
    INSUFFICIENT_LIQUIDITY = "insufficient_liquidity"  # the book's depth is exhausted
    SLIPPAGE_CAP = "slippage_cap"  # the average price would fall further below mid than allowed
    QUOTE_EXPIRED = "quote_expired"  # a quote was presented after its time-to-live
    EXCHANGE_SHORT_OF_KZT = "exchange_short_of_kzt"  # the exchange's bank account cannot pay out
    UNKNOWN_SALE = "unknown_sale"  # a re-buy of a sale this exchange never made
    ALREADY_REBOUGHT = "already_rebought"  # the sale was re-bought under another id
    # The direct rail (services.exchange.direct):
    UNKNOWN_QUOTE = "unknown_quote"  # no open quote for this invoice (never made, or executed)
    UNKNOWN_MERCHANT = "unknown_merchant"  # the merchant has no wallets at the exchange
    REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"  # refunds would pass the payment's amount
    # The sale did not reach the exchange, or its answer or proceeds did not come back:
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"  # the exchange did not answer (or its breaker is open)
    CUSTODY_UNAVAILABLE = "custody_unavailable"  # custody did not release the crypto (simulated leg)
    BANK_UNAVAILABLE = "bank_unavailable"  # the banks did not move the proceeds (simulated leg)


class ReasonCode(StrEnum):
    """ISO 8583 response codes used by ccsim."""

    APPROVED = "00"
    DO_NOT_HONOUR = "05"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    NO_SUCH_CARD = "14"
    INSUFFICIENT_FUNDS = "51"
    EXPIRED_CARD = "54"
    SUSPECTED_FRAUD = "59"
    EXCEEDS_AMOUNT_LIMIT = "61"
    RESTRICTED_CARD = "62"
    EXCEEDS_FREQUENCY_LIMIT = "65"
    ISSUER_UNAVAILABLE = "91"
    DUPLICATE = "94"
    SYSTEM_MALFUNCTION = "96"


@dataclass(frozen=True, slots=True)
class Lot:
    """A purchase lot for the cost basis: ``quantity_minor`` of the asset bought at ``price_kzt``."""

    quantity_minor: int
    price_kzt: Decimal  # KZT per one major unit of the asset
    acquired_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Holding:
    asset: str
    lots: tuple[Lot, ...]


@dataclass(frozen=True, slots=True)
class CardholderSpec:
    holder_id: str
    card_id: str
    residency: Residency
    kyc_tier: str  # a key into the issuer's tier limits
    funding_mode: FundingMode
    asset_priority: tuple[str, ...]  # liquidation order, e.g. ("BTC", "ETH")
    holdings: tuple[Holding, ...] = ()
    card_balance_kzt: int = 0  # tenge already on the card at the start
    stablecoin_minor: int = 0  # tenge stablecoin in the wallet (stablecoin mode)


@dataclass(frozen=True, slots=True)
class MerchantSpec:
    merchant_id: str
    acquirer_id: str
    category: str
    cryptocity: bool = False  # in the pilot zone: may take digital assets directly


@quick_init
@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    auth_id: str  # the network's id for this authorization; idempotency key end to end
    card_id: str
    merchant_id: str
    acquirer_id: str
    amount_kzt: int
    category: str = ""
    at_s: float = 0.0  # when the POS sent it


@quick_init
@dataclass(frozen=True, slots=True)
class SellOrder:
    """Issuer → exchange: sell enough of the holder's crypto to net ``net_kzt`` after fees."""

    id: str  # sale id = idempotency key at the exchange and on the proceeds message
    auth_id: str
    holder_id: str
    net_kzt: int  # shortfall plus hold padding
    asset_priority: tuple[str, ...]
    max_slippage_bps: int
    quote_ttl_s: float


@dataclass(frozen=True, slots=True)
class SaleLeg:
    asset: str
    quantity_minor: int  # crypto taken from the wallet
    gross_kzt: int  # proceeds before the taker fee
    fee_kzt: int
    avg_price_kzt: Decimal
    slippage_bps: Decimal
    realized_gain_kzt: int = 0
    pit_kzt: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class SaleResult:
    id: str
    auth_id: str
    holder_id: str
    ok: bool
    reason: SaleReason = SaleReason.NONE  # why it failed
    legs: tuple[SaleLeg, ...] = ()
    net_kzt: int = 0  # credited towards the card (after fees and any withheld tax)

    @property
    def fee_kzt(self) -> int:
        return sum(leg.fee_kzt for leg in self.legs)


@quick_init
@dataclass(frozen=True, slots=True)
class Screening:
    """The issuer's first look: decline now, approve from the card balance, or sell first."""

    auth_id: str
    decline: ReasonCode | None = None
    sell: SellOrder | None = None  # set when the card's tenge does not cover the amount (JIT)


@quick_init
@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    auth_id: str
    code: ReasonCode
    approval_code: str = ""
    held_kzt: int = 0
    stand_in: bool = False

    @property
    def approved(self) -> bool:
        return self.code is ReasonCode.APPROVED


@quick_init
@dataclass(frozen=True, slots=True)
class ClearingResult:
    auth_id: str
    ok: bool
    reason: str = ""
    captured_kzt: int = 0
    released_kzt: int = 0


@dataclass(frozen=True, slots=True)
class SettlementReport:
    window_id: str
    net_positions_kzt: dict[str, int]  # participant -> net (positive: receives); sums to 0
    merchant_credits_kzt: dict[str, int]  # merchant -> credited in this window
    payments: int = 0


@dataclass(frozen=True, slots=True)
class ReconciliationBreak:
    message_id: str
    kind: str  # "one_side_only", "amount_differs", …
    detail: str


class PaymentChain(Protocol):
    """The whole Crypto Card chain, as steps. Each step books its party's ledger atomically."""

    # -- set-up ------------------------------------------------------------------------------
    def open_cardholder(self, spec: CardholderSpec) -> None: ...

    def open_merchant(self, spec: MerchantSpec) -> None: ...

    def set_mid_price(self, asset: str, price_kzt: Decimal) -> None: ...

    def replenish_books(self, elapsed_s: float) -> None: ...

    def set_halted(self, asset: str, halted: bool) -> None: ...

    # -- authorization legs, in order --------------------------------------------------------
    def screen(self, req: AuthorizationRequest) -> Screening: ...

    def quote(self, order: SellOrder) -> None: ...  # the exchange prices the order now (a TTL runs)

    def drop_quote(self, order_id: str) -> None: ...  # the order never reached execution

    def sell(self, order: SellOrder) -> SaleResult: ...  # exchange + custody, at the quote while firm

    def pay_proceeds(self, sale: SaleResult) -> bool: ...  # bank: exchange → issuer, by sale id

    def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse: ...

    def authorize(self, req: AuthorizationRequest) -> AuthorizationResponse: ...  # all legs at once

    # -- deadline, stand-in, orphans ---------------------------------------------------------
    def stand_in(self, req: AuthorizationRequest) -> AuthorizationResponse: ...  # network decides

    def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool: ...

    def orphaned_sale(self, req: AuthorizationRequest, sale: SaleResult) -> None: ...

    # -- after authorization -----------------------------------------------------------------
    def capture(self, auth_id: str, amount_kzt: int) -> ClearingResult: ...

    def reverse(self, auth_id: str) -> ClearingResult: ...

    def refund(self, auth_id: str, amount_kzt: int) -> ClearingResult: ...

    def expire_holds(self) -> int: ...

    def settle(self, window_id: str) -> SettlementReport: ...

    # -- integrity ---------------------------------------------------------------------------
    def check_invariants(self) -> dict[str, list[Violation]]: ...  # party -> violations

    def reconcile(self) -> list[ReconciliationBreak]: ...
