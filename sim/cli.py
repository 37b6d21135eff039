"""``ccsim``: the command line.

    ccsim validate FILE
    ccsim run SCENARIO [--seed N] [--out DIR] [--set dotted.key=value ...] [--quiet]
    ccsim report RUN_DIR
    ccsim compare RUN_DIR RUN_DIR ... [--out DIR]
    ccsim export RUN_DIR --format csv|parquet [--out DIR]
    ccsim sweep SCENARIO --grid KEY=V1,V2,... [--replications N] [--scheduler ADDRESS] [--out DIR] [--resume]
    ccsim capacity SCENARIO --target "METRIC<NUMBER" --vary KEY [--low N --high N]
    ccsim db current|upgrade|revision ...   (the party databases' schema: sim/db_cli.py)
    ccsim verify RUN_DIR|BUNDLE [--rerun]   (sim/verify_cli.py)
    ccsim bundle RUN_DIR [--out FILE]
    ccsim --version

Exit codes: 0 ok; 1 a ledger invariant or the reconciliation failed; 2 bad input (nothing
written); 3 an SLO was breached; 130 interrupted; 141 the output pipe was closed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from services.errors import CcsimError
from sim.cli_help import command_help as _help
from sim.progress import print_headline, progress_display
from sim.run_dir import RunDirError
from sim.runner import EXIT_BAD_INPUT, EXIT_OK, ccsim_version, simulate
from sim.scenario import Scenario
from sim.scenario_load import ScenarioError, load_scenario, scenario_warnings
from sim.sweep.cli import EXIT_INTERRUPTED, capacity_command, sweep_command
from sim.sweep.cli import add_parsers as add_sweep_parsers

__all__ = ["main"]

EXIT_BROKEN_PIPE = 141  # the reader went away (128 + SIGPIPE, as a shell reports it)
# The commands this module's imports serve. A command line that starts with one of them gets a
# parser without the live and database commands (load, calibrate, serve, db): importing those
# modules (the services, aiohttp, Alembic) costs more CPU than parsing and is never used by it.
# A usage error leaves its message to the full parser: its usage line names every command.
_SIMULATION_COMMANDS = frozenset({"validate", "run", "report", "compare", "export", "sweep", "capacity",
                                  "verify", "bundle"})


class _UsageError(CcsimError):
    """A simulation command line the parser without the live commands refused."""


class _SimulationParser(argparse.ArgumentParser):
    """The parser (and subparsers) of a simulation command line: a usage error is raised, not
    printed, so that the full parser words it."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser(*, live: bool = True) -> argparse.ArgumentParser:
    parser = (argparse.ArgumentParser if live else _SimulationParser)(
        prog="ccsim", description="Crypto-card payment settlement simulator",
        **_help("ccsim run scenarios/jit.yaml --seed 7 && ccsim verify runs/jit-7"))
    parser.add_argument("--version", action="version", version=f"ccsim {ccsim_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a scenario file; exit 2 with the field path if it is bad",
                       **_help("ccsim validate scenarios/jit.yaml --set services.issuer.capacity=8"))
    v.add_argument("file", type=Path)
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field (repeatable)")
    r = sub.add_parser("run", help="simulate a scenario and write summary.json, results.db and a report",
                       **_help("ccsim run scenarios/jit.yaml --seed 7 --set duration_s=3600 --out runs/hour"))
    r.add_argument("scenario", type=Path)
    r.add_argument("--seed", type=int, default=1, help="the run's random seed: the same seed gives the same run")
    r.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<scenario>-<seed>/)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. services.issuer.capacity=8 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    rep = sub.add_parser("report", help="(re)build report.html for a run directory",
                         **_help("ccsim report runs/jit-7"))
    rep.add_argument("run_dir", type=Path)
    cmp_ = sub.add_parser("compare", help="compare two or more runs side by side",
                          **_help("ccsim compare runs/prefunded-1 runs/jit-1"))
    cmp_.add_argument("run_dirs", type=Path, nargs="+")
    cmp_.add_argument("--out", type=Path, default=None,
                      help="directory for compare.html (default: runs/compare-<run>-vs-<run>/)")
    exp = sub.add_parser("export", help="export payments, legs and time series",
                         **_help("ccsim export runs/jit-7 --format csv"))
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--format", choices=("csv", "parquet"), required=True)
    exp.add_argument("--out", type=Path, default=None, help="directory for the files (default: RUN_DIR/export/)")
    add_sweep_parsers(sub)  # sweep and capacity (sim/sweep/cli.py; exit 130 when interrupted)
    if live:
        importlib.import_module("sim.live.cli_ops").add_live_ops_commands(sub, _COMMANDS)  # load, calibrate
        importlib.import_module("sim.live.cli").add_serve_command(sub, _COMMANDS)  # serve (docs/live-mode.md)
        importlib.import_module("sim.db_cli").add_db_command(sub, _COMMANDS)  # db current|upgrade|revision
    importlib.import_module("sim.verify_cli").add_verify_commands(sub, _COMMANDS)  # verify, bundle
    return parser


