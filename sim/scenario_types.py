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
    """Frozen, unknown keys are errors, and no number may be infinite or NaN (``duration_s: .inf``
    would otherwise validate and run forever)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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
    """Every draw takes exactly ``mean_ms``: no randomness (a zero-time leg costs no events)."""

    dist: Literal["constant"] = Field("constant", description="the distribution's name")
    mean_ms: NonNeg = Field(0.0, description="the fixed duration")


class ExponentialTime(Model):
    """Memoryless service times (M/M/c queues): the textbook case the queueing tests check against."""

    dist: Literal["exponential"] = Field(description="the distribution's name")
    mean_ms: Pos = Field(description="the mean duration")


class LognormalTime(Model):
    """Right-skewed service times with a long tail, as measured service latencies usually are."""

    dist: Literal["lognormal"] = Field(description="the distribution's name")
    mean_ms: Pos = Field(description="the mean duration (not the median)")
    cv: Pos = Field(0.5, description="coefficient of variation: standard deviation / mean")


class GammaTime(Model):
    """Skewed service times with a lighter tail than the lognormal (cv 1 is the exponential)."""

    dist: Literal["gamma"] = Field(description="the distribution's name")
    mean_ms: Pos = Field(description="the mean duration")
    cv: Pos = Field(0.5, description="coefficient of variation: standard deviation / mean")


class UniformTime(Model):
    """Durations spread evenly between two bounds."""

    dist: Literal["uniform"] = Field(description="the distribution's name")
    min_ms: NonNeg = Field(description="the shortest duration")
    max_ms: NonNeg = Field(description="the longest duration; not below min_ms")

    @model_validator(mode="after")
    def _ordered(self) -> UniformTime:
        if self.max_ms < self.min_ms:
            raise ValueError("max_ms must not be below min_ms")
        return self

    @property
    def mean_ms(self) -> float:
        return (self.min_ms + self.max_ms) / 2


class EmpiricalTime(Model):
    """Measured durations, resampled uniformly with replacement (e.g. from a live calibration run)."""

    dist: Literal["empirical"] = Field(description="the distribution's name")
    values_ms: Annotated[tuple[NonNeg, ...], Field(min_length=1)] = Field(
        description="the measured durations to resample")

    @property
    def mean_ms(self) -> float:
        return sum(self.values_ms) / len(self.values_ms)


TimeDist = Annotated[
    ConstantTime | ExponentialTime | LognormalTime | GammaTime | UniformTime | EmpiricalTime,
    Field(discriminator="dist"),
]


class ConstantAmount(Model):
    """Every draw is the same amount."""

    dist: Literal["constant"] = Field(description="the distribution's name")
    value_kzt: Pos = Field(description="the amount")


class LognormalAmount(Model):
    """Many small amounts and a few large ones, as card tickets and wallet balances are spread."""

    dist: Literal["lognormal"] = Field(description="the distribution's name")
    mean_kzt: Pos = Field(description="the mean amount before clipping (not the median)")
    cv: Pos = Field(1.0, description="coefficient of variation: standard deviation / mean")
    min_kzt: Pos = Field(1.0, description="draws below this are raised to it")
    max_kzt: Pos = Field(5_000_000.0, description="draws above this are lowered to it")


class UniformAmount(Model):
    """Amounts spread evenly between two bounds."""

    dist: Literal["uniform"] = Field(description="the distribution's name")
    min_kzt: Pos = Field(description="the smallest amount")
    max_kzt: Pos = Field(description="the largest amount; not below min_kzt")

    @model_validator(mode="after")
    def _ordered(self) -> UniformAmount:
        if self.max_kzt < self.min_kzt:
            raise ValueError("max_kzt must not be below min_kzt")
        return self


class EmpiricalAmount(Model):
    """Observed amounts, resampled uniformly with replacement, then clipped."""

    dist: Literal["empirical"] = Field(description="the distribution's name")
    values_kzt: Annotated[tuple[Pos, ...], Field(min_length=1)] = Field(description="the amounts to resample")
    min_kzt: Pos = Field(1.0, description="draws below this are raised to it")
    max_kzt: Pos = Field(1e12, description="draws above this are lowered to it")


AmountDist = Annotated[
    ConstantAmount | LognormalAmount | UniformAmount | EmpiricalAmount, Field(discriminator="dist")
]


class Window(Model):
    """A time window in simulated seconds since the start of the run."""

    start_s: NonNeg = Field(description="when the window opens, seconds since the start of the run")
    duration_s: Pos = Field(description="how long it lasts")


