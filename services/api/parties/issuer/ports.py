"""The live issuer's ports: the flows of :mod:`services.flows` over this service's books (each
change a logged command), the exchange over HTTP and the durable outbox.

The exchange pays a sale's proceeds itself, before it answers the sale (the message is in its
outbox in the sale's own transaction), so :meth:`IssuerPorts.pay_proceeds` has nothing left to do;
an orphaned sale's tenge is on the card when its ``<sale>:recv`` half is in the issuer's books.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.api.parties.schemas import PricesOut, SaleOut
from services.contracts import AuthorizationRequest, AuthorizationResponse, SaleResult, Screening, SellOrder
from services.flows import OrphanOutcome
from services.issuer import AuthState
from services.messaging import PaymentMessage, Purpose

if TYPE_CHECKING:
    from services.api.parties.issuer.service import IssuerService

from services import ids
from services.ids import Step, transfer_id

__all__ = ["IssuerPorts"]

_STANDING = (AuthState.HELD, AuthState.CAPTURED)


def _no_sale(screening: Screening) -> bool:
    return screening.sell is None


def _no_order(order: SellOrder | None) -> bool:
    return order is None


class IssuerPorts:
    """Authorization, advice and orphaned-sale ports of :class:`~services.api.parties.issuer.IssuerService`.

    Messages a flow sends are staged in the outbox with their booking; they leave when the caller
    runs :meth:`flush` (outside the card's lock)."""

    def __init__(self, svc: IssuerService) -> None:
        self.svc = svc
        self.staged: list[PaymentMessage] = []

    # -- the sale ------------------------------------------------------------------------------
    async def sell(self, order: SellOrder) -> SaleResult:
        return await self.svc.exchange_sell(order)

    async def pay_proceeds(self, sale: SaleResult) -> bool:
        return True  # the exchange delivered (or its relay delivers) them before it answered

    async def sale_failed(self, sale_id: str) -> None:
        svc = self.svc
        await svc.ctx.run_command(svc._sale_failed, sale_id)

    # -- the issuer's steps --------------------------------------------------------------------
    async def screen(self, req: AuthorizationRequest) -> Screening:
        svc = self.svc
        # A screening that orders no sale changed nothing (a decline now, or the card's tenge
        # suffices): not a command for the log, and no write transaction.
        return await svc.ctx.run_command(svc._screen, req, refused=_no_sale)

    async def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse:
        svc = self.svc
        return await svc.ctx.run_command(svc._finalize, req, sale, answers=True)  # the request's answer with it

    async def top_up_order(self, card_id: str) -> SellOrder | None:
        svc = self.svc
        card = svc.issuer.cards.get(card_id)  # a card's rule is set when it opens and never changes
        if card is not None and card.top_up is None:  # no rule (a JIT card): nothing to order, nothing to log
            return None
        return await svc.ctx.run_command(svc._top_up_order, card_id, refused=_no_order)

    # -- the advice ----------------------------------------------------------------------------
    async def advice_seen(self, auth_id: str) -> bool:
        issuer = self.svc.issuer
        return await self.svc.ctx.run(issuer.advice_seen, auth_id)

    async def advice_shortfall(self, req: AuthorizationRequest) -> int:
        svc = self.svc
        return await svc.ctx.run(lambda: svc.issuer.advice_shortfall(req))

    async def sell_order(self, card_id: str, sale_id: str, net_kzt: int, auth_id: str) -> SellOrder:
        svc = self.svc
        return await svc.ctx.run_command(svc._sell_order, card_id, sale_id, net_kzt, auth_id)

    async def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool:
        svc = self.svc
        return await svc.ctx.run_command(svc._apply_advice, req, response)

    # -- the orphaned sale ---------------------------------------------------------------------
    async def claim_orphan(self, sale_id: str) -> bool:
        svc = self.svc
        return await svc.ctx.run_command(svc._claim_orphan, sale_id, refused=lambda claimed: not claimed)

    async def proceeds_on_card(self, sale_id: str) -> int:
        svc = self.svc
        credited = await svc.ctx.run(svc.ledger.transfer, transfer_id(sale_id, Step.RECV))
        return 0 if credited is None else credited.amount

    async def approved(self, auth_id: str) -> bool:
        svc = self.svc

        def standing() -> bool:
            auth = svc.issuer.auths.get(auth_id)
            return auth is not None and auth.state in _STANDING

        return await svc.ctx.run(standing)

    async def card_available(self, sale_id: str) -> int | None:
        svc = self.svc

        def available() -> int | None:
            card = svc.issuer.card_of_sale(sale_id)
            return None if card is None else svc.issuer.available_kzt(card.card_id)

        return await svc.ctx.run(available)

    async def halted(self, sale_id: str) -> bool:
        """Ask the exchange which assets the sale sold and which are halted; an exchange that does
        not answer counts as halted (no re-buy is booked that it might refuse)."""
        ctx = self.svc.ctx
        sale = await ctx.transport.aget(ctx.url("exchange"), f"/v1/sells/{sale_id}")
        prices = await ctx.transport.aget(ctx.url("exchange"), "/v1/prices")
        if sale is None or prices is None or sale.status_code != 200 or prices.status_code != 200:
            return True
        halted = set(PricesOut.model_validate_json(prices.content).halted)
        return any(leg.asset in halted for leg in SaleOut.model_validate_json(sale.content).legs)

    async def rebuy_message(self, sale_id: str, net_kzt: int) -> PaymentMessage:
        ctx = self.svc.ctx
        cfg = ctx.seed.config
        return ctx.topology.message(ids.rebuy_id(sale_id), Purpose.REBUY, cfg.issuer_id, cfg.exchange_id, net_kzt,
                                    ref=sale_id)

    async def book_rebuy(self, msg: PaymentMessage) -> bool:
        svc = self.svc
        return await svc.ctx.run_command(svc._book_payment, msg, refused=lambda booked: not booked)

    async def send(self, msg: PaymentMessage) -> None:
        self.staged.append(msg)

    async def record(self, sale_id: str, outcome: OrphanOutcome) -> None:
        svc = self.svc
        await svc.ctx.run_command(svc._record_orphan, outcome)

    async def flush(self) -> None:
        """Deliver the messages the flow staged (the relay delivers the rows; it retries failures)."""
        if self.staged:
            self.staged.clear()
            await self.svc.relay.run_once(force=True)
