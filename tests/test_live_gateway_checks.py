"""The gateway's cross-party checks run off its event loop, and a party that does not answer is a 503.

``GET /v1/ledger/invariants`` and ``GET /v1/reconciliation`` call every party with a blocking HTTP
client. The check below blocks until another request to the same gateway has been served: on the
event loop that request could never run, so the check would see its event unset (after a generous
bound, a failure detector only) — in a worker thread, it is served at once.

``ccsim load --gateway`` reads those checks after a load: a party the gateway reports *slow* is asked
again, and one still slow is recorded as not verified, never as a violation.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from services.api import close_app
from services.api.parties.integrity import IntegrityUnavailableError
from sim.live import gateway
from sim.live.cli_ops import fetch_integrity
from sim.live.gateway import GatewaySettings, create_gateway_app

ROOT = Path(__file__).resolve().parents[1]
URLS = {"network": "http://127.0.0.1:9", "issuer": "http://127.0.0.1:9"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway_app(GatewaySettings(scenarios_dir=ROOT / "scenarios", runs_dir=tmp_path / "runs",
                                             data_dir=tmp_path / "data", party_urls=URLS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        yield c
    close_app(app)


@pytest.mark.parametrize(("path", "name"), [("/v1/ledger/invariants", "collect_invariants"),
                                            ("/v1/reconciliation", "collect_reconciliation")])
async def test_a_slow_check_does_not_stop_the_gateway(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
                                                      path: str, name: str) -> None:
    served = threading.Event()
    called_with: list[dict[str, str]] = []

    def check(urls: dict[str, str], timeout_s: float, **_signing: Any) -> dict[str, Any]:
        assert timeout_s == 30.0  # the gateway's check_timeout_s
        called_with.append(urls)
        return {"ok": served.wait(timeout=10.0), "parties": {}}

    monkeypatch.setattr(gateway, name, check)

    async def meanwhile() -> None:
        while not called_with:  # the check has started and is blocking its thread
            await asyncio.sleep(0.005)
        assert (await client.get("/healthz")).status_code == 200
        served.set()

    checked, _ = await asyncio.gather(client.get(path), meanwhile())
    assert checked.status_code == 200 and checked.json() == {"ok": True, "parties": {}}
    assert called_with == [URLS]


async def test_a_party_that_does_not_answer_is_a_503_naming_it(client: httpx.AsyncClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def down(_urls: dict[str, str], timeout_s: float, **_signing: Any) -> list[Any]:
        raise IntegrityUnavailableError("issuer (http://127.0.0.1:9) did not answer GET /v1/ledger/halves")

    monkeypatch.setattr(gateway, "collect_reconciliation", down)
    response = await client.get("/v1/reconciliation")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["field"] == "party_urls" and "issuer" in problem["errors"][0]["reason"]


async def _gateway_answering(answers: dict[str, list[tuple[int, Any]]]) -> tuple[web.AppRunner, str, list[str]]:
    """A stand-in gateway that answers each path's requests from its list, the last one for ever."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        queue = answers[request.path]
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.json_response(body, status=status)

    app = web.Application()
    for path in answers:
        app.router.add_get(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", asked


SLOW_EXCHANGE = {"ok": None, "parties": {
    "exchange": {"ok": None, "service": "exchange", "state": "slow", "violations": [], "detail": "no answer in 30 s"},
    "bank-1": {"ok": True, "service": "bank", "state": "checked", "violations": []}}}
CLEAN = {"ok": True, "parties": {"exchange": {"ok": True, "service": "exchange", "state": "checked", "violations": []}}}
SLOW_503 = {"type": "urn:ccsim:problem:slow", "title": "Service Unavailable", "status": 503, "detail": "slow",
            "errors": []}


async def test_ccsim_load_asks_a_slow_check_again_and_never_calls_slowness_a_violation() -> None:
    runner, url, asked = await _gateway_answering({
        "/v1/ledger/invariants": [(200, SLOW_EXCHANGE), (200, CLEAN)],  # slow once, then checked
        "/v1/reconciliation": [(503, SLOW_503), (503, SLOW_503), (503, SLOW_503)],  # slow every time
    })
    try:
        rows = await fetch_integrity(url)
    finally:
        await runner.cleanup()
    assert asked.count("/v1/ledger/invariants") == 2 and asked.count("/v1/reconciliation") == 3
    assert rows[0] == ("invariants:exchange", True, json.dumps(CLEAN["parties"]["exchange"]))
    assert rows[1][0] == "reconciliation" and not rows[1][1] and "HTTP 503" in rows[1][2]  # still not verified


async def test_a_party_still_slow_is_reported_as_not_verified_not_as_a_violation() -> None:
    runner, url, _ = await _gateway_answering({"/v1/ledger/invariants": [(200, SLOW_EXCHANGE)],
                                               "/v1/reconciliation": [(200, [])]})
    try:
        rows = await fetch_integrity(url)
    finally:
        await runner.cleanup()
    by_check = {check: (ok, detail) for check, ok, detail in rows}
    assert by_check["invariants:exchange"] == (False, "not verified (slow, no violation found): no answer in 30 s")
    assert by_check["invariants:bank-1"][0] is True
    assert by_check["reconciliation"] == (True, "[]")
