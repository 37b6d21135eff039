"""Every figure of a run's outcome in ``summary.json`` can be named in an SLO.

The SLO list (:func:`sim.scenario.slo_metric_paths`) is written by hand, so a figure added to the
summary could silently stay out of it: a scenario author naming it would get "unknown metric". This
runs a short exchange outage (so stand-ins, orphaned sales and declines all occur) and walks every
numeric leaf of its summary.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest

from sim.runner import simulate_summary
from sim.scenario import slo_metric_paths
from sim.scenario_load import ScenarioError, load_scenario
from sim.summary import flatten, lookup

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
OUTAGE = SCENARIOS / "exchange_outage.yaml"
DIRECT = SCENARIOS / "cryptocity_direct.yaml"

# Figures that describe the run's set-up or its evidence, not its outcome: no SLO names them.
NOT_OUTCOMES = frozenset({
    "seed", "warmup_s", "cooldown_s", "deadline_ms", "sim_duration_s", "sim_end_s", "wall_s",
    "payments_per_wall_s", "throughput.bucket_s", "timeline.start_hour", "timeline.slippage_cap_bps",
})
# evidence: the run's digests; per-segment breakdowns are keyed by the scenario's own merchant
# categories (their totals are SLO figures).
NOT_OUTCOME_PREFIXES = ("evidence.", "rails.merchants.realized_gain_by_segment_kzt.",
                        "rails.merchants.cit_estimate_by_segment_kzt.")
NOT_OUTCOME_SUFFIXES = (".capacity",)


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            Decimal(value)
        except InvalidOperation:
            return False
        return True
    return False


@pytest.fixture(scope="module")
def outage_summary() -> dict[str, Any]:
    scenario, text = load_scenario(OUTAGE, ["duration_s=5400", "warmup_s=300", "cooldown_s=300",
                                            "services.exchange.outages=[{start_s: 1800, duration_s: 1200}]"])
    return simulate_summary(scenario, text, seed=7).summary


@pytest.fixture(scope="module")
def direct_summary() -> dict[str, Any]:
    scenario, text = load_scenario(DIRECT, ["duration_s=7200", "warmup_s=600", "population.cardholders.count=1500",
                                            "population.merchants.count=150"])
    return simulate_summary(scenario, text, seed=3).summary


def _outcomes(summary: dict[str, Any]) -> set[str]:
    leaves = {path for path, value in flatten(summary).items() if _numeric(value) and not path.startswith("slo.")}
    return {path for path in leaves if path not in NOT_OUTCOMES
            and not path.startswith(NOT_OUTCOME_PREFIXES) and not path.endswith(NOT_OUTCOME_SUFFIXES)}


def test_every_outcome_figure_can_be_named_in_an_slo(outage_summary: dict[str, Any],
                                                     direct_summary: dict[str, Any]) -> None:
    outage, direct = _outcomes(outage_summary), _outcomes(direct_summary)
    assert {"payments.orphaned_sales_unbacked", "payments.declined.91"} <= outage  # the runs exercised them
    assert {"rails.direct_crypto.merchant_cost_per_10000_kzt.total", "rails.merchants.worst_window_1h_kzt"} <= direct
    assert sorted((outage | direct) - slo_metric_paths()) == []


def test_a_rail_the_run_did_not_use_reads_as_zero(outage_summary: dict[str, Any]) -> None:
    assert "direct_crypto" not in outage_summary.get("rails", {})
    assert lookup(outage_summary, "rails.direct_crypto.payments") == 0.0


def test_a_decline_reason_the_run_never_gave_reads_as_zero(outage_summary: dict[str, Any]) -> None:
    assert "62" not in outage_summary["payments"]["declined"]
    assert lookup(outage_summary, "payments.declined.62") == 0.0
    assert lookup(outage_summary, "payments.declined.91") == outage_summary["payments"]["declined"]["91"] > 0


def test_a_new_summary_figure_is_accepted_in_a_scenario_slo() -> None:
    scenario, _ = load_scenario(OUTAGE, ["slos=[\"payments.orphaned_sales_unbacked <= 40\"]"])
    assert [s.metric for s in scenario.parsed_slos()] == ["payments.orphaned_sales_unbacked"]
    with pytest.raises(ScenarioError, match=re.escape("unknown metric 'payments.orphaned'")):
        load_scenario(OUTAGE, ["slos=[\"payments.orphaned <= 40\"]"])
