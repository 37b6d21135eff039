"""``ccsim load``'s direct payments (sim/live/load_direct.py): the payments that go direct are the
simulation's, and each is quoted, accepted or declined at the exchange, falling back to the card as
the scenario's policy says, and reported apart from the card payments."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.flows.direct import FallbackPolicy
from sim import cli
from sim.live.load import PlannedPayment, plan_payments, run_open_loop
from sim.live.load_direct import DirectTarget
from sim.live.load_results import build_live_summary
from sim.scenario_load import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["duration_s=900", "warmup_s=0", "arrivals.start_hour=12", "population.cardholders.count=400",
         "population.merchants.count=60", "arrivals.rate_per_s=2"]


def test_the_direct_payments_are_the_simulations(tmp_path: Path) -> None:
    """The same payments go direct, with the same asset choice, in ccsim load as in ccsim run."""
    scenario_path = ROOT / "scenarios" / "cryptocity_direct.yaml"
    out = tmp_path / "run"
    args = ["run", str(scenario_path), "--out", str(out), "--quiet", "--seed", "5"]
    for override in SHORT:
        args += ["--set", override]
    assert cli.main(args) == 0
    with sqlite3.connect(out / "results.db") as db:
        simulated = dict(db.execute("SELECT payment_id, stablecoin FROM direct_payments").fetchall())
    scenario, _ = load_scenario(scenario_path, SHORT)
    plan = plan_payments(scenario, 5, scenario.duration_s)
    stable = scenario.exchange.stablecoin_asset
    planned = {p.payment_id: int(p.asset_priority == (stable,)) for p in plan if p.rail == "direct"}
    assert len(planned) > 20 and any(planned.values())
    assert planned == simulated
    assert all(p.merchant_id.startswith("m") and p.holder_id for p in plan if p.rail == "direct")
    none = plan_payments(scenario, 5, scenario.duration_s, direct_share=0.0)
    assert [p.payment_id for p in none] == [p.payment_id for p in plan]  # the arrivals do not move
    assert all(p.rail == "card" for p in none)


@dataclass
class FakeParties:
    """An exchange and a network: invoice ``d<n>`` is paid, declined or unavailable by ``answers``."""

    url: str = ""
    answers: dict[str, int] = field(default_factory=dict)  # invoice -> the quote's status
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (path, key, body)


@pytest.fixture
async def parties() -> AsyncIterator[FakeParties]:
    fake = FakeParties(answers={"d0": 201, "d1": 422, "d2": 503})

    async def quote(request: web.Request) -> web.Response:
        body = await request.json()
        fake.calls.append((request.path, request.headers["Idempotency-Key"], body))
        status = fake.answers[body["invoice_id"]]
        if status == 422:
            return web.json_response({"errors": [{"field": "asset_priority", "reason": "insufficient_balance"}]},
                                     status=422)
        return web.json_response({"invoice_id": body["invoice_id"]}, status=status)

    async def accept(request: web.Request) -> web.Response:
        body = await request.json()
        fake.calls.append((request.path, request.headers["Idempotency-Key"], body))
        return web.json_response({"invoice_id": body["invoice_id"]}, status=201)

    async def card(request: web.Request) -> web.Response:
        body = await request.json()
        fake.calls.append((request.path, request.headers["Idempotency-Key"], body))
        return web.json_response({"id": body["id"], "code": "00", "approved": True, "stand_in": False})

    app = web.Application()
    app.router.add_post("/v1/direct/quotes", quote)
    app.router.add_post("/v1/direct/payments", accept)
    app.router.add_post("/v1/payments", card)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


def _plan() -> list[PlannedPayment]:
    direct = [PlannedPayment(i, 0.01 * i, f"c{i}", "z1", "acq-1", 5_000_00, "cafe", "jit", "resident", "direct",
                             f"h{i}", ("BTC",)) for i in range(3)]
    return [*direct, PlannedPayment(3, 0.03, "c3", "m2", "acq-2", 2_000_00, "hotel", "jit", "resident")]


@pytest.mark.parametrize("policy", [FallbackPolicy.FAIL, FallbackPolicy.CARD])
async def test_direct_payments_are_quoted_accepted_or_fall_back_and_reported_apart(
    parties: FakeParties, policy: FallbackPolicy,
) -> None:
    target = DirectTarget(parties.url, parties.url + "/v1/payments", policy)
    outcome = await run_open_loop(parties.url + "/v1/payments", _plan(), direct=target)
    by_id = {s.payment.payment_id: s for s in outcome.samples}
    assert (by_id[0].direct, by_id[0].approved, by_id[0].reason) == ("paid", True, "00")
    assert (by_id[1].direct, by_id[1].approved, by_id[1].reason) == ("declined", False, "insufficient_balance")
    if policy is FallbackPolicy.CARD:  # the exchange is unavailable: the card pays, as the planned card payment
        assert (by_id[2].direct, by_id[2].approved, by_id[2].reason) == ("card", True, "00")
    else:
        assert (by_id[2].direct, by_id[2].reason) == ("declined", "exchange_unavailable")
    assert by_id[3].direct == "" and by_id[3].approved
    calls = {(path, key) for path, key, _ in parties.calls}
    assert ("/v1/direct/quotes", "q-d0") in calls and ("/v1/direct/payments", "p-d0") in calls
    assert ("/v1/direct/payments", "p-d1") not in calls  # a declined quote is not accepted
    card_ids = sorted(body["id"] for path, _, body in parties.calls if path == "/v1/payments")
    assert card_ids == (["a2", "a3"] if policy is FallbackPolicy.CARD else ["a3"])
    scenario, _ = load_scenario(ROOT / "scenarios" / "cryptocity_direct.yaml", [])
    summary = build_live_summary(scenario, "", 1, outcome, target=parties.url, from_s=0.0, duration_s=1.0,
                                 started_at="", integrity_rows=[])
    direct = summary["load"]["direct"]
    fell_back = int(policy is FallbackPolicy.CARD)
    assert direct == {**direct, "payments": 3, "card_payments": 1, "paid": 1, "fell_back_to_card": fell_back,
                      "card_approved": fell_back}
    assert sum(direct["declined"].values()) == 2 - fell_back
    assert summary["payments"]["approved"] == 2 + fell_back  # the direct and the card payments together
    assert summary["load"]["errors"] == {}  # a decline is an answer, not an error
