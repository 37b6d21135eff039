"""Samplers for the scenario's distributions, drawing from one named rng stream each.

Variates are drawn from numpy in blocks (a call per variate into numpy costs more than the
simulation step it feeds) and handed out one at a time. A constant needs no stream at all, so a
zero-time service consumes no randomness and no events.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np

from sim.scenario_types import (
    AmountDist,
    ConstantAmount,
    ConstantTime,
    EmpiricalAmount,
    EmpiricalTime,
    ExponentialTime,
    GammaTime,
    LognormalAmount,
    LognormalTime,
    TimeDist,
    UniformAmount,
    UniformTime,
)

__all__ = ["BLOCK", "BlockSampler", "Sampler", "amount_sampler", "lognormal_params", "time_sampler"]

BLOCK: Final = 4096

Sampler = Callable[[], float]


def lognormal_params(mean: float, cv: float) -> tuple[float, float]:
    """(mu, sigma) of the underlying normal for a lognormal with this mean and coefficient of variation."""
    sigma2 = math.log1p(cv * cv)
    return math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)


class BlockSampler:
    """Hands out variates from blocks drawn by ``draw(rng, n)``; refills when a block runs out."""

    __slots__ = ("_block", "_draw", "_i", "_rng", "_size")

    def __init__(
        self, rng: np.random.Generator, draw: Callable[[np.random.Generator, int], np.ndarray],
        size: int = BLOCK,
    ) -> None:
        self._rng = rng
        self._draw = draw
        self._size = size
        self._block: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        i = self._i
        if i >= len(self._block):
            self._block = self._draw(self._rng, self._size).tolist()
            i = 0
        self._i = i + 1
        return self._block[i]


def _const(value: float) -> Sampler:
    return lambda: value


def time_sampler(dist: TimeDist, rng: np.random.Generator) -> Sampler:
    """A sampler of durations in **seconds** (the scenario gives milliseconds)."""
    if isinstance(dist, ConstantTime):
        return _const(dist.mean_ms / 1000.0)
    if isinstance(dist, ExponentialTime):
        scale_s = dist.mean_ms / 1000.0
        return BlockSampler(rng, lambda g, n: g.exponential(scale_s, n))
    if isinstance(dist, LognormalTime):
        mu, sigma = lognormal_params(dist.mean_ms / 1000.0, dist.cv)
        return BlockSampler(rng, lambda g, n: g.lognormal(mu, sigma, n))
    if isinstance(dist, GammaTime):
        shape = 1.0 / (dist.cv * dist.cv)
        scale_s = dist.mean_ms / 1000.0 / shape
        return BlockSampler(rng, lambda g, n: g.gamma(shape, scale_s, n))
    if isinstance(dist, UniformTime):
        lo_s, hi_s = dist.min_ms / 1000.0, dist.max_ms / 1000.0
        return BlockSampler(rng, lambda g, n: g.uniform(lo_s, hi_s, n))
    if isinstance(dist, EmpiricalTime):
        values_s = np.asarray(dist.values_ms, dtype=float) / 1000.0
        return BlockSampler(rng, lambda g, n: g.choice(values_s, n))
    raise TypeError(f"unknown time distribution {type(dist).__name__}")


def amount_sampler(dist: AmountDist, rng: np.random.Generator) -> Callable[[], int]:
    """A sampler of payment amounts in **tiyn** (int), clipped to the distribution's bounds.

    The variate is a statistical draw, not money arithmetic: it becomes an int amount at once.
    """
    if isinstance(dist, ConstantAmount):
        fixed = round(dist.value_kzt * 100)
        return lambda: fixed
    lo, hi = round(dist.min_kzt * 100), round(dist.max_kzt * 100)
    inner: Sampler
    if isinstance(dist, LognormalAmount):
        mu, sigma = lognormal_params(dist.mean_kzt * 100, dist.cv)
        inner = BlockSampler(rng, lambda g, n: g.lognormal(mu, sigma, n))
    elif isinstance(dist, UniformAmount):
        inner = BlockSampler(rng, lambda g, n: g.uniform(lo, hi, n))
    elif isinstance(dist, EmpiricalAmount):
        values = np.asarray(dist.values_kzt, dtype=float) * 100
        inner = BlockSampler(rng, lambda g, n: g.choice(values, n))
    else:
        raise TypeError(f"unknown amount distribution {type(dist).__name__}")

    def sample() -> int:
        return min(hi, max(lo, round(inner())))

    return sample
