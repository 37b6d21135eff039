"""CryptoCity's direct rail at the exchange: a zone merchant's invoice in tenge paid in crypto (or the
tenge stablecoin) from the holder's custodial wallet into the merchant's, and the merchant's
conversions back into tenge.

* :meth:`DirectDesk.quote` prices an invoice in the first asset of the holder's priority that is not
  halted and that the holder's wallet covers, at the asset's **mid** price (the stablecoin 1:1), firm
  for a time-to-live (:mod:`services.exchange.quotes`, the card's rule). Under the withholding tax
  policy the quote adds the crypto that pays the holder's PIT on the disposal.
* :meth:`DirectDesk.accept` executes an open quote as ONE linked batch on the exchange's ledger:
  holder's wallet → merchant's wallet (the invoice's quantity), merchant's wallet → ``fees:<asset>``
  (the direct fee) and holder's wallet → ``tax_withheld:<asset>`` (PIT withheld). The holder's
  disposal realizes a gain in the PIT book at the invoice's value; the merchant's receipt becomes a
  lot in the CIT book at its value at the quote's price.
* :meth:`DirectDesk.refund` gives crypto back at the **original quantity** (pro rata to the tenge
  refunded), out of the merchant's wallet: the merchant bears the price move since the payment, and
  a merchant that no longer holds the crypto cannot refund in crypto (``insufficient_crypto``). The
  holder's original disposal stands; the returned quantity is a new lot at the payment's price.
* :meth:`DirectDesk.convert` sells a quantity of a merchant's crypto on the order book (slippage
  cap, taker fee, halts as for card sales) or redeems its stablecoin; the tenge leaves the
  exchange's bank account towards the merchant's bank account (a ``conversion`` message).

Every command is idempotent by its id; a refusal books nothing and is not remembered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from services.contracts import Residency, SaleReason, SaleResult, SellOrder
from services.exchange import accounts as acc
from services.exchange.config import BPS
from services.exchange.exchange import Exchange, PlannedLeg, SaleQuote
from services.exchange.quotes import expired, expires_at
from services.ids import Step, transfer_id
from services.ledger import Transfer, TransferFlags
from services.messaging import Purpose
from services.money import D

__all__ = ["MAX_OPEN_QUOTES", "DirectDesk", "DirectPayment", "Invoice", "PaymentQuote", "merchant_owner"]

MAX_OPEN_QUOTES = 100_000  # beyond this, expired quotes are dropped first, then new quotes refused
_LINK = TransferFlags.LINKED
_ZERO = D(0)
_PIT_ROUNDS = 32  # each round adds the PIT on the PIT's own crypto; it shrinks tenfold a round


def merchant_owner(merchant_id: str) -> str:
    """A zone merchant's wallets at the exchange (never a cardholder's id: those have no colon)."""
    return f"merchant:{merchant_id}"


@dataclass(frozen=True, slots=True)
class Invoice:
    """A zone merchant's QR invoice in tenge, presented by a holder with its asset priority."""

    invoice_id: str
    holder_id: str
    merchant_id: str
    amount_kzt: int
    asset_priority: tuple[str, ...]
    ttl_s: float = 0.0  # 0: the exchange's quote_ttl_s


@dataclass(frozen=True, slots=True)
class PaymentQuote:
    """An invoice priced in one asset, firm until ``expires_at_s``."""

    invoice_id: str
    holder_id: str
    merchant_id: str
    amount_kzt: int
    asset: str
    quantity_minor: int  # holder → merchant: the invoice's value at ``price_kzt``, rounded up
    fee_minor: int  # merchant → exchange, out of the quantity received
    pit_minor: int  # holder → tax withheld (withholding policy), on top of the quantity
    pit_kzt: int  # the PIT that crypto pays
    price_kzt: Decimal  # KZT per major unit (1 for the stablecoin)
    quoted_at_s: float
    expires_at_s: float


