"""Schemathesis against the ledger service's own OpenAPI schema: every phase, every check.

Runs schemathesis's engine (what its CLI runs: examples, coverage, fuzzing and stateful phases) in
process over ASGI, on SQLite and PostgreSQL, and requires 0 failed checks and 0 errors: no server
error, every status code, content type, header and body as the schema says (problems included),
invalid data rejected, valid data accepted. Two accounts and a hold are seeded so that some
generated transfers meet real rows. (Its pytest plugin's lazy loader does not run under pytest 9,
hence the engine.)
"""

from __future__ import annotations

from typing import Any

import schemathesis
from conftest import LedgerAppFactory
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_from_schema

from services.ledger import Account, AccountFlags, Transfer, TransferFlags

# Business rules the schema cannot state (insufficient funds, an amount finer than the asset's
# scale, an Idempotency-Key reused for another body) answer 422 to well-formed requests by design
# (docs/api.md), so 422 counts as an acceptable answer to valid data.
_CONFIG: dict[str, Any] = {
    "seed": 20_260_601,
    "generation": {"max-examples": 12},
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422"]}},
}


def _seeded_app(factory: LedgerAppFactory) -> Any:
    app = factory()
    ledger = app.state.ledger
    ledger.create_accounts([
        Account("cash", "KZT"),
        Account("wallet", "KZT", flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
    ])
    ledger.create_transfers([
        Transfer("fund", "cash", "wallet", 1_000_000, "KZT"),
        Transfer("hold", "wallet", "cash", 100, "KZT", flags=TransferFlags.PENDING, timeout_s=3600.0),
    ])
    return app


def test_ledger_api_passes_every_schemathesis_check(ledger_app_factory: LedgerAppFactory) -> None:
    app = _seeded_app(ledger_app_factory)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app,
                                            config=SchemathesisConfig.from_dict(_CONFIG))
    failures: list[str] = []
    errors: list[str] = []
    checks_run = 0
    stop_reason = None
    for event in engine_from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    checks_run += 1
                    if node.status == Status.FAILURE:
                        info = node.failure_info
                        failures.append(f"{event.recorder.label} [{event.phase}]: {node.name}: "
                                        f"{info.failure.title if info else ''} "
                                        f"{info.failure.message if info else ''}"[:600])
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}"[:600])
        elif isinstance(event, events.FatalError):
            errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            stop_reason = event.stop_reason
    print(f"schemathesis: {checks_run} checks, {len(failures)} failures, {len(errors)} errors")
    assert not errors, "\n".join(errors)
    assert not failures, f"{len(failures)} failed checks:\n" + "\n".join(sorted(set(failures))[:40])
    assert checks_run > 500, f"only {checks_run} checks ran"
    assert str(stop_reason) == "completed"
