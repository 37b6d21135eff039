"""The open-loop load generator against a tiny local aiohttp server that answers slowly.

The properties are orderings and lower bounds that a slow server guarantees, not speeds: the
generator sends on schedule even while earlier answers are outstanding, a request that had to wait
carries the wait in its latency (measured from its scheduled time), and late sends are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import simpy
from aiohttp import web

from sim.components.arrivals import Arrivals
from sim.components.authorization import Payment
from sim.components.population import build_population
from sim.live.cli_ops import load_command
from sim.live.load import FRONT_END_LEG, PlannedPayment, payment_body, plan_payments, run_open_loop
from sim.live.load_results import write_live_run
from sim.report import build_report, format_compare_table
from sim.rng import Streams
from sim.scenario_load import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["duration_s=600", "warmup_s=0", "population.cardholders.count=50", "population.merchants.count=10",
         "arrivals.rate_per_s=5"]
# What a network service answers (services.api.timing): its own hop, then the hops it waited on.
TIMING = ('network;dur=300;desc="POST /v1/payments", network.issuer;dur=43.5, '
          'network.issuer.exchange;desc="sell";dur=40')


@dataclass
class SlowServer:
    url: str
    delay_s: float
    hold_until: int = 0  # > 0: no answer leaves before this many requests have arrived
    arrivals_s: list[float] = field(default_factory=list)  # the server's loop clock at each request
    bodies: list[dict[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@pytest.fixture
async def slow_server() -> AsyncIterator[SlowServer]:
    server = SlowServer(url="", delay_s=0.5)
    loop = asyncio.get_running_loop()
    all_arrived = asyncio.Event()

    async def pay(request: web.Request) -> web.Response:
        server.arrivals_s.append(loop.time())
        body = await request.json()
        server.bodies.append(body)
        server.keys.append(request.headers.get("Idempotency-Key", ""))
        if len(server.bodies) >= server.hold_until:
            all_arrived.set()
        await all_arrived.wait()
        await asyncio.sleep(server.delay_s)
        declined = body["card_id"] == "c-declined"
        return web.json_response({"code": "51" if declined else "00", "approved": not declined, "stand_in": False},
                                 headers={"Server-Timing": TIMING})

    app = web.Application()
    app.router.add_post("/v1/payments", pay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1/payments"
    yield server
    await runner.cleanup()


def _plan(times_s: list[float]) -> list[PlannedPayment]:
    return [PlannedPayment(i, t, "c-declined" if i == 1 else f"c{i}", "m1", "acq-1", 100_00, "grocery",
                           "jit", "resident") for i, t in enumerate(times_s)]


async def test_sends_follow_the_schedule_while_answers_are_outstanding(slow_server: SlowServer) -> None:
    # The server answers nobody until all ten requests have arrived (then each after 0.5 s): an
    # open loop sends them all regardless, however slow the machine; a closed loop would wait for
    # the first answer, which never comes, until its requests time out.
    slow_server.hold_until = 10
    plan = _plan([0.02 * i for i in range(10)])
    outcome = await run_open_loop(slow_server.url, plan, max_in_flight=64, timeout_s=10.0)
    first_answer_s = min(s.done_s for s in outcome.samples)
    last_send_s = max(s.sent_s for s in outcome.samples)
    assert last_send_s < first_answer_s, "a send waited for an earlier answer: the loop is closed"
    assert len(slow_server.arrivals_s) == 10
    assert outcome.in_flight_peak == 10
    for s in outcome.samples:
        assert s.sent_s >= s.payment.t_s  # never early
        assert s.latency_ms >= 500.0  # the server's delay, from the scheduled time
    assert [s.approved for s in outcome.samples] == [i != 1 for i in range(10)]
    assert outcome.samples[1].reason == "51"
    for s in outcome.samples:
        # Each service's own time: its hop less the hops it waited on; the acquirer leg is the rest
        # of the answer time the POS measured, so the legs add up to no more than the latency.
        legs = dict(s.legs_ms)
        front = legs.pop(FRONT_END_LEG)
        assert legs == pytest.approx({"network": 300 - 43.5, "issuer": 43.5 - 40, "exchange": 40.0})
        assert front >= 500.0 - 300.0  # the server slept 0.5 s but reported 300 ms as its own
        assert sum(s.legs_ms.values()) <= (s.done_s - s.sent_s) * 1000.0 <= s.latency_ms
    assert slow_server.keys == [b["id"] for b in slow_server.bodies]  # the idempotency key is the auth id


async def test_waiting_for_a_connection_counts_in_latency_and_as_a_late_send(
    slow_server: SlowServer, tmp_path: Path,
) -> None:
    slow_server.delay_s = 0.2
    plan = _plan([0.0, 0.01, 0.02, 0.03])
    outcome = await run_open_loop(slow_server.url, plan, max_in_flight=1)
    samples = outcome.samples
    for k, s in enumerate(samples):
        # The k-th payment waited for k answers of >= 0.2 s each before it could be sent; its
        # latency counts from its scheduled time, so it includes that wait.
        assert s.sent_s * 1000.0 >= 200.0 * k - 1.0
        assert s.latency_ms >= 200.0 * (k + 1) - s.payment.t_s * 1000.0
        assert s.latency_ms == pytest.approx((s.done_s - s.payment.t_s) * 1000.0)
    scenario, text = load_scenario(ROOT / "scenarios" / "jit.yaml", SMALL)
    summary = write_live_run(tmp_path, scenario, text, 1, outcome, target=slow_server.url,
                             from_s=0.0, duration_s=1.0, integrity_rows=[])
    # A send is late when it left more than the threshold after its scheduled time. The three that
    # waited for a connection are late on any machine (each lag >= 190 ms); the first may be late
    # too on a busy one, so the count is the sends observed late, not a constant.
    late = [k for k, s in enumerate(samples) if s.send_lag_ms > outcome.late_threshold_ms]
    assert {1, 2, 3} <= set(late)
    assert summary["load"]["late_sends"] == len(late)
    assert summary["load"]["scheduled"] == summary["load"]["answered"] == 4
    assert summary["auth_latency_ms"]["max"] >= 800.0 - 30.0


async def test_unanswered_requests_are_counted_not_dropped(slow_server: SlowServer, tmp_path: Path) -> None:
    plan = _plan([0.0, 0.01])
    outcome = await run_open_loop(slow_server.url, plan, timeout_s=0.1)
    assert [s.reason for s in outcome.samples] == ["timeout", "timeout"]
    assert all(s.latency_ms >= 100.0 for s in outcome.samples)
    closed = await run_open_loop("http://127.0.0.1:9/v1/payments", _plan([0.0]))
    assert closed.samples[0].reason == "connect_error"


def test_the_plan_is_the_simulations_arrivals() -> None:
    scenario, _ = load_scenario(ROOT / "scenarios" / "jit.yaml", SMALL)
    env = simpy.Environment()
    streams = Streams(7)
    seen: list[Payment] = []
    Arrivals(env, scenario, build_population(scenario, streams), streams, seen.append).start()
    env.run(until=scenario.duration_s)
    plan = plan_payments(scenario, 7, duration_s=scenario.duration_s)
    assert len(plan) == len(seen) > 20
    for planned, p in zip(plan, seen, strict=True):
        assert planned.t_s == p.t_arrival_s
        assert (planned.card_id, planned.merchant_id, planned.acquirer_id, planned.amount_kzt_minor) == (
            p.req.card_id, p.req.merchant_id, p.req.acquirer_id, p.req.amount_kzt)
    window = plan_payments(scenario, 7, duration_s=100.0, from_s=200.0)
    assert [w.payment_id for w in window] == [p.payment_id for p in plan if 200.0 <= p.t_s < 300.0]
    assert all(0.0 <= w.t_s < 100.0 for w in window)


def test_request_body() -> None:
    p = _plan([0.0])[0]
    assert payment_body(p) == {"id": "a0", "card_id": "c0", "merchant_id": "m1", "amount": "100.00",
                               "category": "grocery"}


async def test_a_live_run_directory_builds_the_same_report(slow_server: SlowServer, tmp_path: Path) -> None:
    slow_server.delay_s = 0.01
    scenario, text = load_scenario(ROOT / "scenarios" / "jit.yaml", SMALL)
    plan = plan_payments(scenario, 1, duration_s=2.0)
    outcome = await run_open_loop(slow_server.url, plan)
    rows = [("invariants:issuer", True, "[]"), ("reconciliation", True, "[]")]
    summary = write_live_run(tmp_path, scenario, text, 1, outcome, target=slow_server.url, from_s=0.0,
                             duration_s=2.0, integrity_rows=rows)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["mode"] == "live" and on_disk["ledger"]["invariants_ok"] is True
    assert on_disk["payments"]["attempted"] == len(plan)
    assert set(on_disk["legs"]) == {"acquirer", "network", "issuer", "exchange"}
    assert on_disk["load"]["timed_payments"] == len(plan)
    for name, leg in on_disk["legs"].items():  # per-leg percentiles of the per-payment times
        values = np.asarray([s.legs_ms[name] for s in outcome.samples])
        assert [leg[f"p{q}_service_ms"] for q in (50, 95, 99)] == pytest.approx(
            list(np.percentile(values, [50, 95, 99])))
        assert leg["served"] == len(plan) and leg["mean_wait_ms"] is None
    conn = sqlite3.connect(tmp_path / "results.db")
    stored = {(pid, name): ms for pid, name, ms in conn.execute("SELECT payment_id, service, service_ms FROM legs")}
    conn.close()
    assert stored == {(s.payment.payment_id, name): ms for s in outcome.samples for name, ms in s.legs_ms.items()}
    assert "tax" in on_disk["unmeasured"]
    latencies = np.asarray([s.latency_ms for s in outcome.samples])
    assert on_disk["auth_latency_ms"]["p99"] == pytest.approx(float(np.percentile(latencies, 99.0)))
    report = build_report(tmp_path).read_text(encoding="utf-8")
    assert "jit" in report
    figure = json.loads(re.search(r'data-target="chart-legs-live">(.*?)</script>', report, re.S).group(1))
    p99 = next(trace for trace in figure["data"] if trace["name"] == "p99")
    assert p99["x"] == ["acquirer", "network", "issuer", "exchange", "end to end"]  # the chain's order
    assert p99["y"][-1] == pytest.approx(on_disk["auth_latency_ms"]["p99"])
    # ccsim compare with a live run adds each stage's time per payment (nearest-rank percentiles).
    table = format_compare_table([tmp_path, tmp_path])
    for name in ("acquirer", "network", "issuer", "exchange"):
        values = sorted(s.legs_ms[name] for s in outcome.samples)
        line = next(row for row in table.splitlines() if row.startswith(f"{name}: time per payment, p50"))
        assert f"{values[math.ceil(0.5 * len(values)) - 1]:,.1f} ms" in line and line.endswith("+0.0 ms")


def test_bad_load_arguments_exit_2(tmp_path: Path) -> None:
    base = {"scenario": ROOT / "scenarios" / "jit.yaml", "target": "http://127.0.0.1:9", "path": "/v1/payments",
            "duration_s": 1.0, "from_s": 0.0, "rate_scale": None, "seed": 1, "overrides": [], "out": tmp_path,
            "max_in_flight": 8, "timeout_s": 1.0, "late_ms": 10.0, "gateway": None, "no_report": True}
    for change in ({"rate_scale": 0.0}, {"duration_s": -1.0}, {"target": "ftp://x"}, {"overrides": ["duration_s=-1"]},
                   {"scenario": tmp_path / "missing.yaml"}):
        assert load_command(argparse.Namespace(**{**base, **change})) == 2, change
    assert not (tmp_path / "summary.json").exists()