@dataclass(frozen=True, slots=True)
class DirectPayment:
    """A direct payment (or refund) the exchange executed, or its refusal."""

    id: str
    invoice_id: str
    holder_id: str
    merchant_id: str
    ok: bool
    reason: SaleReason = SaleReason.NONE
    asset: str = ""
    quantity_minor: int = 0  # moved between the wallets
    fee_minor: int = 0
    pit_minor: int = 0
    amount_kzt: int = 0  # the tenge value paid (or refunded)
    fee_kzt: int = 0  # the fee's value at the quote's price
    pit_kzt: int = 0  # PIT withheld
    gain_kzt: int = 0  # the holder's realized gain (a refund: the merchant's)
    pit_due_kzt: int = 0  # the holder's PIT on the disposal, withheld or to declare
    price_kzt: Decimal = _ZERO
    proceeds_kzt: int = 0  # the disposal's value for the tax book: the invoice plus the PIT's crypto


class DirectDesk:
    """The direct rail's side of one :class:`Exchange` (shares its ledger, wallets and tax books)."""

    def __init__(self, exchange: Exchange, fee_bps: int = 0, ttl_s: float = 0.0) -> None:
        if not 0 <= fee_bps < BPS:
            raise ValueError(f"direct fee_bps must be within 0..{BPS - 1}, got {fee_bps}")
        self.exchange = exchange
        self.fee_bps = fee_bps
        self.ttl_s = ttl_s if ttl_s > 0 else exchange.config.quote_ttl_s
        self._quotes: dict[str, PaymentQuote] = {}
        self._payments: dict[str, DirectPayment] = {}
        self._refunds: dict[str, DirectPayment] = {}
        self._refunded_kzt: dict[str, int] = {}
        self._merchants: set[str] = set()
        self._assets_open: set[str] = set()
        self.pit_withheld_kzt = 0  # PIT withheld in crypto, at its tenge value

    # -- merchants -----------------------------------------------------------------------------
    def open_merchant(self, merchant_id: str) -> str:
        """Open a zone merchant's wallets (every asset) and the rail's house accounts; idempotent.
        Returns the wallets' owner id."""
        owner = merchant_owner(merchant_id)
        ex = self.exchange
        ex.open_wallet(owner, Residency.RESIDENT, corporate=True)
        new = [code for code in ex._wallet_ids if code not in self._assets_open]
        if new:
            accounts = [a for code in new for a in acc.direct_accounts(code)]
            if any(r.name not in ("OK", "EXISTS") for r in ex.ledger.create_accounts(accounts)):
                raise RuntimeError(f"could not open the direct rail's accounts for {new}")
            self._assets_open.update(new)
        self._merchants.add(merchant_id)
        return owner

    def is_merchant(self, merchant_id: str) -> bool:
        return merchant_id in self._merchants

    def wallet_minor(self, merchant_id: str, asset: str) -> int:
        return self.exchange.wallet_balance(merchant_owner(merchant_id), asset)

    # -- quote and pay --------------------------------------------------------------------------
    def quote(self, invoice: Invoice) -> PaymentQuote | SaleReason:
        """Price ``invoice`` now (nothing booked). Re-quoting an open invoice replaces its quote."""
        ex = self.exchange
        if invoice.invoice_id in self._payments:
            return SaleReason.UNKNOWN_QUOTE  # paid already: nothing left to quote
        if isinstance(invoice.amount_kzt, bool) or invoice.amount_kzt <= 0:
            return SaleReason.INVALID_AMOUNT
        if invoice.merchant_id not in self._merchants:
            return SaleReason.UNKNOWN_MERCHANT
        if not ex.has_wallet(invoice.holder_id) or invoice.holder_id in ex._corporate:
            return SaleReason.UNKNOWN_HOLDER
        if len(self._quotes) >= MAX_OPEN_QUOTES:
            self._drop_expired()
            if len(self._quotes) >= MAX_OPEN_QUOTES:
                return SaleReason.EXCHANGE_UNAVAILABLE  # a full quote book: come back later
        now = ex.clock.now()
        refusal = SaleReason.INSUFFICIENT_CRYPTO
        halted = False
        for asset in dict.fromkeys(invoice.asset_priority):
            if asset not in ex._wallet_ids:
                return SaleReason.UNKNOWN_ASSET
            if ex.is_halted(asset):
                halted = True
                continue
            priced = self._price(invoice, asset, now)
            if isinstance(priced, SaleReason):
                refusal = priced if priced is not SaleReason.INSUFFICIENT_CRYPTO else refusal
                continue
            self._quotes[invoice.invoice_id] = priced
            return priced
        return SaleReason.HALTED if halted and refusal is SaleReason.INSUFFICIENT_CRYPTO else refusal

    def _price(self, invoice: Invoice, asset: str, now: float) -> PaymentQuote | SaleReason:
        ex = self.exchange
        stable = asset == ex._stable.code
        try:
            price = ex.mid_price(asset)
        except ValueError:
            return SaleReason.NO_PRICE
        quantity = self._quantity(invoice.amount_kzt, asset, price)
        pit_kzt = pit_minor = 0
        if ex._withhold and not stable:
            pit_kzt, pit_minor = self._pit(invoice, asset, price, quantity)
        if ex._available(invoice.holder_id, asset) < quantity + pit_minor:
            return SaleReason.INSUFFICIENT_CRYPTO
        fee = -(-quantity * self.fee_bps // BPS)
        return PaymentQuote(invoice.invoice_id, invoice.holder_id, invoice.merchant_id, invoice.amount_kzt, asset,
                            quantity, fee, pit_minor, pit_kzt, price, now,
                            expires_at(now, invoice.ttl_s, self.ttl_s))

    def _quantity(self, amount_kzt: int, asset: str, price: Decimal) -> int:
        """The least quantity worth at least ``amount_kzt`` at ``price`` (rounding favours the payee)."""
        unit = self.exchange.assets.get(asset).unit
        exact = Fraction(amount_kzt) * unit / (Fraction(price) * self.exchange._kzt.unit)
        return -(-exact.numerator // exact.denominator)

    def _value_kzt(self, quantity: int, asset: str, price: Decimal) -> int:
        """What ``quantity`` is worth at ``price``, rounded down to the tiyn."""
        unit = self.exchange.assets.get(asset).unit
        exact = Fraction(quantity) * Fraction(price) * self.exchange._kzt.unit / unit
        return exact.numerator // exact.denominator

    def _pit(self, invoice: Invoice, asset: str, price: Decimal, quantity: int) -> tuple[int, int]:
        """(PIT in tiyn, its crypto): the PIT on disposing the invoice's crypto plus the PIT's own."""
        tax = self.exchange.tax
        pit_kzt = 0
        pit_minor = 0
        for _ in range(_PIT_ROUNDS):
            pit_minor = self._quantity(pit_kzt, asset, price) if pit_kzt else 0
            due = tax.preview(invoice.holder_id, asset, quantity + pit_minor, invoice.amount_kzt + pit_kzt).pit_kzt
            if due <= pit_kzt:
                return pit_kzt, pit_minor
            pit_kzt = due
        return pit_kzt, self._quantity(pit_kzt, asset, price)

    def accept(self, invoice_id: str) -> DirectPayment:
        """Execute the open quote of ``invoice_id``; a replay returns the first result."""
        done = self._payments.get(invoice_id)
        if done is not None:
            return done
        ex = self.exchange
        q = self._quotes.get(invoice_id)
        if q is None:
            return DirectPayment(invoice_id, invoice_id, "", "", False, SaleReason.UNKNOWN_QUOTE)
        now = ex.clock.now()
        if expired(q.expires_at_s, now):
            del self._quotes[invoice_id]
            return self._refused(q, SaleReason.QUOTE_EXPIRED)
        if ex.is_halted(q.asset):
            return self._refused(q, SaleReason.HALTED)
        owner, code = merchant_owner(q.merchant_id), Purpose.DIRECT_PAYMENT.value
        transfers = [Transfer(transfer_id(invoice_id, Step.DIRECT), acc.wallet(q.holder_id, q.asset),
                              acc.wallet(owner, q.asset), q.quantity_minor, q.asset, code=code,
                              user_data=invoice_id, flags=_LINK)]
        if q.fee_minor:
            transfers.append(Transfer(f"{invoice_id}:fee", acc.wallet(owner, q.asset), acc.fees(q.asset),
                                      q.fee_minor, q.asset, code="direct_fee", user_data=invoice_id, flags=_LINK))
        if q.pit_minor:
            transfers.append(Transfer(f"{invoice_id}:pit", acc.wallet(q.holder_id, q.asset),
                                      acc.tax_withheld(q.asset), q.pit_minor, q.asset, code="direct_pit",
                                      user_data=invoice_id, flags=_LINK))
        transfers[-1] = _unlinked(transfers[-1])
        refusal = ex._book_batch(transfers)
        if refusal is not None:
            return self._refused(q, refusal)
        del self._quotes[invoice_id]
        gain = pit_due = 0
        fee_kzt = self._value_kzt(q.fee_minor, q.asset, q.price_kzt)
        if q.asset != ex._stable.code:
            realized = ex.tax.realize(q.holder_id, q.asset, q.quantity_minor + q.pit_minor,
                                      q.amount_kzt + q.pit_kzt, now, invoice_id, withheld=bool(q.pit_minor))
            gain, pit_due = realized.gain_kzt, realized.pit_kzt
            received = q.quantity_minor - q.fee_minor
            ex.corporate_tax.add_purchase(owner, q.asset, received, q.amount_kzt - fee_kzt)
        # The crypto withheld covers the PIT (rounded up); the tax book records the PIT itself.
        pit_withheld = pit_due if q.pit_minor else 0
        self.pit_withheld_kzt += pit_withheld
        result = DirectPayment(invoice_id, invoice_id, q.holder_id, q.merchant_id, True, SaleReason.NONE, q.asset,
                               q.quantity_minor, q.fee_minor, q.pit_minor, q.amount_kzt, fee_kzt, pit_withheld, gain,
                               pit_due, q.price_kzt, q.amount_kzt + q.pit_kzt if q.asset != ex._stable.code else 0)
        self._payments[invoice_id] = result
        return result

    def payment(self, invoice_id: str) -> DirectPayment | None:
        return self._payments.get(invoice_id)

    def forget(self, invoice_id: str) -> None:
        """A long simulation forgets a payment no refund will reach (its books stay)."""
        self._payments.pop(invoice_id, None)
        self._refunded_kzt.pop(invoice_id, None)
        self._quotes.pop(invoice_id, None)

    def drop_quote(self, invoice_id: str) -> None:
        self._quotes.pop(invoice_id, None)

    # -- refund ---------------------------------------------------------------------------------
    def refund(self, refund_id: str, invoice_id: str, amount_kzt: int) -> DirectPayment:
        """Give ``amount_kzt`` of a direct payment back in crypto at the original quantity (pro
        rata), out of the merchant's wallet; idempotent by ``refund_id``."""
        done = self._refunds.get(refund_id)
        if done is not None:
            return done
        ex = self.exchange
        paid = self._payments.get(invoice_id)
        if paid is None or not paid.ok:
            return DirectPayment(refund_id, invoice_id, "", "", False, SaleReason.UNKNOWN_SALE)
        if amount_kzt <= 0:
            return _refused_refund(refund_id, paid, SaleReason.INVALID_AMOUNT)
        refunded = self._refunded_kzt.get(invoice_id, 0)
        if refunded + amount_kzt > paid.amount_kzt:
            return _refused_refund(refund_id, paid, SaleReason.REFUND_EXCEEDS_PAYMENT)
        quantity = paid.quantity_minor * amount_kzt // paid.amount_kzt
        if quantity <= 0:
            return _refused_refund(refund_id, paid, SaleReason.INVALID_AMOUNT)
        owner = merchant_owner(paid.merchant_id)
        t = Transfer(transfer_id(refund_id, Step.DIRECT), acc.wallet(owner, paid.asset),
                     acc.wallet(paid.holder_id, paid.asset), quantity, paid.asset,
                     code=Purpose.DIRECT_REFUND.value, user_data=refund_id)
        refusal = ex._book_batch([t])
        if refusal is not None:
            return _refused_refund(refund_id, paid, refusal)
        gain = 0
        if paid.asset != ex._stable.code:
            # The merchant disposes of the crypto at the payment's value; the holder has it back as a
            # new lot at that value (its original disposal stands, as for a re-buy).
            realized = ex.corporate_tax.realize(owner, paid.asset, quantity, amount_kzt, ex.clock.now(), refund_id)
            gain = realized.gain_kzt
            ex.tax.add_purchase(paid.holder_id, paid.asset, quantity, amount_kzt)
        self._refunded_kzt[invoice_id] = refunded + amount_kzt
        result = DirectPayment(refund_id, invoice_id, paid.holder_id, paid.merchant_id, True, SaleReason.NONE,
                               paid.asset, quantity, amount_kzt=amount_kzt, gain_kzt=gain, price_kzt=paid.price_kzt)
        self._refunds[refund_id] = result
        return result

    # -- conversion -----------------------------------------------------------------------------
    def convert(self, order_id: str, merchant_id: str, asset: str, quantity_minor: int,
                max_slippage_bps: int = 0) -> SaleResult:
        """Sell ``quantity_minor`` of the merchant's ``asset`` for tenge (the stablecoin: redeem it).
        The proceeds leave the exchange's bank account under ``order_id`` (the conversion message
        to the merchant's bank account has the same id). Idempotent by ``order_id``."""
        ex = self.exchange
        owner = merchant_owner(merchant_id)
        done = ex.sale(order_id)
        if done is not None:
            return done
        if merchant_id not in self._merchants:
            return SaleResult(order_id, "", owner, False, SaleReason.UNKNOWN_MERCHANT)
        if asset == ex._stable.code:
            gross = quantity_minor  # 1:1, and the stablecoin has the tenge's two decimals
            net = gross - -(-gross * ex.config.stablecoin_fee_bps // BPS)
            order = SellOrder(order_id, "", owner, net, (asset,), 0, 0.0)
            return ex.redeem_stablecoin(order) if net > 0 else _no_sale(order, SaleReason.INVALID_AMOUNT)
        cap = max_slippage_bps or ex.config.max_slippage_bps
        order = SellOrder(order_id, "", owner, 1, (asset,), cap, 0.0)
        if asset not in ex._books:
            return _no_sale(order, SaleReason.UNKNOWN_ASSET)
        if ex.is_halted(asset):
            return _no_sale(order, SaleReason.HALTED)
        if ex._available(owner, asset) < quantity_minor:
            return _no_sale(order, SaleReason.INSUFFICIENT_CRYPTO)
        quote = ex.book(asset).quote_sell_quantity(quantity_minor, ex.config.taker_fee_bps)
        if isinstance(quote, SaleReason):
            return _no_sale(order, quote)
        if quote.net_kzt <= 0:
            return _no_sale(order, SaleReason.INVALID_AMOUNT)
        if not quote.within_slippage(cap):
            return _no_sale(order, SaleReason.SLIPPAGE_CAP)
        now = ex.clock.now()
        plan = SaleQuote(order_id, (PlannedLeg(quote, 0),), quote.net_kzt, now, now)
        return ex._execute(SellOrder(order_id, "", owner, quote.net_kzt, (asset,), cap, 0.0), plan, now)

    # -- internals ------------------------------------------------------------------------------
    def _refused(self, q: PaymentQuote, reason: SaleReason) -> DirectPayment:
        return DirectPayment(q.invoice_id, q.invoice_id, q.holder_id, q.merchant_id, False, reason, q.asset,
                             amount_kzt=q.amount_kzt)

    def _drop_expired(self) -> None:
        now = self.exchange.clock.now()
        for invoice_id in [i for i, q in self._quotes.items() if expired(q.expires_at_s, now)]:
            del self._quotes[invoice_id]


def _unlinked(t: Transfer) -> Transfer:
    """The last transfer of a chain carries no ``LINKED`` flag (it closes the chain)."""
    return replace(t, flags=t.flags & ~_LINK)


def _refused_refund(refund_id: str, paid: DirectPayment, reason: SaleReason) -> DirectPayment:
    return DirectPayment(refund_id, paid.invoice_id, paid.holder_id, paid.merchant_id, False, reason, paid.asset)


def _no_sale(order: SellOrder, reason: SaleReason) -> SaleResult:
    return SaleResult(order.id, order.auth_id, order.holder_id, False, reason=reason)
