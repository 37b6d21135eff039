"""Time for the domain: a sim clock in runs, the system clock live.

Domain code never reads the wall clock itself; it is handed a :class:`Clock`.
Time is seconds as ``float`` (time is not money; virtual seconds since the run's start, or Unix
seconds live).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "FixedClock", "FunctionClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    """Unix seconds from the operating system (live mode only)."""

    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock that moves only when told to: tests and replays."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now_s += seconds

    def set(self, now_s: float) -> None:
        self._now_s = now_s


class FunctionClock:
    """Adapts any ``() -> float`` (e.g. a SimPy environment's ``now``) into a Clock."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self._fn = fn

    def now(self) -> float:
        return float(self._fn())
