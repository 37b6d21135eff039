"""Authorization, as the issuer runs it: screen → (sell, proceeds) → finalize → auto top-up.

The issuer screens the request (a decline now, approval from the card's tenge, or a sale to run
first); for the shortfall it asks the exchange to sell the holder's crypto; the proceeds reach the
card through the banks; then it finalizes (re-checks, holds, answers). An approval on a pre-funded
card below its threshold sells crypto to top it up. A sale that fails is a result, not an error:
the issuer forgets its pending top-up and finalize declines with the sale's reason.
"""

from __future__ import annotations

from typing import Protocol

from services.contracts import AuthorizationRequest, AuthorizationResponse, SaleResult, Screening, SellOrder

__all__ = ["AuthorizationPorts", "SalePorts", "authorize", "finalize", "sell", "sell_and_pay"]


class SalePorts(Protocol):
    """A sale at the exchange and its tenge to the card."""

    async def sell(self, order: SellOrder) -> SaleResult:
        """The exchange sells (or redeems the stablecoin) for the order; a refusal is ``ok=False``."""
        ...

    async def pay_proceeds(self, sale: SaleResult) -> bool:
        """Move the sale's tenge exchange → banks → issuer → card; ``True`` once every hop booked it."""
        ...

    async def sale_failed(self, sale_id: str) -> None:
        """The issuer learns that its order did not fill (a pending top-up may be tried again)."""
        ...


class AuthorizationPorts(SalePorts, Protocol):
    """The issuer's own steps, around the sale."""

    async def screen(self, req: AuthorizationRequest) -> Screening: ...

    async def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse: ...

    async def top_up_order(self, card_id: str) -> SellOrder | None:
        """An order that tops a pre-funded card back up, or ``None`` (no rule, above it, one in flight)."""
        ...


async def sell(order: SellOrder, ports: SalePorts) -> SaleResult:
    """Ask the exchange to sell; a failed sale is reported to the issuer."""
    sale = await ports.sell(order)
    if not sale.ok:
        await ports.sale_failed(order.id)
    return sale


async def sell_and_pay(order: SellOrder, ports: SalePorts) -> SaleResult:
    """Sell, then move the proceeds to the card."""
    sale = await sell(order, ports)
    if sale.ok:
        await ports.pay_proceeds(sale)
    return sale


async def finalize(req: AuthorizationRequest, sale: SaleResult | None,
                   ports: AuthorizationPorts) -> AuthorizationResponse:
    """Finalize, then top up a pre-funded card that the approval took below its threshold."""
    response = await ports.finalize(req, sale)
    if response.approved:
        order = await ports.top_up_order(req.card_id)
        if order is not None:
            await sell_and_pay(order, ports)
    return response


async def authorize(req: AuthorizationRequest, ports: AuthorizationPorts) -> AuthorizationResponse:
    """The whole pipeline back to back (the simulation runs the same steps leg by leg)."""
    screening = await ports.screen(req)
    sale = None
    if screening.decline is None and screening.sell is not None:
        sale = await sell_and_pay(screening.sell, ports)
    return await finalize(req, sale, ports)
