"""Per grid point: mean and 95 % CI of every metric, the SLO verdicts, the cost; the cheapest point.

**Meeting an SLO.** A point meets ``metric < threshold`` (or ``<=``) when the *upper* bound of the
metric's 95 % confidence interval does, and ``>``/``>=`` when the *lower* bound does: the verdict
holds with 95 % confidence rather than on average. With a single replication the mean stands in
for the bound. A point with a failed replication, with no successful one, or whose books did not
balance in some replication meets nothing.

**The cheapest configuration** is, among the points meeting every SLO of the scenario, the one with
the smallest cost (:func:`sim.sweep.grid.capacity_cost`: total workers of the services with finite
capacity), ties going to the earlier grid point. When the grid also varies things that are not
capacities (``arrivals.rate_scale``: the load), the cheapest point is found separately for each
combination of those, because "enough workers for 1× load" and "for 3× load" are different answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sim.scenario import Slo
from sim.sweep.grid import GridPoint, SweepPlan, capacity_cost
from sim.sweep.metrics import is_kzt
from sim.sweep.stats import mean_ci
from sim.sweep.table import kzt_float

__all__ = ["Cheapest", "aggregate", "cheapest", "condition_keys", "cost_keys", "point_columns", "slo_bound"]


def slo_bound(slo: Slo, mean: float, low: float, high: float) -> float:
    """The figure an SLO verdict is judged on: the CI bound on the unfavourable side."""
    bound = high if slo.op in ("<", "<=") else low
    return mean if math.isnan(bound) else bound


def point_columns(plan: SweepPlan, metrics: Sequence[str]) -> list[str]:
    slo_cols = [f"slo: {slo.text}" for slo in plan.scenarios[0].parsed_slos()]
    stat_cols = [f"{m}.{s}" for m in metrics for s in ("mean", "ci95_low", "ci95_high")]
    return [*plan.keys, "point", "label", "n_ok", "n_failed", "cost_workers", "meets_slos", *slo_cols, *stat_cols]


def _value(row: dict[str, Any], metric: str) -> float | None:
    value = row.get(metric)
    if is_kzt(metric):
        return kzt_float(value)
    return None if value is None else float(value)


def aggregate(plan: SweepPlan, rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per grid point of ``plan`` from its replication ``rows``."""
    by_point: dict[str, list[dict[str, Any]]] = {p.point_id: [] for p in plan.points}
    for row in rows:
        if row["point"] in by_point:
            by_point[row["point"]].append(row)
    out = []
    for point in plan.points:
        scenario = plan.scenarios[point.index]
        reps = by_point[point.point_id]
        ok = [r for r in reps if r["status"] == "ok"]
        n_failed = len(reps) - len(ok)
        agg: dict[str, Any] = {**dict(point.values), "point": point.point_id, "label": point.label,
                               "n_ok": len(ok), "n_failed": n_failed, "cost_workers": capacity_cost(scenario)}
        for metric in metrics:
            ci = mean_ci([_value(r, metric) for r in ok])
            agg[f"{metric}.mean"], agg[f"{metric}.ci95_low"], agg[f"{metric}.ci95_high"] = ci.mean, ci.low, ci.high
        verdicts = []
        for slo in scenario.parsed_slos():
            ci = mean_ci([_value(r, slo.metric) for r in ok])
            holds = ci.n > 0 and slo.holds(slo_bound(slo, ci.mean, ci.low, ci.high))
            agg[f"slo: {slo.text}"] = holds
            verdicts.append(holds)
        books_ok = all(_value(r, "ledger_ok") == 1.0 for r in ok)
        agg["meets_slos"] = bool(ok) and n_failed == 0 and books_ok and all(verdicts)
        out.append(agg)
    return out


def cost_keys(plan: SweepPlan) -> list[str]:
    return [k for k in plan.keys if k.endswith(".capacity")]


def condition_keys(plan: SweepPlan) -> list[str]:
    return [k for k in plan.keys if not k.endswith(".capacity")]


@dataclass(frozen=True, slots=True)
class Cheapest:
    condition: tuple[tuple[str, Any], ...]  # values of the non-capacity axes (empty if none)
    point: dict[str, Any] | None  # the aggregate row of the cheapest point meeting the SLOs, or None


def _condition(point: GridPoint, keys: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    values = dict(point.values)
    return tuple((k, values[k]) for k in keys)


def cheapest(plan: SweepPlan, points: Sequence[dict[str, Any]]) -> list[Cheapest]:
    """The cheapest point meeting every SLO, per combination of the non-capacity axes."""
    keys = condition_keys(plan)
    groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for point, agg in zip(plan.points, points, strict=True):
        groups.setdefault(_condition(point, keys), []).append(agg)
    out = []
    for condition, aggs in groups.items():
        meeting = [a for a in aggs if a["meets_slos"]]
        best = min(meeting, key=lambda a: a["cost_workers"]) if meeting else None  # min keeps the first tie
        out.append(Cheapest(condition, best))
    return out
