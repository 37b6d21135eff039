"""The building blocks of the scenario schema: money, bounded numbers, distributions, windows.

Money in a scenario is written as a decimal string or number of KZT (``"50000"``, ``1234.56``) and
becomes ``int`` tiyn at the edge (:func:`kzt_minor`); distribution parameters (means, coefficients of
variation) are statistical parameters, not money, and are plain numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from services.money import Asset, MoneyError, parse_amount

__all__ = [
    "AmountDist",
    "Bps",
    "ConstantAmount",
    "ConstantTime",
    "EmpiricalAmount",
    "EmpiricalTime",
    "ExponentialTime",
    "GammaTime",
    "Kzt",
    "LognormalAmount",
    "LognormalTime",
    "Model",
    "NonNeg",
    "Pos",
    "PriceKzt",
    "Share",
    "TimeDist",
    "UniformAmount",
    "UniformTime",
    "Window",
    "kzt_minor",
]

_KZT: Final = Asset("KZT", 2)


class Model(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- money -----------------------------------------------------------------------------------
def _to_kzt(value: object) -> Decimal:
    """KZT given as text, an int or a YAML number; refuses more than two decimals or negatives."""
    if isinstance(value, bool):
        raise ValueError("an amount of KZT must be a number, not a boolean")
    if isinstance(value, int | float | Decimal):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"an amount of KZT must be a decimal string, not {type(value).__name__}")
    try:
        minor = parse_amount(value.strip(), _KZT)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    return Decimal(minor) / 100


Kzt = Annotated[Decimal, BeforeValidator(_to_kzt)]


def _to_price(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("a price must be a decimal number")
    try:
        price = Decimal(str(value).strip())
    except ArithmeticError:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not price.is_finite() or price <= 0:
        raise ValueError("a price must be a positive number")
    return price


PriceKzt = Annotated[Decimal, BeforeValidator(_to_price)]


def kzt_minor(amount: Decimal) -> int:
    """A validated KZT amount as int tiyn."""
    return int(amount * 100)


NonNeg = Annotated[float, Field(ge=0)]
Pos = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(ge=0, le=1)]
Bps = Annotated[int, Field(ge=0, le=10_000)]


# -- distributions ---------------------------------------------------------------------------
class ConstantTime(Model):
    dist: Literal["constant"] = "constant"
    mean_ms: NonNeg = 0.0


class ExponentialTime(Model):
    dist: Literal["exponential"]
    mean_ms: Pos


class LognormalTime(Model):
    dist: Literal["lognormal"]
    mean_ms: Pos
    cv: Pos = 0.5  # coefficient of variation: standard deviation / mean


class GammaTime(Model):
    dist: Literal["gamma"]
    mean_ms: Pos
    cv: Pos = 0.5


class UniformTime(Model):
    dist: Literal["uniform"]
    min_ms: NonNeg
    max_ms: NonNeg

    @model_validator(mode="after")
    def _ordered(self) -> UniformTime:
        if self.max_ms < self.min_ms:
            raise ValueError("max_ms must not be below min_ms")
        return self

    @property
    def mean_ms(self) -> float:
        return (self.min_ms + self.max_ms) / 2


class EmpiricalTime(Model):
    dist: Literal["empirical"]
    values_ms: Annotated[tuple[NonNeg, ...], Field(min_length=1)]

    @property
    def mean_ms(self) -> float:
        return sum(self.values_ms) / len(self.values_ms)


TimeDist = Annotated[
    ConstantTime | ExponentialTime | LognormalTime | GammaTime | UniformTime | EmpiricalTime,
    Field(discriminator="dist"),
]


class ConstantAmount(Model):
    dist: Literal["constant"]
    value_kzt: Pos


class LognormalAmount(Model):
    dist: Literal["lognormal"]
    mean_kzt: Pos
    cv: Pos = 1.0
    min_kzt: Pos = 1.0
    max_kzt: Pos = 5_000_000.0


class UniformAmount(Model):
    dist: Literal["uniform"]
    min_kzt: Pos
    max_kzt: Pos

    @model_validator(mode="after")
    def _ordered(self) -> UniformAmount:
        if self.max_kzt < self.min_kzt:
            raise ValueError("max_kzt must not be below min_kzt")
        return self


class EmpiricalAmount(Model):
    dist: Literal["empirical"]
    values_kzt: Annotated[tuple[Pos, ...], Field(min_length=1)]
    min_kzt: Pos = 1.0
    max_kzt: Pos = 1e12


AmountDist = Annotated[
    ConstantAmount | LognormalAmount | UniformAmount | EmpiricalAmount, Field(discriminator="dist")
]


class Window(Model):
    """A time window in simulated seconds since the start of the run."""

    start_s: NonNeg
    duration_s: Pos


