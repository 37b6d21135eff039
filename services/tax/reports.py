"""What the tax book reports: one realization, a holder's annual statement, the authority's view."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts import Residency
from services.frozen import quick_init

__all__ = ["AuthoritySummary", "HolderStatement", "Realization", "SaleRecord"]


@quick_init
@dataclass(frozen=True, slots=True)
class Realization:
    """The tax outcome of one sale leg.

    Seed §2.2: the gain is personal income; the sale itself is VAT-exempt.

    ``gain_kzt`` may be negative (a loss); ``pit_kzt`` is then 0. Amounts are tiyn.
    """

    gain_kzt: int
    pit_kzt: int
    basis_kzt: int
    vat_exempt: bool = True
    proceeds_kzt: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class SaleRecord:
    """One realized sale leg as the holder's statement lists it."""

    sale_id: str
    asset: str
    quantity_minor: int
    proceeds_kzt: int
    basis_kzt: int
    gain_kzt: int
    pit_kzt: int
    withheld: bool
    at_s: float
    year: int
    vat_exempt: bool = True


@dataclass(frozen=True, slots=True)
class HolderStatement:
    """A cardholder's statement for a year (or for all years when ``year`` is None)."""

    holder_id: str
    residency: Residency
    year: int | None
    sales: tuple[SaleRecord, ...]
    proceeds_kzt: int
    basis_kzt: int
    gains_kzt: int  # sum of the positive gains
    losses_kzt: int  # sum of the losses, as a positive number
    pit_due_kzt: int  # sum of the per-sale PIT (a loss does not offset a gain; see the docs)
    pit_withheld_kzt: int  # already withheld at source by the exchange
    pit_to_declare_kzt: int  # what the holder still has to declare and pay

    @property
    def net_gain_kzt(self) -> int:
        return self.gains_kzt - self.losses_kzt


@dataclass(frozen=True, slots=True)
class AuthoritySummary:
    """The tax authority's aggregate: what is due, what was withheld, and the gap.

    The gap is the PIT that holders should self-declare but, at ``compliance_rate``, do not.
    """

    year: int | None
    sales: int
    proceeds_kzt: int
    realized_gain_kzt: int  # net of losses
    gains_kzt: int = 0  # sum of the sales that realized a gain: the base PIT is charged on
    losses_kzt: int = 0  # sum of the losses, as a positive number (they do not offset gains)
    pit_due_by_residency_kzt: dict[Residency, int] = field(default_factory=dict)
    pit_withheld_kzt: int = 0
    pit_to_self_declare_kzt: int = 0
    pit_expected_declared_kzt: int = 0
    tax_gap_kzt: int = 0

    @property
    def pit_due_kzt(self) -> int:
        return sum(self.pit_due_by_residency_kzt.values())

    @property
    def pit_collected_kzt(self) -> int:
        return self.pit_withheld_kzt + self.pit_expected_declared_kzt
