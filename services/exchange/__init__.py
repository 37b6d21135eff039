"""The AIFC exchange: custodial wallets, KZT order books, market sells, stablecoin, re-buys.

See ``docs/model-exchange-and-tax.md`` for the depth model, the sell algorithm and the accounts.
"""

from __future__ import annotations

from services.exchange.config import BookConfig, ExchangeConfig, SaleReason
from services.exchange.direct import DirectDesk, DirectPayment, Invoice, PaymentQuote, merchant_owner
from services.exchange.exchange import Exchange, PlannedLeg, SaleQuote
from services.exchange.order_book import OrderBook, Quote, fee_for_gross, gross_for_net

__all__ = [
    "BookConfig",
    "DirectDesk",
    "DirectPayment",
    "Exchange",
    "ExchangeConfig",
    "Invoice",
    "OrderBook",
    "PaymentQuote",
    "PlannedLeg",
    "Quote",
    "SaleQuote",
    "SaleReason",
    "fee_for_gross",
    "gross_for_net",
    "merchant_owner",
]
