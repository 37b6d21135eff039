"""``run_sweep``: a plan's replications through an executor into the sweep table, and the points.

The order of work: read the journal when resuming and skip every replication recorded ``ok`` for
the same grid point, replication, seed and scenario hash; run the rest (rows are journaled as they
finish); rewrite the tables sorted; aggregate per grid point. Interrupting (Ctrl-C) keeps the
journal of everything finished, and ``--resume`` carries on from there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from services.errors import CcsimError
from sim.runner import ccsim_version, simulate_summary
from sim.sweep.aggregate import aggregate, point_columns
from sim.sweep.execute import Executor, RunFn
from sim.sweep.grid import SweepPlan
from sim.sweep.metrics import metric_columns
from sim.sweep.progress import sweep_progress
from sim.sweep.table import FIXED_COLUMNS, REPLICATIONS_CSV, Journal, read_journal, row_key, write_table

__all__ = ["MANIFEST", "SweepError", "SweepOutcome", "run_sweep"]

MANIFEST: Final = "sweep.json"


class SweepError(CcsimError):
    """A sweep that cannot start (bad output directory); ``str()`` is the message for the user."""


@dataclass
class SweepOutcome:
    out_dir: Path
    plan: SweepPlan
    metrics: list[str]
    rows: list[dict[str, Any]]  # one per replication of the plan, in plan order
    points: list[dict[str, Any]]  # one per grid point, in plan order
    executed: int  # replications run now
    skipped: int  # replications found ok in the journal (--resume)
    executor: str
    files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def _manifest(plan: SweepPlan, executor: str, metrics: Sequence[str], started: str) -> dict[str, Any]:
    return {
        "scenario": str(plan.scenario_path), "scenario_name": plan.scenarios[0].name,
        "grid": {a.key: list(a.values) for a in plan.axes}, "replications": plan.replications,
        "seed": plan.seed, "overrides": list(plan.overrides), "executor": executor,
        "ccsim_version": ccsim_version(), "started_at": started, "metrics": list(metrics),
    }


def run_sweep(plan: SweepPlan, out_dir: Path, executor: Executor, *, resume: bool = False,
              run: RunFn = simulate_summary, quiet: bool = True, extra_metrics: Sequence[str] = (),
              label: str = "sweep") -> SweepOutcome:
    """Run every replication of ``plan`` not already recorded ok (with ``resume``) into ``out_dir``."""
    journal_path = out_dir / REPLICATIONS_CSV
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"{out_dir} exists and is not a directory")
    if journal_path.exists() and not resume:
        raise SweepError(f"{out_dir} already holds a sweep ({REPLICATIONS_CSV}); pass --resume to continue it "
                         "or choose another --out")
    metrics = metric_columns(plan.scenarios[0], extra_metrics)
    header, old_rows = read_journal(journal_path, plan.keys) if resume else ([], [])
    latest = {row_key(r): r for r in old_rows}  # the last row of a replication wins
    tasks = plan.tasks()
    todo = [t for t in tasks if latest.get(t.key, {}).get("status") != "ok"]
    base = [*plan.keys, *FIXED_COLUMNS, *metrics]
    columns = base + [c for c in header if c not in base]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = _manifest(plan, executor.description, metrics, started)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    journal = Journal(journal_path, columns, list(latest.values()))
    try:
        with sweep_progress(len(todo), quiet=quiet, label=label) as tick:
            for row in executor.run(todo, metrics, run):
                journal.append(row)
                latest[row_key(row)] = row
                tick(row["status"] == "ok")
    finally:
        journal.close()
    plan_keys = [t.key for t in tasks]
    current = [latest[k] for k in plan_keys if k in latest]
    in_plan = set(plan_keys)
    others = [r for k, r in latest.items() if k not in in_plan]
    files = write_table(out_dir, "replications", columns, current + others)
    points = aggregate(plan, current, metrics)
    files += write_table(out_dir, "points", point_columns(plan, metrics), points)
    finished = {**manifest, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "executed": len(todo), "skipped": len(tasks) - len(todo),
                "failed": sum(r["status"] != "ok" for r in current)}
    (out_dir / MANIFEST).write_text(json.dumps(finished, indent=2) + "\n", encoding="utf-8")
    return SweepOutcome(out_dir, plan, metrics, current, points, len(todo), len(tasks) - len(todo),
                        executor.description, files)
