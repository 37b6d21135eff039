"""What a sweep runs: grid axes parsed from ``--grid``, grid points, seeds, and validated tasks.

Every grid point is loaded and validated (``load_scenario`` with the base ``--set`` overrides and
then the point's own) before anything runs, so a typo in a key or an impossible value is bad input
(exit 2) and never a half-finished sweep.

Seeds use *common random numbers*: replication ``r`` runs with the same seed at every grid point,
``SeedSequence(sweep_seed).spawn(R)[r]`` (the child with ``spawn_key=(r,)``) reduced to a 63-bit
integer. Two points then differ by their parameters, not by their luck, and a capacity search
evaluates exactly the runs an exhaustive sweep would.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.scenario import SERVICE_NAMES, Scenario
from sim.scenario_load import ScenarioError, load_scenario, scenario_sha256

__all__ = [
    "GridAxis",
    "GridPoint",
    "SweepPlan",
    "Task",
    "capacity_cost",
    "parse_axis",
    "plan_sweep",
    "replication_seed",
]


@dataclass(frozen=True, slots=True)
class GridAxis:
    """One ``--grid KEY=V1,V2,...``: a dotted scenario path and its values (parsed as YAML)."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class GridPoint:
    """One combination of axis values, in axis order."""

    index: int
    values: tuple[tuple[str, Any], ...]

    @property
    def point_id(self) -> str:
        """A canonical text naming the point (the resume key): ``k=json(v);k=json(v)``."""
        return ";".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in self.values)

    @property
    def label(self) -> str:
        """Short, for people: the last two parts of each key (``exchange.capacity=4``)."""
        return ", ".join(f"{'.'.join(k.split('.')[-2:])}={v}" for k, v in self.values)

    def overrides(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.values]


@dataclass(frozen=True, slots=True)
class Task:
    """One replication of one grid point: everything a worker needs, and nothing on disk."""

    point: GridPoint
    replication: int
    seed: int
    scenario: Scenario
    scenario_text: str
    scenario_sha256: str

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.point.point_id, self.replication, self.seed, self.scenario_sha256)


@dataclass(frozen=True, slots=True)
class SweepPlan:
    scenario_path: Path
    axes: tuple[GridAxis, ...]
    replications: int
    seed: int
    overrides: tuple[str, ...]
    points: tuple[GridPoint, ...]
    scenarios: tuple[Scenario, ...]  # per point, validated
    texts: tuple[str, ...]  # per point, the YAML as run

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.axes)

    def tasks(self) -> list[Task]:
        seeds = [replication_seed(self.seed, r) for r in range(self.replications)]
        return [Task(point, r, seeds[r], self.scenarios[point.index], self.texts[point.index],
                     scenario_sha256(self.texts[point.index]))
                for point in self.points for r in range(self.replications)]


def parse_axis(text: str) -> GridAxis:
    """``services.exchange.capacity=4,8,16`` → an axis; a clear :class:`ScenarioError` otherwise."""
    key, sep, values_text = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ScenarioError(f"--grid {text!r}: expected dotted.key=v1,v2,...")
    parts = [p.strip() for p in values_text.split(",")]
    if not values_text.strip() or any(not p for p in parts):
        raise ScenarioError(f"--grid {text!r}: empty value; give one or more comma-separated values")
    values: list[Any] = []
    for part in parts:
        try:
            value = yaml.safe_load(part)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"--grid {text!r}: value {part!r} is not valid YAML: {exc}") from None
        if value in values:
            raise ScenarioError(f"--grid {text!r}: value {part!r} is listed twice")
        values.append(value)
    return GridAxis(key, tuple(values))


def replication_seed(sweep_seed: int, replication: int) -> int:
    """The seed of replication ``replication``: ``SeedSequence(sweep_seed).spawn(n)[replication]``."""
    child = np.random.SeedSequence(sweep_seed, spawn_key=(replication,))
    return int(child.generate_state(1, dtype=np.uint64)[0]) >> 1


def capacity_cost(scenario: Scenario) -> int:
    """The cost of a configuration: the workers of every service with a finite capacity, summed.

    Services at ``unlimited`` are outside capacity planning and cost nothing here; with only
    capacities on the grid this orders points exactly as the sum of the grid's capacities does.
    """
    total = 0
    for name in SERVICE_NAMES:
        capacity = scenario.services.get(name).capacity
        if isinstance(capacity, int):
            total += capacity
    return total


def plan_sweep(scenario_path: Path, axes: Sequence[GridAxis], replications: int, seed: int,
               overrides: Sequence[str] = ()) -> SweepPlan:
    """Validate everything up front: the axes, the counts and every grid point's scenario."""
    if not axes:
        raise ScenarioError("a sweep needs at least one --grid KEY=V1,V2,...")
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ScenarioError(f"--grid: a key is given twice ({', '.join(keys)})")
    if replications < 1:
        raise ScenarioError("--replications must be at least 1")
    if seed < 0:
        raise ScenarioError("--seed must not be negative")
    load_scenario(scenario_path, list(overrides))  # the base scenario alone, for a plain error first
    points: list[GridPoint] = []
    scenarios: list[Scenario] = []
    texts: list[str] = []
    for index, combo in enumerate(itertools.product(*(a.values for a in axes))):
        point = GridPoint(index, tuple(zip(keys, combo, strict=True)))
        try:
            scenario, text = load_scenario(scenario_path, [*overrides, *point.overrides()])
        except ScenarioError as exc:
            raise ScenarioError(f"grid point {point.label}: {exc}") from None
        points.append(point)
        scenarios.append(scenario)
        texts.append(text)
    return SweepPlan(scenario_path, tuple(axes), replications, seed, tuple(overrides), tuple(points),
                     tuple(scenarios), tuple(texts))
