"""The direct rail's routes at the exchange: parse, call the service, answer.

Endpoints (``Idempotency-Key`` on every POST; who may call each: ``services.api.auth_routes``)::

    POST /v1/direct/quotes                 price a zone merchant's invoice in the holder's asset (TTL)
    POST /v1/direct/payments               the holder accepts the open quote: the on-exchange transfer
    GET  /v1/direct/payments/{invoice_id}  a direct payment made
    POST /v1/direct/refunds                crypto back at the original quantity, out of the merchant's wallet
    POST /v1/direct/conversions            a zone merchant sells (or redeems) crypto for tenge
    GET  /v1/direct/merchants/{merchant_id}  its wallets here, the same in its own books, its bank tenge
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from services.api.idempotency import IdempotencyKey, run_idempotent
from services.api.parties.base import json_response, replayed
from services.api.parties.exchange.direct_schemas import (
    ConversionIn,
    ConversionOut,
    DirectPaymentOut,
    InvoiceIn,
    InvoiceRef,
    MerchantOut,
    PaymentIn,
    QuoteOut,
    RefundIn,
)
from services.api.parties.exchange.direct_service import DirectExchangeService
from services.api.problems import problem_responses
from services.api.routing import Routes

__all__ = ["direct_routes"]


def direct_routes(app: FastAPI, svc: DirectExchangeService) -> None:
    routes = Routes(app, "direct rail")
    keys = svc.ctx.keys

    @routes.post("/v1/direct/quotes", status_code=201, response_model=QuoteOut,
                 responses=problem_responses(404, 409, 503))
    def quote(body: InvoiceIn, key: IdempotencyKey, request: Request) -> Response:
        """Screen the holder (the card's KYC-tier and AML rules) and quote the invoice in the first
        asset of its priority that covers it, firm until ``expires_at_s``; a decline is a 422 whose
        reason is the decline."""
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.direct_quote(body)))

    @routes.post("/v1/direct/payments", status_code=201, response_model=DirectPaymentOut,
                 responses={**replayed(DirectPaymentOut), **problem_responses(404, 503)})
    def pay(body: PaymentIn, key: IdempotencyKey, request: Request) -> Response:
        """Accept the open quote: the crypto moves from the holder's wallet to the merchant's, the
        merchant books its half and the amount counts toward the holder's limits, in one transaction."""
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.direct_accept(body)))

    @routes.get("/v1/direct/payments/{invoice_id}", responses=problem_responses(404))
    def get_payment(invoice_id: InvoiceRef) -> DirectPaymentOut:
        return svc.direct_payment(invoice_id)

    @routes.post("/v1/direct/refunds", status_code=201, response_model=DirectPaymentOut,
                 responses={**replayed(DirectPaymentOut), **problem_responses(404, 409)})
    def refund(body: RefundIn, key: IdempotencyKey, request: Request) -> Response:
        """Refund (part of) a direct payment in crypto at the original quantity, pro rata."""
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.direct_refund(body)))

    @routes.post("/v1/direct/conversions", status_code=201, response_model=ConversionOut,
                 responses=problem_responses(404))
    def conversion(body: ConversionIn, key: IdempotencyKey, request: Request) -> Response:
        """Sell (or redeem) a zone merchant's crypto through the order book; the tenge goes to its
        bank account as a ``conversion`` message (the outbox delivers it if a hop is down)."""
        return run_idempotent(keys, key, request, body.model_dump(mode="json"),
                              lambda: json_response(*svc.direct_convert(body)))

    @routes.get("/v1/direct/merchants/{merchant_id}", responses=problem_responses(404))
    def get_merchant(merchant_id: InvoiceRef) -> MerchantOut:
        return svc.merchant(merchant_id)

