"""A zone merchant's conversion policy: when the crypto it received on the direct rail is sold for
tenge (through the exchange's order book, with its slippage, fees and halts, as card sales).

- ``immediate`` — each receipt is sold at once;
- ``end_of_day`` — everything held is sold at the end of each day (the merchant bears a day's price);
- ``threshold`` — sold once the holding is worth at least ``threshold_kzt`` at the mid price;
- ``hold`` — never sold in the run (the merchant keeps the crypto, and all of its price risk).

The tenge stablecoin is redeemed 1:1 under the same policies (it carries no price risk).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ConversionPolicy", "ConversionRule"]


class ConversionPolicy(StrEnum):
    IMMEDIATE = "immediate"
    END_OF_DAY = "end_of_day"
    THRESHOLD = "threshold"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class ConversionRule:
    """One merchant segment's policy; ``threshold_kzt`` (tiyn) is read by ``threshold`` only."""

    policy: ConversionPolicy = ConversionPolicy.IMMEDIATE
    threshold_kzt: int = 0

    def on_receipt(self, held_value_kzt: int) -> bool:
        """Sell now, right after a receipt, with the holding worth ``held_value_kzt``?"""
        if self.policy is ConversionPolicy.IMMEDIATE:
            return True
        return self.policy is ConversionPolicy.THRESHOLD and held_value_kzt >= self.threshold_kzt

    @property
    def at_end_of_day(self) -> bool:
        """Sell whatever is held at the end of each day?"""
        return self.policy is ConversionPolicy.END_OF_DAY
