"""Simulations started over HTTP: each in a worker thread, watched while it runs, kept when done.

The gateway (:mod:`sim.live.gateway`) hands a scenario name, overrides and a seed to
:meth:`RunManager.start`; the run goes ``running`` → ``done`` (or ``failed``) in a daemon thread.
A thread, not a process, because the live KPIs and the tax statements are read from the run's
:class:`~sim.world.World` (``simulate(..., on_world=...)``), and a run is CPU work that releases
the GIL often enough for the gateway to keep answering every second.

A limit on everything (:mod:`sim.live.run_limits`): a run longer, larger or with more payments
than :class:`~sim.live.run_limits.RunLimits` allow is refused before it starts; at most
``max_running`` runs at once (beyond that :class:`TooManyRunsError`, which the gateway answers with
429); a run is cancelled on request (:meth:`RunManager.cancel`) or when it has run ``wall_s_max``
seconds, so no slot is held forever; and at most ``kept_max`` finished runs, holding at most
``disk_bytes_max`` bytes, are kept: the oldest are forgotten and their directories removed.

Scenarios come from several places (:func:`scenario_sources`): the file ``ccsim serve`` was started
with, a directory of scenario files, and the library of scenarios that comes with ccsim; the first
file of a name wins.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

import sim
from services.errors import CcsimError
from sim.live.run_limits import MARKER, RunLimitError, RunLimits, check_run, prune_runs
from sim.report import ReportError, build_report
from sim.runner import simulate
from sim.scenario_load import ScenarioError, load_scenario
from sim.world import World

__all__ = [
    "KPI_INTERVAL_S",
    "RunCancelledError",
    "RunLimitError",
    "RunLimits",
    "RunManager",
    "RunState",
    "ScenarioSource",
    "TooManyRunsError",
    "UnknownScenarioError",
    "library_scenarios_dir",
    "override_args",
    "scenario_sources",
]

KPI_INTERVAL_S: Final = 0.25  # recompute the live KPIs at most this often (wall time)
_HISTORY_MAX: Final = 400  # KPI points kept per run for the dashboard's chart


class TooManyRunsError(CcsimError):
    """``max_running`` runs are already running; try again when one finishes."""


class UnknownScenarioError(CcsimError):
    """No scenario file of that name in the scenarios directory."""


class RunCancelledError(CcsimError):
    """Raised inside a run's progress hook to stop it (a cancel request, or its wall-time limit)."""


@dataclass(frozen=True)
class ScenarioSource:
    """Where scenarios come from: one file (``ccsim serve --scenario``) or a directory of them."""

    path: Path
    kind: str  # "serve" (the --scenario file), "dir" (--scenarios-dir), "library" (ccsim's own)

    def files(self) -> list[Path]:
        if self.kind == "serve":
            return [self.path] if self.path.is_file() else []
        return sorted(self.path.glob("*.yaml")) if self.path.is_dir() else []


def library_scenarios_dir() -> Path | None:
    """The scenarios that come with ccsim (``scenarios/`` beside the ``sim`` package of a source
    checkout or an editable install), or None when this installation has none."""
    path = Path(sim.__file__).resolve().parent.parent / "scenarios"
    return path if path.is_dir() else None


