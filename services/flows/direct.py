"""CryptoCity's direct rail: a zone merchant's QR invoice in tenge, paid from the holder's custodial
wallet into the merchant's at the AIFC exchange; refunds; the merchant's conversions to tenge.

The payment, step by step (each step a port; the simulation runs them leg by leg, a back-to-back
driver calls :func:`pay_direct`):

1. :func:`screen_and_quote` — the KYC-tier and AML rules of the card (the same limits and rules,
   counted per holder on this rail), then the exchange quotes the invoice in the holder's asset
   priority, firm for a time-to-live (the card's quote rule);
2. :func:`accept` — the holder accepts: the exchange moves the crypto between the two wallets (one
   linked batch that books both), the merchant books its half, the approved amount counts toward
   the holder's limits;
3. on a decline the scenario's :class:`FallbackPolicy` says whether the payment fails or goes to
   the holder's Crypto Card instead (only when the exchange is unavailable or the assets halted:
   a limit or a balance the card would meet again is not a reason to switch rails).

:func:`refund_direct` gives crypto back at the original quantity (``services.exchange.direct``);
:func:`convert` sells a merchant's crypto and sends the tenge to its bank account.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.contracts import AuthorizationResponse, ReasonCode, SaleReason, SaleResult
from services.exchange.direct import DirectPayment, Invoice, PaymentQuote

__all__ = [
    "AcceptPorts",
    "CardPorts",
    "ConversionPorts",
    "DirectDecline",
    "DirectOutcome",
    "DirectPorts",
    "FallbackPolicy",
    "QuotePorts",
    "RefundPorts",
    "accept",
    "convert",
    "decline_of",
    "fall_back",
    "falls_back",
    "pay_direct",
    "refund_direct",
    "screen_and_quote",
]


class FallbackPolicy(StrEnum):
    """What a direct payment does when the exchange cannot take it."""

    FAIL = "fail"  # the payment fails; the holder may pay otherwise
    CARD = "card"  # the holder's Crypto Card pays instead (the card rail, from authorization on)


class DirectDecline(StrEnum):
    """Why a direct payment did not go through (``""``: it did)."""

    NONE = ""
    INVALID_AMOUNT = "invalid_amount"
    EXCEEDS_AMOUNT_LIMIT = "exceeds_amount_limit"  # KYC tier: per payment, day or month (card's 61)
    EXCEEDS_FREQUENCY_LIMIT = "exceeds_frequency_limit"  # AML velocity (card's 65)
    SUSPECTED_FRAUD = "suspected_fraud"  # AML structuring (card's 59)
    INSUFFICIENT_BALANCE = "insufficient_balance"  # no asset in the priority covers the invoice
    QUOTE_EXPIRED = "quote_expired"  # accepted after the quote's time-to-live
    HALTED = "halted"  # every asset that could pay is halted
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"  # the exchange did not answer (outage)
    NO_PRICE = "no_price"
    REFUSED = "refused"  # the exchange refused for another reason (unknown holder or merchant…)


_FROM_REASON_CODE = {
    ReasonCode.EXCEEDS_AMOUNT_LIMIT: DirectDecline.EXCEEDS_AMOUNT_LIMIT,
    ReasonCode.EXCEEDS_FREQUENCY_LIMIT: DirectDecline.EXCEEDS_FREQUENCY_LIMIT,
    ReasonCode.SUSPECTED_FRAUD: DirectDecline.SUSPECTED_FRAUD,
    ReasonCode.INVALID_AMOUNT: DirectDecline.INVALID_AMOUNT,
}
_FROM_SALE_REASON = {
    SaleReason.INVALID_AMOUNT: DirectDecline.INVALID_AMOUNT,
    SaleReason.INSUFFICIENT_CRYPTO: DirectDecline.INSUFFICIENT_BALANCE,
    SaleReason.QUOTE_EXPIRED: DirectDecline.QUOTE_EXPIRED,
    SaleReason.HALTED: DirectDecline.HALTED,
    SaleReason.NO_PRICE: DirectDecline.NO_PRICE,
    SaleReason.EXCHANGE_UNAVAILABLE: DirectDecline.EXCHANGE_UNAVAILABLE,
}
_FALL_BACK = frozenset({DirectDecline.EXCHANGE_UNAVAILABLE, DirectDecline.HALTED})


def decline_of(reason: SaleReason | ReasonCode) -> DirectDecline:
    """The direct rail's decline for the exchange's refusal or the limits' code."""
    if isinstance(reason, ReasonCode):
        return _FROM_REASON_CODE.get(reason, DirectDecline.REFUSED)
    return _FROM_SALE_REASON.get(reason, DirectDecline.REFUSED)


def falls_back(decline: DirectDecline, policy: FallbackPolicy) -> bool:
    """Whether a declined direct payment goes to the card: the policy says so and the exchange, not
    the holder, is the cause."""
    return policy is FallbackPolicy.CARD and decline in _FALL_BACK


@dataclass(frozen=True, slots=True)
class DirectOutcome:
    """What became of a direct payment: paid directly, declined, or paid by the card instead."""

    invoice_id: str
    decline: DirectDecline = DirectDecline.NONE
    payment: DirectPayment | None = None  # the on-exchange transfer, when paid directly
    card: AuthorizationResponse | None = None  # the card's answer, when it fell back

    @property
    def paid_direct(self) -> bool:
        return self.payment is not None and self.payment.ok

    @property
    def fell_back(self) -> bool:
        return self.card is not None


