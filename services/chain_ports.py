"""The in-process chain's ports: the flows of :mod:`services.flows` over the party objects of one
process. Every port answers at once (no I/O), so :func:`services.flows.run_now` drives a flow to its
end in one step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    FundingMode,
    SaleResult,
    Screening,
    SellOrder,
)
from services.exchange import SaleQuote
from services.flows import OrphanOutcome
from services.flows.clearing import Resolution
from services.issuer import AuthState, ClearingCode
from services.messaging import PaymentMessage, Purpose
from services.network import Presentment, PresentmentKind, WindowSummary

if TYPE_CHECKING:
    from services.chain import InProcessChain

from services import ids

__all__ = ["LocalOrphanPorts", "LocalPorts"]

_STANDING = (AuthState.HELD, AuthState.CAPTURED)


class LocalPorts:
    """Issuer-side and settlement ports of :class:`~services.chain.InProcessChain`."""

    __slots__ = ("chain",)

    def __init__(self, chain: InProcessChain) -> None:
        self.chain = chain

    # -- the sale ------------------------------------------------------------------------------
    async def sell(self, order: SellOrder) -> SaleResult:
        chain = self.chain
        bounded = chain._bounded
        if bounded is not None:
            bounded.touch(order.auth_id)
            bounded.ordered(order.auth_id, order.id)
        card = chain.issuer.card_of_sale(order.id)
        if card is not None and card.funding_mode is FundingMode.STABLECOIN:
            return chain.exchange.redeem_stablecoin(order)
        quote = chain._quotes.pop(order.id, None)
        # A quote the exchange could not make (a refusal) leaves the sale priced at execution.
        return chain.exchange.sell(order, quote=quote if isinstance(quote, SaleQuote) else None)

    async def pay_proceeds(self, sale: SaleResult) -> bool:
        return self.chain.pay_proceeds(sale)

    async def sale_failed(self, sale_id: str) -> None:
        self.chain.issuer.sale_failed(sale_id)

    # -- the issuer's steps --------------------------------------------------------------------
    async def screen(self, req: AuthorizationRequest) -> Screening:
        return self.chain.screen(req)

    async def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse:
        chain = self.chain
        route = chain._route_error(req)
        if route is not None:
            known = chain.issuer.auths.get(req.auth_id)
            return chain.issuer.response(known) if known else chain.issuer.decline(req, route)
        return chain.issuer.finalize(req, sale)

    async def top_up_order(self, card_id: str) -> SellOrder | None:
        order = self.chain.issuer.top_up_order(card_id)
        if order is not None:
            self.chain._top_ups.append(order.id)
        return order

    # -- the advice ----------------------------------------------------------------------------
    async def advice_seen(self, auth_id: str) -> bool:
        return self.chain.issuer.advice_seen(auth_id)

    async def advice_shortfall(self, req: AuthorizationRequest) -> int:
        return self.chain.issuer.advice_shortfall(req)

    async def sell_order(self, card_id: str, sale_id: str, net_kzt: int, auth_id: str) -> SellOrder:
        return self.chain.issuer.sell_order(card_id, sale_id, net_kzt, auth_id)

    async def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool:
        return self.chain.issuer.apply_advice(req, response)

    # -- clearing ------------------------------------------------------------------------------
    async def resolve(self, kind: PresentmentKind, auth_id: str, amount_kzt: int) -> Resolution:
        issuer = self.chain.issuer
        if kind is PresentmentKind.CAPTURE:
            code, released = issuer.capture(auth_id, amount_kzt)
            presentment_id = auth_id
        else:
            code, presentment_id = issuer.give_back(auth_id, amount_kzt, kind.value)
            released = 0
        if code is not ClearingCode.OK:
            return Resolution(code)
        auth = issuer.auths[auth_id]
        return Resolution(code, presentment_id, auth.acquirer_id, auth.merchant_id, released)

    async def present(self, presentment: Presentment) -> bool:
        return self.chain.acquirers[presentment.acquirer_id].present(presentment)

    # -- settlement ----------------------------------------------------------------------------
    async def close_window(self, window_id: str) -> WindowSummary:
        return self.chain._close_window(window_id)

    async def book_interchange(self, window_id: str, amount_kzt: int) -> bool:
        return self.chain.issuer.book_interchange(window_id, amount_kzt)

    async def pay(self, payer: str, msg: PaymentMessage) -> bool:
        return self.chain._pay(payer, msg)

    async def merchants_owed(self, acquirer_id: str) -> list[tuple[str, int]]:
        return self.chain.acquirers[acquirer_id].merchants_owed()


class LocalOrphanPorts:
    """The orphaned-sale ports for one sale whose result the chain holds."""

    __slots__ = ("chain", "sale")

    def __init__(self, chain: InProcessChain, sale: SaleResult) -> None:
        self.chain = chain
        self.sale = sale

    async def claim_orphan(self, sale_id: str) -> bool:
        orphans = self.chain._orphans
        if not self.sale.ok or sale_id in orphans:
            return False
        orphans.add(sale_id)
        return True

    async def proceeds_on_card(self, sale_id: str) -> int:
        return self.sale.net_kzt if self.chain.pay_proceeds(self.sale) else 0

    async def approved(self, auth_id: str) -> bool:
        auth = self.chain.issuer.auths.get(auth_id)
        return auth is not None and auth.state in _STANDING

    async def card_available(self, sale_id: str) -> int | None:
        card = self.chain.issuer.card_of_sale(sale_id)
        return None if card is None else self.chain.issuer.available_kzt(card.card_id)

    async def halted(self, sale_id: str) -> bool:
        exchange = self.chain.exchange
        return any(exchange.is_halted(leg.asset) for leg in self.sale.legs)

    async def rebuy_message(self, sale_id: str, net_kzt: int) -> PaymentMessage:
        cfg = self.chain.config
        return self.chain.topology.message(ids.rebuy_id(sale_id), Purpose.REBUY, cfg.issuer_id, cfg.exchange_id,
                                           net_kzt, ref=sale_id)

    async def book_rebuy(self, msg: PaymentMessage) -> bool:
        self.chain._rebuy_sales[msg.id] = self.sale
        return self.chain.issuer.book_payment(msg)

    async def send(self, msg: PaymentMessage) -> None:
        self.chain._send(msg)

    async def record(self, sale_id: str, outcome: OrphanOutcome) -> None:
        self.chain.orphan_outcomes[outcome] += 1
