"""Sweeps and the capacity search: Dask = in-process, resume, failures, bisection = exhaustive, CIs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sim.cli import main
from sim.runner import RunResult, simulate_summary
from sim.scenario import Scenario
from sim.sweep.aggregate import cheapest
from sim.sweep.capacity import capacity_search, parse_target
from sim.sweep.execute import DaskExecutor, InProcessExecutor
from sim.sweep.grid import parse_axis, plan_sweep, replication_seed
from sim.sweep.run import SweepError, run_sweep
from sim.sweep.stats import _t_table, knee_index, mean_ci
from sim.sweep.table import WALL_CLOCK_COLUMNS

TINY = """\
name: tiny
duration_s: 300
warmup_s: 30
population:
  cardholders: {count: 100, funding_modes: {jit: 0.7, prefunded: 0.2, stablecoin: 0.1}}
  merchants: {count: 10}
arrivals: {rate_per_s: 1.0, rate_scale: 2}
services:
  exchange: {capacity: 1, service_time: {dist: exponential, mean_ms: 500}}
metrics: {write_transfers: false}
slos: ["auth_latency_ms.p99 < 2600"]
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


def _without_wall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in rows]


class Counting:
    """A run function that counts its calls and can fail one (point capacity, seed)."""

    def __init__(self, fail: tuple[int, int] | None = None) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, scenario: Scenario, text: str, seed: int) -> RunResult:
        self.calls += 1
        if self.fail == (scenario.services.exchange.capacity, seed):
            raise RuntimeError("injected fault in the exchange model")
        return simulate_summary(scenario, text, seed)


def test_mean_ci_matches_a_hand_computed_example() -> None:
    # 1..5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764 → half-width 2.7764 · sqrt(2.5) / sqrt(5) = 1.96322
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.n == 5
    assert ci.mean == 3.0
    assert ci.high - ci.mean == pytest.approx(1.96322, abs=1e-4)
    assert ci.mean - ci.low == pytest.approx(1.96322, abs=1e-4)
    assert _t_table(4) == 2.7764
    assert _t_table(35) == pytest.approx(2.0301, abs=2e-3)  # between the table's 30 and 40
    one = mean_ci([7.0, None])
    assert one.n == 1 and one.mean == 7.0 and math.isnan(one.low) and math.isnan(one.high)


def test_knee_is_where_the_curve_turns_up_and_absent_on_straight_or_flat_curves() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert knee_index(xs, [1.0, 1.1, 1.2, 1.4, 3.0, 8.0]) == 3  # farthest below the chord
    assert knee_index(xs, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) is None
    assert knee_index(xs, [0.930, 0.931, 0.929, 0.930, 0.931, 0.930]) is None  # noise on a flat line
    assert knee_index([1.0, 2.0], [1.0, 5.0]) is None


def test_seeds_are_spawned_and_shared_across_grid_points(tiny: Path) -> None:
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,2")], 3, 7)
    tasks = plan.tasks()
    assert [t.seed for t in tasks[:3]] == [t.seed for t in tasks[3:]]
    assert len({t.seed for t in tasks}) == 3
    assert tasks[1].seed == replication_seed(7, 1) != replication_seed(8, 1)


@pytest.mark.slow
def test_dask_and_in_process_give_identical_results(tiny: Path, tmp_path: Path) -> None:
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,3")], 2, 5)
    with InProcessExecutor() as ex:
        local = run_sweep(plan, tmp_path / "local", ex)
    with DaskExecutor(workers=2) as ex:
        dask = run_sweep(plan, tmp_path / "dask", ex)
    assert "LocalCluster, 2 worker" in dask.executor
    assert len(local.rows) == 4 and all(r["status"] == "ok" for r in local.rows)
    assert _without_wall(dask.rows) == _without_wall(local.rows)
    a = pq.read_table(tmp_path / "local" / "replications.parquet").drop(sorted(WALL_CLOCK_COLUMNS))
    b = pq.read_table(tmp_path / "dask" / "replications.parquet").drop(sorted(WALL_CLOCK_COLUMNS))
    assert a.equals(b)
    assert local.rows[0]["auth_latency_ms.p99"] != local.rows[2]["auth_latency_ms.p99"]  # the points differ


