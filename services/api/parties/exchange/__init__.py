"""The exchange as a live service: wallets, deposits, prices, halts, quotes, sells and tax statements.

Endpoints (``Idempotency-Key`` on the POSTs that move money)::

    POST /v1/wallets                 open a holder's wallets with their opening holdings   (key)
    GET  /v1/wallets/{holder_id}     balances per asset
    POST /v1/deposits                crypto into a wallet, with its cost basis             (key)
    POST /v1/prices                  set an asset's mid price           GET /v1/prices
    POST /v1/halts                   halt or resume trading in an asset
    POST /v1/quotes                  price a sell order without executing it
    POST /v1/sells                   execute a SellOrder → SaleResult; pays the proceeds out (key)
    GET  /v1/sells/{sale_id}
    GET  /v1/tax/statements/{holder_id}
    POST /v1/outbox/retry            send again the proceeds messages not yet acknowledged
    POST /v1/inbox/exchange          money arriving (a re-buy of an orphaned sale)          (key)
    GET  /v1/ledger/invariants       GET /v1/ledger/halves

After a sale the exchange pays the net proceeds to the issuer: a ``proceeds`` message to its bank
(keyed by the sale id), which books its half and passes it on to the issuer's bank and the issuer.
The message is written to the durable outbox (:mod:`services.api.outbox`) in the same database
transaction as the sale's batch, so a sale is never committed without the proceeds it owes. The
sale's answer says whether every hop acknowledged it at once; if not, the relay delivers the row
with the same id until acknowledged (each hop books only what it lacks). ``GET /v1/recovery``.

In memory: the order books' depth and mid prices, the tax lots and realizations, the sales
already made (replays), halts, the house counters the invariants compare with the ledger. Every
change to them is a logged command committed with its bookings, so a restarted exchange
(``resume``) rebuilds them by replaying its command log and checking the result against its books
(:mod:`services.api.parties.durable`).

The package: ``schemas`` (bodies), ``service`` (:class:`ExchangeService`), ``routes`` and ``app`` (the factory).
"""

from __future__ import annotations

from services.api.parties.exchange.app import create_exchange_app, create_exchange_app_from_env
from services.api.parties.exchange.service import ExchangeService

__all__ = ["ExchangeService", "create_exchange_app", "create_exchange_app_from_env"]
