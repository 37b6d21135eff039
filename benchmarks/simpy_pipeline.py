"""The yardstick of design.md §5: a bare SimPy 4-stage M/M/c pipeline, one process per customer.

Poisson arrivals; four stages in series, each a ``simpy.Resource`` of ``c`` servers with
exponential service times; utilization about 0.7 per stage so that queues form. Nothing else:
no ledger, no metrics beyond a count. ccsim's simulator is measured against its customers per
wall second, in the same run, on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

STAGES = 4
SERVERS = 4
ARRIVAL_RATE_PER_S = 100.0
SERVICE_MEAN_S = 0.028  # ρ = λ·s / c = 100 · 0.028 / 4 = 0.7


def run_pipeline(customers: int, seed: int = 1) -> tuple[float, int]:
    """Simulate ``customers`` through the pipeline; return (wall seconds, events processed)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / ARRIVAL_RATE_PER_S, customers)
    services = rng.exponential(SERVICE_MEAN_S, (customers, STAGES))
    env = simpy.Environment()
    stages = [simpy.Resource(env, capacity=SERVERS) for _ in range(STAGES)]
    done = [0]

    def customer(i: int) -> Generator[Any, Any, None]:
        row = services[i]
        for k, stage in enumerate(stages):
            with stage.request() as req:
                yield req
                yield env.timeout(row[k])
        done[0] += 1

    def source() -> Generator[Any, Any, None]:
        for i in range(customers):
            yield env.timeout(gaps[i])
            env.process(customer(i))

    env.process(source())
    events = 0
    started = time.perf_counter()
    step = env.step
    try:
        while True:
            step()
            events += 1
    except simpy.core.EmptySchedule:
        pass
    wall_s = time.perf_counter() - started
    assert done[0] == customers, f"pipeline finished {done[0]} of {customers} customers"
    return wall_s, events
