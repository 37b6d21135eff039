"""Presentments: the clearing records that move through acquirer → network → issuer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.frozen import quick_init
from services.ledger import Transfer, TransferFlags

__all__ = ["Leg", "Presentment", "PresentmentKind", "linked_legs"]

# (transfer id, debit account, credit account, amount, code) of one booking of a presentment
Leg = tuple[str, str, str, int, str]


def linked_legs(legs: list[Leg], user_data: str) -> list[Transfer]:
    """KZT transfers that commit together, built with their flags (cheaper than ``linked()``,
    which copies each transfer; this runs for every cleared payment)."""
    last = len(legs) - 1
    return [
        Transfer(
            tid,
            debit,
            credit,
            amount,
            "KZT",
            code=code,
            user_data=user_data,
            flags=TransferFlags.LINKED if i < last else TransferFlags.NONE,
        )
        for i, (tid, debit, credit, amount, code) in enumerate(legs)
    ]


class PresentmentKind(StrEnum):
    CAPTURE = "capture"  # the merchant is paid, the cardholder charged
    REFUND = "refund"  # the merchant gives money back (merchant-initiated)
    CHARGEBACK = "chargeback"  # the issuer takes money back from the merchant (a dispute)


@quick_init
@dataclass(frozen=True, slots=True)
class Presentment:
    """One cleared payment or return. ``id`` is ``auth_id`` for a capture and
    ``{auth_id}:{kind}:{n}`` for a return; it is the idempotency key at every party."""

    id: str
    kind: PresentmentKind
    auth_id: str
    issuer_id: str
    acquirer_id: str
    merchant_id: str
    amount_kzt: int

    @property
    def is_capture(self) -> bool:
        return self.kind is PresentmentKind.CAPTURE
