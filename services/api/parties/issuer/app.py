"""The issuer service's app factory."""

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
from services.api.parties.issuer.routes import issuer_routes
from services.api.parties.issuer.service import IssuerService
from services.api.parties.settings import PartySettings
from services.clock import Clock
from services.reconciliation import party_halves


def create_issuer_app(settings: PartySettings, *, clock: Clock | None = None,
                      http_client: Any | None = None) -> FastAPI:
    """The issuer service over its own database (``settings.database_url``)."""
    app, ctx = create_party_base(settings, title="ccsim issuer", clock=clock, http_client=http_client)
    outbox, relay, report = open_outbox(app, ctx)
    svc = IssuerService(ctx, outbox, relay)
    on_shutdown(app, svc.sql_ledger.close)
    app.state.issuer_service = svc
    issuer_id = ctx.seed.config.issuer_id
    issuer_routes(app, svc)
    inbox_routes(app, ctx, {issuer_id: svc.receive})
    integrity_routes(app,
        ctx, lambda: {issuer_id: svc.ledger.check_invariants()},
        lambda: party_halves(issuer_id, "issuer", svc.ledger.journal()))
    outbox_routes(app, svc.relay)
    recovery_routes(app, ctx, lambda: {**report.as_dict(outbox), "breakers": {
        "exchange": {"state": svc.exchange_breaker.state.name.lower(), "opened": svc.exchange_breaker.opened,
                     "rejected": svc.exchange_breaker.rejected}}})
    return app


def create_issuer_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_issuer_app(PartySettings(party="issuer"))
