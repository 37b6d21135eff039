"""Cost-basis pools: what a holder paid for the units of one asset they still hold.

Two methods, chosen per run: FIFO (the oldest purchase lot is sold first) and average cost (every
unit carries the running average price). Both keep the basis exact (integer ratios of tiyn), so no
rounding accumulates across many small sales; rounding to whole tiyn happens once per sale, in
:mod:`services.tax.book`.

Selling more units than the lots cover (crypto that reached the wallet without a recorded
purchase) gives the excess a zero basis: the whole price of those units counts as gain. That is the
conservative reading for a tax authority, and it makes a missing lot visible as extra tax rather
than as a silent loss.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import lcm
from typing import Any, Literal, Protocol

from services.money import Asset

__all__ = [
    "AveragePool",
    "Basis",
    "CostMethod",
    "CostPool",
    "FifoPool",
    "new_pool",
    "tiyn_per_minor",
]

CostMethod = Literal["fifo", "average"]

_ZERO = Fraction(0)
_NOW = float("-inf")  # the time of a first lot added without one; later untimed lots take the last lot's


def tiyn_per_minor(price_kzt: Decimal, asset: Asset) -> Fraction:
    """Exact tiyn per minor unit of ``asset`` at ``price_kzt`` KZT per major unit."""
    # One Fraction from the exact ratio (Fraction(price) * 100 / unit builds three, same value).
    num, den = price_kzt.as_integer_ratio()
    return Fraction(num * 100, den * asset.unit)


Basis = tuple[int, int]  # an exact amount of tiyn as (numerator, denominator > 0)


class CostPool(Protocol):
    """The lots of one holder in one asset."""

    @property
    def quantity_minor(self) -> int: ...

    def add(self, quantity_minor: int, tiyn_per_minor: Fraction, acquired_at: float | None = None) -> None:
        """Add a lot; ``acquired_at`` (seconds) places it among the others, None means now."""
        ...

    def basis_of(self, quantity_minor: int) -> Basis:
        """The basis that selling ``quantity_minor`` would consume, consuming nothing."""
        ...

    def consume(self, quantity_minor: int) -> Basis:
        """Consume ``quantity_minor`` units and return their basis in exact tiyn."""
        ...


class FifoPool:
    """First in, first out: a list of ``[quantity_left, cost_numerator, acquired_at]`` lots, oldest first (a
    holder has a handful; a list is a tenth of a deque's memory, and a million pools add up).

    Every lot's cost per minor unit is ``cost_numerator / self._den``: one denominator for the
    pool (widened when a lot with more decimals arrives), so a sale's basis is a sum of integers.

    "Oldest" is the lot's acquisition time, not the order lots were handed in: a lot added with
    ``acquired_at`` goes after every lot acquired at or before that time; a lot without one (a
    purchase made now, such as a re-buy) goes last.
    """

    __slots__ = ("_den", "_lots", "_quantity_minor")

    def __init__(self) -> None:
        self._lots: list[list[Any]] = []  # [quantity_left: int, cost_numerator: int, acquired_at: float]
        self._den = 1
        self._quantity_minor = 0

    @property
    def quantity_minor(self) -> int:
        return self._quantity_minor

    def add(self, quantity_minor: int, tiyn_per_minor: Fraction, acquired_at: float | None = None) -> None:
        if quantity_minor <= 0:
            return
        den = tiyn_per_minor.denominator
        if self._den % den:
            wider = lcm(self._den, den)
            factor = wider // self._den
            for lot in self._lots:
                lot[1] *= factor
            self._den = wider
        lots = self._lots
        last_at = lots[-1][2] if lots else _NOW
        if acquired_at is None or acquired_at >= last_at:  # the usual case: the newest lot
            lots.append([quantity_minor, tiyn_per_minor.numerator * (self._den // den),
                         last_at if acquired_at is None else acquired_at])
        else:
            at = next(i for i, lot in enumerate(lots) if lot[2] > acquired_at)
            lots.insert(at, [quantity_minor, tiyn_per_minor.numerator * (self._den // den), acquired_at])
        self._quantity_minor += quantity_minor

    def basis_of(self, quantity_minor: int) -> Basis:
        basis = 0
        left = quantity_minor
        for qty, cost, _ in self._lots:  # stops at the first lot that covers the rest
            take = min(left, qty)
            basis += take * cost
            left -= take
            if left == 0:
                break
        return basis, self._den  # any units beyond the lots carry zero basis (module docstring)

    def consume(self, quantity_minor: int) -> Basis:
        basis = 0
        left = quantity_minor
        lots = self._lots
        used = 0  # lots consumed whole, from the front
        while left and used < len(lots):
            lot = lots[used]
            qty = lot[0]
            take = min(left, qty)
            basis += take * lot[1]
            left -= take
            if take == qty:
                used += 1
            else:
                lot[0] = qty - take
        if used:
            del lots[:used]
        self._quantity_minor = max(0, self._quantity_minor - quantity_minor)
        return basis, self._den


class AveragePool:
    """Average cost: one running total of units and of their exact basis."""

    __slots__ = ("_basis", "_quantity_minor")

    def __init__(self) -> None:
        self._quantity_minor = 0
        self._basis = _ZERO

    @property
    def quantity_minor(self) -> int:
        return self._quantity_minor

    def add(self, quantity_minor: int, tiyn_per_minor: Fraction, acquired_at: float | None = None) -> None:
        if quantity_minor <= 0:
            return
        self._quantity_minor += quantity_minor
        self._basis += quantity_minor * tiyn_per_minor

    def basis_of(self, quantity_minor: int) -> Basis:
        covered = min(quantity_minor, self._quantity_minor)
        if covered == 0:
            return 0, 1
        return self._basis.numerator * covered, self._basis.denominator * self._quantity_minor

    def consume(self, quantity_minor: int) -> Basis:
        num, den = self.basis_of(quantity_minor)
        self._quantity_minor = max(0, self._quantity_minor - quantity_minor)
        self._basis = self._basis - Fraction(num, den) if self._quantity_minor else _ZERO
        return num, den


def new_pool(method: CostMethod) -> FifoPool | AveragePool:
    if method == "fifo":
        return FifoPool()
    if method == "average":
        return AveragePool()
    raise ValueError(f"cost basis method must be 'fifo' or 'average', got {method!r}")
