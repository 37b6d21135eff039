"""The direct rail of the in-process chain: :class:`DirectRail` drives the flows of
:mod:`services.flows.direct` over the exchange's :class:`~services.exchange.DirectDesk`, the zone
merchants' :class:`~services.merchant.MerchantBooks` and a :class:`~services.issuer.SpendTracker`
with the card's KYC-tier and AML rules, for ``ccsim run``. Every port answers at once, so
:func:`services.flows.run_now` drives each flow in one step (as :mod:`services.chain_ports` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from services import ids
from services.acquirer import merchant_party
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    MerchantSpec,
    SaleResult,
)
from services.exchange import DirectDesk, DirectPayment, Invoice, PaymentQuote
from services.flows import run_now
from services.flows.direct import (
    DirectDecline,
    DirectOutcome,
    FallbackPolicy,
    accept,
    convert,
    fall_back,
    pay_direct,
    refund_direct,
    screen_and_quote,
)
from services.flows.direct_local import LocalDirectPorts, merchant_wallets_match
from services.issuer import SpendTracker
from services.ledger import Violation
from services.merchant import MerchantBooks
from services.messaging import Purpose
from services.reconciliation import Half, merchant_halves

if TYPE_CHECKING:
    from services.chain import InProcessChain

__all__ = ["DirectRail"]


class DirectRail:
    """CryptoCity's direct rail beside the card chain: same exchange, banks and clock."""

    def __init__(self, chain: InProcessChain) -> None:
        cfg = chain.config
        self.chain = chain
        self.desk = DirectDesk(chain.exchange, cfg.direct_fee_bps, cfg.direct_quote_ttl_s)
        self.books = MerchantBooks(chain.assets, chain.clock)
        self.limits = SpendTracker(cfg.issuer_config())  # the card's rules, per holder on this rail
        self._holders: dict[str, tuple[str, str]] = {}  # holder -> (card, KYC tier)
        self._conversions: dict[str, int] = {}
        self._ports = _Ports(self)

    # -- set-up ---------------------------------------------------------------------------------
    def open_merchant(self, spec: MerchantSpec) -> None:
        """A zone merchant's wallets at the exchange and its own books."""
        self.desk.open_merchant(spec.merchant_id)
        self.books.open_merchant(spec.merchant_id)

    def open_holder(self, spec: CardholderSpec) -> None:
        self._holders[spec.holder_id] = (spec.card_id, spec.kyc_tier)

    # -- the payment ----------------------------------------------------------------------------
    def quote(self, invoice: Invoice) -> PaymentQuote | DirectDecline:
        """Limits, then the exchange's quote (step 1 of the flow)."""
        return run_now(screen_and_quote(invoice, self._ports))

    def accept(self, invoice: Invoice) -> DirectOutcome:
        """The holder accepts the open quote (step 2)."""
        return run_now(accept(invoice, self._ports))

    def drop_quote(self, invoice_id: str) -> None:
        self.desk.drop_quote(invoice_id)

    def pay(self, invoice: Invoice, policy: FallbackPolicy = FallbackPolicy.FAIL) -> DirectOutcome:
        """The whole payment back to back, with the fallback to the card."""
        return run_now(pay_direct(invoice, policy, self._ports))

    def fall_back(self, outcome: DirectOutcome, invoice: Invoice, policy: FallbackPolicy) -> DirectOutcome:
        return run_now(fall_back(outcome, invoice, policy, self._ports))

    def refund(self, refund_id: str, invoice_id: str, amount_kzt: int) -> DirectPayment:
        return run_now(refund_direct(refund_id, invoice_id, amount_kzt, self._ports))

    def convert(self, merchant_id: str, asset: str, quantity_minor: int) -> SaleResult:
        """Sell ``quantity_minor`` of a merchant's ``asset`` now; the tenge goes to its bank account.
        Conversions are numbered per merchant; a refused one takes no number (as live, where a
        refusal changes nothing, its number included)."""
        seq = self._conversions.get(merchant_id, 0) + 1
        sale = run_now(convert(ids.conversion_id(merchant_id, seq), merchant_id, asset, quantity_minor, self._ports))
        if sale.ok:
            self._conversions[merchant_id] = seq
        return sale

    # -- integrity ------------------------------------------------------------------------------
    def check_invariants(self) -> list[Violation]:
        """The merchants' ledger, and each merchant's wallet in its books equal to its wallet at
        the exchange (the two halves of every on-exchange transfer)."""
        return merchant_wallets_match(self.desk, self.books, list(self.chain.exchange._wallet_ids))

    def halves(self) -> Iterator[Half]:
        yield from merchant_halves(self.books.name, self.books.ledger.journal())


class _Ports(LocalDirectPorts):
    """The direct rail's ports over the party objects of one process; the card and the banks are
    the chain's."""

    __slots__ = ("rail",)

    def __init__(self, rail: DirectRail) -> None:
        super().__init__(rail.desk, rail.books, rail.limits, rail._holders, rail.chain.clock)
        self.rail = rail

    async def pay_by_card(self, invoice: Invoice) -> AuthorizationResponse:
        chain = self.rail.chain
        card_id, _ = self.rail._holders[invoice.holder_id]
        merchant = chain.merchants[invoice.merchant_id]
        return chain.authorize(AuthorizationRequest(f"{invoice.invoice_id}:card", card_id, merchant.merchant_id,
                                                    merchant.acquirer_id, invoice.amount_kzt, merchant.category))

    async def pay_conversion(self, sale: SaleResult, merchant_id: str) -> bool:
        chain = self.rail.chain
        msg = chain.topology.message(sale.id, Purpose.CONVERSION, chain.config.exchange_id,
                                     merchant_party(merchant_id), sale.net_kzt, ref=merchant_id)
        return chain._send(msg)
