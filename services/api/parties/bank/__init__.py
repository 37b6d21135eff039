"""The banks as one live service: every bank's books, and the interbank payment messages.

Endpoints::

    POST /v1/inbox/{bank_id}                                  a payment message for this bank   (key)
    GET  /v1/banks/{bank_id}/customers/{party}                a customer's deposit balance
    GET  /v1/banks/{bank_id}/customers/{party}/statement      its journal lines, a page at a time
    GET  /v1/ledger/invariants                                every bank's ledger, plus: the reserves
                                                              add up to the tenge deposited from outside
    GET  /v1/ledger/halves

A message for the payer's bank is booked there (``{id}:out``, or ``{id}:int`` when both customers
bank here), passed to the payee's bank (``{id}:in``, in this process), then to the payee's service
over HTTP; merchants and cardholders keep no books, so a bank's credit ends their chain. The
``Bank`` domain keeps no state besides its ledger, so messages are handled concurrently; the
ledger serialises what must be.

Each bank has its own ledger: its own tables in the bank service's database
(``<prefix>bank_1_accounts``…). The service keeps nothing else (the reserves' expected total is
the seed's), so it may restart on its own books (``resume``): seeding again books nothing new
(every opening id exists). It owns no outbox: a message it cannot pass on is answered 502 and
stays in the *sender's* outbox. ``GET /v1/recovery`` says what the start found.

The package: ``schemas`` (bodies), ``service`` (:class:`BankService`), ``routes`` and ``app`` (the factory).
"""

from __future__ import annotations

from services.api.parties.bank.app import create_bank_app, create_bank_app_from_env
from services.api.parties.bank.service import BankService

__all__ = ["BankService", "create_bank_app", "create_bank_app_from_env"]
