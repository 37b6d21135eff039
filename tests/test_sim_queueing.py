"""Queueing theory holds in the simulator: M/M/1 and M/M/c (Erlang C) mean waits, and Little's law.

One station (the acquirer, visited once per payment) has exponential service; every other station
is constant zero time with unlimited capacity, so the acquirer is an M/M/c queue fed by the open
Poisson arrivals. Each replication uses its own seed; the theoretical mean wait must fall inside
the 95 % confidence interval of the replication means. Time is scaled (service in milliseconds,
arrivals per second accordingly): queueing results are invariant under a change of time unit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.results import ResultsWriter
from sim.scenario import SERVICE_NAMES
from sim.scenario_load import parse_scenario
from sim.world import World

# Student t, two-sided 95 %, by degrees of freedom.
T95 = {4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 9: 2.262}

ZERO = {"capacity": "unlimited", "service_time": {"dist": "constant", "mean_ms": 0}}


def _scenario(rate_per_s: float, duration_s: float, services: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "queueing",
        "duration_s": duration_s,
        "warmup_s": duration_s * 0.1,
        "population": {
            # Pre-funded with plenty of tenge: the domain approves from the card, no sales needed.
            "cardholders": {"count": 400, "funding_modes": {"prefunded": 1.0},
                            "prefund_kzt": {"dist": "constant", "value_kzt": 100_000_000},
                            "kyc_tiers": {"premium": 1.0}},
            "merchants": {"count": 20},
        },
        "issuer": {"aml": {"velocity_max_payments": 100_000}},
        "arrivals": {"rate_per_s": rate_per_s},
        "services": {name: services.get(name, ZERO) for name in SERVICE_NAMES},
        "network": {"deadline_ms": 1e9},
        "settlement": {"settle_at_end": False},
        "clearing": {"capture_rate": 0.0, "reversal_rate": 0.0},
        "metrics": {"sample_s": duration_s},
    }


def _run(raw: dict[str, Any], seed: int, tmp_path: Path) -> World:
    scenario = parse_scenario(raw)
    writer = ResultsWriter(tmp_path / f"r{seed}.db")
    try:
        world = World(scenario, seed, writer)
        world.run()
    finally:
        writer.close()
    return world


def erlang_c_wait_s(lam: float, mu: float, c: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C)."""
    a = lam / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1.0 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


def _replicate(c: int, lam: float, mean_service_s: float, reps: int, tmp_path: Path) -> tuple[float, float]:
    services = {"acquirer": {"capacity": c,
                             "service_time": {"dist": "exponential", "mean_ms": mean_service_s * 1000.0}}}
    duration_s = 1_500 / lam  # about 1,500 payments per replication
    means = []
    for seed in range(1, reps + 1):
        world = _run(_scenario(lam, duration_s, services), seed, tmp_path)
        means.append(float(np.frombuffer(world.stations["acquirer"].waits_s, dtype=float).mean()))
    arr = np.asarray(means)
    half = T95[reps - 1] * arr.std(ddof=1) / math.sqrt(reps)
    return float(arr.mean()), half


def test_erlang_c_formula_reduces_to_mm1() -> None:
    lam, mu = 0.6, 1.0
    assert erlang_c_wait_s(lam, mu, 1) == pytest.approx((lam / mu) / (mu - lam))


@pytest.mark.slow
def test_mm1_mean_wait_matches_theory(tmp_path: Path) -> None:
    lam, mean_s = 60.0, 0.010  # rho = 0.6
    expected = erlang_c_wait_s(lam, 1.0 / mean_s, 1)
    mean, half = _replicate(1, lam, mean_s, reps=8, tmp_path=tmp_path)
    assert abs(mean - expected) <= half, f"M/M/1: simulated {mean:.5f} ± {half:.5f} s, theory {expected:.5f} s"
    assert half < 0.35 * expected  # the interval is tight enough to mean something


@pytest.mark.slow
def test_mmc_mean_wait_matches_erlang_c(tmp_path: Path) -> None:
    lam, mean_s, c = 210.0, 0.010, 3  # rho = 0.7
    expected = erlang_c_wait_s(lam, 1.0 / mean_s, c)
    mean, half = _replicate(c, lam, mean_s, reps=8, tmp_path=tmp_path)
    assert abs(mean - expected) <= half, f"M/M/{c}: simulated {mean:.5f} ± {half:.5f} s, theory {expected:.5f} s"
    assert half < 0.35 * expected


@pytest.mark.slow
def test_littles_law_per_service(tmp_path: Path) -> None:
    """L = λW for every station with a queue: the time-integrated queue length (measured by the
    station) equals the arrival rate times the mean wait (measured per payment)."""
    exp = {"dist": "exponential"}
    services = {
        "acquirer": {"capacity": 2, "service_time": {**exp, "mean_ms": 12}},
        "network": {"capacity": 1, "service_time": {**exp, "mean_ms": 6}},
        "issuer": {"capacity": 3, "service_time": {"dist": "lognormal", "mean_ms": 20, "cv": 1.2}},
        "exchange": {"capacity": 1, "service_time": {"dist": "uniform", "min_ms": 0, "max_ms": 2}},
        "custody": {"capacity": 1, "service_time": {"dist": "gamma", "mean_ms": 1, "cv": 0.5}},
        "bank": {"capacity": 1, "service_time": {"dist": "constant", "mean_ms": 1}},
    }
    world = _run(_scenario(120.0, 40.0, services), 7, tmp_path)
    span = world.scenario.measure_until_s - world.scenario.measure_from_s
    checked = 0
    for name, st in world.stations.items():
        waits = np.frombuffer(st.waits_s, dtype=float)
        if waits.size == 0:
            continue
        big_l = st.queue_area_s / span
        lam_w = st.queue_arrivals / span * float(waits.mean())
        assert big_l == pytest.approx(lam_w, rel=0.05, abs=1e-4), name
        checked += 1
    assert checked >= 3  # acquirer, network, issuer at least (the JIT-only legs see no traffic)
