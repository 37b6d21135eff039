"""A CryptoCity zone merchant's own books on the direct rail (crypto received, fees, refunds,
conversions and the tenge they bring to its bank account)."""

from __future__ import annotations

from services.merchant.books import MerchantBooks, wallet_account_id

__all__ = ["MerchantBooks", "wallet_account_id"]
