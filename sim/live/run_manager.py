"""Simulations started over HTTP: each in a worker thread, watched while it runs, kept when done.

The gateway (:mod:`sim.live.gateway`) hands a scenario name, overrides and a seed to
:meth:`RunManager.start`; the run goes ``running`` → ``done`` (or ``failed``) in a daemon thread.
A thread, not a process, because the live KPIs and the tax statements are read from the run's
:class:`~sim.world.World` (``simulate(..., on_world=...)``), and a run is CPU work that releases
the GIL often enough for the gateway to keep answering every second.

A limit on everything: at most ``max_running`` runs at once (beyond that :class:`TooManyRunsError`,
which the gateway answers with 429) and at most ``max_kept`` finished runs remembered (the oldest
are forgotten, their directories stay on disk).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from sim.report import ReportError, build_report
from sim.runner import simulate
from sim.scenario_load import ScenarioError, load_scenario
from sim.world import World

__all__ = ["KPI_INTERVAL_S", "RunManager", "RunState", "TooManyRunsError", "UnknownScenarioError", "override_args"]

KPI_INTERVAL_S: Final = 0.25  # recompute the live KPIs at most this often (wall time)
_HISTORY_MAX: Final = 400  # KPI points kept per run for the dashboard's chart


class TooManyRunsError(Exception):
    """``max_running`` runs are already running; try again when one finishes."""


class UnknownScenarioError(Exception):
    """No scenario file of that name in the scenarios directory."""


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``{"arrivals.rate_scale": 2}`` → ``["arrivals.rate_scale=2"]``, each value as flow YAML.

    The loader parses an override's value as YAML; dumping it with PyYAML (not ``json.dumps``)
    keeps every value's type on the way back (``1e-05`` would otherwise come back a string).
    """
    out = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
        text = text.removesuffix("...").strip()
        out.append(f"{key}={text}")
    return out


@dataclass
class RunState:
    """Everything the runs API shows about one run. Mutated only under the manager's lock."""

    run_id: str
    scenario: str
    overrides: dict[str, Any]
    seed: int
    run_dir: Path
    duration_s: float
    warmup_s: float
    deadline_ms: float
    status: str = "running"  # running | done | failed
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    wall_started: float = field(default_factory=time.perf_counter)
    wall_s: float = 0.0
    virtual_s: float = 0.0
    payments: int = 0
    kpis: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)
    error: str = ""
    report_ready: bool = False
    tax: Any = None  # the run's TaxBook (services.tax), kept for the tax statements
    tax_summary: Any = None  # its AuthoritySummary at the scenario's compliance rate
    tax_compliance: Any = None  # that compliance rate (a Decimal), for summaries of one year

    def view(self) -> dict[str, Any]:
        """The JSON body of ``GET /v1/runs/{id}``."""
        fraction = min(1.0, self.virtual_s / self.duration_s) if self.duration_s > 0 else 1.0
        body: dict[str, Any] = {
            "id": self.run_id, "scenario": self.scenario, "overrides": self.overrides, "seed": self.seed,
            "status": self.status, "created_at": self.created_at, "wall_s": round(self.wall_s, 3),
            "progress": {"virtual_s": self.virtual_s, "duration_s": self.duration_s,
                         "fraction": 1.0 if self.status == "done" else fraction, "payments": self.payments},
            "kpis": self.kpis, "history": self.history,
            "report_url": f"/v1/runs/{self.run_id}/report" if self.report_ready else None,
            "exit_code": self.exit_code, "problems": self.problems[:20], "error": self.error,
        }
        if self.summary is not None:
            ledger = self.summary.get("ledger") or {}
            body["invariants"] = {"ok": bool(ledger.get("invariants_ok")),
                                  "violations": list(ledger.get("violations") or [])[:20]}
        else:
            body["invariants"] = None
        return body


def live_kpis(world: World, virtual_s: float, wall_s: float) -> dict[str, Any]:
    """The headline figures so far, read from the run's metrics (in the run's own thread)."""
    m = world.metrics
    sc = world.scenario
    latency = np.frombuffer(m.latency_ms, dtype=float)
    measured_span_s = max(0.0, min(virtual_s, sc.measure_until_s) - sc.measure_from_s)
    return {
        "attempted": m.attempted,
        "measured": m.measured,
        "approved": m.approved,
        "declined": int(sum(m.declined.values())),
        "approval_rate": m.approved / m.measured if m.measured else None,
        "p50_latency_ms": float(np.percentile(latency, 50.0)) if latency.size else None,
        "p99_latency_ms": float(np.percentile(latency, 99.0)) if latency.size else None,
        "approved_per_s": m.approved / measured_span_s if measured_span_s > 0 else None,
        "deadline_missed": m.deadline_missed,
        "stand_in": m.stand_in,
        "orphaned_sales": m.orphaned,
        "payments_per_wall_s": m.attempted / wall_s if wall_s > 0 else None,
    }


