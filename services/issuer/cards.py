"""Cards, their configuration at the issuer, and the issuer's rules as data.

A card belongs to one cardholder (who also has a custodial wallet at the exchange), has a KYC tier
that sets its limits, a residency (for tax), a funding mode and an asset priority for liquidation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from services.contracts import FundingMode, Residency

__all__ = [
    "AuthState",
    "Authorization",
    "Card",
    "CardResult",
    "CardStatus",
    "IssuerConfig",
    "TopUpRule",
    "card_account",
]


def card_account(card_id: str) -> str:
    """The card's tenge: a liability of the issuer to the cardholder, never below zero."""
    return f"card:{card_id}:KZT"


class CardStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    EXPIRED = "expired"


class CardResult(StrEnum):
    """Result of opening or changing a card; anything but ``OK``/``EXISTS`` wrote nothing."""

    OK = "ok"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    UNKNOWN_CARD = "unknown_card"
    UNKNOWN_TIER = "unknown_tier"
    UNKNOWN_ASSET = "unknown_asset"
    EMPTY_ASSET_PRIORITY = "empty_asset_priority"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_TOP_UP_RULE = "invalid_top_up_rule"


@dataclass(frozen=True, slots=True)
class TopUpRule:
    """Pre-funded cards: below ``below_kzt`` of tenge, sell crypto to bring it to ``to_kzt``."""

    below_kzt: int
    to_kzt: int


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """The issuer's rules (built from the chain's configuration)."""

    issuer_id: str = "issuer"
    hold_padding_bps: int = 200
    hold_expiry_s: float = 7 * 86_400.0
    max_slippage_bps: int = 100
    quote_ttl_s: float = 2.0
    stablecoin_asset: str = "KZTE"
    tier_limits_kzt: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    aml_velocity_max_payments: int = 20
    aml_velocity_window_s: float = 3_600.0
    aml_structuring_band_bps: int = 500
    aml_structuring_max_near: int = 3
    aml_structuring_window_s: float = 86_400.0
    interchange_bps: int = 80


@dataclass(slots=True)
class Card:
    card_id: str
    holder_id: str
    residency: Residency
    kyc_tier: str
    funding_mode: FundingMode
    asset_priority: tuple[str, ...]
    status: CardStatus = CardStatus.ACTIVE
    top_up: TopUpRule | None = None
    top_up_in_flight: str = ""  # the sale id of an auto top-up not yet credited

    @property
    def account_id(self) -> str:
        return card_account(self.card_id)


class AuthState(StrEnum):
    DECLINED = "declined"
    HELD = "held"  # approved, hold pending
    CAPTURED = "captured"
    REVERSED = "reversed"
    EXPIRED = "expired"


@dataclass(slots=True)
class Authorization:
    """The issuer's record of one authorization (approved or declined) and what happened to it."""

    auth_id: str
    card_id: str
    merchant_id: str
    acquirer_id: str
    amount_kzt: int
    state: AuthState
    code: str = ""  # the ISO 8583 response code given
    approval_code: str = ""
    holds: list[str] = field(default_factory=list)  # pending transfer ids, in capture order
    held_kzt: int = 0
    padding_kzt: int = 0  # how far above the authorized amount a capture may go
    captured_kzt: int = 0
    returned_kzt: int = 0  # refunds and chargebacks so far
    returns: int = 0
    increments: int = 0
    stand_in: bool = False
    at_s: float = 0.0
