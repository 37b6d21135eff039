"""The network service's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG, AmountText, Identifier, Text


class PaymentIn(BaseModel):
    """What a POS terminal sends: ``id`` becomes the authorization id end to end."""

    model_config = API_MODEL_CONFIG
    id: Identifier
    card_id: Identifier
    merchant_id: Identifier
    amount: AmountText = Field(description="KZT")
    category: Text = ""


class PaymentOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    code: str
    approved: bool
    approval_code: str
    stand_in: bool
    merchant_id: str
    acquirer_id: str


class EmptyIn(BaseModel):
    model_config = API_MODEL_CONFIG


class PresentmentIn(BaseModel):
    model_config = API_MODEL_CONFIG
    kind: Literal["capture", "refund", "chargeback"]
    auth_id: Identifier
    amount: AmountText = Field(description="KZT")


class PresentmentOut(BaseModel):
    model_config = API_MODEL_CONFIG
    presentment_id: str
    kind: str
    auth_id: str
    amount: str
    acquirer_id: str
    merchant_id: str


class SettlementIn(BaseModel):
    model_config = API_MODEL_CONFIG
    window_id: Identifier


class SettlementOut(BaseModel):
    model_config = API_MODEL_CONFIG
    window_id: str
    presentments: int
    net_positions: dict[str, str] = Field(description="participant → KZT (negative: pays); sums to 0")
    merchant_credits: dict[str, str]
    undelivered: list[str] = Field(description="settlement messages not yet acknowledged end to end")


class PendingAdvicesOut(BaseModel):
    model_config = API_MODEL_CONFIG
    pending: list[str]


AuthId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