class RunManager:
    """Starts runs in threads and keeps their state for the runs API."""

    def __init__(self, scenarios_dir: Path, runs_dir: Path, *, max_running: int = 2, max_kept: int = 50) -> None:
        self.scenarios_dir = scenarios_dir
        self.runs_dir = runs_dir
        self.max_running = max_running
        self.max_kept = max_kept
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._ids = itertools.count(1)
        self._stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    # -- scenarios --------------------------------------------------------------------------
    def scenario_files(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.scenarios_dir.glob("*.yaml"))}

    def scenarios(self) -> list[dict[str, Any]]:
        """Name, description and the knobs' defaults of every scenario file."""
        out = []
        for name, path in self.scenario_files().items():
            try:
                scenario, _ = load_scenario(path)
            except ScenarioError as exc:
                out.append({"name": name, "valid": False, "error": str(exc)})
                continue
            exchange = scenario.services.get("exchange")
            outage = exchange.outages[0] if exchange.outages else None
            out.append({
                "name": name, "valid": True, "description": scenario.description,
                "duration_s": scenario.duration_s, "warmup_s": scenario.warmup_s,
                "rate_per_s": scenario.arrivals.rate_per_s, "rate_scale": scenario.arrivals.rate_scale,
                "deadline_ms": scenario.network.deadline_ms,
                "exchange_outage": ({"start_s": outage.start_s, "duration_s": outage.duration_s}
                                    if outage is not None else None),
            })
        return out

    # -- runs -------------------------------------------------------------------------------
    def start(self, scenario_name: str, overrides: dict[str, Any], seed: int) -> RunState:
        """Validate and start a run. Raises UnknownScenarioError, ScenarioError or TooManyRunsError."""
        path = self.scenario_files().get(scenario_name)
        if path is None:
            raise UnknownScenarioError(scenario_name)
        scenario, text = load_scenario(path, override_args(overrides))
        with self._lock:
            running = sum(1 for r in self._runs.values() if r.status == "running")
            if running >= self.max_running:
                raise TooManyRunsError(f"{running} runs are running (the limit is {self.max_running})")
            run_id = f"{self._stamp}-{next(self._ids)}"
            state = RunState(run_id=run_id, scenario=scenario_name, overrides=dict(overrides), seed=seed,
                             run_dir=self.runs_dir / run_id, duration_s=scenario.duration_s,
                             warmup_s=scenario.warmup_s, deadline_ms=scenario.network.deadline_ms)
            self._runs[run_id] = state
            self._forget_oldest()
        thread = threading.Thread(target=self._execute, args=(state, scenario, text), name=f"run-{run_id}",
                                  daemon=True)
        thread.start()
        return state

    def get(self, run_id: str) -> RunState | None:
        with self._lock:
            return self._runs.get(run_id)

    def views(self) -> list[dict[str, Any]]:
        """Every remembered run, newest first, without the KPI history."""
        with self._lock:
            states = list(self._runs.values())
            return [{k: v for k, v in s.view().items() if k != "history"} for s in reversed(states)]

    def view(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._runs.get(run_id)
            return state.view() if state is not None else None

    def latest_done(self) -> RunState | None:
        with self._lock:
            for state in reversed(self._runs.values()):
                if state.status == "done":
                    return state
        return None

    def running_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._runs.values() if r.status == "running")

    def _forget_oldest(self) -> None:
        finished = [rid for rid, r in self._runs.items() if r.status != "running"]
        while len(self._runs) > self.max_kept and finished:
            self._runs.pop(finished.pop(0))

    # -- the worker thread -------------------------------------------------------------------
    def _execute(self, state: RunState, scenario: Any, text: str) -> None:
        holder: dict[str, World] = {}
        last_kpi = [0.0]

        def on_world(world: World) -> None:
            holder["world"] = world

        def progress(t_s: float, payments: int) -> None:
            now = time.perf_counter()
            wall_s = now - state.wall_started
            kpis = None
            if now - last_kpi[0] >= KPI_INTERVAL_S or t_s >= state.duration_s:
                last_kpi[0] = now
                kpis = live_kpis(holder["world"], t_s, wall_s)
            with self._lock:
                state.virtual_s, state.payments, state.wall_s = t_s, payments, wall_s
                if kpis is not None:
                    state.kpis = kpis
                    if len(state.history) < _HISTORY_MAX:
                        state.history.append({"virtual_s": t_s, "approval_rate": kpis["approval_rate"] or 0.0,
                                              "p99_latency_ms": kpis["p99_latency_ms"] or 0.0,
                                              "stand_in": float(kpis["stand_in"])})

        try:
            result = simulate(scenario, text, state.seed, state.run_dir, progress, on_world=on_world)
            world = holder["world"]
            final = live_kpis(world, world.env.now, time.perf_counter() - state.wall_started)
            try:
                build_report(state.run_dir)
                report_ok, report_error = True, ""
            except ReportError as exc:
                report_ok, report_error = False, f"the report could not be built: {exc}"
        except Exception as exc:  # a bug in a run must not take the gateway down: show it instead
            with self._lock:
                state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
                state.wall_s = time.perf_counter() - state.wall_started
            raise
        with self._lock:
            state.summary, state.exit_code, state.problems = result.summary, result.exit_code, result.problems
            state.kpis = final
            state.tax, state.tax_summary = world.chain.tax, world.chain.tax_summary()
            state.tax_compliance = world.chain.config.tax_compliance_rate
            state.report_ready, state.error = report_ok, report_error
            state.wall_s = time.perf_counter() - state.wall_started
            state.status = "done"
