"""The exchange service with CryptoCity's direct rail (docs/model-direct-rail.md).

:class:`DirectExchangeService` is the exchange service plus the rail's parts: the exchange's
:class:`~services.exchange.DirectDesk` (quotes, on-exchange transfers, refunds, conversions), the
zone merchants' own books (:class:`~services.merchant.MerchantBooks`, on a ledger of their own in
this service's database: tables ``<prefix>merchants_*``) and the holders' KYC-tier and AML limits on
this rail. Why the merchants' books live here: docs/architecture.md ("Where the zone merchants'
books live").

Each step of the rail is one call of a flow of :mod:`services.flows.direct` over
:class:`~services.flows.direct_local.LocalDirectPorts`, run as ONE logged command
(:mod:`services.api.parties.durable`): the exchange's batch, the merchant's half and the holder's
limits commit together, and a restart replays them. A conversion's tenge is a ``conversion``
message staged in the outbox in the sale's own transaction and sent after the command, outside
the domain lock (exchange → its bank → the merchant's bank → the merchant's books here, through
``POST /v1/inbox/merchant:<id>``). The card is not the exchange's: a payment that falls back to it
is the POS's to send to the network (:func:`services.flows.direct.fall_back`).

Refusals that input alone decides (an unknown holder, merchant or asset, a halted asset, a wallet
short of the quantity) are answered before any command and change nothing.
"""

from __future__ import annotations

from typing import Any

from services import ids
from services.acquirer import merchant_party
from services.api.outbox import Outbox, Relay
from services.api.parties.base import PartyContext, open_ledger, problem, send_staged
from services.api.parties.durable import SwitchLedger
from services.api.parties.exchange.direct_schemas import (
    ConversionIn,
    ConversionOut,
    DirectPaymentOut,
    InvoiceIn,
    MerchantOut,
    PaymentIn,
    QuoteOut,
    RefundIn,
)
from services.api.parties.exchange.service import ExchangeService, stage_payout_message
from services.api.parties.schemas import kzt_in
from services.api.problems import FieldError, ProblemError
from services.contracts import SaleReason, SaleResult
from services.exchange import DirectDesk, DirectPayment, Exchange, Invoice, PaymentQuote, merchant_owner
from services.exchange.direct import MAX_OPEN_QUOTES
from services.flows import run_now
from services.flows.direct import DirectDecline, DirectOutcome, accept, convert, refund_direct, screen_and_quote
from services.flows.direct_local import LocalDirectPorts, merchant_wallets_match
from services.ids import Step, transfer_id
from services.issuer import SpendTracker
from services.ledger import Violation
from services.ledger.sql import TransactionHook
from services.merchant import MerchantBooks
from services.messaging import Handler, PaymentMessage, Purpose
from services.reconciliation import Half, merchant_halves

__all__ = ["MERCHANTS_LEDGER", "DirectExchangeService"]

MERCHANTS_LEDGER = "merchants"


class _Ports(LocalDirectPorts):
    """The rail's ports inside one command; the conversion's tenge was staged with the sale."""

    __slots__ = ()

    async def pay_conversion(self, sale: SaleResult, merchant_id: str) -> bool:
        return True  # in the outbox, in the sale's transaction; sent after the command


