"""The order in which pytest-xdist hands out the suite's work: the longest work units first.

``make pytest`` runs ``--dist loadscope``: all the tests of a module (of a class) are one work
unit, run by one worker, so a module-scoped set-up is made once. xdist hands the units out in the
order of their number of tests, which puts the few long ones (the docs' command pages, the fault
runs, a browser) last: on two workers the suite then ends with one worker running a ten-minute
unit alone. Handing out the longest first (the classic longest-processing-time rule) lets the
other worker go through the many short units meanwhile.

How long a unit takes is what it took in the last run that ran it (kept in pytest's cache,
``.pytest_cache``); on a fresh clone, or with ``-p no:cacheprovider``, the figure in ``KNOWN_LONG``,
and 0 for the rest, which keep xdist's order. The order changes when a test runs, never what it does
or whether it runs.

A unit in ``ONE_TEST_PER_UNIT`` is split into one unit per test: their tests share no module-scoped
set-up, and each is long (each docs page runs a page's commands).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

CACHE_KEY = "ccsim/xdist_unit_seconds"

# Test functions whose parametrizations are each a unit of their own.
ONE_TEST_PER_UNIT = ("tests/test_docs_commands.py::test_the_page_commands_print_what_the_page_shows[",)

# Without a time from the cache, the units that took longest in a run on two busy cores (seconds,
# rounded; only their order matters). Every other unit counts as 0 s and keeps xdist's order.
KNOWN_LONG: dict[str, float] = {
    "tests/test_docs_commands.py::test_the_page_commands_print_what_the_page_shows[getting-started.md]": 400,
    "tests/faults/test_party_faults.py": 150,
    "tests/faults/test_bank_check.py": 150,
    "tests/test_live_schemathesis.py": 150,
    "tests/test_differential.py": 150,
    "tests/test_live_dashboard_browser.py": 120,
    "tests/test_docs_commands.py::test_the_page_commands_print_what_the_page_shows[verifying-a-run.md]": 60,
    "tests/test_api_schemathesis.py": 90,
    "tests/test_fuzz.py": 85,
    "tests/test_sim_queueing.py": 85,
    "tests/test_ledger_crash.py": 70,
    "tests/test_docs_commands.py::test_the_page_commands_print_what_the_page_shows[cookbook.md]": 40,
    "tests/test_report_browser.py": 40,
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test: its module or class, or the test itself (``ONE_TEST_PER_UNIT``)."""
    if nodeid.startswith(ONE_TEST_PER_UNIT):
        return nodeid
    return nodeid.rsplit("::", 1)[0]


class LongestFirstScheduling(LoadScopeScheduling):
    """``--dist loadscope`` with ``unit_of``'s units, handed out longest first."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        cache = getattr(config, "cache", None)
        seconds = cache.get(CACHE_KEY, None) if cache is not None else None
        self._seconds: dict[str, float] = seconds if isinstance(seconds, dict) else {}

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _rank(self, unit: str) -> float:
        return -float(self._seconds.get(unit, KNOWN_LONG.get(unit, 0.0)))

    def _assign_work_unit(self, node: Any) -> None:
        # min() keeps the first of equals, so units of the same rank keep xdist's order.
        longest = min(self.workqueue, key=self._rank)
        self.workqueue.move_to_end(longest, last=False)
        super()._assign_work_unit(node)


class UnitTimes:
    """On the controller: how long each work unit took, merged into the cache at the end of a run
    without failures (a failed test may have stopped early; the units not run keep their time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.failed = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[unit_of(report.nodeid)] += report.duration
        self.failed |= report.failed

    def save(self, config: pytest.Config) -> None:
        cache = getattr(config, "cache", None)
        if cache is None or self.failed or not self.seconds:
            return
        known = cache.get(CACHE_KEY, {})
        merged = {**(known if isinstance(known, dict) else {}), **{k: round(v, 2) for k, v in self.seconds.items()}}
        cache.set(CACHE_KEY, merged)