def _err(message: str) -> None:
    print(f"ccsim: {message}", file=sys.stderr)


def _report_module() -> Any | None:
    try:
        return importlib.import_module("sim.report")
    except ModuleNotFoundError as exc:
        if exc.name not in ("sim.report",):
            raise
        return None


def _validate(args: argparse.Namespace) -> int:
    try:
        scenario, _ = load_scenario(args.file, args.overrides)
    except ScenarioError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    _warn(scenario)
    print(f"{args.file}: ok — scenario {scenario.name!r}, {scenario.duration_s:g} s, "
          f"{len(scenario.slos)} SLO(s)")
    return EXIT_OK


def _warn(scenario: Scenario) -> None:
    for warning in scenario_warnings(scenario):
        _err(f"warning: {warning}")


def _run(args: argparse.Namespace) -> int:
    if args.seed < 0:
        _err("--seed must not be negative")
        return EXIT_BAD_INPUT
    try:
        scenario, text = load_scenario(args.scenario, args.overrides)
    except ScenarioError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    _warn(scenario)
    run_dir = args.out or Path("runs") / f"{args.scenario.stem}-{args.seed}"
    try:
        with progress_display(scenario.duration_s, quiet=args.quiet) as progress:
            result = simulate(scenario, text, args.seed, run_dir, progress)
    except RunDirError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err(f"interrupted; {run_dir} is as it was before this run")
        return EXIT_INTERRUPTED
    report = _report_module()
    report_path = None
    if report is not None:
        try:
            report_path = report.build_report(run_dir)
        except report.ReportError as exc:
            _err(f"the run finished but its report could not be built: {exc}")
    if not args.quiet:
        print_headline(result, report_path)
    for problem in result.problems:
        _err(problem)
    return result.exit_code


def _with_report(fn: Callable[[Any], int]) -> int:
    report = _report_module()
    if report is None:
        _err("the report module (sim.report) is not installed in this build")
        return EXIT_BAD_INPUT
    try:
        return fn(report)
    except report.ReportError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT


def _report(args: argparse.Namespace) -> int:
    def go(report: Any) -> int:
        print(report.build_report(args.run_dir))
        return EXIT_OK
    return _with_report(go)


def _compare(args: argparse.Namespace) -> int:
    if len(args.run_dirs) < 2:
        _err("compare needs at least two run directories")
        return EXIT_BAD_INPUT
    out = args.out or Path("runs") / ("compare-" + "-vs-".join(d.name for d in args.run_dirs))

    def go(report: Any) -> int:
        path = report.compare_runs(list(args.run_dirs), out)
        print(report.format_compare_table(list(args.run_dirs)))
        print(path)
        return EXIT_OK
    return _with_report(go)


def _export(args: argparse.Namespace) -> int:
    def go(report: Any) -> int:
        for path in report.export_run(args.run_dir, args.format, args.out):
            print(path)
        return EXIT_OK
    return _with_report(go)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": _validate, "run": _run, "report": _report, "compare": _compare, "export": _export,
    "sweep": sweep_command, "capacity": capacity_command,
}


def _quiet_stdout() -> None:
    """After a broken pipe (``ccsim report … | head``) nothing more goes to stdout, and Python's
    flush at exit must not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in _SIMULATION_COMMANDS:
        with contextlib.suppress(_UsageError):  # refused: the full parser words the error (exit 2)
            return _parser(live=False).parse_args(argv)
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            args = _parse(argv)
        except SystemExit:  # --help, --version or a usage error: printed; flushed here, not at exit
            sys.stdout.flush()
            raise
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
