"""After the deadline: the network's stand-in advice, and the orphaned sale.

When the issuer does not answer in time the network stands in and later advises the issuer of its
decision, which the issuer applies exactly once: for an approval it first sells a JIT card's
shortfall, and what the card still cannot cover is its stand-in exposure. A sale the issuer
completed for a payment whose answer it did not give is an **orphaned sale**. Its tenge reaches
the card either way; then:

- the payment was approved after all (a stand-in approval): the tenge pays for it;
- otherwise the orphan policy decides: ``keep_tenge`` leaves it on the card; ``rebuy`` sends it
  back to the exchange to buy the crypto back — only when the proceeds are on the card, the card
  still has them available, and none of the sold assets is halted (the exchange could not buy it
  back); else the tenge stays.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from services import ids
from services.contracts import AuthorizationRequest, AuthorizationResponse, OrphanPolicy, SellOrder
from services.flows.authorization import SalePorts, sell_and_pay
from services.messaging import PaymentMessage

__all__ = ["AdvicePorts", "OrphanOutcome", "OrphanPorts", "apply_advice", "orphaned_sale"]


class OrphanOutcome(StrEnum):
    """What became of an orphaned sale's tenge."""

    FUNDED_APPROVAL = "funded_approval"  # the payment was approved (stand-in): the tenge pays for it
    KEPT = "kept"  # stays on the card (policy, or a re-buy that could not be made)
    REBOUGHT = "rebought"  # sent back to the exchange, which buys the crypto back
    SEEN = "seen"  # handled before: nothing more happens


class AdvicePorts(SalePorts, Protocol):
    async def advice_seen(self, auth_id: str) -> bool: ...

    async def advice_shortfall(self, req: AuthorizationRequest) -> int:
        """Tenge a JIT or stablecoin card lacks to cover a stand-in approval not yet held."""
        ...

    async def sell_order(self, card_id: str, sale_id: str, net_kzt: int, auth_id: str) -> SellOrder: ...

    async def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool: ...


class OrphanPorts(Protocol):
    async def claim_orphan(self, sale_id: str) -> bool:
        """``True`` the first time this sale is handled as an orphan; ``False`` after."""
        ...

    async def proceeds_on_card(self, sale_id: str) -> int:
        """Make sure the sale's tenge reaches the card; the tiyn credited, 0 if it has not (yet)."""
        ...

    async def approved(self, auth_id: str) -> bool:
        """The payment stands approved (the issuer's own approval or a stand-in it applied)."""
        ...

    async def card_available(self, sale_id: str) -> int | None:
        """Tenge available on the card the sale was for; ``None`` if the issuer knows no such card."""
        ...

    async def halted(self, sale_id: str) -> bool:
        """Any asset the sale sold is halted at the exchange (no buying back)."""
        ...

    async def rebuy_message(self, sale_id: str, net_kzt: int) -> PaymentMessage: ...

    async def book_rebuy(self, msg: PaymentMessage) -> bool:
        """The issuer books its half of the re-buy (and stages it for delivery); ``False``: refused."""
        ...

    async def send(self, msg: PaymentMessage) -> None:
        """Hand a booked message to the payer's bank (a failure is retried by the sender)."""
        ...

    async def record(self, sale_id: str, outcome: OrphanOutcome) -> None:
        """Count the outcome."""
        ...


async def apply_advice(req: AuthorizationRequest, response: AuthorizationResponse, ports: AdvicePorts) -> bool:
    """Apply the network's decision once; ``False`` for an advice applied before."""
    if await ports.advice_seen(req.auth_id):
        return False
    if response.approved:
        shortfall = await ports.advice_shortfall(req)
        if shortfall:
            order = await ports.sell_order(req.card_id, ids.advice_sale_id(req.auth_id), shortfall, req.auth_id)
            await sell_and_pay(order, ports)
    return await ports.apply_advice(req, response)


async def orphaned_sale(auth_id: str, sale_id: str, policy: OrphanPolicy, ports: OrphanPorts) -> OrphanOutcome:
    """Handle a completed sale whose answer the issuer did not give (see the module docstring)."""
    if not await ports.claim_orphan(sale_id):
        return OrphanOutcome.SEEN
    outcome = await _orphan(auth_id, sale_id, policy, ports)
    await ports.record(sale_id, outcome)
    return outcome


async def _orphan(auth_id: str, sale_id: str, policy: OrphanPolicy, ports: OrphanPorts) -> OrphanOutcome:
    net_kzt = await ports.proceeds_on_card(sale_id)
    if await ports.approved(auth_id):
        return OrphanOutcome.FUNDED_APPROVAL
    if policy is OrphanPolicy.KEEP_TENGE or net_kzt <= 0:
        return OrphanOutcome.KEPT
    available = await ports.card_available(sale_id)
    if available is None or available < net_kzt or await ports.halted(sale_id):
        return OrphanOutcome.KEPT
    msg = await ports.rebuy_message(sale_id, net_kzt)
    if not await ports.book_rebuy(msg):
        return OrphanOutcome.KEPT
    await ports.send(msg)
    return OrphanOutcome.REBOUGHT
