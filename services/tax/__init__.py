"""Tax on the sale of digital assets by cardholders (seed §2.1.2 and §2.2).

Cost-basis lots per holder and asset (FIFO or average cost), the realized gain of each sale leg,
PIT at 10 % for residents and 20 % for non-residents, the VAT exemption of the sale, withholding at
source as a policy option, a holder's annual statement and the tax authority's aggregate.
"""

from __future__ import annotations

from services.tax.book import CIT_RATE, CIT_RATES, PIT_RATES, TaxBook, round_half_up
from services.tax.cost_basis import AveragePool, CostMethod, FifoPool
from services.tax.reports import AuthoritySummary, HolderStatement, Realization, SaleRecord

__all__ = [
    "CIT_RATE",
    "CIT_RATES",
    "PIT_RATES",
    "AuthoritySummary",
    "AveragePool",
    "CostMethod",
    "FifoPool",
    "HolderStatement",
    "Realization",
    "SaleRecord",
    "TaxBook",
    "round_half_up",
]
