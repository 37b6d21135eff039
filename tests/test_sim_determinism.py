"""Determinism: one seed, one run; named streams keep components independent of each other."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from sim.cli import main
from sim.components.arrivals import Arrivals, ArrivalSchedule
from sim.components.authorization import Payment
from sim.components.population import build_population
from sim.rng import Streams, stable_hash
from sim.scenario_load import parse_scenario

SMALL = """\
name: small
duration_s: 1200
warmup_s: 120
population:
  cardholders: {count: 300, funding_modes: {jit: 0.7, prefunded: 0.2, stablecoin: 0.1}}
  merchants: {count: 40}
arrivals: {rate_per_s: 0.8}
slos: ["auth_latency_ms.p99 < 5000"]
"""

WALL_CLOCK_KEYS = {"wall_s", "started_at", "payments_per_wall_s"}


def _run(tmp_path: Path, name: str, seed: int) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SMALL, encoding="utf-8")
    out = tmp_path / name
    assert main(["run", str(scenario), "--seed", str(seed), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute("SELECT * FROM payments ORDER BY payment_id").fetchall()
    return {k: v for k, v in summary.items() if k not in WALL_CLOCK_KEYS}, rows


def test_same_seed_same_results_different_seed_different(tmp_path: Path) -> None:
    a, rows_a = _run(tmp_path, "a", 11)
    b, rows_b = _run(tmp_path, "b", 11)
    c, rows_c = _run(tmp_path, "c", 12)
    assert a == b
    assert rows_a == rows_b
    assert a["payments"]["attempted"] > 500
    assert a != c
    assert rows_a != rows_c


def test_stream_names_hash_stably() -> None:
    # The value is part of the file format of every recorded run: it must never change.
    assert stable_hash("arrivals") == stable_hash("arrivals")
    assert stable_hash("arrivals") != stable_hash("amounts.food")
    a = Streams(5)["latency.issuer"].random(3)
    b = Streams(5)["latency.issuer"].random(3)
    assert np.array_equal(a, b)
    # Creating other streams first does not change a stream's draws.
    s = Streams(5)
    s["market.BTC"].random(10)
    assert np.array_equal(s["latency.issuer"].random(3), a)


def _arrivals(raw: dict[str, Any], seed: int) -> list[tuple[float, str, int]]:
    scenario = parse_scenario(raw)
    streams = Streams(seed)
    population = build_population(scenario, streams)
    env = simpy.Environment()
    seen: list[tuple[float, str, int]] = []

    def record(p: Payment) -> None:
        seen.append((p.t_arrival_s, p.req.card_id, p.req.amount_kzt))

    Arrivals(env, scenario, population, streams, record).start()
    env.run(until=scenario.duration_s)
    return seen


def test_adding_a_merchant_category_keeps_cardholder_arrivals() -> None:
    base = {"duration_s": 3600, "warmup_s": 0,
            "population": {"cardholders": {"count": 200}, "merchants": {"count": 30}},
            "arrivals": {"rate_per_s": 0.5}}
    more = json.loads(json.dumps(base))
    more["population"]["merchants"]["categories"] = {
        "food": {"weight": 5}, "retail": {"weight": 3}, "transport": {"weight": 2}, "hotel": {"weight": 0.5},
        "pharmacy": {"weight": 4, "amount": {"dist": "uniform", "min_kzt": 500, "max_kzt": 9000}},
    }
    before, after = _arrivals(base, 3), _arrivals(more, 3)
    assert len(before) > 1000
    assert [(t, card) for t, card, _ in before] == [(t, card) for t, card, _ in after]
    assert [amt for *_, amt in before] != [amt for *_, amt in after]  # the category mix did change


def test_arrival_rate_follows_profile_and_bursts() -> None:
    spec = parse_scenario({"arrivals": {"rate_per_s": 2.0, "hourly_profile": [0.0] * 12 + [1.0] * 12,
                                        "bursts": [{"start_s": 50_400, "duration_s": 3_600, "multiplier": 3}]}
                           }).arrivals
    schedule = ArrivalSchedule(spec, Streams(1)["arrivals"])
    times = []
    t = 0.0
    while True:
        t = schedule.next_after(t, 86_400.0)
        if t == float("inf"):
            break
        times.append(t)
    arr = np.asarray(times)
    assert arr.min() >= 43_200.0  # nothing while the profile is zero
    in_burst = ((arr >= 50_400) & (arr < 54_000)).sum()
    normal_hour = ((arr >= 46_800) & (arr < 50_400)).sum()
    assert abs(normal_hour - 7_200) < 4 * 7_200**0.5
    assert abs(in_burst - 21_600) < 4 * 21_600**0.5
