"""``ccsim verify`` and ``ccsim bundle``: the commands a regulator runs (docs/verifying-a-run.md).

Exit codes: 0 every check passed; 1 a figure, the journal's hash chain, a bundle's file digest or
(with ``--rerun``) the re-simulated run differs; 2 bad input (not a run directory or a bundle).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sim.bundle import BundleError, make_bundle, opened_bundle
from sim.cli_help import command_help
from sim.run_dir import RunDirError
from sim.runner import ccsim_version, simulate
from sim.scenario_load import ScenarioError, load_scenario
from sim.summary import flatten
from sim.verify import verify_run

__all__ = ["add_verify_commands", "rerun_differences"]

EXIT_OK: Final = 0
EXIT_DIFFERS: Final = 1
EXIT_BAD_INPUT: Final = 2
# What differs between two runs of the same scenario, seed and version by design.
_WALL_CLOCK: Final = frozenset({"wall_s", "payments_per_wall_s", "started_at"})

_VERIFY_EXIT_CODES = """\
exit codes: 0 every figure recomputed from results.db equals summary.json (and, with --rerun, the
re-simulated run is the same); 1 something differs (each difference is printed); 2 not a run
directory or a bundle, or a directory that is incomplete or mixes two runs."""

_BUNDLE_EXIT_CODES = """\
exit codes: 0 the bundle was written (its path and digest are printed); 1 it was written but the run
does not verify; 2 not a complete run directory."""


def _err(message: str) -> None:
    print(f"ccsim: {message}", file=sys.stderr)


def rerun_differences(run_dir: Path) -> list[str]:
    """Simulate the recorded scenario with the recorded seed again; every summary figure that
    differs (wall-clock fields aside), the journal's chain head included."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    if summary.get("ccsim_version") != ccsim_version():
        return [f"the run was made by ccsim {summary.get('ccsim_version')}, this is {ccsim_version()}: "
                "install the recorded version (environment.json of its bundle) to re-run it"]
    conn = sqlite3.connect(run_dir / "results.db")
    try:
        (text,) = conn.execute("SELECT scenario_yaml FROM runs").fetchone()
    finally:
        conn.close()
    with tempfile.TemporaryDirectory() as tmp:
        scenario_file = Path(tmp) / f"{summary['scenario_name']}.yaml"
        scenario_file.write_text(text, encoding="utf-8")
        try:
            scenario, _ = load_scenario(scenario_file)
        except ScenarioError as exc:
            return [f"the recorded scenario no longer loads: {exc}"]
        again = simulate(scenario, text, int(summary["seed"]), Path(tmp) / "rerun").summary
    first, second = flatten(summary), flatten(again)
    return [f"{key}: recorded {first.get(key)!r}, re-run {second.get(key)!r}"
            for key in sorted(first.keys() | second.keys())
            if key not in _WALL_CLOCK and first.get(key) != second.get(key)]


def _verify_dir(run_dir: Path, rerun: bool, label: str | None = None) -> int:
    verification = verify_run(run_dir, label)
    print(verification.report())
    code = EXIT_OK if verification.ok else EXIT_DIFFERS
    if rerun:
        differences = rerun_differences(run_dir)
        for line in differences:
            print(f"RERUN DIFFERS {line}")
        print("re-run: " + ("the same scenario, seed and version give the same run, journal chain head "
                            "included" if not differences else f"{len(differences)} figures differ"))
        code = code if not differences else EXIT_DIFFERS
    return code


def verify_command(args: argparse.Namespace) -> int:
    target: Path = args.target
    try:
        if target.is_file():
            with opened_bundle(target) as (run_dir, digest, changed):
                print(f"bundle {target}: digest {digest}")
                for member in changed:
                    print(f"DIFFERS {member}: its SHA-256 is not the one SHA256SUMS records")
                code = _verify_dir(run_dir, args.rerun, f"{target} (unpacked)")
                return EXIT_DIFFERS if changed else code
        return _verify_dir(target, args.rerun)
    except (RunDirError, BundleError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT


def bundle_command(args: argparse.Namespace) -> int:
    try:
        path, digest, verified = make_bundle(args.run_dir, args.out)
    except (RunDirError, BundleError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(path)
    print(f"digest (SHA-256 of SHA256SUMS): {digest}")
    print(f"check it anywhere with: ccsim verify {path}")
    if not verified:
        _err("the run does not verify: see verify.txt in the bundle")
        return EXIT_DIFFERS
    return EXIT_OK


def add_verify_commands(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    v = sub.add_parser("verify", help="recompute every figure of a run from its results.db; exit 1 if any differs",
                       **command_help("ccsim verify runs/jit-1.tar.gz --rerun", _VERIFY_EXIT_CODES))
    v.add_argument("target", type=Path, metavar="RUN_DIR|BUNDLE", help="a run directory or a bundle (.tar.gz)")
    v.add_argument("--rerun", action="store_true",
                   help="also simulate the recorded scenario and seed again and compare")
    b = sub.add_parser("bundle", help="write one archive with a run, its scenario, versions and digests",
                       **command_help("ccsim bundle runs/jit-1      # writes runs/jit-1.tar.gz", _BUNDLE_EXIT_CODES))
    b.add_argument("run_dir", type=Path)
    b.add_argument("--out", type=Path, default=None,
                   help="archive path (default: RUN_DIR.tar.gz beside the run directory)")
    commands["verify"] = verify_command
    commands["bundle"] = bundle_command