def test_resume_skips_finished_replications(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = Counting()
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,2")], 2, 1)
    with InProcessExecutor() as ex:
        done = run_sweep(plan, out, ex, run=first)
        assert first.calls == 4 and done.executed == 4
        with pytest.raises(SweepError, match="--resume"):
            run_sweep(plan, out, ex, run=first)
        # Interrupted mid-write: the last row is cut short; one more grid value is added.
        journal = out / "replications.csv"
        lines = journal.read_text(encoding="utf-8").splitlines()
        journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40], encoding="utf-8")
        bigger = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,2,4")], 2, 1)
        again = Counting()
        resumed = run_sweep(bigger, out, ex, resume=True, run=again)
    assert again.calls == 3  # the cut-short replication and the two of the new point
    assert (resumed.executed, resumed.skipped) == (3, 3)
    assert [r["replication"] for r in resumed.rows] == [0, 1, 0, 1, 0, 1]
    assert _without_wall(resumed.rows[:4]) == _without_wall(done.rows)
    with journal.open(encoding="utf-8", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_a_replication_that_raises_is_reported_with_its_seed(tiny: Path, tmp_path: Path) -> None:
    bad_seed = replication_seed(3, 1)
    run = Counting(fail=(2, bad_seed))
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,2")], 3, 3)
    with InProcessExecutor() as ex:
        outcome = run_sweep(plan, tmp_path / "out", ex, run=run)
    assert run.calls == 6
    [failed] = outcome.failed
    assert failed["seed"] == bad_seed and failed["replication"] == 1
    assert "RuntimeError: injected fault in the exchange model" in failed["error"]
    assert sum(r["status"] == "ok" for r in outcome.rows) == 5
    by_label = {p["label"]: p for p in outcome.points}
    assert (by_label["exchange.capacity=2"]["n_ok"], by_label["exchange.capacity=2"]["n_failed"]) == (2, 1)
    assert by_label["exchange.capacity=2"]["meets_slos"] is False  # a point with a failure meets nothing
    with (tmp_path / "out" / "replications.csv").open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "failed"]
    assert [int(r["seed"]) for r in rows] == [bad_seed]
    from sim.sweep.report import build_sweep_report  # noqa: PLC0415

    html = build_sweep_report(outcome).read_text(encoding="utf-8")
    assert f"--seed {bad_seed}" in html and "injected fault" in html


def test_capacity_search_finds_what_an_exhaustive_sweep_finds(tiny: Path, tmp_path: Path) -> None:
    target = parse_target("auth_latency_ms.p99<2600")
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,2,3,4,5,6")], 2, 11)
    with InProcessExecutor() as ex:
        sweep = run_sweep(plan, tmp_path / "sweep", ex)
        run = Counting()
        found = capacity_search(tiny, "services.exchange.capacity", 1, 6, target, replications=2, seed=11,
                                overrides=[], out_dir=tmp_path / "cap", executor=ex, run=run)
    means = {p["services.exchange.capacity"]: p["auth_latency_ms.p99.mean"] for p in sweep.points}
    exhaustive = min(v for v, m in means.items() if m < 2600)
    assert exhaustive > 1  # the target is not trivially met
    assert found.answer == exhaustive
    assert len(found.evaluations) < 6 and run.calls == 2 * len(found.evaluations)
    for e in found.evaluations:  # the same replications as the sweep: common seeds
        assert e.mean == means[e.value]
    assert (tmp_path / "cap" / "points.csv").exists()


def test_cheapest_is_found_per_load(tiny: Path, tmp_path: Path) -> None:
    plan = plan_sweep(tiny, [parse_axis("services.exchange.capacity=1,4"), parse_axis("arrivals.rate_scale=1,2")],
                      2, 1)
    with InProcessExecutor() as ex:
        outcome = run_sweep(plan, tmp_path / "out", ex)
    entries = cheapest(plan, outcome.points)
    assert [e.condition for e in entries] == [(("arrivals.rate_scale", 1),), (("arrivals.rate_scale", 2),)]
    for entry in entries:
        meeting = [p for p in outcome.points if p["meets_slos"]
                   and p["arrivals.rate_scale"] == entry.condition[0][1]]
        if meeting:
            assert entry.point is not None
            assert entry.point["cost_workers"] == min(p["cost_workers"] for p in meeting)
        else:
            assert entry.point is None


def test_cli_sweep_writes_tables_and_report(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    rc = main(["sweep", str(tiny), "--grid", "services.exchange.capacity=2", "--replications", "2",
               "--in-process", "--quiet", "--out", str(out), "--set", "arrivals.rate_scale=1"])
    assert rc == 0
    assert pq.read_table(out / "replications.parquet").num_rows == 2
    points = pq.read_table(out / "points.parquet").to_pylist()
    assert len(points) == 1 and points[0]["n_ok"] == 2
    html = (out / "sweep.html").read_text(encoding="utf-8")
    assert "Cheapest configuration meeting the SLOs" in html and html.count("Plotly=") <= 1


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "{s}", "--grid", "services.exchange.capacityy=1,2"], "capacityy: Extra inputs are not permitted"),
    (["sweep", "{s}", "--grid", "services.exchange.capacity="], "empty value"),
    (["sweep", "{s}", "--grid", "services.exchange.capacity=1,,2"], "empty value"),
    (["sweep", "{s}", "--grid", "services.exchange.capacity=0,2"], "capacity must be an integer"),
    (["sweep", "{s}"], "at least one --grid"),
    (["sweep", "{s}", "--grid", "services.exchange.capacity=1", "--replications", "0"], "--replications"),
    (["capacity", "{s}", "--target", "auth_latency_ms.p99<<1500", "--vary", "services.exchange.capacity"],
     "is not 'metric.path OP number'"),
    (["capacity", "{s}", "--target", "nope.p99<1500", "--vary", "services.exchange.capacity"], "unknown metric"),
    (["capacity", "{s}", "--target", "auth_latency_ms.p99<1500", "--vary", "services.exchange.capacity",
      "--low", "8", "--high", "2"], "above --high"),
])
def test_bad_input_exits_2_and_writes_nothing(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              args: list[str], message: str) -> None:
    out = tmp_path / "never"
    argv = [a.replace("{s}", str(tiny)) for a in args] + ["--in-process", "--out", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
