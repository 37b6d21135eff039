"""Clearing: a capture (all, part, or over-capture within the padding), a refund or a chargeback.

The issuer resolves first — it posts the hold, or books the return against the capture — and may
refuse (beyond the padding, more than captured, an expired hold…: a :class:`ClearingCode`, nothing
booked anywhere). Then the merchant's acquirer books the presentment into its open batch, which
the network clears at the next settlement window. A reversal and hold expiry touch the issuer
only and need no flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.issuer import ClearingCode
from services.network import Presentment, PresentmentKind

__all__ = ["ClearingPorts", "Resolution", "present"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """The issuer's answer to a clearing request, and where the presentment goes."""

    code: ClearingCode
    presentment_id: str = ""
    acquirer_id: str = ""
    merchant_id: str = ""
    released_kzt: int = 0  # a capture's hold left over, released

    @property
    def ok(self) -> bool:
        return self.code is ClearingCode.OK


class ClearingPorts(Protocol):
    async def resolve(self, kind: PresentmentKind, auth_id: str, amount_kzt: int) -> Resolution:
        """The issuer captures, or books a refund or chargeback; a refusal is its code."""
        ...

    async def present(self, presentment: Presentment) -> bool:
        """The acquirer books the presentment into its open batch; ``False``: it does not serve
        the merchant."""
        ...


async def present(kind: PresentmentKind, auth_id: str, amount_kzt: int, issuer_id: str,
                  ports: ClearingPorts) -> tuple[Resolution, Presentment | None]:
    """Resolve at the issuer, then present at the acquirer; the presentment is ``None`` when the
    issuer refused."""
    resolution = await ports.resolve(kind, auth_id, amount_kzt)
    if not resolution.ok:
        return resolution, None
    presentment = Presentment(resolution.presentment_id, kind, auth_id, issuer_id, resolution.acquirer_id,
                              resolution.merchant_id, amount_kzt)
    if not await ports.present(presentment):
        return resolution, None
    return resolution, presentment
