"""Statistics over replications: mean and 95 % confidence interval, and the knee of a curve.

**Confidence interval.** Replications are independent runs (independent seeds), so the mean of a
metric over ``n`` of them has the Student-t interval ``mean ± t(0.975, n−1) · s / √n`` with ``s``
the sample standard deviation. ``t`` comes from scipy when it is installed, else from the table
below (exact to the printed digits at the listed degrees of freedom, interpolated linearly in
``1/df`` between them). With one replication there is no interval (both bounds are NaN).

**Knee.** For a curve of means ``y(x)`` over at least three grid values, both axes are scaled to
[0, 1] and the knee is the grid point farthest from the straight line joining the first and last
points (the "Kneedle" rule of Satopää et al., 2011). For p99 latency or the deadline-miss rate
against load this is where the curve turns up; against capacity, where adding workers stops
paying. No knee is reported for a curve that is straight enough (every point within 0.1, i.e.
10 % of both ranges, of that line) or flat (its means span less than 5 % of their largest
magnitude: scaling noise to [0, 1] would invent a bend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["KNEE_MIN_DISTANCE", "KNEE_MIN_RELATIVE_RANGE", "MeanCI", "knee_index", "mean_ci", "t_quantile_975"]

KNEE_MIN_DISTANCE: Final = 0.1
KNEE_MIN_RELATIVE_RANGE: Final = 0.05

# t(0.975, df) for df = 1..30, 40, 60, 120 and the normal limit.
_T975: Final[dict[int, float]] = {
    1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060,
    9: 2.2622, 10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314,
    16: 2.1199, 17: 2.1098, 18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739,
    23: 2.0687, 24: 2.0639, 25: 2.0595, 26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452,
    30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799,
}
_Z975: Final = 1.95996


def _t_table(df: int) -> float:
    if df in _T975:
        return _T975[df]
    known = sorted(_T975)
    if df > known[-1]:
        lo_df, lo_t, hi_inv, hi_t = known[-1], _T975[known[-1]], 0.0, _Z975
    else:
        lo_df = max(k for k in known if k < df)
        hi_df = min(k for k in known if k > df)
        lo_t, hi_inv, hi_t = _T975[lo_df], 1.0 / hi_df, _T975[hi_df]
    lo_inv = 1.0 / lo_df
    frac = (lo_inv - 1.0 / df) / (lo_inv - hi_inv)
    return lo_t + frac * (hi_t - lo_t)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    try:
        from scipy import stats  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return _t_table(df)
    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True, slots=True)
class MeanCI:
    n: int
    mean: float
    low: float  # 95 % CI bounds; NaN when n < 2
    high: float


def mean_ci(values: Sequence[float | None]) -> MeanCI:
    """Mean and 95 % Student-t interval of the finite values (NaN everywhere when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return MeanCI(n, mean, mean - half, mean + half)


def knee_index(xs: Sequence[float], ys: Sequence[float]) -> int | None:
    """The index of the knee of ``y(x)`` (``xs`` increasing), or None (see the module docstring)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if len(pts) < 3 or len(pts) != len(xs):
        return None
    x0, x1 = pts[0][0], pts[-1][0]
    y_lo, y_hi = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 <= x0 or y_hi - y_lo < KNEE_MIN_RELATIVE_RANGE * max(abs(y_lo), abs(y_hi)) or y_hi <= y_lo:
        return None
    nx = [(x - x0) / (x1 - x0) for x, _ in pts]
    ny = [(y - y_lo) / (y_hi - y_lo) for _, y in pts]
    # Distance of each point from the chord through the first and last scaled points.
    dx, dy = nx[-1] - nx[0], ny[-1] - ny[0]
    norm = math.hypot(dx, dy)
    dist = [abs(dy * (px - nx[0]) - dx * (py - ny[0])) / norm for px, py in zip(nx, ny, strict=True)]
    best = max(range(1, len(pts) - 1), key=lambda i: dist[i])
    return best if dist[best] >= KNEE_MIN_DISTANCE else None
