"""The exchange service's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier
from services.api.parties.schemas import PriceText


class LotIn(BaseModel):
    model_config = API_MODEL_CONFIG
    quantity: AmountText = Field(description="in the asset's scale")
    price_kzt: PriceText = Field(description="what one whole unit cost: the cost basis")
    acquired_at_s: int = Field(0, ge=-(10**11), le=10**11, description="seconds since the epoch")


class HoldingIn(BaseModel):
    model_config = API_MODEL_CONFIG
    asset: AssetCode
    lots: list[LotIn] = Field(min_length=1, max_length=64)


class WalletIn(BaseModel):
    model_config = API_MODEL_CONFIG
    holder_id: Identifier
    residency: Literal["resident", "non_resident"]
    holdings: list[HoldingIn] = Field(default=[], max_length=16)
    stablecoin: AmountText | None = Field(None, description="tenge stablecoin to deposit, in its scale")


class WalletOut(BaseModel):
    model_config = API_MODEL_CONFIG
    holder_id: str
    balances: dict[str, str] = Field(description="asset → available balance, in the asset's scale")


class DepositIn(BaseModel):
    model_config = API_MODEL_CONFIG
    id: Identifier
    holder_id: Identifier
    asset: AssetCode
    quantity: AmountText
    price_kzt: PriceText | None = Field(None, description="cost basis per unit; required for crypto")


class DepositOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    holder_id: str
    asset: str
    quantity: str
    balance: str


class PriceIn(BaseModel):
    model_config = API_MODEL_CONFIG
    asset: AssetCode
    price_kzt: PriceText


class HaltIn(BaseModel):
    model_config = API_MODEL_CONFIG
    asset: AssetCode
    halted: bool


class QuoteLegOut(BaseModel):
    model_config = API_MODEL_CONFIG
    asset: str
    quantity: str
    gross: str
    fee: str
    pit_withheld: str
    avg_price_kzt: str
    slippage_bps: str


class QuoteOut(BaseModel):
    model_config = API_MODEL_CONFIG
    order_id: str
    net: str
    legs: list[QuoteLegOut]
    quoted_at_s: float
    expires_at_s: float


class TaxStatementOut(BaseModel):
    model_config = API_MODEL_CONFIG
    holder_id: str
    residency: str
    sales: int
    proceeds: str
    basis: str
    gains: str
    losses: str
    pit_due: str
    pit_withheld: str
    pit_to_declare: str


HolderId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
