"""A quote's time-to-live is real in ``ccsim run``: the exchange prices a JIT sale when it starts on
the order and executes it when its leg ends, so a TTL shorter than the exchange leg declines the
payment with 05 (do not honour), as the scenario reference says (issue 17's defect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.runner import EXIT_INTEGRITY, simulate_summary
from sim.scenario_load import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

_SHORT = ["duration_s=1200", "warmup_s=60", "arrivals.start_hour=12",
          "population.cardholders.count=300", "population.merchants.count=40",
          "population.cardholders.funding_modes={jit: 1.0}",
          "services.exchange={capacity: unlimited, service_time: {dist: constant, mean_ms: 1500}}",
          "network.deadline_ms=10000"]


def _run(overrides: list[str]) -> dict[str, Any]:
    scenario, text = load_scenario(SCENARIOS / "jit.yaml", [*_SHORT, *overrides])
    result = simulate_summary(scenario, text, 5)
    assert result.exit_code != EXIT_INTEGRITY, result.problems
    return result.summary


def test_a_ttl_shorter_than_the_exchange_leg_declines_05() -> None:
    short = _run(["issuer.quote_ttl_s=0.01"])
    long = _run(["issuer.quote_ttl_s=5"])
    declined_05 = short["payments"]["declined"].get("05", 0)
    # Every JIT payment that needed a sale ran into its expired quote: no sale was made at all.
    assert declined_05 > 50, short["payments"]["declined"]
    assert short["tax"]["sales"] == 0
    assert long["payments"]["declined"].get("05", 0) < declined_05
    assert long["tax"]["sales"] > 50
    assert long["payments"]["approved"] > short["payments"]["approved"]
