"""The network service's app factory."""

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
from services.api.parties.network.routes import network_routes
from services.api.parties.network.service import PRESENT_STEP, NetworkService
from services.api.parties.settings import PartySettings
from services.clock import Clock


def create_network_app(settings: PartySettings, *, clock: Clock | None = None,
                       http_client: Any | None = None) -> FastAPI:
    """The network + acquirers service over its own database (a table prefix per ledger)."""
    app, ctx = create_party_base(settings, title="ccsim network and acquirers", clock=clock, http_client=http_client)
    outbox, relay, report = open_outbox(app, ctx)
    svc = NetworkService(ctx, outbox, relay)
    relay.complete_locally(PRESENT_STEP, svc.complete_presentment)
    for ledger in svc.ledgers:
        on_shutdown(app, ledger.close)
    app.state.network_service = svc
    handlers = {svc.network.id: svc.receive_network}
    handlers.update({a: svc.receiver(a) for a in svc.acquirers})
    network_routes(app, svc)
    inbox_routes(app, ctx, handlers)
    integrity_routes(app, ctx, svc.invariants, svc.halves, svc.in_transit)
    outbox_routes(app, svc.relay, svc.undelivered)
    recovery_routes(app, ctx, lambda: report.as_dict(outbox))
    return app


def create_network_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_network_app(PartySettings(party="network"))
