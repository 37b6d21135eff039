"""Money: assets, integer minor units, and decimal prices.

Never use floating point for money (beancount's rule). An amount is an ``int`` of minor units of
one asset (1 KZT = 100 tiyn, 1 BTC = 10**8 satoshi); a price or a rate is a ``Decimal`` built by
:func:`D`. Text is parsed into minor units and formatted back only at the edges of the system
(scenario files, the API, reports).

Rounding rule: every conversion between assets rounds in the house's favour, by less than one
minor unit of the asset being rounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, DecimalException
from typing import Final

from services.errors import CcsimError

__all__ = [
    "AMOUNT_MAX",
    "DEFAULT_ASSETS",
    "Asset",
    "AssetRegistry",
    "D",
    "MoneyError",
    "convert_ceil",
    "convert_floor",
    "format_amount",
    "parse_amount",
    "to_major",
]

# Enough precision for 18-decimal assets times prices of 10**12 with headroom.
_CTX: Final = Context(prec=80)

# A limit on everything (TigerBeetle): no single amount above this. 10**30 leaves room for sums of
# many amounts inside Numeric(38, 0).
AMOUNT_MAX: Final = 10**30

_AMOUNT_MAX_DIGITS: Final = len(str(AMOUNT_MAX)) - 1  # 10**30: a 31-digit number
_AMOUNT_RE: Final = re.compile(r"^(?P<sign>-)?(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]+))?$")
_CODE_RE: Final = re.compile(r"^[A-Z][A-Z0-9]{1,11}$")


class MoneyError(CcsimError, ValueError):
    """Raised at the edges when text or a value cannot be a valid amount or price."""


def D(value: str | int | Decimal) -> Decimal:  # noqa: N802 — beancount's name for the one constructor
    """The one constructor for prices and rates. Floats are refused: they are not exact."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise MoneyError(f"a price or rate must be given as text, int or Decimal, not {type(value).__name__}")
    raw = value.strip() if isinstance(value, str) else value
    try:
        result = _CTX.create_decimal(raw)
    except (DecimalException, ValueError) as exc:  # also Overflow, e.g. "1e9999999"
        raise MoneyError(f"not a decimal number in range: {value!r}") from exc
    if not result.is_finite():
        raise MoneyError(f"a price or rate must be finite, got {value!r}")
    if result != Decimal(raw):  # never round silently: > 80 significant digits, or underflow
        raise MoneyError(f"a price or rate must be exact within {_CTX.prec} significant digits")
    return result


@dataclass(frozen=True, slots=True)
class Asset:
    """A ledger asset: its code and the number of decimal places of its minor unit."""

    code: str
    scale: int
    name: str = ""

    def __post_init__(self) -> None:
        if not _CODE_RE.match(self.code):
            raise MoneyError(f"asset code must be 2-12 upper-case letters or digits, got {self.code!r}")
        if not 0 <= self.scale <= 18:
            raise MoneyError(f"asset {self.code}: scale must be between 0 and 18, got {self.scale}")

    @property
    def unit(self) -> int:
        """Minor units in one major unit (100 for KZT)."""
        unit: int = 10**self.scale  # an int power of an int: mypy cannot tell the sign of scale
        return unit


DEFAULT_ASSETS: Final = (
    Asset("KZT", 2, "Kazakhstani tenge"),
    Asset("BTC", 8, "Bitcoin"),
    Asset("ETH", 18, "Ether"),
    Asset("USDT", 6, "Tether USD"),
    Asset("KZTE", 2, "Tenge-backed stablecoin"),
)


