"""The direct rail's ports over the party objects of one process: the exchange's
:class:`~services.exchange.DirectDesk`, the zone merchants' :class:`~services.merchant.MerchantBooks`
and a :class:`~services.issuer.SpendTracker` with the card's KYC-tier and AML rules, per holder.

Both drivers hold these parts in one place — the in-process chain (``services.chain_direct``) and
the live exchange service, which hosts the merchants' books beside its own
(``services.api.parties.exchange.direct_service``) — so both plug in this class and add only what
differs: how the holder's card pays instead (:class:`~services.flows.direct.CardPorts`) and how the
conversion's tenge reaches the merchant's bank (``pay_conversion``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.clock import Clock
from services.contracts import ReasonCode, SaleReason, SaleResult
from services.exchange import DirectDesk, DirectPayment, Invoice, PaymentQuote
from services.flows.integrity import merchant_wallets_agree
from services.issuer import SpendTracker
from services.ledger import Violation
from services.merchant import MerchantBooks

__all__ = ["LocalDirectPorts", "merchant_wallets_match"]


class LocalDirectPorts:
    """:class:`~services.flows.direct.QuotePorts`, ``AcceptPorts``, ``RefundPorts`` and the local
    half of ``ConversionPorts``. ``holders`` maps a holder to its (card, KYC tier); it is read
    when a port runs, so holders opened later count."""

    __slots__ = ("books", "clock", "desk", "holders", "limits")

    def __init__(self, desk: DirectDesk, books: MerchantBooks, limits: SpendTracker,
                 holders: Mapping[str, tuple[str, str]], clock: Clock) -> None:
        self.desk = desk
        self.books = books
        self.limits = limits
        self.holders = holders
        self.clock = clock

    # -- the payment ----------------------------------------------------------------------------
    async def screen(self, invoice: Invoice) -> ReasonCode | None:
        holder = self.holders.get(invoice.holder_id)
        if holder is None:
            return ReasonCode.NO_SUCH_CARD
        if isinstance(invoice.amount_kzt, bool) or invoice.amount_kzt <= 0:
            return ReasonCode.INVALID_AMOUNT
        return self.limits.check(invoice.holder_id, holder[1], invoice.amount_kzt, self.clock.now())

    async def quote(self, invoice: Invoice) -> PaymentQuote | SaleReason:
        return self.desk.quote(invoice)

    async def paid(self, invoice_id: str) -> DirectPayment | None:
        return self.desk.payment(invoice_id)

    async def accept(self, invoice_id: str) -> DirectPayment:
        return self.desk.accept(invoice_id)

    async def book_receipt(self, payment: DirectPayment) -> bool:
        return self.books.book_receipt(payment.invoice_id, payment.merchant_id, payment.asset,
                                       payment.quantity_minor, payment.fee_minor)

    async def record(self, invoice: Invoice) -> None:
        _, tier = self.holders[invoice.holder_id]
        self.limits.record(invoice.holder_id, tier, invoice.amount_kzt, self.clock.now())

    # -- the refund -----------------------------------------------------------------------------
    async def refund(self, refund_id: str, invoice_id: str, amount_kzt: int) -> DirectPayment:
        return self.desk.refund(refund_id, invoice_id, amount_kzt)

    async def book_refund(self, refund: DirectPayment) -> bool:
        return self.books.book_refund(refund.id, refund.merchant_id, refund.asset, refund.quantity_minor)

    # -- the conversion -------------------------------------------------------------------------
    async def convert(self, order_id: str, merchant_id: str, asset: str, quantity_minor: int) -> SaleResult:
        return self.desk.convert(order_id, merchant_id, asset, quantity_minor)

    async def book_sold(self, sale: SaleResult, merchant_id: str) -> bool:
        leg = sale.legs[0]
        return self.books.book_sold(sale.id, merchant_id, leg.asset, leg.quantity_minor)


def merchant_wallets_match(desk: DirectDesk, books: MerchantBooks, assets: Iterable[str]) -> list[Violation]:
    """The merchants' ledger, and each merchant's wallet in its books equal to its wallet at the
    exchange, for every merchant and every asset a wallet can hold (``assets``): a merchant half
    lost for an asset its books never held is caught too (:func:`services.flows.integrity.merchant_wallets_agree`)."""
    codes = list(assets)
    booked = [(m, a, books.wallet_minor(m, a)) for m in sorted(books.merchants) for a in codes]
    return [*books.ledger.check_invariants(), *merchant_wallets_agree(booked, desk.wallet_minor)]
