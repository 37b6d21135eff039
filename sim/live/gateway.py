"""The gateway of ``ccsim serve``: the dashboard, the runs API, tax statements and cross-party checks.

``create_gateway_app(settings)`` builds a FastAPI app on :func:`services.api.create_base_app`
(problem+json errors, strict JSON, limits, ``/healthz``, ``/metrics``) with:

- ``GET /`` the dashboard (``sim/live/static/``, served by the app, no CDN) and ``GET
  /static/plotly.min.js`` (the plotly package's own bundle);
- ``POST /v1/runs`` starts a simulation in the background (:class:`~sim.live.run_manager.RunManager`;
  422 naming the field beyond the run limits, 429 beyond ``max_running_runs``), ``GET /v1/runs``,
  ``GET /v1/runs/{id}`` (progress, live KPIs, invariants when done), ``DELETE /v1/runs/{id}``
  (cancel a running run, or remove a finished one), ``GET /v1/runs/{id}/report``;
- ``GET /v1/scenarios``: the ``ccsim serve --scenario`` file, ``--scenarios-dir`` and ccsim's own
  library of scenarios;
- ``GET /readyz``: every live party answers (it answers only once seeded); ``/healthz`` is the
  gateway's own liveness;
- ``GET /v1/tax/statements/{holder}`` and ``GET /v1/tax/summary`` of a finished run;
- ``GET /v1/ledger/invariants`` and ``GET /v1/reconciliation`` across the live party services,
  through ``services.api.parties.integrity`` (base URLs from the settings or the ports file that
  ``ccsim serve`` writes).

It lives in ``sim`` because it runs simulations; the party services never import it.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final

import anyio.to_thread
import httpx
from fastapi import APIRouter, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from services.api import FieldError, ProblemError, StrictJsonRoute, create_base_app
from services.api.auth import AuthError, SigningAuth, load_credentials
from services.api.parties.integrity import (
    IntegritySlowError,
    IntegrityUnavailableError,
    collect_invariants,
    collect_reconciliation,
)
from services.api.problems import problem_responses
from services.api.settings import ApiSettings
from services.money import DEFAULT_ASSETS, format_amount
from sim.live.run_manager import (
    RunLimitError,
    RunLimits,
    RunManager,
    RunState,
    TooManyRunsError,
    UnknownScenarioError,
    scenario_sources,
)
from sim.scenario_load import ScenarioError

__all__ = ["GatewaySettings", "RunRequest", "create_gateway_app"]

STATIC_DIR: Final = Path(__file__).parent / "static"
PARTIES: Final = ("network", "issuer", "exchange", "bank")
_KZT = DEFAULT_ASSETS[0]
_OVERRIDES_MAX: Final = 32
_KEY_PATTERN: Final = r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,8}$"
_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
RunId = Annotated[str, PathParam(pattern=_ID_PATTERN, description="a run's id")]
HolderId = Annotated[str, PathParam(pattern=_ID_PATTERN, description="a cardholder's id, e.g. h17")]
RunQuery = Annotated[str | None, Query(pattern=_ID_PATTERN, description="a finished run; default: the latest")]
YearQuery = Annotated[int | None, Query(ge=1970, le=9999, description="one calendar year; default: all")]


class GatewaySettings(ApiSettings):
    """The gateway's configuration (``CCSIM_*`` variables, like every service's)."""

    party: str = Field("gateway", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    scenario_file: Path | None = Field(None, description="the scenario ccsim serve was started with (listed first)")
    scenarios_dir: Path | None = Field(None, description="a directory of scenario files the dashboard lists")
    scenario_library: bool = Field(True, description="also list the scenarios that come with ccsim")
    runs_dir: Path = Field(Path("runs/live"), description="where started runs write their results")
    max_running_runs: int = Field(2, ge=1, le=16, description="runs at once; more are answered 429")
    max_kept_runs: int = Field(50, ge=1, le=10_000, description="finished runs kept, in memory and on disk")
    max_runs_disk_mb: int = Field(2048, ge=1, le=1_000_000, description="bytes of kept run directories, in MB")
    max_run_duration_s: float = Field(7 * 86_400.0, gt=0, le=365 * 86_400.0,
                                      description="the longest simulated duration_s of a run")
    max_run_payments: int = Field(2_000_000, ge=1, le=100_000_000,
                                  description="the most payments a run may be expected to make")
    max_run_cardholders: int = Field(200_000, ge=1, le=10_000_000, description="the largest population of a run")
    max_run_wall_s: float = Field(3_600.0, gt=0, le=7 * 86_400.0,
                                  description="a run still going after this many wall seconds is cancelled")
    check_timeout_s: float = Field(30.0, gt=0, le=3_600.0,
                                   description="a party that has not answered a cross-party check by then is slow")
    ready_timeout_s: float = Field(2.0, gt=0, le=60.0, description="/readyz: a party's /healthz answers within this")
    party_urls: dict[str, str] = Field(
        default_factory=dict, description="base URL per live party (network, issuer, exchange, bank)")
    ports_file: Path | None = Field(
        None, description="JSON written by ccsim serve naming the parties' URLs or ports")
    credentials_file: Path | None = Field(
        None, description="the keys ccsim serve wrote (the gateway signs its checks as the gateway "
                          "principal); none: <data_dir>/credentials.json")


class RunRequest(BaseModel):
    """``POST /v1/runs``: a scenario from ``scenarios/``, overrides by dotted key, a seed."""

    model_config = ConfigDict(extra="forbid")
    scenario: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a scenario file's stem")
    overrides: dict[Annotated[str, Field(pattern=_KEY_PATTERN)], JsonValue] = Field(
        default_factory=dict, max_length=_OVERRIDES_MAX,
        description='scenario fields to change, e.g. {"arrivals.rate_scale": 2}')
    seed: int = Field(1, ge=0, le=2**32 - 1)


def _gateway_settings(settings: ApiSettings | None) -> GatewaySettings:
    """Accept the gateway's own settings or any service settings (``ccsim serve`` passes its own)."""
    if isinstance(settings, GatewaySettings):
        return settings
    if settings is None:
        return GatewaySettings()
    base = {name: getattr(settings, name) for name in ApiSettings.model_fields if name != "party"}
    urls = {party: str(getattr(settings, f"{party}_url", "") or "") for party in PARTIES}
    return GatewaySettings(**base, party_urls={k: v for k, v in urls.items() if v})


