"""What a run started over HTTP may cost: its length, its payments, its population, its wall time,
and the runs kept on disk.

The scenario schema says what a scenario *is*; a gateway that runs simulations for anyone who can
reach it also needs to say what it will *spend* on one. :func:`check_run` refuses a scenario beyond
:class:`RunLimits` with :class:`RunLimitError` naming the scenario field (the gateway answers 422);
the payments are the arrival process's expected count (its rate integrated over the run, hour by
hour and burst by burst), so a run is refused before it starts rather than stopped half-way.
:func:`prune_runs` removes the oldest finished run directories beyond the count and byte caps.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.errors import CcsimError
from sim.scenario import ArrivalsSpec, Scenario

__all__ = ["MARKER", "RunLimitError", "RunLimits", "check_run", "dir_bytes", "expected_payments", "prune_runs"]

MARKER: Final = "gateway-run.json"  # written into every run directory the gateway creates
_HOUR_S: Final = 3_600.0


class RunLimitError(CcsimError, ValueError):
    """A run beyond the gateway's limits; ``field`` is the scenario field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class RunLimits:
    """Every run the gateway starts stays within these."""

    duration_s_max: float = 7 * 86_400.0
    payments_max: int = 2_000_000
    cardholders_max: int = 200_000
    wall_s_max: float = 3_600.0  # a run still going after this is cancelled, and its slot freed
    kept_max: int = 50  # finished runs kept (memory and disk); the oldest are removed
    disk_bytes_max: int = 2 * 1024**3


def expected_payments(arrivals: ArrivalsSpec, duration_s: float) -> float:
    """The mean number of arrivals in ``[0, duration_s)``: ``∫ rate(t) dt`` of the piecewise-constant
    rate (rate × scale × the hour's multiplier × the bursts covering it). ``duration_s`` must be
    bounded first: the integral walks the run hour by hour."""
    base = arrivals.rate_per_s * arrivals.rate_scale
    offset_s = arrivals.start_hour * _HOUR_S
    bursts = [(b.start_s, b.start_s + b.duration_s, b.multiplier) for b in arrivals.bursts]
    edges = {0.0, duration_s}
    first_hour = math.floor(offset_s / _HOUR_S) + 1
    t = first_hour * _HOUR_S - offset_s
    while t < duration_s:
        edges.add(t)
        t += _HOUR_S
    for start, end, _ in bursts:
        edges.update(x for x in (start, end) if 0.0 < x < duration_s)
    points = sorted(edges)
    total = 0.0
    for a, b in itertools.pairwise(points):
        hour = int(((a + offset_s) // _HOUR_S) % 24)
        rate = base * arrivals.hourly_profile[hour]
        for start, end, mult in bursts:
            if start <= a < end:
                rate *= mult
        total += rate * (b - a)
    return total


def _named(field: str, overridden: Iterable[str]) -> str:
    """``overrides.<field>`` when the request changed it, else the scenario's own ``<field>``."""
    return f"overrides.{field}" if field in set(overridden) else field


def check_run(scenario: Scenario, overridden: Iterable[str], limits: RunLimits) -> None:
    """Raise :class:`RunLimitError` when ``scenario`` would cost more than ``limits`` allow."""
    keys = list(overridden)
    if scenario.duration_s > limits.duration_s_max:
        raise RunLimitError(_named("duration_s", keys), f"{scenario.duration_s:g} s is longer than this gateway "
                            f"runs (at most {limits.duration_s_max:g} s)")
    count = scenario.population.cardholders.count
    if count > limits.cardholders_max:
        raise RunLimitError(_named("population.cardholders.count", keys), f"{count} cardholders are more than "
                            f"this gateway runs (at most {limits.cardholders_max})")
    payments = expected_payments(scenario.arrivals, scenario.duration_s)
    if payments > limits.payments_max:
        rate_keys = [k for k in keys if k.startswith("arrivals.")]
        field = f"overrides.{rate_keys[0]}" if rate_keys else _named("duration_s", keys)
        if not rate_keys and "duration_s" not in keys:
            field = "arrivals"
        raise RunLimitError(field, f"about {payments:,.0f} payments expected (arrivals over duration_s); "
                            f"this gateway runs at most {limits.payments_max:,}")


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it is gone)."""
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file():
                total += file.stat().st_size
        except OSError:
            continue
    return total


def prune_runs(runs_dir: Path, busy: set[str], limits: RunLimits) -> list[str]:
    """Remove the oldest finished run directories (those with the gateway's marker, not in
    ``busy``) until at most ``kept_max`` remain and they hold at most ``disk_bytes_max``; the newest
    is always kept, so a run larger than the cap can still be read. Returns the removed run ids."""
    try:
        dirs = [d for d in runs_dir.iterdir() if (d / MARKER).is_file() and d.name not in busy]
    except OSError:
        return []
    dirs.sort(key=lambda d: (d / MARKER).stat().st_mtime)
    sizes = {d.name: dir_bytes(d) for d in dirs}
    total = sum(sizes.values())
    removed: list[str] = []
    while len(dirs) > 1 and (len(dirs) > limits.kept_max or total > limits.disk_bytes_max):
        oldest = dirs.pop(0)
        shutil.rmtree(oldest, ignore_errors=True)
        total -= sizes[oldest.name]
        removed.append(oldest.name)
    return removed
