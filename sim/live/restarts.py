"""How often ``ccsim serve`` restarts a child that died, and how long it waits first.

A child that dies is restarted on its own books (as ``--resume`` starts it), after a short pause
that doubles with each death inside the window (0.5 s, 1 s, 2 s, … at most ``backoff_max_s``). A
child that dies more than ``restarts_max`` times inside ``window_s`` is in a crash loop: restarting
it again would only hide the fault, so the supervisor gives up, says why, and stops every service.
Pure bookkeeping over the monotonic times it is given: tests drive it without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = ["RESTARTS_MAX", "RestartDecision", "RestartPolicy"]

RESTARTS_MAX: Final = 100  # the most ``--max-restarts`` may allow (a limit on everything)
_BACKOFF_FIRST_S: Final = 0.5


@dataclass(frozen=True)
class RestartDecision:
    """Restart after ``delay_s`` (``allowed``), or give up; ``reason`` says which and why."""

    allowed: bool
    delay_s: float
    deaths_in_window: int
    reason: str


@dataclass
class RestartPolicy:
    """At most ``restarts_max`` restarts of one child within any ``window_s`` seconds."""

    restarts_max: int = 5
    window_s: float = 600.0
    backoff_max_s: float = 10.0
    _deaths: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.restarts_max < 0 or self.window_s <= 0 or self.backoff_max_s < 0:
            raise ValueError("restarts_max must be >= 0, window_s > 0 and backoff_max_s >= 0")

    def died(self, name: str, now_s: float) -> RestartDecision:
        """Record a death of ``name`` at ``now_s`` and decide what to do."""
        deaths = self._deaths.setdefault(name, deque())
        deaths.append(now_s)
        while deaths and deaths[0] <= now_s - self.window_s:
            deaths.popleft()
        count = len(deaths)
        if count > self.restarts_max:
            return RestartDecision(False, 0.0, count, (
                f"{name} died {count} times within {self.window_s:g} s (at most {self.restarts_max} restarts "
                "are allowed): a crash loop, so it is not restarted again"))
        delay_s = min(self.backoff_max_s, _BACKOFF_FIRST_S * 2 ** (count - 1))
        return RestartDecision(True, delay_s, count, (
            f"restarting {name} on its books in {delay_s:g} s (restart {count} of at most {self.restarts_max} "
            f"within {self.window_s:g} s)"))