class DirectExchangeService(ExchangeService):
    """The exchange domain and the direct rail behind the routes (see the module docstring)."""

    def __init__(self, ctx: PartyContext, outbox: Outbox, relay: Relay) -> None:
        self.merchants_sql = open_ledger(ctx, MERCHANTS_LEDGER, "merchants_")
        self.merchants_ledger = SwitchLedger(self.merchants_sql)
        self.zone = frozenset(m.merchant_id for m in ctx.seed.merchants if m.cryptocity)
        # holder -> (card, KYC tier): the card's rules apply per holder on this rail
        self.holders = {h.holder_id: (h.card_id, h.kyc_tier) for h in ctx.seed.cardholders}
        super().__init__(ctx, outbox, relay)
        self.direct_total = ctx.metrics.counter("direct_payments", "Direct payments at the exchange, by outcome",
                                                ("outcome",))

    # -- state -------------------------------------------------------------------------------
    def _build(self) -> None:
        super()._build()
        cfg, ctx = self.ctx.seed.config, self.ctx
        self.desk = DirectDesk(self.exchange, cfg.direct_fee_bps, cfg.direct_quote_ttl_s)
        self.books = MerchantBooks(ctx.assets, ctx.clock, MERCHANTS_LEDGER, ledger=self.merchants_ledger)
        self.limits = SpendTracker(cfg.issuer_config())
        self.direct_ports = _Ports(self.desk, self.books, self.limits, self.holders, ctx.clock)
        self._invoices: dict[str, Invoice] = {}  # quoted, not yet paid
        self._conversions: dict[str, int] = {}  # merchant -> its conversions so far

    def _seed(self) -> None:
        super()._seed()
        for merchant_id in sorted(self.zone):
            self.desk.open_merchant(merchant_id)
            self.books.open_merchant(merchant_id)

    def _ledger_pairs(self) -> list[tuple[SwitchLedger, Any]]:
        return [*super()._ledger_pairs(), (self.merchants_ledger, self.merchants_sql)]

    # -- commands (each one step of the rail, one transaction) -------------------------------
    def _direct_quote(self, invoice: Invoice) -> PaymentQuote | DirectDecline:
        got = run_now(screen_and_quote(invoice, self.direct_ports))
        if isinstance(got, PaymentQuote):
            self._invoices.pop(invoice.invoice_id, None)
            self._invoices[invoice.invoice_id] = invoice
            if len(self._invoices) > MAX_OPEN_QUOTES:  # a limit on everything: the oldest go first
                del self._invoices[next(iter(self._invoices))]
        return got

    def _direct_accept(self, invoice: Invoice) -> DirectOutcome:
        outcome = run_now(accept(invoice, self.direct_ports))
        if outcome.paid_direct or outcome.decline is DirectDecline.QUOTE_EXPIRED:
            self._invoices.pop(invoice.invoice_id, None)
        return outcome

    def _direct_refund(self, refund_id: str, invoice_id: str, amount_kzt: int) -> DirectPayment:
        return run_now(refund_direct(refund_id, invoice_id, amount_kzt, self.direct_ports))

    def _direct_convert(self, merchant_id: str, asset: str, quantity_minor: int) -> SaleResult:
        self._replenish()
        seq = self._conversions.get(merchant_id, 0) + 1
        order_id = ids.conversion_id(merchant_id, seq)
        with self.ledger.also_in_transaction(self._conversion_hook(order_id, merchant_id)):
            sale = run_now(convert(order_id, merchant_id, asset, quantity_minor, self.direct_ports))
        if sale.ok:
            self._conversions[merchant_id] = seq
        return sale

    def _conversion_received(self, merchant_id: str, msg: PaymentMessage) -> bool:
        sale = self.exchange.sale(msg.id)
        if sale is None or sale.holder_id != merchant_owner(merchant_id):
            raise problem(404, f"a conversion {msg.id!r} of {merchant_id}'s, which this exchange never made", "id",
                          "unknown conversion")
        if msg.amount_kzt != sale.net_kzt:
            raise problem(422, f"conversion {msg.id} brings the sale's net {sale.net_kzt} minor units", "amount",
                          "not the sale's net")
        return self.books.handle(msg)

    # -- the payment -------------------------------------------------------------------------
    def _invoice(self, body: InvoiceIn) -> Invoice:
        """The invoice, or a 4xx naming the field (nothing is quoted for what input alone refuses)."""
        amount = kzt_in(body.amount, self.ctx.assets)
        for i, code in enumerate(body.asset_priority):  # what the body says first, then whom it names
            if code != self.stable and code not in self.exchange.config.books:
                raise problem(422, f"{code} cannot pay here", f"asset_priority[{i}]", "not traded here")
        if body.holder_id not in self.holders:
            raise problem(404, f"no cardholder {body.holder_id} on the direct rail", "holder_id", "not found")
        if body.merchant_id not in self.zone:
            raise problem(404, f"{body.merchant_id} is not a CryptoCity zone merchant", "merchant_id",
                          "not a zone merchant")
        return Invoice(body.invoice_id, body.holder_id, body.merchant_id, amount, tuple(body.asset_priority),
                       body.ttl_s)

    def direct_quote(self, body: InvoiceIn) -> tuple[int, QuoteOut]:
        invoice = self._invoice(body)
        if self.ctx.locked(lambda: self.desk.payment(invoice.invoice_id)) is not None:
            raise problem(409, f"invoice {invoice.invoice_id} is paid", "invoice_id", "already paid")
        got = self.ctx.command(self._direct_quote, invoice, refused=lambda r: isinstance(r, DirectDecline))
        if isinstance(got, DirectDecline):
            self.direct_total.labels(self.ctx.settings.party, f"quote_{got.value}").inc()
            raise _declined(got)
        return 201, QuoteOut.of(got, self.ctx.assets)

    def direct_accept(self, body: PaymentIn) -> tuple[int, DirectPaymentOut]:
        def known() -> tuple[DirectPayment | None, Invoice | None]:
            return self.desk.payment(body.invoice_id), self._invoices.get(body.invoice_id)

        paid, invoice = self.ctx.locked(known)
        if paid is not None:
            return 200, DirectPaymentOut.of(paid, self.ctx.assets)
        if invoice is None:
            raise problem(404, f"no open quote for invoice {body.invoice_id}", "invoice_id", "no open quote")
        outcome = self.ctx.command(self._direct_accept, invoice, refused=lambda o: not o.paid_direct)
        if outcome.payment is None or not outcome.paid_direct:
            self.direct_total.labels(self.ctx.settings.party, f"declined_{outcome.decline.value}").inc()
            raise _declined(outcome.decline)
        self.direct_total.labels(self.ctx.settings.party, "paid").inc()
        return 201, DirectPaymentOut.of(outcome.payment, self.ctx.assets)

    def direct_payment(self, invoice_id: str) -> DirectPaymentOut:
        paid = self.ctx.locked(lambda: self.desk.payment(invoice_id))
        if paid is None:
            raise problem(404, f"no direct payment of invoice {invoice_id}", "invoice_id", "not found")
        return DirectPaymentOut.of(paid, self.ctx.assets)

    # -- the refund --------------------------------------------------------------------------
    def direct_refund(self, body: RefundIn) -> tuple[int, DirectPaymentOut]:
        amount = kzt_in(body.amount, self.ctx.assets)
        existed = self.ctx.locked(self.ledger.transfer, transfer_id(body.id, Step.DIRECT)) is not None
        refund = self.ctx.command(self._direct_refund, body.id, body.invoice_id, amount, refused=lambda r: not r.ok)
        if not refund.ok:
            raise _refund_refused(refund.reason)
        if (refund.invoice_id, refund.amount_kzt) != (body.invoice_id, amount):
            raise problem(409, f"refund {body.id} was made before for another invoice or amount", "id",
                          "already used for another refund")
        return (200 if existed else 201), DirectPaymentOut.of(refund, self.ctx.assets)

    # -- the conversion ----------------------------------------------------------------------
    def direct_convert(self, body: ConversionIn) -> tuple[int, ConversionOut]:
        if body.asset != self.stable and body.asset not in self.exchange.config.books:
            raise problem(422, f"{body.asset} is not traded here", "asset", "not traded here")
        quantity = self._units(body.quantity, body.asset, "quantity")
        if body.merchant_id not in self.zone:
            raise problem(404, f"{body.merchant_id} is not a CryptoCity zone merchant", "merchant_id",
                          "not a zone merchant")

        def precheck() -> None:
            if self.exchange.is_halted(body.asset):
                raise _sale_refused(SaleReason.HALTED)
            if self.desk.wallet_minor(body.merchant_id, body.asset) < quantity:
                raise _sale_refused(SaleReason.INSUFFICIENT_CRYPTO)

        self.ctx.locked(precheck)
        sale = self.ctx.command(self._direct_convert, body.merchant_id, body.asset, quantity)
        if not sale.ok:
            raise _sale_refused(SaleReason(sale.reason))
        delivered = True
        if sale.net_kzt > 0:
            delivered = send_staged(self.ctx, self.outbox, self._conversion_msg(sale.id, body.merchant_id,
                                                                                sale.net_kzt))
        fmt = self.ctx.assets.format
        leg = sale.legs[0]
        return 201, ConversionOut(id=sale.id, merchant_id=body.merchant_id, asset=leg.asset,
                                  quantity=fmt(leg.quantity_minor, leg.asset), gross=fmt(leg.gross_kzt, "KZT"),
                                  net=fmt(sale.net_kzt, "KZT"), delivered=delivered)

    def _conversion_msg(self, sale_id: str, merchant_id: str, net_kzt: int) -> PaymentMessage:
        cfg = self.ctx.seed.config
        return self.ctx.topology.message(sale_id, Purpose.CONVERSION, cfg.exchange_id, merchant_party(merchant_id),
                                         net_kzt, ref=merchant_id)

    def _conversion_hook(self, sale_id: str, merchant_id: str) -> TransactionHook:
        """Stage the conversion's tenge in the transaction that writes the sale's payout."""
        return stage_payout_message(self.outbox, sale_id,
                                    lambda net: self._conversion_msg(sale_id, merchant_id, net))

    def merchant_receivers(self) -> dict[str, Handler]:
        """``POST /v1/inbox/merchant:<id>``: a conversion's tenge reaching a zone merchant's books."""
        return {merchant_party(m): self._receiver(m) for m in sorted(self.zone)}

    def _receiver(self, merchant_id: str) -> Handler:
        def receive(msg: PaymentMessage) -> bool:
            if msg.purpose is not Purpose.CONVERSION:
                raise problem(422, "a zone merchant's books here take conversions only", "purpose",
                              "not received here")
            return self.ctx.command(self._conversion_received, merchant_id, msg, refused=lambda ok: not ok)

        return receive

    # -- readings and integrity --------------------------------------------------------------
    def merchant(self, merchant_id: str) -> MerchantOut:
        if merchant_id not in self.zone:
            raise problem(404, f"{merchant_id} is not a CryptoCity zone merchant", "merchant_id",
                          "not a zone merchant")

        def read() -> MerchantOut:
            fmt = self.ctx.assets.format
            wallets = {code: fmt(self.desk.wallet_minor(merchant_id, code), code)
                       for code in self.ctx.assets.codes() if code != "KZT"}
            books = {asset: fmt(n, asset) for m, asset, n in self.books.wallets() if m == merchant_id}
            return MerchantOut(merchant_id=merchant_id, wallets=wallets, books=books,
                               bank=fmt(self.books.bank_kzt(merchant_id), "KZT"))

        return self.ctx.locked(read)

    def merchants_invariants(self, exchange: Exchange) -> list[Violation]:
        """``exchange``: the copy of the exchange's memory taken at the snapshot's pin (its assets)."""
        return merchant_wallets_match(self.desk, self.books, list(exchange._wallet_ids))

    def merchants_halves(self) -> list[Half]:
        return list(merchant_halves(self.books.name, self.merchants_ledger.journal()))


