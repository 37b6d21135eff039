"""The ``ccsim sweep`` and ``ccsim capacity`` subcommands (registered by :mod:`sim.cli`).

    ccsim sweep SCENARIO --grid KEY=V1,V2,... [--grid ...] [--replications 10] [--seed 1]
                [--scheduler ADDRESS | --workers N | --in-process] [--out DIR] [--resume]
                [--set KEY=VALUE ...] [--quiet]
    ccsim capacity SCENARIO --target "METRIC<NUMBER" --vary KEY [--low 1] [--high 64]
                [--replications 3] [--criterion mean|ci] [same execution options]

Exit codes: 0 ok; 1 some replication failed (the tables and the report say which, with its seed);
2 bad input, nothing run; 3 (capacity) the target is not met even at ``--high``; 130 interrupted
(finished replications are kept: rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sim.runner import EXIT_BAD_INPUT, EXIT_INTEGRITY, EXIT_OK, EXIT_SLO
from sim.scenario_load import ScenarioError
from sim.sweep.aggregate import cheapest
from sim.sweep.capacity import CapacityAnswer, capacity_search, parse_target
from sim.sweep.execute import Executor, open_executor
from sim.sweep.grid import parse_axis, plan_sweep
from sim.sweep.metrics import fmt_metric
from sim.sweep.run import SweepError, SweepOutcome, run_sweep

__all__ = ["EXIT_INTERRUPTED", "add_parsers", "capacity_command", "sweep_command"]

EXIT_INTERRUPTED = 130


def _execution_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="sweep seed; replication r uses the r-th spawned seed")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:8786); default: a LocalCluster on this machine")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes (default: one per core); 0 = in-process, sequential")
    p.add_argument("--in-process", action="store_true", help="run sequentially in this process (= --workers 0)")
    p.add_argument("--out", type=Path, default=None, help="output directory")
    p.add_argument("--resume", action="store_true", help="skip replications already recorded ok in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field for every point (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no tables")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("sweep", help="run a grid of scenario variants × replications (Dask), with CIs and a report")
    s.add_argument("scenario", type=Path)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a scenario field and its values (repeatable; the grid is their product)")
    s.add_argument("--replications", type=int, default=10)
    _execution_options(s)
    c = sub.add_parser("capacity", help="bisect for the smallest value of a parameter meeting a target")
    c.add_argument("scenario", type=Path)
    c.add_argument("--target", required=True, help='e.g. "auth_latency_ms.p99<1500"')
    c.add_argument("--vary", required=True, metavar="KEY",
                   help="an integer scenario field, e.g. services.exchange.capacity")
    c.add_argument("--low", type=int, default=1)
    c.add_argument("--high", type=int, default=64)
    c.add_argument("--replications", type=int, default=3)
    c.add_argument("--criterion", choices=("mean", "ci"), default="mean",
                   help="judge the target on the mean (default) or on the 95 %% CI bound")
    _execution_options(c)


def _err(message: str) -> None:
    print(f"ccsim: {message}", file=sys.stderr)


def _workers(args: argparse.Namespace) -> int:
    if args.in_process:
        return 0
    if args.workers is None:
        return os.cpu_count() or 1
    if args.workers < 0:
        raise ScenarioError("--workers must not be negative")
    return int(args.workers)


@contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Executor]:
    try:
        executor = open_executor(_workers(args), args.scheduler)
    except (OSError, TimeoutError) as exc:
        raise ScenarioError(f"cannot reach the Dask scheduler {args.scheduler}: {exc}") from None
    with executor:
        yield executor


def _guarded(body: Callable[[], int]) -> int:
    try:
        return body()
    except (ScenarioError, SweepError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted; finished replications are kept in the journal — rerun with --resume")
        return EXIT_INTERRUPTED


def _console() -> Console:
    """Wide enough for the tables when stdout is a file or a pipe (rich would assume 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_sweep(outcome: SweepOutcome, report: Path) -> None:
    table = Table(title=f"sweep · {outcome.executed} run, {outcome.skipped} resumed, "
                        f"{len(outcome.failed)} failed · {outcome.executor}")
    for col in ("point", "ok/failed", "p99 latency (95 % CI)", "deadline misses", "approval", "meets SLOs"):
        table.add_column(col, justify="left" if col == "point" else "right")
    for p in outcome.points:
        p99 = fmt_metric("auth_latency_ms.p99", p["auth_latency_ms.p99.mean"])
        lo, hi = p["auth_latency_ms.p99.ci95_low"], p["auth_latency_ms.p99.ci95_high"]
        if not math.isnan(lo):  # there is an interval (two or more replications)
            p99 += f" [{lo:,.0f}–{hi:,.0f}]"
        table.add_row(p["label"], f"{p['n_ok']}/{p['n_failed']}", p99,
                      fmt_metric("deadline_miss_rate", p["deadline_miss_rate.mean"]),
                      fmt_metric("payments.approval_rate", p["payments.approval_rate.mean"]),
                      "yes" if p["meets_slos"] else "no")
    console = _console()
    console.print(table)
    if outcome.plan.scenarios[0].slos:
        for entry in cheapest(outcome.plan, outcome.points):
            condition = ", ".join(f"{k}={v}" for k, v in entry.condition)
            prefix = f"cheapest meeting the SLOs{' at ' + condition if condition else ''}: "
            console.print(prefix + (f"{entry.point['label']} ({entry.point['cost_workers']} workers)"
                                    if entry.point else "none"))
    for r in outcome.failed:
        _err(f"replication {r['replication']} of {r['point']} failed (seed {r['seed']}): {r['error']}")
    print(report)


def sweep_command(args: argparse.Namespace) -> int:
    def body() -> int:
        axes = [parse_axis(text) for text in args.grid]
        plan = plan_sweep(args.scenario, axes, args.replications, args.seed, args.overrides)
        out = args.out or Path("runs") / f"sweep-{args.scenario.stem}"
        with _executor(args) as executor:
            outcome = run_sweep(plan, out, executor, resume=args.resume, quiet=args.quiet)
        from sim.sweep.report import build_sweep_report  # noqa: PLC0415 — plotly loads only for a report

        report = build_sweep_report(outcome)
        if not args.quiet:
            _print_sweep(outcome, report)
        return EXIT_INTEGRITY if outcome.failed else EXIT_OK
    return _guarded(body)


def _print_capacity(result: CapacityAnswer) -> None:
    table = Table(title=f"{result.key}: target {result.target.text} on the {result.criterion}")
    for col in ("value", "ok/failed", "mean", "95 % CI", "judged", "meets"):
        table.add_column(col, justify="right")
    metric = result.target.metric
    for e in sorted(result.evaluations, key=lambda e: e.value):
        ci = ("n/a" if math.isnan(e.ci95_low)
              else f"{fmt_metric(metric, e.ci95_low)} – {fmt_metric(metric, e.ci95_high)}")
        table.add_row(str(e.value), f"{e.n_ok}/{e.n_failed}", fmt_metric(metric, e.mean), ci,
                      fmt_metric(metric, e.judged), "yes" if e.meets else "no")
    _console().print(table)


def capacity_command(args: argparse.Namespace) -> int:
    def body() -> int:
        target = parse_target(args.target)
        if args.replications < 1:
            raise ScenarioError("--replications must be at least 1")
        out = args.out or Path("runs") / f"capacity-{args.scenario.stem}"
        with _executor(args) as executor:
            result = capacity_search(args.scenario, args.vary, args.low, args.high, target,
                                     replications=args.replications, seed=args.seed, overrides=args.overrides,
                                     out_dir=out, executor=executor, criterion=args.criterion, resume=args.resume,
                                     quiet=args.quiet)
        if not args.quiet:
            _print_capacity(result)
        evaluated = ", ".join(str(e.value) for e in result.evaluations)
        if result.answer is None:
            print(f"{args.vary}: the target {target.text} is not met even at {args.high} (evaluated {evaluated})")
            return EXIT_SLO
        print(f"{args.vary} = {result.answer}: the smallest value in [{args.low}, {args.high}] meeting "
              f"{target.text} ({result.criterion} of {args.replications} replications; evaluated {evaluated})")
        return EXIT_OK
    return _guarded(body)
