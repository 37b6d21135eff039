"""The exchange service's app factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.api.common import on_shutdown
from services.api.parties.base import (
    create_party_base,
    inbox_routes,
    integrity_routes,
    open_outbox,
    outbox_routes,
    recovery_routes,
)
from services.api.parties.exchange.direct_routes import direct_routes
from services.api.parties.exchange.direct_service import DirectExchangeService
from services.api.parties.exchange.routes import exchange_routes
from services.api.parties.settings import PartySettings
from services.clock import Clock
from services.reconciliation import exchange_halves


def create_exchange_app(settings: PartySettings, *, clock: Clock | None = None,
                        http_client: Any | None = None) -> FastAPI:
    """The exchange service over its own database (``settings.database_url``)."""
    app, ctx = create_party_base(settings, title="ccsim exchange", clock=clock, http_client=http_client)
    outbox, relay, report = open_outbox(app, ctx)
    svc = DirectExchangeService(ctx, outbox, relay)  # with CryptoCity's direct rail and the zone merchants' books
    on_shutdown(app, svc.sql_ledger.close)
    on_shutdown(app, svc.merchants_sql.close)
    app.state.exchange_service = svc
    cfg = ctx.seed.config
    exchange_routes(app, svc)
    direct_routes(app, svc)
    inbox_routes(app, ctx, {cfg.exchange_id: svc.receive, **svc.merchant_receivers()})
    integrity_routes(app,  # the running totals are copied at the snapshot's instant
        ctx, lambda exchange: {cfg.exchange_id: exchange.check_invariants(),
                               svc.books.name: svc.merchants_invariants(exchange)},
        lambda: [*exchange_halves(cfg.exchange_id, svc.ledger.journal()), *svc.merchants_halves()],
        state=lambda: svc.exchange)
    outbox_routes(app, svc.relay)
    recovery_routes(app, ctx, lambda: report.as_dict(outbox))
    return app


def create_exchange_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_exchange_app(PartySettings(party="exchange"))
