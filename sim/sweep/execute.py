"""Running replications: in this process one after another, or on Dask distributed.

The same function, :func:`run_task`, runs every replication wherever it runs, and it never raises:
an exception inside the simulation becomes a ``failed`` row carrying the seed and the error, so
one bad replication never loses the others. A worker that dies mid-task is reported the same way
by the executor.

Dask: by default a ``LocalCluster`` with one single-threaded worker *process* per core (the model
is pure Python, so threads would share one GIL); with a scheduler address, that cluster's workers.
Tasks carry the validated scenario and its text, so workers need ccsim installed but no access to
the scenario file or the output directory. Dask is imported only when used.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import traceback
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from sim.runner import RunResult, simulate_summary
from sim.scenario import Scenario
from sim.sweep.grid import Task
from sim.sweep.metrics import row_metrics

__all__ = ["DaskExecutor", "Executor", "InProcessExecutor", "RunFn", "failed_row", "open_executor", "run_task"]

RunFn = Callable[[Scenario, str, int], RunResult]


def _base_row(task: Task) -> dict[str, Any]:
    return {**dict(task.point.values), "point": task.point.point_id, "replication": task.replication,
            "seed": task.seed, "scenario_sha256": task.scenario_sha256}


def failed_row(task: Task, error: str, wall_s: float = 0.0, cpu_s: float = 0.0) -> dict[str, Any]:
    return {**_base_row(task), "status": "failed", "error": error, "exit_code": None, "wall_s": wall_s,
            "cpu_s": cpu_s}


def _describe(exc: BaseException) -> str:
    """``TypeError: message (at sim/x.py:12 in fn)`` — the innermost frame says where."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {os.path.relpath(last.filename) if os.path.isabs(last.filename) else last.filename}:" \
                f"{last.lineno} in {last.name})"
    return f"{type(exc).__name__}: {exc}{where}"


def run_task(task: Task, columns: Sequence[str], run: RunFn = simulate_summary) -> dict[str, Any]:
    """One replication → one table row; never raises for a failure inside the simulation."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = run(task.scenario, task.scenario_text, task.seed)
        metrics = row_metrics(result.summary, columns)
    except Exception as exc:  # a failed replication is data, reported with its seed
        return failed_row(task, _describe(exc), time.perf_counter() - wall0, time.process_time() - cpu0)
    return {**_base_row(task), "status": "ok", "error": "", "exit_code": result.exit_code,
            "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0, **metrics}


class Executor(AbstractContextManager["Executor"]):
    """Runs tasks and yields their rows as they finish (in any order)."""

    description = "executor"

    @abstractmethod
    def run(self, tasks: Sequence[Task], columns: Sequence[str], run: RunFn) -> Iterator[dict[str, Any]]:
        """Run ``tasks`` with ``run``; yield one row per task as it finishes."""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class InProcessExecutor(Executor):
    description = "in-process (sequential)"

    def run(self, tasks: Sequence[Task], columns: Sequence[str], run: RunFn) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield run_task(task, columns, run)


class DaskExecutor(Executor):
    """A Dask client on a fresh ``LocalCluster`` (``scheduler is None``) or on a running scheduler."""

    def __init__(self, workers: int, scheduler: str | None = None) -> None:
        dist = _distributed()
        self._cluster: Any = None
        self.client: Any
        if scheduler is None:
            self._cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                              dashboard_address=":0", silence_logs=logging.ERROR)
            self.client = dist.Client(self._cluster)
            self.description = f"Dask LocalCluster, {workers} worker process(es)"
        else:
            self.client = dist.Client(scheduler, timeout="30s")
            n = len(self.client.scheduler_info().get("workers", {}))
            self.description = f"Dask scheduler {scheduler}, {n} worker(s)"

    def run(self, tasks: Sequence[Task], columns: Sequence[str], run: RunFn) -> Iterator[dict[str, Any]]:
        if not tasks:
            return
        by_key: dict[Any, Task] = {}
        futures = []
        for task in tasks:
            future = self.client.submit(run_task, task, list(columns), run, pure=False)
            by_key[future.key] = task
            futures.append(future)
        try:
            for future in _distributed().as_completed(futures):
                task = by_key[future.key]
                try:
                    row = future.result()
                except Exception as exc:  # the worker died or the task could not run there
                    row = failed_row(task, f"worker: {_describe(exc)}")
                yield row
        finally:
            self.client.cancel(futures)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _distributed() -> Any:
    """The ``distributed`` module, imported on first use (it is heavy and its API is untyped)."""
    return importlib.import_module("distributed")


def open_executor(workers: int, scheduler: str | None) -> Executor:
    """``workers == 0`` and no scheduler: in-process; else Dask (see :class:`DaskExecutor`)."""
    if scheduler is None and workers == 0:
        return InProcessExecutor()
    return DaskExecutor(workers, scheduler)
