"""Banks: each keeps its own books (reserve, customer deposits) and books its half of payments."""

from __future__ import annotations

from services.bank.bank import RESERVE, Bank, BankResult, deposit_account

__all__ = ["RESERVE", "Bank", "BankResult", "deposit_account"]
