"""``Workers`` keeps ``simpy.Resource``'s rules and order of events, and the results writer's tuple
rows match the tables they go to."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy

from sim.components.workers import Workers
from sim.metrics import LEG_COLUMNS, PAYMENT_COLUMNS
from sim.results import ResultsWriter, legs, payments, timeseries

Log = list[tuple[float, str, int]]


def _customers(rng: np.random.Generator, n: int) -> list[tuple[float, float, float | None]]:
    # Times on a coarse grid so that many events tie: (arrival gap, service, patience or None).
    return [(float(rng.integers(0, 2)), float(rng.integers(0, 4)),
             float(rng.integers(1, 5)) if rng.random() < 0.3 else None) for _ in range(n)]


def _with_simpy(plan: list[tuple[float, float, float | None]], capacity: int) -> Log:
    env = simpy.Environment()
    res = simpy.Resource(env, capacity)
    log: Log = []

    def customer(i: int, service: float, patience: float | None) -> Generator[Any, Any, None]:
        req = res.request()
        if not req.triggered:  # as the stations used it: a request granted at once is not waited for
            if patience is None:
                yield req
            else:
                yield req | env.timeout(patience)
                if not req.triggered:
                    req.cancel()
                    log.append((env.now, "gave_up", i))
                    return
        log.append((env.now, "start", i))
        yield env.timeout(service)
        res.release(req)
        log.append((env.now, "done", i))

    def source() -> Generator[Any, Any, None]:
        for i, (gap, service, patience) in enumerate(plan):
            yield env.timeout(gap)
            env.process(customer(i, service, patience))

    env.process(source())
    env.run()
    return log


def _with_workers(plan: list[tuple[float, float, float | None]], capacity: int) -> Log:
    env = simpy.Environment()
    res = Workers(env, capacity)
    log: Log = []

    def customer(i: int, service: float, patience: float | None) -> Generator[Any, Any, None]:
        req = res.request()
        if req is not None and not req.triggered:
            if patience is None:
                yield req
            else:
                yield req | env.timeout(patience)
                if not req.triggered:
                    res.cancel(req)
                    log.append((env.now, "gave_up", i))
                    return
        log.append((env.now, "start", i))
        yield env.timeout(service)
        res.release()
        log.append((env.now, "done", i))

    def source() -> Generator[Any, Any, None]:
        for i, (gap, service, patience) in enumerate(plan):
            yield env.timeout(gap)
            env.process(customer(i, service, patience))

    env.process(source())
    env.run()
    return log


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("capacity", [1, 2, 3])
def test_workers_serve_in_the_same_order_as_simpy_resource(seed: int, capacity: int) -> None:
    plan = _customers(np.random.default_rng(seed), 300)
    expected = _with_simpy(plan, capacity)
    assert any(kind == "gave_up" for _, kind, _ in expected)  # the workload exercises cancels
    assert _with_workers(plan, capacity) == expected


def test_workers_count_and_queue() -> None:
    env = simpy.Environment()
    w = Workers(env, 1)
    assert w.request() is None
    waiter = w.request()
    assert waiter is not None and not waiter.triggered
    assert (w.count, len(w.queue)) == (1, 1)
    w.release()  # handed over when the loop processes the release
    assert (w.count, len(w.queue)) == (0, 1)
    env.run()
    assert waiter.triggered and (w.count, len(w.queue)) == (1, 0)


def test_tuple_rows_follow_the_table_columns(tmp_path: Path) -> None:
    assert tuple(c.name for c in payments.columns) == PAYMENT_COLUMNS
    assert tuple(c.name for c in legs.columns) == LEG_COLUMNS
    writer = ResultsWriter(tmp_path / "r.db", batch_rows=2)
    writer.add_rows(legs, [(1, "issuer", 1.5, 2.5), (1, "exchange", 0.0, 3.0), (2, "bank", 0.25, 1.0)])
    writer.add(timeseries, {"t_s": 10.0, "metric": "queue_len", "key": "bank", "value": 2.0})
    writer.add_row(timeseries, (20.0, "queue_len", "bank", 3.0))
    writer.close()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("select * from legs order by rowid").fetchall() == [
            (1, "issuer", 1.5, 2.5), (1, "exchange", 0.0, 3.0), (2, "bank", 0.25, 1.0)]
        assert conn.execute("select t_s, metric, key, value from timeseries order by t_s").fetchall() == [
            (10.0, "queue_len", "bank", 2.0), (20.0, "queue_len", "bank", 3.0)]