def scenario_sources(scenario_file: Path | None, scenarios_dir: Path | None,
                     library: bool = True) -> list[ScenarioSource]:
    """The --scenario file first, then --scenarios-dir, then the library (when ``library``)."""
    out: list[ScenarioSource] = []
    if scenario_file is not None:
        out.append(ScenarioSource(scenario_file.resolve(), "serve"))
    if scenarios_dir is not None:
        out.append(ScenarioSource(scenarios_dir.resolve(), "dir"))
    lib = library_scenarios_dir() if library else None
    if lib is not None and all(s.path != lib for s in out):
        out.append(ScenarioSource(lib, "library"))
    return out


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
    status: str = "running"  # running | cancelling | done | failed | cancelled
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
    cancel_reason: str = ""  # set to stop the run at its next progress step
    finished: threading.Event = field(default_factory=threading.Event)  # set when its thread is done

    @property
    def active(self) -> bool:
        """Holds a run slot: its thread is still working."""
        return self.status in {"running", "cancelling"}

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

    def __init__(self, scenarios: Path | list[ScenarioSource], runs_dir: Path, *, max_running: int = 2,
                 max_kept: int = 50, limits: RunLimits | None = None) -> None:
        self.sources = (scenarios if isinstance(scenarios, list)
                        else scenario_sources(None, scenarios, library=False))
        self.runs_dir = runs_dir
        self.max_running = max_running
        self.limits = limits or RunLimits(kept_max=max_kept)
        self.max_kept = self.limits.kept_max
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._ids = itertools.count(1)
        self._stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")

    # -- scenarios --------------------------------------------------------------------------
    def scenario_files(self) -> dict[str, Path]:
        """Scenario name (the file's stem) → file; the first source that has a name wins."""
        out: dict[str, Path] = {}
        for source in self.sources:
            for path in source.files():
                out.setdefault(path.stem, path)
        return out

    def _source_kinds(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for source in self.sources:
            for path in source.files():
                out.setdefault(path.stem, source.kind)
        return out

    def describe_sources(self) -> str:
        return ", ".join(f"{s.path} ({s.kind})" for s in self.sources) or "no scenario source"

    def scenarios(self) -> list[dict[str, Any]]:
        """Name, description and the knobs' defaults of every scenario file."""
        out = []
        kinds = self._source_kinds()
        for name, path in self.scenario_files().items():
            try:
                scenario, _ = load_scenario(path)
            except ScenarioError as exc:
                out.append({"name": name, "source": kinds[name], "valid": False, "error": str(exc)})
                continue
            exchange = scenario.services.get("exchange")
            outage = exchange.outages[0] if exchange.outages else None
            out.append({
                "name": name, "source": kinds[name], "valid": True, "description": scenario.description,
                "duration_s": scenario.duration_s, "warmup_s": scenario.warmup_s,
                "rate_per_s": scenario.arrivals.rate_per_s, "rate_scale": scenario.arrivals.rate_scale,
                "deadline_ms": scenario.network.deadline_ms, "direct_share": scenario.direct.share,
                "exchange_outage": ({"start_s": outage.start_s, "duration_s": outage.duration_s}
                                    if outage is not None else None),
            })
        return out

    # -- runs -------------------------------------------------------------------------------
    def start(self, scenario_name: str, overrides: dict[str, Any], seed: int) -> RunState:
        """Validate and start a run. Raises UnknownScenarioError, ScenarioError, RunLimitError or
        TooManyRunsError; nothing is started or written when it raises."""
        path = self.scenario_files().get(scenario_name)
        if path is None:
            raise UnknownScenarioError(scenario_name)
        scenario, text = load_scenario(path, override_args(overrides))
        check_run(scenario, overrides, self.limits)
        with self._lock:
            running = sum(1 for r in self._runs.values() if r.active)
            if running >= self.max_running:
                raise TooManyRunsError(f"{running} runs are running (the limit is {self.max_running}); "
                                       "cancel one with DELETE /v1/runs/{id} or wait for it to finish")
            run_id = f"{self._stamp}-{next(self._ids)}"
            state = RunState(run_id=run_id, scenario=scenario_name, overrides=dict(overrides), seed=seed,
                             run_dir=self.runs_dir / run_id, duration_s=scenario.duration_s,
                             warmup_s=scenario.warmup_s, deadline_ms=scenario.network.deadline_ms)
            self._runs[run_id] = state
        state.run_dir.mkdir(parents=True, exist_ok=True)
        (state.run_dir / MARKER).write_text(json.dumps(
            {"id": run_id, "scenario": scenario_name, "overrides": overrides, "seed": seed,
             "created_at": state.created_at}, sort_keys=True) + "\n", encoding="utf-8")
        self._prune()
        thread = threading.Thread(target=self._execute, args=(state, scenario, text), name=f"run-{run_id}",
                                  daemon=True)
        thread.start()
        return state

    def cancel(self, run_id: str) -> RunState | None:
        """Stop a running run (its state becomes ``cancelling``, then ``cancelled`` when its thread
        stops at its next progress step; returned), or remove a finished one with its directory
        (None). Raises KeyError for an unknown run."""
        with self._lock:
            state = self._runs[run_id]
            if state.active:
                state.cancel_reason = state.cancel_reason or "cancelled on request"
                state.status = "cancelling"
                return state
            self._runs.pop(run_id)
        shutil.rmtree(state.run_dir, ignore_errors=True)
        return None

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
            return sum(1 for r in self._runs.values() if r.active)

    def _prune(self) -> None:
        """Keep at most ``kept_max`` finished runs in memory and on disk, and their bytes under
        ``disk_bytes_max``: the oldest go first (directories of earlier gateways included)."""
        with self._lock:
            busy = {rid for rid, r in self._runs.items() if r.active}
        removed = set(prune_runs(self.runs_dir, busy, self.limits))
        with self._lock:
            for rid in removed:
                self._runs.pop(rid, None)
            finished = [rid for rid, r in self._runs.items() if not r.active]
            while len(finished) > self.limits.kept_max:
                self._runs.pop(finished.pop(0))

    # -- the worker thread -------------------------------------------------------------------
    def _progress_hook(self, state: RunState, holder: dict[str, World]) -> Callable[[float, int], None]:
        """The runner's progress hook: stops a cancelled or overlong run, records progress and KPIs."""
        last_kpi = [0.0]

        def progress(t_s: float, payments: int) -> None:
            now = time.perf_counter()
            wall_s = now - state.wall_started
            if state.cancel_reason:
                raise RunCancelledError(state.cancel_reason)
            if wall_s > self.limits.wall_s_max:
                raise RunCancelledError(f"ran longer than {self.limits.wall_s_max:g} s of wall time "
                                        "(the gateway's limit)")
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

        return progress

    def _execute(self, state: RunState, scenario: Any, text: str) -> None:
        holder: dict[str, World] = {}
        progress = self._progress_hook(state, holder)

        def on_world(world: World) -> None:
            holder["world"] = world

        try:
            result = simulate(scenario, text, state.seed, state.run_dir, progress, on_world=on_world)
            world = holder["world"]
            final = live_kpis(world, world.env.now, time.perf_counter() - state.wall_started)
            try:
                build_report(state.run_dir)
                report_ok, report_error = True, ""
            except ReportError as exc:
                report_ok, report_error = False, f"the report could not be built: {exc}"
        except RunCancelledError as exc:
            self._finish_cancelled(state, str(exc))
            return
        except Exception as exc:  # a bug in a run must not take the gateway down: show it instead
            with self._lock:
                state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
                state.wall_s = time.perf_counter() - state.wall_started
            self._prune()
            state.finished.set()
            raise
        if state.cancel_reason:  # asked to stop while its report was being built
            self._finish_cancelled(state, state.cancel_reason)
            return
        with self._lock:
            state.summary, state.exit_code, state.problems = result.summary, result.exit_code, result.problems
            state.kpis = final
            state.tax, state.tax_summary = world.chain.tax, world.chain.tax_summary()
            state.tax_compliance = world.chain.config.tax_compliance_rate
            state.report_ready, state.error = report_ok, report_error
            state.wall_s = time.perf_counter() - state.wall_started
            state.status = "done"
        self._prune()
        state.finished.set()

    def _finish_cancelled(self, state: RunState, reason: str) -> None:
        """A cancelled run keeps its state (for the runs API) but not its partial directory."""
        shutil.rmtree(state.run_dir, ignore_errors=True)
        with self._lock:
            state.status, state.error = "cancelled", reason
            state.wall_s = time.perf_counter() - state.wall_started
        self._prune()
        state.finished.set()