def party_urls(settings: GatewaySettings) -> dict[str, str]:
    """The live parties' base URLs: the settings' own, else the ports file of ``ccsim serve``.

    The ports file is JSON: ``{"network": "http://127.0.0.1:8001", ...}`` or ``{"host": ...,
    "ports": {"network": 8001, ...}}``; both are read.
    """
    if settings.party_urls:
        return dict(settings.party_urls)
    path = settings.ports_file or settings.data_dir / "ports.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    host = str(raw.get("host", "127.0.0.1"))
    ports = raw.get("ports")
    source = ports if isinstance(ports, dict) else raw.get("urls", raw)
    out: dict[str, str] = {}
    if isinstance(source, dict):
        for party in PARTIES:
            value = source.get(party)
            if isinstance(value, int):
                out[party] = f"http://{host}:{value}"
            elif isinstance(value, str) and value.startswith("http"):
                out[party] = value
    return out


def _no_parties() -> ProblemError:
    return ProblemError(503, "no live party services are configured: start them with ccsim serve",
                        [FieldError(field="party_urls", reason="empty, and no ports file was found")],
                        slug="unavailable")


async def _cross_party(settings: GatewaySettings, collect: Callable[..., Any]) -> Any:
    """Run a cross-party check (:mod:`services.api.parties.integrity`) in a worker thread.

    The checks call every party with a synchronous HTTP client, one after the other, and the ports
    file is read from disk: both would stall the gateway's event loop — the dashboard's polls, the
    runs API — for as long as the slowest party takes, so neither runs on it.
    """
    urls = await anyio.to_thread.run_sync(party_urls, settings)
    auth = await anyio.to_thread.run_sync(_gateway_auth, settings)
    if not urls:
        raise _no_parties()
    try:
        check = functools.partial(collect, urls, timeout_s=settings.check_timeout_s, auth=auth)
        result = await anyio.to_thread.run_sync(check)
    except IntegritySlowError as exc:
        raise ProblemError(503, f"a party service is slow: {exc}",
                           [FieldError(field="party_urls", reason=str(exc)[:200])], slug="slow",
                           headers={"Retry-After": "30"}) from None
    except IntegrityUnavailableError as exc:
        raise ProblemError(503, f"a party service did not answer: {exc}",
                           [FieldError(field="party_urls", reason=str(exc)[:200])], slug="unavailable") from None
    return _jsonable(result)


