"""The acquirer: merchants, presentment batches, MDR, and paying merchants after settlement."""

from __future__ import annotations

from services.acquirer.acquirer import (
    BANK,
    MDR_INCOME,
    RECEIVABLE,
    Acquirer,
    merchant_party,
    payable_account,
)

__all__ = ["BANK", "MDR_INCOME", "RECEIVABLE", "Acquirer", "merchant_party", "payable_account"]
