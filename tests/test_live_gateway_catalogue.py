"""The hostile-input catalogue for the gateway's runs API (issue 15, F6).

Every case is one bad request to a route of the runs API. Each must be answered 4xx with an
``application/problem+json`` body naming the field at fault, and change nothing: no run started or
remembered, no directory written. ``test_every_runs_route_is_in_the_catalogue`` fails when the
gateway gains a route under ``/v1/runs`` or ``/v1/scenarios`` that no case covers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api import PROBLEM_MEDIA_TYPE, close_app
from sim.live.gateway import GatewaySettings, create_gateway_app

ROOT = Path(__file__).resolve().parents[1]
NO_INPUT = {("GET", "/v1/runs"), ("GET", "/v1/scenarios")}  # no body, path or query to get wrong


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    field: str  # the field the problem names ("" for a problem that names none, e.g. 405)
    json: Any = None
    content: bytes | None = None
    content_type: str = "application/json"


def _run(**body: Any) -> dict[str, Any]:
    return {"scenario": "jit", **body}


CASES = [
    # F6: a run the gateway would never finish, or that would hold its slot and memory forever
    Case("duration 1e308", "POST", "/v1/runs", 422, "overrides.duration_s", _run(overrides={"duration_s": 1e308})),
    Case("duration a year", "POST", "/v1/runs", 422, "overrides.duration_s",
         _run(overrides={"duration_s": 365 * 86_400})),
    Case("duration negative", "POST", "/v1/runs", 422, "overrides", _run(overrides={"duration_s": -5})),
    Case("duration zero", "POST", "/v1/runs", 422, "overrides", _run(overrides={"duration_s": 0})),
    Case("duration a string", "POST", "/v1/runs", 422, "overrides", _run(overrides={"duration_s": "forever"})),
    Case("a billion payments", "POST", "/v1/runs", 422, "overrides.arrivals.rate_per_s",
         _run(overrides={"arrivals.rate_per_s": 1e6})),
    Case("payments by scale", "POST", "/v1/runs", 422, "overrides.arrivals.rate_scale",
         _run(overrides={"arrivals.rate_scale": 1e9})),
    Case("ten million cardholders", "POST", "/v1/runs", 422, "overrides.population.cardholders.count",
         _run(overrides={"population.cardholders.count": 10_000_000})),
    Case("a burst of a million", "POST", "/v1/runs", 422, "overrides.arrivals.bursts",
         _run(overrides={"arrivals.bursts": [{"start_s": 0, "duration_s": 80_000, "multiplier": 1e6}]})),
    # the request's own shape
    Case("unknown scenario", "POST", "/v1/runs", 404, "scenario", {"scenario": "no_such"}),
    Case("path traversal", "POST", "/v1/runs", 422, "scenario", {"scenario": "../../etc/passwd"}),
    Case("scenario missing", "POST", "/v1/runs", 422, "scenario", {"seed": 1}),
    Case("scenario a number", "POST", "/v1/runs", 422, "scenario", {"scenario": 7}),
    Case("extra member", "POST", "/v1/runs", 422, "extra", _run(extra=1)),
    Case("seed negative", "POST", "/v1/runs", 422, "seed", _run(seed=-1)),
    Case("seed 2**32", "POST", "/v1/runs", 422, "seed", _run(seed=2**32)),
    Case("seed a float", "POST", "/v1/runs", 422, "seed", _run(seed=1.5)),
    Case("overrides a list", "POST", "/v1/runs", 422, "overrides", _run(overrides=[1])),
    Case("unknown override key", "POST", "/v1/runs", 422, "overrides", _run(overrides={"no.such.field": 1})),
    Case("bad override key", "POST", "/v1/runs", 422, "overrides.a b.[key]", _run(overrides={"a b": 1})),
    Case("33 overrides", "POST", "/v1/runs", 422, "overrides",
         _run(overrides={f"k{i}": i for i in range(33)})),
    Case("NaN", "POST", "/v1/runs", 400, "body", content=b'{"scenario": "jit", "seed": NaN}'),
    Case("not JSON", "POST", "/v1/runs", 400, "body", content=b'{"scenario": '),
    Case("a form", "POST", "/v1/runs", 415, "Content-Type", content=b"scenario=jit",
         content_type="application/x-www-form-urlencoded"),
    # the run's id in the path
    Case("get unknown run", "GET", "/v1/runs/nope", 404, "run_id"),
    Case("get bad id", "GET", "/v1/runs/a%20b", 422, "run_id"),
    Case("cancel unknown run", "DELETE", "/v1/runs/nope", 404, "run_id"),
    Case("cancel bad id", "DELETE", "/v1/runs/a.b", 422, "run_id"),
    Case("cancel a long id", "DELETE", "/v1/runs/" + "x" * 65, 422, "run_id"),
    Case("report unknown run", "GET", "/v1/runs/nope/report", 404, "run_id"),
    Case("delete the collection", "DELETE", "/v1/runs", 405, ""),
    Case("put a run", "PUT", "/v1/runs/nope", 405, ""),
    Case("post scenarios", "POST", "/v1/scenarios", 405, ""),
]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    runs_dir = tmp_path / "runs"
    app = create_gateway_app(GatewaySettings(scenarios_dir=ROOT / "scenarios", runs_dir=runs_dir,
                                             data_dir=tmp_path / "data", max_running_runs=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client, runs_dir
    close_app(app)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_runs_requests_are_a_4xx_problem_and_change_nothing(
    gateway: tuple[httpx.AsyncClient, Path], case: Case,
) -> None:
    client, runs_dir = gateway
    headers = {"content-type": case.content_type} if case.json is not None or case.content is not None else {}
    response = await client.request(case.method, case.path, json=case.json, content=case.content, headers=headers)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    problem = response.json()
    assert problem["status"] == case.status
    if case.field:
        assert case.field in [e["field"] for e in problem["errors"]], problem
    assert (await client.get("/v1/runs")).json() == []  # no run started or remembered
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []  # nothing written


async def test_every_runs_route_is_in_the_catalogue(gateway: tuple[httpx.AsyncClient, Path]) -> None:
    client, _ = gateway
    spec = (await client.get("/openapi.json")).json()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if path.startswith(("/v1/runs", "/v1/scenarios"))}
    covered = {(c.method, c.path.replace("/nope/report", "/{run_id}/report")) for c in CASES}
    covered = {(m, "/v1/runs/{run_id}" if p.startswith("/v1/runs/") and not p.endswith("/report") else p)
               for m, p in covered}
    assert routes - covered - NO_INPUT == set(), f"routes no case covers: {sorted(routes - covered - NO_INPUT)}"
    assert routes >= NO_INPUT