def _gateway_auth(settings: GatewaySettings) -> SigningAuth | None:
    """The gateway's signature for its calls to the parties (none without a credentials file:
    the parties then refuse the checks, and they say so)."""
    path = settings.credentials_file or settings.data_dir / "credentials.json"
    if settings.credentials_file is None and not path.exists():
        return None
    try:
        return SigningAuth(load_credentials(path).principal("gateway"))
    except AuthError as exc:
        raise ProblemError(503, "the gateway's credentials cannot be used",
                           [FieldError(field="credentials_file", reason=str(exc)[:200])], slug="unavailable") from None


def _jsonable(value: Any) -> Any:
    """Dataclasses, pydantic models and Decimals as plain JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value
    return value


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs  # noqa: PLC0415 — 4 MB of text, built on first use only

    text: str = get_plotlyjs()
    return text.encode("utf-8")


def _finished_run(manager: RunManager, run_id: str | None) -> RunState:
    if run_id is None:
        state = manager.latest_done()
        if state is None:
            raise ProblemError(404, "no run has finished yet", [FieldError(field="run_id", reason="none done")])
        return state
    state = manager.get(run_id)
    if state is None:
        raise ProblemError(404, f"no run {run_id}", [FieldError(field="run_id", reason="unknown run")])
    if state.status != "done":
        raise ProblemError(409, f"run {run_id} is {state.status}, not done",
                           [FieldError(field="run_id", reason=state.status)])
    return state


def kzt(minor: int) -> str:
    """Tiyn as a KZT decimal string (never a float)."""
    return format_amount(int(minor), _KZT)


def _statement_json(statement: Any) -> dict[str, Any]:
    return {
        "holder_id": statement.holder_id, "residency": statement.residency.value, "year": statement.year,
        "proceeds_kzt": kzt(statement.proceeds_kzt), "basis_kzt": kzt(statement.basis_kzt),
        "gains_kzt": kzt(statement.gains_kzt), "losses_kzt": kzt(statement.losses_kzt),
        "net_gain_kzt": kzt(statement.net_gain_kzt), "pit_due_kzt": kzt(statement.pit_due_kzt),
        "pit_withheld_kzt": kzt(statement.pit_withheld_kzt),
        "pit_to_declare_kzt": kzt(statement.pit_to_declare_kzt),
        "sales": [{"sale_id": r.sale_id, "asset": r.asset, "quantity_minor": str(r.quantity_minor),
                   "proceeds_kzt": kzt(r.proceeds_kzt), "basis_kzt": kzt(r.basis_kzt),
                   "gain_kzt": kzt(r.gain_kzt), "pit_kzt": kzt(r.pit_kzt), "withheld": r.withheld,
                   "at_s": r.at_s, "year": r.year, "vat_exempt": r.vat_exempt} for r in statement.sales],
    }


def _summary_json(summary: Any) -> dict[str, Any]:
    return {
        "year": summary.year, "sales": summary.sales, "proceeds_kzt": kzt(summary.proceeds_kzt),
        "realized_gain_kzt": kzt(summary.realized_gain_kzt), "gains_kzt": kzt(summary.gains_kzt),
        "losses_kzt": kzt(summary.losses_kzt), "pit_due_kzt": kzt(summary.pit_due_kzt),
        "pit_due_by_residency_kzt": {r.value: kzt(v) for r, v in sorted(summary.pit_due_by_residency_kzt.items())},
        "pit_withheld_kzt": kzt(summary.pit_withheld_kzt),
        "pit_to_self_declare_kzt": kzt(summary.pit_to_self_declare_kzt),
        "pit_expected_declared_kzt": kzt(summary.pit_expected_declared_kzt),
        "tax_gap_kzt": kzt(summary.tax_gap_kzt),
    }


def _runs_router(manager: RunManager) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, tags=["runs"])

    @router.get("/v1/scenarios")
    def list_scenarios() -> list[dict[str, Any]]:
        """The scenario files the dashboard offers, with the defaults of its knobs."""
        return manager.scenarios()

    @router.post("/v1/runs", status_code=202, responses=problem_responses(404, 429))
    def start_run(body: RunRequest) -> JSONResponse:
        """Start a simulation in the background; poll ``GET /v1/runs/{id}`` for its progress."""
        try:
            state = manager.start(body.scenario, dict(body.overrides), body.seed)
        except UnknownScenarioError:
            raise ProblemError(404, f"no scenario {body.scenario!r} in {manager.describe_sources()}",
                               [FieldError(field="scenario", reason="unknown scenario")]) from None
        except RunLimitError as exc:
            raise ProblemError(422, f"the run is beyond this gateway's limits: {exc}",
                               [FieldError(field=exc.field, reason=exc.reason[:300])], slug="run-limit") from None
        except ScenarioError as exc:
            raise ProblemError(422, "the scenario with these overrides is invalid",
                               [FieldError(field="overrides", reason=str(exc)[:300])]) from None
        except TooManyRunsError as exc:
            raise ProblemError(429, str(exc), slug="too-many-runs", headers={"Retry-After": "5"}) from None
        view = manager.view(state.run_id)
        return JSONResponse(view, status_code=202, headers={"Location": f"/v1/runs/{state.run_id}"})

    @router.get("/v1/runs")
    def list_runs() -> list[dict[str, Any]]:
        """Remembered runs, newest first."""
        return manager.views()

    @router.get("/v1/runs/{run_id}", responses=problem_responses(404))
    def get_run(run_id: RunId) -> dict[str, Any]:
        """Status, progress (virtual time and payments), live KPIs, and the invariants when done."""
        view = manager.view(run_id)
        if view is None:
            raise ProblemError(404, f"no run {run_id}", [FieldError(field="run_id", reason="unknown run")])
        return view

    @router.delete("/v1/runs/{run_id}", status_code=202, responses=problem_responses(404))
    def cancel_run(run_id: RunId) -> Response:
        """Cancel a running run (202: it stops at its next progress step and its partial directory
        is removed), or remove a finished one and its directory (204)."""
        try:
            state = manager.cancel(run_id)
        except KeyError:
            raise ProblemError(404, f"no run {run_id}", [FieldError(field="run_id", reason="unknown run")]) from None
        if state is None:
            return Response(status_code=204)
        return JSONResponse(manager.view(run_id), status_code=202)

    @router.get("/v1/runs/{run_id}/report", response_class=HTMLResponse, responses=problem_responses(404, 409))
    def get_report(run_id: RunId) -> Response:
        """The run's self-contained report.html."""
        state = _finished_run(manager, run_id)
        path = state.run_dir / "report.html"
        if not state.report_ready or not path.is_file():
            raise ProblemError(409, f"run {run_id} has no report: {state.error or 'not built'}")
        return HTMLResponse(path.read_text(encoding="utf-8"))

    @router.get("/v1/tax/statements/{holder_id}", tags=["tax"], responses=problem_responses(404, 409))
    def tax_statement(
        holder_id: HolderId, run_id: RunQuery = None, year: YearQuery = None,
    ) -> dict[str, Any]:
        """A cardholder's sales, gains and PIT in a finished run (the latest when no ``run_id``)."""
        state = _finished_run(manager, run_id)
        try:
            statement = state.tax.statement(holder_id, year)
        except ValueError:
            raise ProblemError(404, f"no cardholder {holder_id} in run {state.run_id}",
                               [FieldError(field="holder_id", reason="unknown cardholder")]) from None
        return {"run_id": state.run_id, **_statement_json(statement)}

    @router.get("/v1/tax/summary", tags=["tax"], responses=problem_responses(404, 409))
    def tax_summary(
        run_id: RunQuery = None, year: YearQuery = None,
    ) -> dict[str, Any]:
        """The tax authority's view of a finished run: PIT due, withheld, declared, and the gap."""
        state = _finished_run(manager, run_id)
        summary = state.tax_summary if year is None else state.tax.authority_summary(
            year, state.tax_compliance)
        return {"run_id": state.run_id, **_summary_json(summary)}

    return router


