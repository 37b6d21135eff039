"""The scenario's ``direct`` section: CryptoCity's direct rail (``docs/model-direct-rail.md``).

A share of the payments to zone merchants (``population.merchants.cryptocity_share``) choose the
direct rail: the holder pays the merchant's tenge invoice from their custodial wallet at the
exchange, in crypto (by their asset priority) or in the tenge stablecoin. Each merchant segment
(a merchant category) has a conversion policy. Cross-field rules (a segment must be a category)
are checked by :class:`sim.scenario.Scenario`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from services.flows.conversion import ConversionPolicy
from services.flows.direct import FallbackPolicy
from sim.scenario_types import AmountDist, Bps, Kzt, LognormalTime, Model, Pos, Share, TimeDist, UniformAmount

__all__ = ["ConversionSpec", "DirectAssets", "DirectSpec"]

_SHARE_TOLERANCE = 1e-9


class DirectAssets(Model):
    """What a direct payer pays with; the shares sum to 1."""

    crypto: Share = Field(1.0, description="share paying in crypto, by the holder's asset priority")
    stablecoin: Share = Field(0.0, description="share paying in the tenge stablecoin (1:1, no price risk)")

    @model_validator(mode="after")
    def _sum_to_one(self) -> DirectAssets:
        if abs(self.crypto + self.stablecoin - 1.0) > _SHARE_TOLERANCE:
            raise ValueError(f"crypto + stablecoin must sum to 1, got {self.crypto + self.stablecoin:g}")
        return self


class ConversionSpec(Model):
    """When a merchant segment sells the crypto it received for tenge."""

    policy: ConversionPolicy = Field(
        ConversionPolicy.IMMEDIATE,
        description="immediate: each receipt at once; end_of_day: at each midnight; threshold: once the "
                    "holding is worth threshold_kzt; hold: never in the run")
    threshold_kzt: Kzt = Field(Decimal(0), description="with threshold: sell once the holding is worth this")

    @model_validator(mode="after")
    def _threshold(self) -> ConversionSpec:
        if self.policy is ConversionPolicy.THRESHOLD and self.threshold_kzt <= 0:
            raise ValueError("policy threshold needs threshold_kzt above 0")
        return self


class DirectSpec(Model):
    """CryptoCity's direct rail: zone payments paid from wallet to wallet at the exchange."""

    share: Share = Field(0.0, description="share of payments to zone merchants that choose the direct rail")
    assets: DirectAssets = Field(DirectAssets(), description="what direct payers pay with")
    stablecoin_wallet_kzt: AmountDist = Field(
        UniformAmount(dist="uniform", min_kzt=20_000, max_kzt=300_000),
        description="tenge stablecoin each cardholder keeps for direct payments (when assets.stablecoin > 0)")
    fee_bps: Bps = Field(0, description="the exchange's fee on a direct payment, out of the merchant's receipt")
    quote_ttl_s: Pos = Field(60.0, description="a direct quote's time-to-live: the holder must confirm within it")
    confirm_time: TimeDist = Field(
        LognormalTime(dist="lognormal", mean_ms=8_000.0, cv=0.5),
        description="the holder reads the quote and confirms on their phone")
    fallback: FallbackPolicy = Field(
        FallbackPolicy.FAIL,
        description="when the exchange is out or every asset halted: fail, or pay with the card instead")
    refund_rule: Literal["crypto_original_quantity"] = Field(
        "crypto_original_quantity",
        description="a refund gives the crypto back at the original quantity, from the merchant's wallet")
    conversion: ConversionSpec = Field(ConversionSpec(), description="the conversion policy of every segment")
    segments: dict[str, ConversionSpec] = Field(
        default_factory=dict, description="a merchant category's own conversion policy (overrides conversion)")
    max_conversion_slippage_bps: Annotated[int, Field(ge=1, le=10_000)] = Field(
        300, description="a conversion that would slip more waits for the next chance")

    @property
    def enabled(self) -> bool:
        return self.share > 0

    def policy_of(self, category: str) -> ConversionSpec:
        return self.segments.get(category, self.conversion)
