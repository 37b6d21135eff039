"""The bank service's app factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.api.common import on_shutdown
from services.api.parties.bank.routes import bank_routes
from services.api.parties.bank.service import BankService
from services.api.parties.bank.zone import zone_merchant_receivers
from services.api.parties.base import (
    create_party_base,
    inbox_routes,
    integrity_routes,
    recovery_routes,
)
from services.api.parties.settings import PartySettings
from services.clock import Clock


def create_bank_app(settings: PartySettings, *, clock: Clock | None = None, http_client: Any | None = None) -> FastAPI:
    """The bank service: every bank of the seed, each with its own ledger tables."""
    app, ctx = create_party_base(settings, title="ccsim banks", clock=clock, http_client=http_client)
    svc = BankService(ctx)
    ctx.transport.local.update(zone_merchant_receivers(ctx))  # a conversion's tenge goes on to the exchange
    for bank_id, ledger in svc.ledgers.items():
        on_shutdown(app, ledger.close)
        on_shutdown(app, svc.readers[bank_id].close)
    app.state.bank_service = svc
    bank_routes(app, svc)
    inbox_routes(app, ctx, {b: svc.handler(bank) for b, bank in svc.banks.items()})
    integrity_routes(app, ctx, svc.invariants, svc.halves)
    resumed = svc.resumed_transfers
    recovery_routes(app, ctx, lambda: {
        "service": ctx.settings.party, "in_doubt_found": 0, "in_doubt_resolved": 0, "in_doubt_left": 0,
        "outbox_pending": 0, "outbox_delivered": 0, "found": [], "resolved": [],
        "notes": [f"started on {resumed} transfers an earlier run booked" if resumed else "started on empty books",
                  "no outbox: a message not passed on is answered 502 and stays in its sender's outbox"]})
    return app


def create_bank_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_bank_app(PartySettings(party="bank"))
