"""The bank service's request and response bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG

PartyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class BalanceOut(BaseModel):
    model_config = API_MODEL_CONFIG
    bank_id: str
    party: str
    balance: str = Field(description="KZT on deposit, less holds")