class QuotePorts(Protocol):
    """Step 1: the holder's limits and the exchange's quote."""

    async def screen(self, invoice: Invoice) -> ReasonCode | None:
        """The card's KYC-tier and AML rules for this holder on this rail; ``None``: within them."""
        ...

    async def quote(self, invoice: Invoice) -> PaymentQuote | SaleReason:
        """The exchange prices the invoice (a refusal is its reason)."""
        ...


class AcceptPorts(Protocol):
    """Step 2: the exchange executes, the merchant books its half, the limits count it."""

    async def paid(self, invoice_id: str) -> DirectPayment | None:
        """The payment of ``invoice_id`` if the exchange executed it before (a replay), else ``None``."""
        ...

    async def accept(self, invoice_id: str) -> DirectPayment:
        """The exchange executes the open quote: both wallets booked, or a refusal."""
        ...

    async def book_receipt(self, payment: DirectPayment) -> bool:
        """The merchant books its half (the crypto received, the fee out of it)."""
        ...

    async def record(self, invoice: Invoice) -> None:
        """The paid amount counts toward the holder's limits."""
        ...


class CardPorts(Protocol):
    """Step 3, on a decline that falls back: the card rail (the POS's, not the exchange's)."""

    async def pay_by_card(self, invoice: Invoice) -> AuthorizationResponse:
        """The holder's Crypto Card pays the invoice instead (the card rail)."""
        ...


class DirectPorts(QuotePorts, AcceptPorts, CardPorts, Protocol):
    """The holder's limits, the exchange's desk and the merchant's books, for one payment (a driver
    that runs every step in one place; the live exchange runs steps 1 and 2, the POS step 3)."""


class RefundPorts(Protocol):
    async def refund(self, refund_id: str, invoice_id: str, amount_kzt: int) -> DirectPayment:
        """The exchange gives the crypto back out of the merchant's wallet, or refuses."""
        ...

    async def book_refund(self, refund: DirectPayment) -> bool:
        """The merchant books its half of the refund."""
        ...


class ConversionPorts(Protocol):
    async def convert(self, order_id: str, merchant_id: str, asset: str, quantity_minor: int) -> SaleResult:
        """The exchange sells (or redeems) the merchant's crypto; a refusal is ``ok=False``."""
        ...

    async def book_sold(self, sale: SaleResult, merchant_id: str) -> bool:
        """The merchant books the crypto sold."""
        ...

    async def pay_conversion(self, sale: SaleResult, merchant_id: str) -> bool:
        """The tenge: exchange → banks → the merchant's bank account (the merchant books its half)."""
        ...


async def screen_and_quote(invoice: Invoice, ports: QuotePorts) -> PaymentQuote | DirectDecline:
    """Limits first (nothing is quoted for a payment the rules refuse), then the quote."""
    code = await ports.screen(invoice)
    if code is not None:
        return decline_of(code)
    quote = await ports.quote(invoice)
    if isinstance(quote, SaleReason):
        return decline_of(quote)
    return quote


async def accept(invoice: Invoice, ports: AcceptPorts) -> DirectOutcome:
    """The holder accepts the open quote: the exchange executes, the merchant books, limits count.

    An invoice paid before (the holder's phone retried, a POS re-sent under another key) answers
    with its first payment and moves and counts nothing again."""
    done = await ports.paid(invoice.invoice_id)
    if done is not None:
        return DirectOutcome(invoice.invoice_id, payment=done)
    payment = await ports.accept(invoice.invoice_id)
    if not payment.ok:
        return DirectOutcome(invoice.invoice_id, decline_of(payment.reason), payment)
    await ports.book_receipt(payment)
    await ports.record(invoice)
    return DirectOutcome(invoice.invoice_id, payment=payment)


async def fall_back(outcome: DirectOutcome, invoice: Invoice, policy: FallbackPolicy,
                    ports: CardPorts) -> DirectOutcome:
    """A declined payment goes to the card when :func:`falls_back` says so."""
    if outcome.paid_direct or not falls_back(outcome.decline, policy):
        return outcome
    card = await ports.pay_by_card(invoice)
    return DirectOutcome(invoice.invoice_id, outcome.decline, outcome.payment, card)


async def pay_direct(invoice: Invoice, policy: FallbackPolicy, ports: DirectPorts) -> DirectOutcome:
    """The whole payment back to back (the simulation runs the same steps leg by leg)."""
    quoted = await screen_and_quote(invoice, ports)
    if isinstance(quoted, DirectDecline):
        outcome = DirectOutcome(invoice.invoice_id, quoted)
    else:
        outcome = await accept(invoice, ports)
    return await fall_back(outcome, invoice, policy, ports)


async def refund_direct(refund_id: str, invoice_id: str, amount_kzt: int, ports: RefundPorts) -> DirectPayment:
    """Refund a direct payment in crypto at the original quantity; the merchant books its half."""
    refund = await ports.refund(refund_id, invoice_id, amount_kzt)
    if refund.ok:
        await ports.book_refund(refund)
    return refund


async def convert(order_id: str, merchant_id: str, asset: str, quantity_minor: int,
                  ports: ConversionPorts) -> SaleResult:
    """Sell a merchant's crypto; the merchant books it, and the tenge goes to its bank account."""
    sale = await ports.convert(order_id, merchant_id, asset, quantity_minor)
    if sale.ok:
        await ports.book_sold(sale, merchant_id)
        await ports.pay_conversion(sale, merchant_id)
    return sale