_AMOUNT_DECLINES = frozenset({DirectDecline.INVALID_AMOUNT, DirectDecline.EXCEEDS_AMOUNT_LIMIT,
                              DirectDecline.EXCEEDS_FREQUENCY_LIMIT, DirectDecline.SUSPECTED_FRAUD})


def _declined(decline: DirectDecline) -> ProblemError:
    """A declined direct payment: 422 naming the field at fault and the decline as its reason; a full
    quote book or an unavailable exchange is a 503 (retry later, or pay by card)."""
    if decline is DirectDecline.EXCHANGE_UNAVAILABLE:
        return ProblemError(503, "the exchange cannot take direct payments now; retry later",
                            [FieldError(field="invoice_id", reason=decline.value)], slug="direct-unavailable")
    field = ("amount" if decline in _AMOUNT_DECLINES else
             "invoice_id" if decline in (DirectDecline.QUOTE_EXPIRED, DirectDecline.REFUSED) else "asset_priority")
    return ProblemError(422, f"the direct payment was declined: {decline.value}",
                        [FieldError(field=field, reason=decline.value)], slug="direct-declined")


def _refund_refused(reason: SaleReason) -> ProblemError:
    status, field = {SaleReason.UNKNOWN_SALE: (404, "invoice_id"),
                     SaleReason.INSUFFICIENT_CRYPTO: (409, "invoice_id")}.get(reason, (422, "amount"))
    return ProblemError(status, f"the refund was refused: {reason.value}", [FieldError(field=field,
                                                                                        reason=reason.value)],
                        slug="refund-refused")


def _sale_refused(reason: SaleReason) -> ProblemError:
    field = "quantity" if reason in (SaleReason.INSUFFICIENT_CRYPTO, SaleReason.INVALID_AMOUNT) else "asset"
    return ProblemError(422, f"the exchange refused the conversion: {reason.value}",
                        [FieldError(field=field, reason=reason.value)], slug="conversion-refused")
