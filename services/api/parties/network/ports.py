"""The live network's settlement ports: :func:`services.flows.settle_window` over this service's
books (each change a logged command), with the issuer over HTTP and the durable outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.api.transport_http import idempotency_key
from services.messaging import PaymentMessage
from services.network import WindowSummary

if TYPE_CHECKING:
    from services.api.parties.network.service import NetworkService

__all__ = ["SettlementPortsHttp"]


class SettlementPortsHttp:
    """Settlement in a worker thread: every port answers before it returns (blocking HTTP), so the
    flow runs to its end at once (:func:`services.flows.run_now`)."""

    def __init__(self, svc: NetworkService) -> None:
        self.svc = svc

    async def close_window(self, window_id: str) -> WindowSummary:
        svc = self.svc
        return svc.ctx.command(svc._close, window_id)

    async def book_interchange(self, window_id: str, amount_kzt: int) -> bool:
        svc = self.svc
        body = {"window_id": window_id, "amount": svc.ctx.assets.format(amount_kzt, "KZT")}
        return svc._issuer_post("/v1/interchange", body, idempotency_key("interchange", window_id))

    async def pay(self, payer: str, msg: PaymentMessage) -> bool:
        return self.svc._pay(payer, msg)

    async def merchants_owed(self, acquirer_id: str) -> list[tuple[str, int]]:
        svc = self.svc
        # looked up under the lock: a rebuild after a database failure replaces the acquirers
        return svc.ctx.locked(lambda: svc.acquirers[acquirer_id].merchants_owed())  # noqa: PLW0108
