"""The xdist work order (tests/scheduling.py): the longest units first, the docs pages apart."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

from scheduling import KNOWN_LONG, LongestFirstScheduling, UnitTimes, unit_of

PAGE = "tests/test_docs_commands.py::test_the_page_commands_print_what_the_page_shows"


def test_a_docs_page_is_a_unit_of_its_own_and_other_tests_go_by_module_or_class() -> None:
    assert unit_of(f"{PAGE}[getting-started.md]") == f"{PAGE}[getting-started.md]"
    assert unit_of("tests/test_docs_commands.py::test_the_block_parser") == "tests/test_docs_commands.py"
    assert unit_of("tests/test_x.py::test_a[sqlite]") == "tests/test_x.py"
    assert unit_of("tests/test_x.py::TestThing::test_a") == "tests/test_x.py::TestThing"


def _scheduler(cached: dict[str, float] | None) -> Any:
    sched = LongestFirstScheduling.__new__(LongestFirstScheduling)  # no xdist session: only the order
    sched._seconds = cached or {}
    return sched


def _order(sched: Any, units: list[str]) -> list[str]:
    """The units in the order ``_assign_work_unit`` hands them out."""
    sched.workqueue = OrderedDict((u, {}) for u in units)
    handed = []
    while sched.workqueue:
        first = min(sched.workqueue, key=sched._rank)
        handed.append(first)
        del sched.workqueue[first]
    return handed


def test_without_a_cache_the_known_long_units_go_first_longest_first_then_xdists_order() -> None:
    units = ["tests/test_a.py", "tests/test_report_browser.py", "tests/test_b.py", f"{PAGE}[getting-started.md]",
             "tests/faults/test_party_faults.py"]
    assert _order(_scheduler(None), units) == [f"{PAGE}[getting-started.md]", "tests/faults/test_party_faults.py",
                                               "tests/test_report_browser.py", "tests/test_a.py", "tests/test_b.py"]
    assert KNOWN_LONG[f"{PAGE}[getting-started.md]"] == max(KNOWN_LONG.values())


def test_the_cached_times_decide_when_there_are_some() -> None:
    cached = {"tests/test_a.py": 5.0, "tests/test_b.py": 50.0, f"{PAGE}[getting-started.md]": 20.0}
    units = ["tests/test_a.py", f"{PAGE}[getting-started.md]", "tests/test_b.py", "tests/test_new.py"]
    assert _order(_scheduler(cached), units) == ["tests/test_b.py", f"{PAGE}[getting-started.md]",
                                                 "tests/test_a.py", "tests/test_new.py"]


class _Cache:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def test_unit_times_are_summed_per_unit_merged_into_the_cache_and_not_kept_after_a_failure() -> None:
    cache = _Cache()
    cache.data["ccsim/xdist_unit_seconds"] = {"tests/test_old.py": 3.0, "tests/test_a.py": 99.0}
    config: Any = SimpleNamespace(cache=cache)
    times = UnitTimes()
    for nodeid, seconds in [("tests/test_a.py::t1", 1.25), ("tests/test_a.py::t2", 2.0), (f"{PAGE}[x.md]", 7.0)]:
        times.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, duration=seconds, failed=False))  # type: ignore[arg-type]
    times.save(config)
    assert cache.data["ccsim/xdist_unit_seconds"] == {"tests/test_old.py": 3.0, "tests/test_a.py": 3.25,
                                                     f"{PAGE}[x.md]": 7.0}
    times.pytest_runtest_logreport(SimpleNamespace(nodeid="tests/test_a.py::t3", duration=0.5, failed=True))  # type: ignore[arg-type]
    times.save(config)
    assert cache.data["ccsim/xdist_unit_seconds"]["tests/test_a.py"] == 3.25
