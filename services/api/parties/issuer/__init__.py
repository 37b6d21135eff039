"""The card issuer as a live service: cards, authorizations, clearing, advices, settlement payments.

Endpoints (``Idempotency-Key`` on the POSTs that move money)::

    POST /v1/cards                                  open a card (no balance: money comes by message)
    GET  /v1/cards/{card_id}                        POST /v1/cards/{card_id}/status
    POST /v1/authorizations                         run the authorization pipeline            (key)
    GET  /v1/authorizations/{auth_id}
    POST /v1/authorizations/{auth_id}/capture       post the holds, all, part or over-capture (key)
    POST /v1/authorizations/{auth_id}/reverse       release the holds                         (key)
    POST /v1/authorizations/{auth_id}/refund        a refund or chargeback of a capture       (key)
    POST /v1/advices                                the network's stand-in decision, once     (key)
    POST /v1/interchange                            interchange earned in a settlement window (key)
    POST /v1/outgoing-payments                      book the issuer's half of a payment it makes and
                                                    send it to its bank (settlement)          (key)
    POST /v1/holds/expire                           POST /v1/outbox/retry
    POST /v1/inbox/issuer                           money arriving: proceeds, card loads, settlement
    GET  /v1/ledger/invariants                      GET /v1/ledger/halves

The pipeline is the domain's (:class:`services.issuer.Issuer`), with the exchange over HTTP:
screen → (sell at the exchange, whose proceeds arrive at ``/v1/inbox/issuer`` through the banks
before the sale's answer comes back) → finalize. One card's authorizations are decided one at a
time (an ``asyncio.Lock`` per card, held across the exchange call), so two payments never spend
the same tenge; the domain lock is held only around each domain call, never while waiting.

Payments the issuer books (a re-buy of an orphaned sale, a settlement payment) are written to the
durable outbox in the same transaction as their booking and delivered by the relay
(:mod:`services.api.outbox`). Calls to the exchange pass a circuit breaker
(:mod:`services.api.parties.breaker`): while it is open, an authorization that needs a sale
declines at once with 91 instead of waiting on a dead exchange.

Cards and their status, authorizations, spend trackers (limits, AML), sale → card routing and
applied advices live in memory; every change to them is a logged command committed with its
bookings, so a restarted issuer (``resume``) rebuilds them by replaying its command log and
checking the result against its books (:mod:`services.api.parties.durable`).

The package: ``schemas`` (bodies), ``service`` (:class:`IssuerService`), ``routes`` and ``app`` (the
factory); ``ports`` are its ports for :mod:`services.flows`.
"""

from __future__ import annotations

from services.api.parties.issuer.app import create_issuer_app, create_issuer_app_from_env
from services.api.parties.issuer.service import IssuerService

__all__ = ["IssuerService", "create_issuer_app", "create_issuer_app_from_env"]
