"""``ccsim capacity``: the smallest value of one integer parameter that meets a target, by bisection.

Each value tried is a one-point sweep (the same plan, seeds, executor and journal as ``ccsim
sweep``), so the replications of value ``v`` are exactly those an exhaustive sweep would run at
``v`` (common random numbers), and ``--resume`` skips values already evaluated.

**Criterion.** ``mean`` (default): the target holds for the mean over the replications.
``ci``: it holds for the 95 % confidence bound on the unfavourable side (the upper bound for
``<``), the stricter reading the sweep report uses for SLOs. A value with a failed replication
does not meet the target.

**Search.** Bisection assumes the target, once met, stays met for larger values (more capacity
never hurts). ``--high`` is evaluated first: if it fails there is no answer in range; then
``--low``; then the interval is halved until the first passing value is found, about
``log2(high − low)`` evaluations.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sim.runner import simulate_summary
from sim.scenario import Slo
from sim.scenario_load import ScenarioError
from sim.sweep.aggregate import aggregate, point_columns, slo_bound
from sim.sweep.execute import Executor, RunFn
from sim.sweep.grid import GridAxis, plan_sweep
from sim.sweep.metrics import metric_columns
from sim.sweep.run import run_sweep
from sim.sweep.table import REPLICATIONS_CSV, read_journal, row_key, write_table

__all__ = ["CapacityAnswer", "Evaluation", "capacity_search", "parse_target"]

Criterion = Literal["mean", "ci"]


def parse_target(text: str) -> Slo:
    """``"auth_latency_ms.p99<1500"`` → an SLO; a :class:`ScenarioError` naming the problem otherwise."""
    try:
        return Slo.parse(text)
    except ValueError as exc:
        raise ScenarioError(f"--target: {exc}") from None


@dataclass(frozen=True, slots=True)
class Evaluation:
    value: int
    n_ok: int
    n_failed: int
    mean: float
    ci95_low: float
    ci95_high: float
    judged: float  # the figure compared with the target (mean or CI bound)
    meets: bool


@dataclass
class CapacityAnswer:
    key: str
    target: Slo
    criterion: Criterion
    low: int
    high: int
    answer: int | None  # None: not met even at ``high``
    evaluations: list[Evaluation] = field(default_factory=list)  # in the order they were run
    files: list[Path] = field(default_factory=list)


def capacity_search(scenario_path: Path, key: str, low: int, high: int, target: Slo, *, replications: int,
                    seed: int, overrides: Sequence[str], out_dir: Path, executor: Executor,
                    criterion: Criterion = "mean", resume: bool = False, run: RunFn = simulate_summary,
                    quiet: bool = True) -> CapacityAnswer:
    if low > high:
        raise ScenarioError(f"--low {low} is above --high {high}")
    # Validate the whole range's ends before running anything (a bad key or value is exit 2).
    plan_sweep(scenario_path, [GridAxis(key, (low, high) if low != high else (low,))], replications, seed, overrides)
    answer = CapacityAnswer(key, target, criterion, low, high, None)
    seen: dict[int, Evaluation] = {}
    journal_exists = [resume]

    def evaluate(value: int) -> bool:
        if value in seen:
            return seen[value].meets
        plan = plan_sweep(scenario_path, [GridAxis(key, (value,))], replications, seed, overrides)
        # A bar per evaluation on a terminal; in logs one line per evaluated value is enough.
        outcome = run_sweep(plan, out_dir, executor, resume=journal_exists[0], run=run,
                            quiet=quiet or not sys.stderr.isatty(),
                            extra_metrics=[target.metric], label=f"{key}={value}")
        journal_exists[0] = True
        p = outcome.points[0]
        mean, lo, hi = p[f"{target.metric}.mean"], p[f"{target.metric}.ci95_low"], p[f"{target.metric}.ci95_high"]
        judged = mean if criterion == "mean" else slo_bound(target, mean, lo, hi)
        meets = p["n_ok"] > 0 and p["n_failed"] == 0 and target.holds(judged)
        seen[value] = Evaluation(value, p["n_ok"], p["n_failed"], mean, lo, hi, judged, meets)
        answer.evaluations.append(seen[value])
        if not quiet:
            print(f"ccsim capacity: {key}={value}: {target.metric} mean {mean:.6g}, judged {judged:.6g} → "
                  f"{'meets' if meets else 'misses'} the target", file=sys.stderr)
        return meets

    if evaluate(high):
        if evaluate(low):
            answer.answer = low
        else:
            lo, hi = low, high  # invariant: lo fails, hi meets
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if evaluate(mid):
                    hi = mid
                else:
                    lo = mid
            answer.answer = hi
    answer.files = _write_points(scenario_path, key, sorted(seen), replications=replications, seed=seed,
                                 overrides=overrides, out_dir=out_dir, target=target)
    return answer


def _write_points(scenario_path: Path, key: str, values: list[int], *, replications: int, seed: int,
                  overrides: Sequence[str], out_dir: Path, target: Slo) -> list[Path]:
    """``points.csv``/``.parquet`` over every value evaluated (each evaluation wrote only its own)."""
    plan = plan_sweep(scenario_path, [GridAxis(key, tuple(values))], replications, seed, overrides)
    metrics = metric_columns(plan.scenarios[0], [target.metric])
    _, rows = read_journal(out_dir / REPLICATIONS_CSV, plan.keys)
    wanted = {t.key for t in plan.tasks()}
    latest: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    for row in rows:
        k = row_key(row)
        if k in wanted:
            latest[k] = row
    points = aggregate(plan, list(latest.values()), metrics)
    return write_table(out_dir, "points", point_columns(plan, metrics), points)
