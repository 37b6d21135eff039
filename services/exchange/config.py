"""The exchange's configuration and the reasons it gives when it refuses a sale."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from services.contracts import SaleReason, TaxPolicy
from services.money import D
from services.tax.cost_basis import CostMethod

__all__ = ["BPS", "BookConfig", "ExchangeConfig", "SaleReason"]

BPS = 10_000  # basis points in one


@dataclass(frozen=True, slots=True)
class BookConfig:
    """The bid side of one asset's KZT order book (see ``docs/model-exchange-and-tax.md``).

    Level ``k`` (0-based) bids ``mid * (1 - spread/2 - k·step)`` and holds ``depth_per_level_kzt``
    tiyn of tenge when full; market makers restore ``replenish_per_s`` of that depth per second.
    """

    levels: int = 10
    level_step_bps: int = 5
    depth_per_level_kzt: int = 50_000_000_00  # tiyn: 50 million KZT per level
    spread_bps: int = 10
    replenish_per_s: Decimal = field(default_factory=lambda: D("0.02"))

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError(f"an order book needs at least one level, got {self.levels}")
        if self.level_step_bps < 0 or self.spread_bps < 0 or self.depth_per_level_kzt < 0:
            raise ValueError("level step, spread and depth must not be negative")
        if self.spread_bps + 2 * self.level_step_bps * (self.levels - 1) >= 2 * BPS:
            raise ValueError("the deepest level's price would not be positive: "
                             "reduce the spread or the steps")
        if not isinstance(self.replenish_per_s, Decimal) or self.replenish_per_s < 0:
            raise ValueError("replenish_per_s must be a non-negative Decimal fraction per second")


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    """Fees, limits, books and policies of the AIFC exchange.

    Amounts are tiyn (``house_kzt_minor``: the exchange's tenge at its bank at the start).
    ``max_slippage_bps`` applies when a sell order carries no cap of its own (0).
    """

    taker_fee_bps: int = 10
    max_slippage_bps: int = 100
    quote_ttl_s: float = 2.0
    books: dict[str, BookConfig] = field(
        default_factory=lambda: {"BTC": BookConfig(), "ETH": BookConfig()})
    stablecoin_code: str = "KZTE"
    stablecoin_fee_bps: int = 20
    tax_policy: TaxPolicy = TaxPolicy.SELF_DECLARE
    cost_basis: CostMethod = "fifo"
    house_kzt_minor: int = 1_000_000_000_00  # one billion KZT

    def __post_init__(self) -> None:
        for name in ("taker_fee_bps", "stablecoin_fee_bps", "max_slippage_bps"):
            value = getattr(self, name)
            if not 0 <= value < BPS:
                raise ValueError(f"{name} must be within 0..{BPS - 1}, got {value}")
        if self.house_kzt_minor < 0 or self.quote_ttl_s < 0:
            raise ValueError("house_kzt_minor and quote_ttl_s must not be negative")
        if self.stablecoin_code in self.books:
            raise ValueError(f"{self.stablecoin_code} is redeemed 1:1, it has no order book")
        if self.cost_basis not in ("fifo", "average"):
            raise ValueError(f"cost_basis must be 'fifo' or 'average', got {self.cost_basis!r}")
