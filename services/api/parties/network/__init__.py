"""The card network and its acquirers as one live service: payments from POS terminals, presentments,
settlement windows.

Endpoints (``Idempotency-Key`` on the POSTs that move money)::

    POST /v1/payments                    a POS payment: acquirer → network → issuer, with a deadline (key)
    POST /v1/payments/{auth_id}/reverse  the POS cancels an approved payment                      (key)
    GET  /v1/advices/pending             POST /v1/advices/retry
    POST /v1/presentments                a capture, refund or chargeback: the issuer resolves it,
                                         the acquirer books it into its open batch                (key)
    POST /v1/settlements                 close a settlement window and move the money             (key)
    GET  /v1/settlements/{window_id}
    POST /v1/outbox/retry
    POST /v1/inbox/{network|acquirer}    settlement money arriving
    GET  /v1/ledger/invariants           GET /v1/ledger/halves

**Deadline and stand-in.** The network waits ``deadline`` for the issuer (retrying a lost
connection within it, with the same idempotency key). Past it the network stands in — approves up
to the stand-in limit, or declines 91 — answers the POS, and sends the issuer an *advice* with its
decision, retried in the background until the issuer has applied it (exactly once: the issuer
keys it by the authorization id).

**Durable outbox.** Settlement payments the network or an acquirer books are written to the
outbox in the same transaction as the booking; a settlement payment the issuer must book, and
every stand-in advice, is written there before the call (its own transaction). The relay
(:mod:`services.api.outbox`) delivers each with its own id until acknowledged.

In memory: the acquirers' open batches and which merchants they owe, the open settlement window's
running net positions, closed windows and their reports, stand-in decisions. Every change to them
is a logged command committed with its bookings, so a restarted network (``resume``) rebuilds them
by replaying its command log and checking the result against its books
(:mod:`services.api.parties.durable`). Stand-in advices not yet applied by the issuer are rows of
the durable outbox, which the relay delivers after a restart.

The package: ``schemas`` (bodies), ``service`` (:class:`NetworkService`), ``routes`` and ``app`` (the
factory); ``ports`` are its ports for :mod:`services.flows`.
"""

from __future__ import annotations

from services.api.parties.network.app import create_network_app, create_network_app_from_env
from services.api.parties.network.service import NetworkService

__all__ = ["NetworkService", "create_network_app", "create_network_app_from_env"]
