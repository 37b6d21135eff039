"""Schemathesis against each live party service's own OpenAPI schema: every phase, every check.

As ``tests/test_api_schemathesis.py`` does for the ledger service: schemathesis's engine (what its
CLI runs: examples, coverage, fuzzing and stateful phases) in process over ASGI, against the
exchange, the issuer, the network + acquirers and the banks in turn, each one of the four apps of
``tests/test_live_parties.py``'s ``Live`` (so a generated payment really reaches the issuer, the
exchange and the banks). Required: 0 failed checks and 0 errors (no server error; every status
code, content type, header and body as the schema says, problems included; invalid data
rejected; valid data accepted or refused by a business rule).

One more check, schemathesis's own cannot make: **a rejected request changes no row**. A wrapper in
front of the app under test hashes every table of every party's database after each request
(``test_live_catalogue.Rows``); a 4xx answer whose rows differ from the ones before it is a
violation, whichever party's tables changed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import SQL_BACKENDS
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_from_schema
from signing import SignedApp
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from test_api_schemathesis import _CONFIG
from test_live_catalogue import ARTIFACTS, Rows, _service_logging  # noqa: F401 — JSON logging for the module
from test_live_parties import PARTIES, Live, make_seed

# The ledger service's settings (business refusals answer 404/409/422 to well-formed requests),
# with fewer examples per operation: four services have about forty operations between them.
CONFIG: dict[str, Any] = {**_CONFIG, "generation": {"max-examples": 3}}


@dataclass
class RowGuard:
    """ASGI wrapper: after each request, every party's rows; a 4xx that changed any is recorded."""

    app: ASGIApp
    rows: Rows
    last: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: int = 0
    rejected: int = 0
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last = self.rows.snapshot()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # as in the other in-process tests: no relay running behind the guard
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, send_status)
        before, self.last = self.last, self.rows.snapshot()
        self.requests += 1
        if 400 <= status < 500:
            self.rejected += 1
            changed = sorted(t for t in before.keys() | self.last.keys() if before.get(t) != self.last.get(t))
            if changed:
                self.violations.append(f"{scope['method']} {scope['path']} -> {status} changed {changed}")


@dataclass
class Outcome:
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop_reason: str = ""


def run_schemathesis(app: ASGIApp, config: dict[str, Any]) -> Outcome:
    """Every phase and check of schemathesis against ``app``'s ``/openapi.json``, in process."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_dict(config))
    out = Outcome()
    for event in engine_from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    out.checks += 1
                    if node.status == Status.FAILURE:
                        info = node.failure_info
                        out.failures.append(f"{event.recorder.label} [{event.phase}]: {node.name}: "
                                            f"{info.failure.title if info else ''} "
                                            f"{info.failure.message if info else ''}"[:600])
        elif isinstance(event, events.NonFatalError):
            out.errors.append(f"{event.label}: {event.value!r}"[:600])
        elif isinstance(event, events.FatalError):
            out.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            out.stop_reason = str(event.stop_reason)
    return out


class KnownBugsOnlyError(AssertionError):
    """Every failure of the run is a known bug (see :data:`KNOWN`): the expected failure."""


@dataclass(frozen=True)
class Known:
    """A failure the run shows today, because of a bug in a file this test may not change."""

    party: str
    signature: str  # a failure line (schemathesis's or the row guard's) contains this
    fix: str


KNOWN: tuple[Known, ...] = ()


def _params() -> list[Any]:
    out = []
    for party in PARTIES:
        fixes = [k.fix for k in KNOWN if k.party == party]
        marks = [pytest.mark.xfail(strict=True, raises=KnownBugsOnlyError, reason=" | ".join(fixes))] if fixes else []
        out.append(pytest.param(party, marks=marks, id=party))
    return out


@pytest.mark.parametrize("backend", SQL_BACKENDS)
@pytest.mark.parametrize("party", _params())
def test_party_api_passes_every_schemathesis_check(party: str, backend: str, tmp_path: Path) -> None:
    live = Live(backend, tmp_path, make_seed())
    rows = Rows(live)
    try:
        guard = RowGuard(live.apps[party], rows)
        outcome = run_schemathesis(SignedApp(guard, host=party), CONFIG)  # schemathesis as a caller with the role
    finally:
        rows.close()
        asyncio.run(live.close())
    print(f"schemathesis on the {party} service ({backend}): {outcome.checks} checks, {len(outcome.failures)} "
          f"failures, {len(outcome.errors)} errors; {guard.requests} requests, {guard.rejected} rejected, "
          f"{len(guard.violations)} of them changed rows")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"schemathesis_{party}_{backend}.json").write_text(json.dumps({
        "service": party, "database": backend, "checks": outcome.checks, "failed_checks": len(outcome.failures),
        "errors": len(outcome.errors), "requests": guard.requests, "rejected": guard.rejected,
        "rejected_with_rows_changed": len(guard.violations), "known_bugs": [k.fix for k in KNOWN if k.party == party],
        "failures": sorted(set(outcome.failures)), "violations": guard.violations}, indent=1) + "\n")
    assert not outcome.errors, "\n".join(outcome.errors)
    assert outcome.stop_reason == "completed"
    assert guard.rejected > 100 and outcome.checks > 1000, (guard.rejected, outcome.checks)
    found = sorted(set(outcome.failures)) + [f"rows: {v}" for v in guard.violations]
    known = [k for k in KNOWN if k.party == party]
    unknown = [f for f in found if not any(k.signature in f for k in known)]
    assert not unknown, f"{len(unknown)} failures (failed checks, or rejected requests that changed rows):\n" + (
        "\n".join(unknown[:40]))
    if found:
        raise KnownBugsOnlyError("only known bugs failed:\n" + "\n".join(found[:40]))
