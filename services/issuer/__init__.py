"""The card issuer: cards, limits and AML rules, the authorization pipeline, holds and clearing."""

from __future__ import annotations

from services.issuer.cards import (
    Authorization,
    AuthState,
    Card,
    CardResult,
    CardStatus,
    IssuerConfig,
    TopUpRule,
    card_account,
)
from services.issuer.issuer import EXPOSURE, FUNDING, INTERCHANGE, SETTLEMENT, ClearingCode, Issuer
from services.issuer.rules import SpendTracker

__all__ = [
    "EXPOSURE",
    "FUNDING",
    "INTERCHANGE",
    "SETTLEMENT",
    "AuthState",
    "Authorization",
    "Card",
    "CardResult",
    "CardStatus",
    "ClearingCode",
    "Issuer",
    "IssuerConfig",
    "SpendTracker",
    "TopUpRule",
    "card_account",
]
