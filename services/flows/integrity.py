"""The system's invariants beyond each party's ledger (design.md §2): with nothing in flight, the
banks' reserves add up to the tenge that entered the modelled system from outside; on the direct
rail, each zone merchant's wallet in its own books equals its wallet at the exchange (the two halves
of every on-exchange transfer, summed). Crypto conservation within the exchange (custody = every
wallet, the merchants' included, + market makers + the direct rail's fees and PIT in crypto) is the
exchange's own invariant (``Exchange.check_invariants``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.ledger import Violation

__all__ = ["merchant_wallets_agree", "tenge_conserved"]


def merchant_wallets_agree(booked: Iterable[tuple[str, str, int]],
                           held_at_exchange: Callable[[str, str], int]) -> list[Violation]:
    """A violation for each (merchant, asset, balance) of the merchants' books that differs from
    the merchant's wallet at the exchange."""
    out = []
    for merchant_id, asset, balance in booked:
        held = held_at_exchange(merchant_id, asset)
        if held != balance:
            out.append(Violation("merchant_wallet_matches_exchange", f"{merchant_id}:{asset}",
                                 f"merchant's books {balance} != exchange's wallet {held}"))
    return out


def tenge_conserved(reserves_kzt: int, deposited_kzt: int) -> list[Violation]:
    """A violation when the banks' reserves differ from the tenge deposited from outside."""
    if reserves_kzt == deposited_kzt:
        return []
    return [Violation("tenge_conserved", "banks", f"reserves {reserves_kzt} != deposits from outside {deposited_kzt}")]
