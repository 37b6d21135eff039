"""The live network's settlement ports: :func:`services.flows.settle_window` over this service's
books (each change a logged command), with the issuer over HTTP and the durable outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.api.parties.schemas import clearing_or_problem
from services.api.problems import FieldError, ProblemError
from services.api.transport_http import idempotency_key
from services.flows.clearing import Resolution
from services.issuer import ClearingCode
from services.messaging import PaymentMessage
from services.network import Presentment, PresentmentKind, WindowSummary

if TYPE_CHECKING:
    from services.api.parties.network.service import NetworkService

__all__ = ["ClearingPortsHttp", "SettlementPortsHttp"]


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


class ClearingPortsHttp:
    """Clearing for one presentment request: the issuer resolves over HTTP (under the presenter's
    key); the acquirer books here. A refusal of the issuer's passes on as its own problem."""

    def __init__(self, svc: NetworkService, key: str) -> None:
        self.svc = svc
        self.key = key

    async def resolve(self, kind: PresentmentKind, auth_id: str, amount_kzt: int) -> Resolution:
        svc = self.svc
        amount = svc.ctx.assets.format(amount_kzt, "KZT")
        if kind is PresentmentKind.CAPTURE:
            path, payload = f"/v1/authorizations/{auth_id}/capture", {"amount": amount}
        else:
            path, payload = f"/v1/authorizations/{auth_id}/refund", {"amount": amount, "kind": kind.value}
        await svc._advice_applied(auth_id)
        answer = await svc.ctx.transport.apost(svc.ctx.url("issuer"), path, payload,
                                               key=idempotency_key(kind.value, self.key))
        cleared = clearing_or_problem(answer)
        return Resolution(ClearingCode.OK, cleared.presentment_id, cleared.acquirer_id, cleared.merchant_id,
                          svc.ctx.assets.parse(cleared.released, "KZT"))

    async def present(self, presentment: Presentment) -> bool:
        svc = self.svc
        acquirer = svc.acquirers.get(presentment.acquirer_id)
        if acquirer is None:
            raise ProblemError(409, f"authorization {presentment.auth_id} belongs to an acquirer of another network",
                               [FieldError(field="auth_id",
                                           reason=f"acquirer {presentment.acquirer_id!r} unknown")])
        return await svc.ctx.run_command(svc._present, acquirer.id, presentment, refused=lambda ok: not ok)
