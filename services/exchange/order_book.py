"""The bid side of one asset's KZT order book, as a depth model.

Market makers bid at ``levels`` price levels below the mid: level ``k`` bids
``mid * (1 - spread/2 - k·step)`` and holds up to ``depth_per_level_kzt`` tiyn. A market sell walks
the levels from the best bid down, consuming tenge depth; market makers restore a fraction of each
level's depth per second (:meth:`OrderBook.replenish`). The mid comes from outside (the simulation's
price process or an API call); moving it re-prices the levels but keeps their depth.

All arithmetic is exact (integers and :class:`Fraction`); rounding happens once per quote and always
favours the house, by less than one minor unit each: the crypto quantity taken from the wallet is
rounded **up** to the minor unit, the tenge paid for it rounded **down** to the tiyn.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from services.exchange.config import BPS, BookConfig, SaleReason
from services.frozen import quick_init
from services.money import Asset

__all__ = ["OrderBook", "Quote", "fee_for_gross", "gross_for_net"]

_ZERO = Fraction(0)
_BPS_DEC = Decimal(BPS)


def fee_for_gross(gross_kzt: int, fee_bps: int) -> int:
    """The taker fee on ``gross_kzt``, rounded up to the tiyn (house favour)."""
    return -(-gross_kzt * fee_bps // BPS)


def gross_for_net(net_kzt: int, fee_bps: int) -> int:
    """The least gross ``g`` with ``g - fee_for_gross(g) >= net_kzt``.

    ``g = ceil(net / (1 - fee))`` suffices: ``g·(1 - fee) >= net`` and ``g - net`` is whole, so it
    covers ``ceil(g·fee)`` too; any smaller ``g`` falls short before rounding.
    """
    return -(-net_kzt * BPS // (BPS - fee_bps))


def _ceil(x: Fraction) -> int:
    return -(-x.numerator // x.denominator)


def _ratio(x: Fraction) -> tuple[int, int]:
    return x.numerator, x.denominator


def _to_decimal(x: Fraction) -> Decimal:
    return Decimal(x.numerator) / Decimal(x.denominator)


@quick_init
@dataclass(frozen=True, slots=True)
class Quote:
    """A priced market sell against one book, valid while the book's mid does not move.

    ``fills`` are ``(level, tiyn)`` the sale would take from each level. The exact values behind
    the rounding are kept as integer ratios (cheap to build; turned into numbers only when read):
    ``quantity_exact`` is the crypto the fills need before rounding up, ``gross_exact`` the exact
    value of ``quantity_minor`` at the level prices before rounding down.
    """

    asset: str
    quantity_minor: int
    gross_kzt: int
    fee_kzt: int
    fills: tuple[tuple[int, int], ...]
    mid_version: int
    need_ratio: tuple[int, int]  # quantity_exact as (numerator, denominator)
    gross_ratio: tuple[int, int]  # gross_exact as (numerator, denominator)
    mid_ratio: tuple[int, int]  # the mid it was priced at, KZT per major unit
    units: tuple[int, int]  # minor units per major unit: (asset, KZT)

    @property
    def net_kzt(self) -> int:
        return self.gross_kzt - self.fee_kzt

    @property
    def quantity_exact(self) -> Fraction:
        return Fraction(*self.need_ratio)

    @property
    def gross_exact(self) -> Fraction:
        return Fraction(*self.gross_ratio)

    @property
    def avg_price_exact(self) -> Fraction:
        """Gross proceeds per major unit sold, in KZT."""
        return Fraction(self.gross_kzt * self.units[0], self.quantity_minor * self.units[1])

    @property
    def avg_price_kzt(self) -> Decimal:
        # One correctly rounded Decimal division of the unreduced ratio: the same value and digits
        # as through the reduced Fraction (read for every executed leg; a Fraction costs a gcd).
        return Decimal(self.gross_kzt * self.units[0]) / Decimal(self.quantity_minor * self.units[1])

    @property
    def slippage_exact_bps(self) -> Fraction:
        """How far the average price lies below the mid, in basis points of the mid."""
        mid = Fraction(*self.mid_ratio)
        return (mid - self.avg_price_exact) * BPS / mid

    @property
    def slippage_bps(self) -> Decimal:
        # BPS * (1 - avg / mid), with one Decimal division (this is read for every executed leg).
        mid_num, mid_den = self.mid_ratio
        unit_asset, unit_kzt = self.units
        return _BPS_DEC - (Decimal(self.gross_kzt * unit_asset * mid_den * BPS)
                           / Decimal(self.quantity_minor * unit_kzt * mid_num))

    def within_slippage(self, cap_bps: int) -> bool:
        """``slippage_bps <= cap_bps``, decided in integers: avg >= mid * (1 - cap)."""
        mid_num, mid_den = self.mid_ratio
        unit_asset, unit_kzt = self.units
        return (self.gross_kzt * unit_asset * BPS * mid_den
                >= self.quantity_minor * unit_kzt * mid_num * (BPS - cap_bps))


class OrderBook:
    """One asset's bid side. Not thread-safe: one exchange drives it."""

    __slots__ = (
        "_carry", "_den", "_depth", "_factors", "_full_kzt", "_kzt", "_mid", "_mid_exact",
        "_mid_ratio",
        "_nums", "_restore_per_s", "asset", "config", "version",
    )

    def __init__(self, asset: Asset, config: BookConfig, kzt: Asset) -> None:
        self.asset = asset
        self.config = config
        self._kzt = kzt
        self._full_kzt = config.depth_per_level_kzt
        self._depth = [config.depth_per_level_kzt] * config.levels
        self._carry = [_ZERO] * config.levels
        self._restore_per_s = config.depth_per_level_kzt * Fraction(config.replenish_per_s)
        # price_k = mid * factor_k / (2·BPS): half the spread plus k steps below the mid.
        self._factors = [2 * BPS - config.spread_bps - 2 * k * config.level_step_bps
                         for k in range(config.levels)]
        self._mid: Decimal | None = None
        self._mid_exact = _ZERO
        self._mid_ratio = (0, 1)
        # Tiyn for q minor units at level k = q * _nums[k] / _den (one denominator for all levels).
        self._nums = [0] * config.levels
        self._den = 1
        self.version = 0

    # -- price -------------------------------------------------------------------------------
    @property
    def mid(self) -> Decimal | None:
        return self._mid

    def set_mid(self, price_kzt: Decimal) -> None:
        """Move the mid (KZT per major unit) and re-price every level; depth stays."""
        if not isinstance(price_kzt, Decimal) or not price_kzt.is_finite() or price_kzt <= 0:
            raise ValueError(f"a mid price must be a positive finite Decimal, got {price_kzt!r}")
        num, den = price_kzt.as_integer_ratio()
        self._mid = price_kzt
        self._mid_exact = Fraction(num, den)
        self._mid_ratio = (num, den)
        self._nums = [num * f * self._kzt.unit for f in self._factors]
        self._den = den * 2 * BPS * self.asset.unit
        self.version += 1

    def level_price(self, level: int) -> Decimal:
        """The bid of ``level`` in KZT per major unit."""
        if self._mid is None:
            raise ValueError(f"no mid price set for {self.asset.code}")
        return _to_decimal(self._mid_exact * self._factors[level] / (2 * BPS))

    # -- depth -------------------------------------------------------------------------------
    def depth_kzt(self, level: int) -> int:
        return self._depth[level]

    @property
    def depths_kzt(self) -> tuple[int, ...]:
        return tuple(self._depth)

    @property
    def total_depth_kzt(self) -> int:
        return sum(self._depth)

    def replenish(self, elapsed_s: float) -> None:
        """Market makers restore depth: ``replenish_per_s`` of a full level per second, capped."""
        if elapsed_s <= 0 or not self._restore_per_s:
            return
        add = self._restore_per_s * Fraction(elapsed_s)
        full = self._full_kzt
        depth, carry = self._depth, self._carry
        for k, d in enumerate(depth):
            if d >= full:
                continue
            restored = add + carry[k]
            whole = int(restored)  # floor: restored is positive
            if d + whole >= full:
                depth[k], carry[k] = full, _ZERO
            else:
                depth[k], carry[k] = d + whole, restored - whole

    # -- quotes ------------------------------------------------------------------------------
    def quote_sell_for_net(self, net_kzt: int, fee_bps: int) -> Quote | SaleReason:
        """Quote the least crypto whose proceeds, after the taker fee, net at least ``net_kzt``."""
        if net_kzt <= 0:
            return SaleReason.INVALID_AMOUNT
        if self._mid is None:
            return SaleReason.NO_PRICE
        target = gross_for_net(net_kzt, fee_bps)
        nums, den, depth = self._nums, self._den, self._depth
        top = self._top_level()
        if top < 0:
            return SaleReason.INSUFFICIENT_LIQUIDITY
        if target <= depth[top]:  # one level: all in integers
            n = nums[top]
            quantity = -(-target * den // n)
            gross = quantity * n // den
            return self._quote(quantity, gross, (target * den, n), (quantity * n, den),
                               ((top, min(depth[top], gross)),), fee_bps)
        left = target
        need = _ZERO
        fills: list[list[int]] = []
        for k in range(top, len(depth)):
            d = depth[k]
            if d <= 0:
                continue
            take = min(left, d)
            need += Fraction(take * den, nums[k])
            fills.append([k, take])
            left -= take
            if left == 0:
                break
        if left:
            return SaleReason.INSUFFICIENT_LIQUIDITY
        quantity = _ceil(need)
        last_level = fills[-1][0]
        # The part of a minor unit added by rounding up is sold at the last level touched.
        gross_exact = target + (quantity - need) * nums[last_level] / den
        gross = int(gross_exact)
        fills[-1][1] = min(depth[last_level], fills[-1][1] + gross - target)
        return self._quote(quantity, gross, _ratio(need), _ratio(gross_exact),
                           tuple((k, t) for k, t in fills if t > 0), fee_bps)

    def quote_sell_quantity(self, quantity_minor: int, fee_bps: int) -> Quote | SaleReason:
        """Quote selling exactly ``quantity_minor`` (e.g. the rest of a wallet)."""
        if quantity_minor <= 0:
            return SaleReason.INVALID_AMOUNT
        if self._mid is None:
            return SaleReason.NO_PRICE
        nums, den, depth = self._nums, self._den, self._depth
        top = self._top_level()
        if top < 0:
            return SaleReason.INSUFFICIENT_LIQUIDITY
        if quantity_minor * nums[top] <= depth[top] * den:  # one level: all in integers
            gross = quantity_minor * nums[top] // den
            return self._quote(quantity_minor, gross, (quantity_minor, 1),
                               (quantity_minor * nums[top], den), ((top, gross),), fee_bps)
        left = Fraction(quantity_minor)
        gross_exact = _ZERO
        taken_full = 0
        fills: list[list[int]] = []
        for k in range(top, len(depth)):
            d = depth[k]
            if d <= 0:
                continue
            capacity = Fraction(d * den, nums[k])
            if left <= capacity:
                gross_exact += left * nums[k] / den
                left = _ZERO
                fills.append([k, 0])
                break
            gross_exact += d
            taken_full += d
            left -= capacity
            fills.append([k, d])
        if left:
            return SaleReason.INSUFFICIENT_LIQUIDITY
        gross = int(gross_exact)
        if fills[-1][1] == 0:
            fills[-1][1] = gross - taken_full
        return self._quote(quantity_minor, gross, (quantity_minor, 1), _ratio(gross_exact),
                           tuple((k, t) for k, t in fills if t > 0), fee_bps)

    def _top_level(self) -> int:
        """The best level that still has depth, or -1 when the book is empty."""
        for k, d in enumerate(self._depth):
            if d > 0:
                return k
        return -1

    def _quote(  # noqa: PLR0917 — private helper; the six values are the quote being built
        self, quantity: int, gross: int, need: tuple[int, int], gross_exact: tuple[int, int],
        fills: tuple[tuple[int, int], ...], fee_bps: int,
    ) -> Quote:
        return Quote(
            asset=self.asset.code, quantity_minor=quantity, gross_kzt=gross,
            fee_kzt=fee_for_gross(gross, fee_bps), fills=fills, mid_version=self.version,
            need_ratio=need, gross_ratio=gross_exact, mid_ratio=self._mid_ratio,
            units=(self.asset.unit, self._kzt.unit),
        )

    def can_execute(self, quote: Quote) -> bool:
        """True while the quote's mid is current and its depth is still there."""
        if quote.asset != self.asset.code or quote.mid_version != self.version:
            return False
        depth = self._depth
        return all(depth[k] >= t for k, t in quote.fills)

    def execute(self, quote: Quote) -> bool:
        """Consume the quote's depth; False (nothing consumed) when the book moved since."""
        if not self.can_execute(quote):
            return False
        depth = self._depth
        for k, t in quote.fills:
            depth[k] -= t
        return True
