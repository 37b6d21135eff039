"""The system's invariants beyond each party's ledger (design.md §2): with nothing in flight, the
banks' reserves add up to the tenge that entered the modelled system from outside."""

from __future__ import annotations

from services.ledger import Violation

__all__ = ["tenge_conserved"]


def tenge_conserved(reserves_kzt: int, deposited_kzt: int) -> list[Violation]:
    """A violation when the banks' reserves differ from the tenge deposited from outside."""
    if reserves_kzt == deposited_kzt:
        return []
    return [Violation("tenge_conserved", "banks", f"reserves {reserves_kzt} != deposits from outside {deposited_kzt}")]
