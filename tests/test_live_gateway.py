"""The gateway's runs API in-process (httpx ``ASGITransport``): start → poll → done → report.

Runs are short (a 15-minute slice of a scenario with 200 cardholders), so each takes about a second.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api import close_app
from sim.live.gateway import GatewaySettings, create_gateway_app, party_urls
from sim.live.run_manager import override_args

ROOT = Path(__file__).resolve().parents[1]
SHORT: dict[str, Any] = {
    "duration_s": 900, "warmup_s": 0, "population.cardholders.count": 200,
    "population.merchants.count": 20, "arrivals.rate_per_s": 2,
    "services.exchange.outages": [{"start_s": 300, "duration_s": 120}],
}


def _settings(tmp_path: Path, **extra: Any) -> GatewaySettings:
    return GatewaySettings(scenarios_dir=ROOT / "scenarios", runs_dir=tmp_path / "runs",
                           data_dir=tmp_path / "data", **extra)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway_app(_settings(tmp_path, max_running_runs=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        yield c
    close_app(app)


async def _wait_done(client: httpx.AsyncClient, run_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """The run's final state, polled until it is no longer running; ``timeout_s`` only detects a run
    that never ends (a short run takes seconds on an idle machine, much longer on a busy one)."""
    seen: list[dict[str, Any]] = []
    for _ in range(int(timeout_s / 0.1)):
        response = await client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200
        seen.append(response.json())
        if seen[-1]["status"] != "running":
            return seen[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} still running after {timeout_s} s: {seen[-1]}")


async def test_scenarios_lists_every_file_with_its_knobs(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/scenarios")
    assert response.status_code == 200
    by_name = {s["name"]: s for s in response.json()}
    assert set(by_name) == {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    outage = by_name["exchange_outage"]
    assert outage["valid"] and outage["deadline_ms"] == 3000
    assert outage["exchange_outage"] == {"start_s": 43200, "duration_s": 1200}
    assert by_name["jit"]["exchange_outage"] is None
    for name in ("cryptocity_direct", "cryptocity_direct_crash"):  # the direct rail's scenarios are offered
        assert by_name[name]["valid"] and by_name[name]["direct_share"] > 0, by_name[name]
    assert by_name["jit"]["direct_share"] == 0


async def test_run_starts_progresses_finishes_and_serves_its_report(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/runs", json={"scenario": "exchange_outage", "overrides": SHORT, "seed": 3})
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "running" and run["report_url"] is None and run["invariants"] is None

    done = await _wait_done(client, run["id"])
    assert done["status"] == "done", done
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["payments"] > 0
    kpis = done["kpis"]
    assert kpis["attempted"] == done["progress"]["payments"]
    assert 0 < kpis["approved"] <= kpis["measured"]
    assert kpis["approval_rate"] == pytest.approx(kpis["approved"] / kpis["measured"])
    assert kpis["p99_latency_ms"] >= kpis["p50_latency_ms"] > 0
    assert kpis["stand_in"] > 0  # the two-minute outage makes the network stand in
    assert done["invariants"] == {"ok": True, "violations": []}
    assert done["history"], "the progress hook recorded KPI points while the run went on"

    report = await client.get(done["report_url"])
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "exchange_outage" in report.text and 'id="integrity"' in report.text

    listing = (await client.get("/v1/runs")).json()
    assert [r["id"] for r in listing] == [run["id"]]

    summary_tax = await client.get("/v1/tax/summary", params={"run_id": run["id"]})
    assert summary_tax.status_code == 200
    assert summary_tax.json()["sales"] > 0
    statement = await client.get("/v1/tax/statements/h1")
    assert statement.status_code == 200
    assert statement.json()["holder_id"] == "h1"
    assert statement.json()["run_id"] == run["id"]


async def test_kpis_match_the_summary_the_run_wrote(client: httpx.AsyncClient, tmp_path: Path) -> None:
    response = await client.post("/v1/runs", json={"scenario": "jit", "overrides": SHORT, "seed": 5})
    done = await _wait_done(client, response.json()["id"])
    summary = json.loads((tmp_path / "runs" / done["id"] / "summary.json").read_text())
    assert done["kpis"]["approved"] == summary["payments"]["approved"]
    assert done["kpis"]["p99_latency_ms"] == pytest.approx(summary["auth_latency_ms"]["p99"])
    assert done["kpis"]["stand_in"] == summary["payments"]["stand_in"]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"scenario": "no_such_scenario"}, 404, "scenario"),
    ({"scenario": "../etc/passwd"}, 422, "scenario"),
    ({"scenario": "jit", "overrides": {"duration_s": -5}}, 422, "overrides"),
    ({"scenario": "jit", "overrides": {"not a key": 1}}, 422, "overrides.not a key.[key]"),
    ({"scenario": "jit", "seed": -1}, 422, "seed"),
    ({"scenario": "jit", "extra": 1}, 422, "extra"),
])
async def test_bad_run_requests_get_a_problem_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, field: str,
) -> None:
    response = await client.post("/v1/runs", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert field in [e["field"] for e in problem["errors"]], problem
    assert (await client.get("/v1/runs")).json() == []  # nothing was started


async def test_non_json_and_nan_bodies_are_refused(client: httpx.AsyncClient) -> None:
    wrong_type = await client.post("/v1/runs", content=b"scenario=jit",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert wrong_type.status_code == 415
    nan = await client.post("/v1/runs", content=b'{"scenario": "jit", "seed": NaN}',
                            headers={"content-type": "application/json"})
    assert nan.status_code == 400


async def test_unknown_runs_and_unfinished_runs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/runs/nope")).status_code == 404
    assert (await client.get("/v1/runs/nope/report")).status_code == 404
    assert (await client.get("/v1/tax/summary")).status_code == 404  # no run has finished
    assert (await client.get("/v1/runs/a%20b")).status_code == 422


async def test_too_many_runs_are_refused_with_429(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/runs", json={"scenario": "jit", "overrides": SHORT})
    assert first.status_code == 202
    second = await client.post("/v1/runs", json={"scenario": "jit", "overrides": SHORT})
    assert second.status_code == 429, second.text
    assert second.headers["retry-after"] == "5"
    assert second.headers["content-type"].startswith("application/problem+json")
    running = await client.get(f"/v1/runs/{first.json()['id']}/report")
    assert running.status_code == 409  # not done yet
    await _wait_done(client, first.json()["id"])
    third = await client.post("/v1/runs", json={"scenario": "jit", "overrides": SHORT})
    assert third.status_code == 202  # a slot is free again
    await _wait_done(client, third.json()["id"])


async def test_dashboard_and_its_assets_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "ccsim" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    for asset, kind in (("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "css"),
                        ("/static/plotly.min.js", "javascript")):
        response = await client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]


async def test_cross_party_checks_need_the_live_parties(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/ledger/invariants")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")


def test_party_urls_come_from_settings_or_the_ports_file(tmp_path: Path) -> None:
    given = _settings(tmp_path, party_urls={"bank": "http://127.0.0.1:9004"})
    assert party_urls(given) == {"bank": "http://127.0.0.1:9004"}
    ports = tmp_path / "ports.json"
    ports.write_text(json.dumps({"host": "127.0.0.1", "ports": {"network": 9001, "issuer": 9002}}))
    assert party_urls(_settings(tmp_path, ports_file=ports)) == {
        "network": "http://127.0.0.1:9001", "issuer": "http://127.0.0.1:9002"}
    assert party_urls(_settings(tmp_path)) == {}  # no ports file in the data directory


def test_override_values_keep_their_types() -> None:
    assert override_args({"a.b": 1e-05, "c": "x y", "d": [{"start_s": 1, "duration_s": 2}], "e": True}) == [
        "a.b=1.0e-05", "c=x y", "d=[{duration_s: 2, start_s: 1}]", "e=true"]
