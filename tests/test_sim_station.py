"""A station's capacity, timeouts, retries, outages and time integrals, on a bare SimPy clock."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy

from sim.components.station import LegLog, Station
from sim.distributions import amount_sampler, time_sampler
from sim.scenario import ServiceSpec
from sim.scenario_load import parse_scenario


def _station(env: simpy.Environment, service_s: float = 1.0, **spec: Any) -> Station:
    return Station(env, "svc", ServiceSpec.model_validate(spec), sample=lambda: service_s,
                   sample_return=None, window_s=(0.0, 1e9))


def _caller(env: simpy.Environment, st: Station, legs: LegLog, results: list[tuple[float, bool]],
            at_s: float = 0.0) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(at_s)
    ok = yield from st.call(legs, True)
    results.append((env.now, ok))


def test_one_worker_serves_in_order_and_integrates_queue() -> None:
    env = simpy.Environment()
    st = _station(env, capacity=1)
    legs: LegLog = []
    done: list[tuple[float, bool]] = []
    for _ in range(3):
        env.process(_caller(env, st, legs, done))
    env.run()
    st.finish()
    assert done == [(1.0, True), (2.0, True), (3.0, True)]
    assert [w for _, w, _ in legs] == [0.0, 1.0, 2.0]
    assert st.queue_area_s == pytest.approx(3.0)  # 2 waiting for 1 s, then 1 for 1 s
    assert st.busy_area_s == pytest.approx(3.0)
    assert st.served == 3


def test_unlimited_capacity_never_queues() -> None:
    env = simpy.Environment()
    st = _station(env, capacity="unlimited")
    legs: LegLog = []
    done: list[tuple[float, bool]] = []
    for _ in range(5):
        env.process(_caller(env, st, legs, done))
    env.run()
    assert [t for t, _ in done] == [1.0] * 5
    assert st.queue_len == 0


def test_timeout_abandons_and_retries_with_backoff() -> None:
    env = simpy.Environment()
    st = _station(env, service_s=1.0, capacity=1, timeout_ms=500, retries=2, backoff_ms=100)
    legs: LegLog = []
    done: list[tuple[float, bool]] = []
    env.process(_caller(env, st, legs, done))
    env.run()
    # three attempts of 0.5 s, backoffs 0.1 s and 0.2 s; the abandoned work keeps the worker busy
    assert done == [(pytest.approx(1.8), False)]
    assert st.timeouts == 3
    assert st.failed_calls == 1
    assert legs[0][0] == "svc" and legs[0][2] == 0.0


def test_outage_holds_requests_until_it_ends() -> None:
    env = simpy.Environment()
    st = _station(env, service_s=1.0, capacity=2, outages=[{"start_s": 5, "duration_s": 10}])
    legs: LegLog = []
    done: list[tuple[float, bool]] = []
    env.process(_caller(env, st, legs, done, at_s=6.0))
    env.process(_caller(env, st, legs, done, at_s=20.0))
    env.run()
    assert done == [(16.0, True), (21.0, True)]
    assert st.up_at(7.0) == 15.0 and st.up_at(15.0) == 15.0


def test_outage_longer_than_timeout_fails_the_call() -> None:
    env = simpy.Environment()
    st = _station(env, capacity=1, timeout_ms=2000, outages=[{"start_s": 0, "duration_s": 60}])
    legs: LegLog = []
    done: list[tuple[float, bool]] = []
    env.process(_caller(env, st, legs, done, at_s=1.0))
    env.run()
    assert done == [(3.0, False)]


def test_samplers_have_the_configured_means() -> None:
    rng = np.random.default_rng(1)
    for spec in ({"dist": "exponential", "mean_ms": 50}, {"dist": "lognormal", "mean_ms": 50, "cv": 1.5},
                 {"dist": "gamma", "mean_ms": 50, "cv": 0.3}, {"dist": "uniform", "min_ms": 0, "max_ms": 100},
                 {"dist": "empirical", "values_ms": [20, 80]}, {"dist": "constant", "mean_ms": 50}):
        svc = parse_scenario({"services": {"bank": {"service_time": spec}}}).services.bank
        sample = time_sampler(svc.service_time, rng)
        values = np.asarray([sample() for _ in range(40_000)])
        assert values.mean() == pytest.approx(0.050, rel=0.05), spec
    cat = parse_scenario({"population": {"merchants": {"categories": {"x": {"amount": {
        "dist": "lognormal", "mean_kzt": 1000, "cv": 0.5, "min_kzt": 10, "max_kzt": 1e9}}}}}})
    amount = amount_sampler(cat.population.merchants.categories["x"].amount, rng)
    amounts = [amount() for _ in range(20_000)]
    assert all(isinstance(a, int) for a in amounts)
    assert np.mean(amounts) == pytest.approx(100_000, rel=0.03)  # tiyn