class AssetRegistry:
    """The assets a run or a service knows. Scenarios may add more."""

    def __init__(self, assets: tuple[Asset, ...] | list[Asset] = DEFAULT_ASSETS) -> None:
        self._assets: dict[str, Asset] = {}
        for asset in assets:
            self.add(asset)

    def add(self, asset: Asset) -> None:
        known = self._assets.get(asset.code)
        if known is not None and known != asset:
            raise MoneyError(f"asset {asset.code} already registered with scale {known.scale}")
        self._assets[asset.code] = asset

    def get(self, code: str) -> Asset:
        try:
            return self._assets[code]
        except KeyError:
            raise MoneyError(f"unknown asset {code!r}; known: {', '.join(sorted(self._assets))}") from None

    def __contains__(self, code: object) -> bool:
        return code in self._assets

    def codes(self) -> list[str]:
        return sorted(self._assets)

    def parse(self, text: str, code: str) -> int:
        return parse_amount(text, self.get(code))

    def format(self, amount_minor: int, code: str, *, with_code: bool = False) -> str:
        return format_amount(amount_minor, self.get(code), with_code=with_code)


def parse_amount(text: str, asset: Asset, *, allow_negative: bool = False) -> int:
    """Parse ``"12.34"`` into 1234 minor units of ``asset``.

    Only ASCII digits, an optional leading minus and one dot are accepted; more decimals than the
    asset's scale, exponents, separators, ``NaN`` and floats are refused, so no value is silently
    rounded on the way in.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        raise MoneyError(f"amount of {asset.code} must be a decimal string, not {type(text).__name__}")
    # fullmatch, not match: ``$`` would also accept a trailing newline.
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        raise MoneyError(f"amount {text!r} is not a plain decimal number (digits, one optional dot)")
    frac = match["frac"] or ""
    if len(frac) > asset.scale:
        raise MoneyError(
            f"amount {text!r} has {len(frac)} decimals; {asset.code} allows at most {asset.scale}"
        )
    # Refuse oversized text before int(): Python refuses > 4300 digits with a bare ValueError.
    int_digits = match["int"].lstrip("0") or "0"
    if len(int_digits) - 1 + asset.scale > _AMOUNT_MAX_DIGITS:
        raise MoneyError(f"amount with {len(int_digits)} integer digits exceeds the maximum of "
                         f"{AMOUNT_MAX} minor units of {asset.code}")
    minor = int(int_digits) * asset.unit + (int(frac.ljust(asset.scale, "0")) if frac else 0)
    if match["sign"]:
        if not allow_negative and minor != 0:
            raise MoneyError(f"amount {text!r} must not be negative")
        minor = -minor
    if abs(minor) > AMOUNT_MAX:
        raise MoneyError(f"amount {text!r} exceeds the maximum of {AMOUNT_MAX} minor units")
    return minor


def format_amount(amount_minor: int, asset: Asset, *, with_code: bool = False) -> str:
    """Format minor units as a decimal string with exactly the asset's scale: 1234 → ``"12.34"``."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise MoneyError(f"amount must be int minor units, not {type(amount_minor).__name__}")
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), asset.unit)
    text = f"{sign}{whole}" + (f".{frac:0{asset.scale}d}" if asset.scale else "")
    return f"{text} {asset.code}" if with_code else text


def to_major(amount_minor: int, asset: Asset) -> Decimal:
    """Minor units as an exact Decimal of major units (for reports and rates, never for booking)."""
    return _CTX.divide(Decimal(amount_minor), Decimal(asset.unit))


def _convert(amount_minor: int, src: Asset, price: Decimal, dst: Asset) -> tuple[int, int]:
    """Exact value of ``amount_minor`` of ``src`` in minor units of ``dst`` at ``price`` (dst per
    src) as numerator and denominator: integer arithmetic, so no precision limit can round it."""
    price_num, price_den = price.as_integer_ratio()
    return amount_minor * price_num * dst.unit, price_den * src.unit


def convert_floor(amount_minor: int, src: Asset, price: Decimal, dst: Asset) -> int:
    """Convert, rounding down: what the house pays out when it buys ``src`` from a customer."""
    num, den = _convert(amount_minor, src, price, dst)
    return num // den


def convert_ceil(amount_minor: int, src: Asset, price: Decimal, dst: Asset) -> int:
    """Convert, rounding up: what the house takes in when it charges for ``dst`` in ``src``."""
    num, den = _convert(amount_minor, src, price, dst)
    return -(-num // den)
