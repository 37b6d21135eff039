"""Text renderings of figures for people: counts, percentages, durations and tenge.

Money arrives as decimal strings (``"1234.56"``) or integer minor units and stays ``Decimal``
here; a float never touches a KZT figure that is shown as text. The approximate forms ("38.1
million KZT", "1.5 s") round so that the sentence stays true: a latency bound rounds up, a share of
approvals rounds down.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Final

from services.money import D, MoneyError

__all__ = [
    "fmt_count",
    "fmt_kzt_exact",
    "fmt_kzt_human",
    "fmt_ms",
    "fmt_ms_bound",
    "fmt_pct",
    "fmt_share_pct",
    "kzt_decimal",
    "kzt_from_minor",
]

_KZT_SCALE: Final = Decimal("0.01")
_UNITS: Final = ((Decimal(10) ** 9, "billion"), (Decimal(10) ** 6, "million"))


def kzt_decimal(text: object) -> Decimal | None:
    """A KZT decimal string from summary.json as an exact Decimal; ``None`` when absent."""
    if text is None:
        return None
    if isinstance(text, float):
        raise TypeError("KZT amounts must be decimal strings, not floats")
    try:
        return D(text if isinstance(text, str | int | Decimal) else str(text))
    except MoneyError:
        return None


def kzt_from_minor(amount_minor: int) -> Decimal:
    """Integer tiyn as exact tenge."""
    return Decimal(int(amount_minor)).scaleb(-2)


def fmt_count(n: int | None) -> str:
    """``412300`` → ``"412,300"``."""
    return "n/a" if n is None else f"{int(n):,}"


def fmt_kzt_exact(amount: Decimal | None) -> str:
    """Exact tenge with thousands separators and two decimals: ``"38,123,456.78 KZT"``."""
    if amount is None:
        return "n/a"
    return f"{amount.quantize(_KZT_SCALE, rounding=ROUND_HALF_EVEN):,} KZT"


def fmt_kzt_human(amount: Decimal | None) -> str:
    """Tenge for a sentence: ``"38.1 million KZT"``; below a million the exact figure."""
    if amount is None:
        return "n/a"
    for unit, word in _UNITS:
        if abs(amount) >= unit:
            scaled = (amount / unit).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
            return f"{scaled:,} {word} KZT"
    return fmt_kzt_exact(amount)


def fmt_ms(value_ms: float | None) -> str:
    """A latency for a table: ``"842 ms"`` or ``"1,412 ms"``."""
    if value_ms is None:
        return "n/a"
    return f"{value_ms:,.0f} ms"


def fmt_ms_bound(value_ms: float | None) -> str:
    """A latency as an upper bound in a sentence, rounded up: 1,412 ms → ``"1.5 s"``."""
    if value_ms is None:
        return "n/a"
    if value_ms < 1000:
        return f"{Decimal(repr(value_ms)).to_integral_value(rounding=ROUND_CEILING)} ms"
    seconds = (Decimal(repr(value_ms)) / 1000).quantize(Decimal("0.1"), rounding=ROUND_CEILING)
    return f"{seconds} s"


def fmt_share_pct(part: int, whole: int) -> str:
    """A share as a percentage rounded down, so 99.96 % never reads as 100.0 %."""
    if whole <= 0:
        return "n/a"
    share = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
    return f"{share} %"


def fmt_pct(rate: float | None, places: int = 2) -> str:
    """A rate in [0, 1] as a percentage: ``0.0123`` → ``"1.23 %"``."""
    if rate is None:
        return "n/a"
    return f"{rate * 100:.{places}f} %"
