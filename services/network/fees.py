"""Card-scheme fees on one payment: interchange, scheme fee and the merchant discount rate.

Every party computes a payment's fees with these functions from the presented amount, so the
network's net positions and the acquirer's books agree to the tiyn. Fees round down (in the
payer's favour) per payment.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BPS", "FeeSchedule", "fee_kzt"]

BPS = 10_000


def fee_kzt(amount_kzt: int, bps: int) -> int:
    return amount_kzt * bps // BPS


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """``mdr`` is what the merchant pays the acquirer; out of it the acquirer pays interchange (to
    the issuer, through the network) and the scheme fee (to the network)."""

    mdr_bps: int = 150
    interchange_bps: int = 80
    scheme_fee_bps: int = 10

    def __post_init__(self) -> None:
        if min(self.mdr_bps, self.interchange_bps, self.scheme_fee_bps) < 0:
            raise ValueError("fees must not be negative")
        if self.mdr_bps < self.interchange_bps + self.scheme_fee_bps:
            raise ValueError("the merchant discount must cover interchange and the scheme fee")

    def interchange_kzt(self, amount_kzt: int) -> int:
        return fee_kzt(amount_kzt, self.interchange_bps)

    def scheme_fee_kzt(self, amount_kzt: int) -> int:
        return fee_kzt(amount_kzt, self.scheme_fee_bps)

    def mdr_kzt(self, amount_kzt: int) -> int:
        return fee_kzt(amount_kzt, self.mdr_bps)
