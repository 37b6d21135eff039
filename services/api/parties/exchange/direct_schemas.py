"""The direct rail's request and response bodies at the exchange (CryptoCity, docs/model-direct-rail.md).

Amounts travel as decimal strings: tenge with two decimals, crypto in its asset's scale.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier
from services.exchange import DirectPayment, PaymentQuote
from services.money import AssetRegistry

__all__ = ["ConversionIn", "ConversionOut", "DirectPaymentOut", "InvoiceIn", "InvoiceRef", "MerchantOut",
           "PaymentIn", "QuoteOut", "RefundIn", "RefundOut"]

QUOTE_TTL_S_MAX = 3_600.0  # an invoice asks for at most an hour to confirm


class InvoiceIn(BaseModel):
    """A zone merchant's QR invoice in tenge, presented by the holder with its asset priority."""

    model_config = API_MODEL_CONFIG
    invoice_id: Identifier = Field(description="the invoice's id: the payment's id end to end")
    holder_id: Identifier
    merchant_id: Identifier = Field(description="a CryptoCity zone merchant")
    amount: AmountText = Field(description="KZT, at most 2 decimals")
    asset_priority: list[AssetCode] = Field(min_length=1, max_length=8,
                                            description="what the holder pays with, first choice first")
    ttl_s: float = Field(0.0, ge=0.0, le=QUOTE_TTL_S_MAX, allow_inf_nan=False,
                         description="the quote's time-to-live asked for; 0: the exchange's own")


class QuoteOut(BaseModel):
    model_config = API_MODEL_CONFIG
    invoice_id: str
    holder_id: str
    merchant_id: str
    amount: str = Field(description="KZT")
    asset: str = Field(description="the asset of the holder's priority that pays")
    quantity: str = Field(description="holder → merchant, in the asset's scale")
    fee: str = Field(description="the exchange's direct fee, out of the merchant's receipt")
    pit_withheld: str = Field(description="crypto the holder pays on top for the PIT withheld")
    price_kzt: str = Field(description="KZT per whole unit (the mid price; the stablecoin 1)")
    quoted_at_s: float
    expires_at_s: float

    @classmethod
    def of(cls, q: PaymentQuote, assets: AssetRegistry) -> QuoteOut:
        fmt = assets.format
        return cls(invoice_id=q.invoice_id, holder_id=q.holder_id, merchant_id=q.merchant_id,
                   amount=fmt(q.amount_kzt, "KZT"), asset=q.asset, quantity=fmt(q.quantity_minor, q.asset),
                   fee=fmt(q.fee_minor, q.asset), pit_withheld=fmt(q.pit_minor, q.asset), price_kzt=str(q.price_kzt),
                   quoted_at_s=q.quoted_at_s, expires_at_s=q.expires_at_s)


class PaymentIn(BaseModel):
    """The holder accepts the open quote of an invoice."""

    model_config = API_MODEL_CONFIG
    invoice_id: Identifier


class DirectPaymentOut(BaseModel):
    """An on-exchange transfer: a direct payment (or a refund) the exchange executed."""

    model_config = API_MODEL_CONFIG
    id: str
    invoice_id: str
    holder_id: str
    merchant_id: str
    asset: str
    quantity: str = Field(description="moved between the two wallets, in the asset's scale")
    fee: str
    pit_withheld: str
    amount: str = Field(description="KZT paid (or refunded)")
    fee_kzt: str
    pit_kzt: str
    price_kzt: str

    @classmethod
    def of(cls, p: DirectPayment, assets: AssetRegistry) -> DirectPaymentOut:
        fmt = assets.format
        return cls(id=p.id, invoice_id=p.invoice_id, holder_id=p.holder_id, merchant_id=p.merchant_id, asset=p.asset,
                   quantity=fmt(p.quantity_minor, p.asset), fee=fmt(p.fee_minor, p.asset),
                   pit_withheld=fmt(p.pit_minor, p.asset), amount=fmt(p.amount_kzt, "KZT"),
                   fee_kzt=fmt(p.fee_kzt, "KZT"), pit_kzt=fmt(p.pit_kzt, "KZT"), price_kzt=str(p.price_kzt))


class RefundIn(BaseModel):
    """The merchant refunds (part of) a direct payment: crypto back at the original quantity."""

    model_config = API_MODEL_CONFIG
    id: Identifier = Field(description="the refund's id, chosen by the merchant")
    invoice_id: Identifier
    amount: AmountText = Field(description="KZT refunded, at most the payment's amount in all")


RefundOut = DirectPaymentOut


class ConversionIn(BaseModel):
    """A zone merchant sells (or redeems) crypto it received for tenge."""

    model_config = API_MODEL_CONFIG
    merchant_id: Identifier
    asset: AssetCode
    quantity: AmountText = Field(description="in the asset's scale")


class ConversionOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str = Field(description="conv:<merchant>:<n>: the sale and the tenge message to the merchant's bank")
    merchant_id: str
    asset: str
    quantity: str
    gross: str = Field(description="KZT before the taker fee (the stablecoin: before the redemption fee)")
    net: str = Field(description="KZT on its way to the merchant's bank account")
    delivered: bool = Field(description="every hop acknowledged the tenge at once (else the outbox delivers it)")


class MerchantOut(BaseModel):
    """A zone merchant: its wallets at the exchange, the same wallets in its own books, its bank tenge."""

    model_config = API_MODEL_CONFIG
    merchant_id: str
    wallets: dict[str, str] = Field(description="asset → balance at the exchange")
    books: dict[str, str] = Field(description="asset → its wallet in the merchant's own books")
    bank: str = Field(description="KZT its conversions brought to its bank account (its own books)")


InvoiceRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
