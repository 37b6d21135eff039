"""Rate limits on the routes any caller could spam (services/api/rate_limit.py, issue 15).

The buckets with a clock the test turns; the middleware in front of the gateway's runs API and its
public routes, in process. The party services' limited routes are in the hostile-input catalogue
(``tests/test_live_catalogue.py``, "rate limits").
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from services.api import PROBLEM_MEDIA_TYPE, close_app
from services.api.rate_limit import DEFAULT_RATE_LIMITS, RateLimit, TokenBuckets, limit_of
from services.api.settings import ApiSettings
from sim.live.gateway import GatewaySettings, create_gateway_app

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_spends_its_burst_then_one_token_per_period() -> None:
    clock = Clock()
    buckets = TokenBuckets(RateLimit(per_s=2, burst=3), callers_max=10, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # empty: a token is back in half a second
    assert buckets.take("b") == 0.0  # another caller has its own bucket
    clock.now = 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    clock.now = 100.0  # a long pause refills to the burst, never beyond
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_the_callers_tracked_are_bounded_least_recent_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(RateLimit(per_s=1, burst=1), callers_max=100, clock=clock)
    buckets.take("first")
    assert buckets.take("first") > 0
    for i in range(1_000):
        buckets.take(f"peer-{i}")
        assert len(buckets) <= 100
    assert len(buckets) == 100
    assert buckets.take("first") == 0.0  # forgotten: it starts full again (bounded memory, not more than the rate)


def test_only_the_routes_anyone_could_spam_are_limited() -> None:
    assert limit_of("GET", "/healthz") == "health" and limit_of("GET", "/readyz") == "health"
    assert limit_of("GET", "/metrics") == "metrics"
    assert limit_of("GET", "/v1/ledger/invariants") == limit_of("GET", "/v1/ledger/halves") == "checks"
    assert limit_of("POST", "/v1/holds/expire") == "operations"
    assert limit_of("POST", "/v1/runs") == limit_of("DELETE", "/v1/runs/r-1") == "runs"
    for method, path in (("POST", "/v1/payments"), ("POST", "/v1/authorizations"), ("POST", "/v1/inbox/bank-1"),
                         ("POST", "/v1/sells"), ("POST", "/v1/presentments"), ("GET", "/v1/runs/r-1"),
                         ("POST", "/v1/authorizations/a1/capture"), ("POST", "/v1/advices")):
        assert limit_of(method, path) is None, (method, path)  # the chain's own traffic is never throttled


def test_limits_are_settings_naming_a_known_limit() -> None:
    s = ApiSettings(rate_limits={"checks": {"per_s": 1, "burst": 5}})
    assert s.rate_limits["checks"] == RateLimit(per_s=1, burst=5)
    with pytest.raises(ValidationError, match="unknown rate limit payments"):
        ApiSettings(rate_limits={"payments": {"per_s": 1, "burst": 5}})
    with pytest.raises(ValidationError, match="burst"):
        ApiSettings(rate_limits={"checks": {"per_s": 1, "burst": 0}})
    assert set(DEFAULT_RATE_LIMITS) == {"health", "metrics", "docs", "checks", "operations", "runs"}


def _gateway(tmp_path: Path) -> tuple[object, httpx.AsyncClient, httpx.AsyncClient]:
    settings = GatewaySettings(scenarios_dir=ROOT / "scenarios", runs_dir=tmp_path / "runs", data_dir=tmp_path / "d",
                               rate_limits={"runs": RateLimit(per_s=0.001, burst=2),
                                            "health": RateLimit(per_s=0.001, burst=3)})
    app = create_gateway_app(settings)
    one = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 5000)), base_url="http://gw")
    two = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.2", 5000)), base_url="http://gw")
    return app, one, two


def _assert_limited(r: httpx.Response, limit: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert int(r.headers["retry-after"]) >= 1
    errors = r.json()["errors"]
    assert errors[0]["field"] == "rate_limit" and errors[0]["reason"].startswith(f"{limit}:"), errors
    assert limit in r.json()["detail"]


async def test_the_gateways_runs_api_and_health_are_limited_per_peer(tmp_path: Path) -> None:
    app, one, two = _gateway(tmp_path)
    try:
        bad = {"scenario": "no-such-scenario"}
        assert [(await one.post("/v1/runs", json=bad)).status_code for _ in range(2)] == [404, 404]
        _assert_limited(await one.post("/v1/runs", json=bad), "runs")
        _assert_limited(await one.delete("/v1/runs/r-1"), "runs")  # one bucket for starting and stopping
        assert (await two.post("/v1/runs", json=bad)).status_code == 404  # another peer is not throttled
        assert [(await one.get("/healthz")).status_code for _ in range(3)] == [200, 200, 200]
        _assert_limited(await one.get("/healthz"), "health")
        assert (await one.get("/v1/scenarios")).status_code == 200  # an unlimited route still answers
        schema = (await two.get("/openapi.json")).json()
        assert "429" in schema["paths"]["/v1/runs"]["post"]["responses"]
    finally:
        await one.aclose()
        await two.aclose()
        close_app(app)  # type: ignore[arg-type]