def _integrity_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, tags=["integrity"])

    @router.get("/v1/ledger/invariants", responses=problem_responses(503))
    async def ledger_invariants() -> Any:
        """Every live party's ledger invariants (conservation per asset, no overdrafts, ...)."""
        return await _cross_party(settings, collect_invariants)

    @router.get("/v1/reconciliation", responses=problem_responses(503))
    async def reconciliation() -> Any:
        """Messages between live parties matched half to half."""
        return await _cross_party(settings, collect_reconciliation)

    return router


async def _party_ready(client: httpx.AsyncClient, url: str) -> str:
    """"up", or why not: its ``/healthz`` answers 200 only once the party has seeded its books."""
    try:
        response = await client.get(f"{url}/healthz")
    except httpx.TimeoutException:
        return "no answer in time (starting, seeding or restarting)"
    except httpx.TransportError:
        return "not answering (down, starting or restarting)"
    return "up" if response.status_code == 200 else f"HTTP {response.status_code}"


def _ready_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, tags=["operations"])

    @router.get("/readyz", responses=problem_responses(503))
    async def readyz() -> dict[str, Any]:
        """Ready: every live party service is up and seeded (``/healthz`` is the gateway alone)."""
        urls = await anyio.to_thread.run_sync(party_urls, settings)
        if not urls:
            raise _no_parties()
        async with httpx.AsyncClient(timeout=settings.ready_timeout_s) as client:
            states = await asyncio.gather(*(_party_ready(client, url) for url in urls.values()))
        parties = dict(zip(urls, states, strict=True))
        down = [FieldError(field=f"parties.{name}", reason=state) for name, state in parties.items() if state != "up"]
        if down:
            raise ProblemError(503, f"not ready: {', '.join(e.field.removeprefix('parties.') for e in down)}",
                               down, slug="not-ready", headers={"Retry-After": "5"})
        return {"status": "ready", "parties": parties}

    return router


def create_gateway_app(settings: ApiSettings | None = None) -> FastAPI:
    """The gateway app; nothing is started until a run is requested."""
    gw = _gateway_settings(settings)
    app = create_base_app(gw, title="ccsim gateway")
    limits = RunLimits(duration_s_max=gw.max_run_duration_s, payments_max=gw.max_run_payments,
                       cardholders_max=gw.max_run_cardholders, wall_s_max=gw.max_run_wall_s,
                       kept_max=gw.max_kept_runs, disk_bytes_max=gw.max_runs_disk_mb * 1024 * 1024)
    manager = RunManager(scenario_sources(gw.scenario_file, gw.scenarios_dir, gw.scenario_library), gw.runs_dir,
                         max_running=gw.max_running_runs, limits=limits)
    app.state.runs = manager

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> Response:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> Response:
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    app.include_router(_runs_router(manager))
    app.include_router(_integrity_router(gw))
    app.include_router(_ready_router(gw))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
