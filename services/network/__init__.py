"""The card network: presentment batches, settlement windows, net positions and scheme fees."""

from __future__ import annotations

from services.network.fees import BPS, FeeSchedule, fee_kzt
from services.network.network import BANK, FEE_INCOME, Network, WindowSummary, position_account
from services.network.presentment import Presentment, PresentmentKind

__all__ = [
    "BANK",
    "BPS",
    "FEE_INCOME",
    "FeeSchedule",
    "Network",
    "Presentment",
    "PresentmentKind",
    "WindowSummary",
    "fee_kzt",
    "position_account",
]
