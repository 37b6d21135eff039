"""The issuer service's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier
from services.api.parties.schemas import AuthorizationIn

ResidencyName = Literal["resident", "non_resident"]


class CardIn(BaseModel):
    model_config = API_MODEL_CONFIG
    card_id: Identifier
    holder_id: Identifier
    residency: ResidencyName
    kyc_tier: Identifier
    funding_mode: Literal["jit", "prefunded", "stablecoin"]
    asset_priority: list[AssetCode] = Field(default=[], max_length=8)


class CardOut(BaseModel):
    model_config = API_MODEL_CONFIG
    card_id: str
    holder_id: str
    status: str
    funding_mode: str
    kyc_tier: str
    available: str = Field(description="KZT on the card less its holds")


class CardStatusIn(BaseModel):
    model_config = API_MODEL_CONFIG
    status: Literal["active", "blocked", "expired"]


class AuthorizationStateOut(BaseModel):
    model_config = API_MODEL_CONFIG
    auth_id: str
    card_id: str
    merchant_id: str
    acquirer_id: str
    state: str
    code: str
    amount: str
    held: str
    captured: str
    returned: str
    stand_in: bool


class AmountIn(BaseModel):
    model_config = API_MODEL_CONFIG
    amount: AmountText = Field(description="KZT")


class RefundIn(BaseModel):
    model_config = API_MODEL_CONFIG
    amount: AmountText = Field(description="KZT")
    kind: Literal["refund", "chargeback"] = "refund"


class EmptyIn(BaseModel):
    model_config = API_MODEL_CONFIG


class AdviceResponseIn(BaseModel):
    model_config = API_MODEL_CONFIG
    code: Annotated[str, Field(pattern=r"^[0-9]{2}$")]
    approval_code: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{0,12}$")] = ""


class AdviceIn(BaseModel):
    """The network stood in for the issuer: what it asked and what it answered."""

    model_config = API_MODEL_CONFIG
    request: AuthorizationIn
    response: AdviceResponseIn


class AdviceOut(BaseModel):
    model_config = API_MODEL_CONFIG
    auth_id: str
    applied: bool = Field(description="false: this advice had been applied before")
    orphaned_sale: str = Field(description="the issuer's sale for a payment the network declined ('' if none)")


class InterchangeIn(BaseModel):
    model_config = API_MODEL_CONFIG
    window_id: Identifier
    amount: AmountText


class BookedOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    booked: bool
    delivered: bool


class CountOut(BaseModel):
    model_config = API_MODEL_CONFIG
    count: int


AuthId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
