"""The command line's conventions: --version, helpful --help, a quiet broken pipe, did-you-mean for
a misspelt key, a bad --set reported against the argument, a fault window after the run's end as a
warning, and exports that are shareable (0644) with 18-decimal amounts kept whole."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from sim import cli
from sim.runner import ccsim_version, simulate
from sim.scenario_load import load_scenario

ROOT = Path(__file__).resolve().parents[1]
JIT = ROOT / "scenarios" / "jit.yaml"


def _ccsim(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, check=False)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ccsim {ccsim_version()}"


@pytest.mark.parametrize("command", ["", "validate", "run", "report", "compare", "export", "verify", "bundle"])
def test_every_help_shows_defaults_exit_codes_and_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([*([command] if command else []), "--help"])
    text = capsys.readouterr().out
    assert "exit codes: 0" in text and "\nexample:\n  ccsim " in text
    if command == "run":
        assert "(default: 1)" in text and "(default: runs/<scenario>-<seed>/)" in text


def test_a_closed_output_pipe_ends_quietly() -> None:
    child = subprocess.Popen([sys.executable, "-m", "sim.cli", "validate", str(JIT)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before ccsim writes (`ccsim … | head -0`)
    err = child.stderr.read().decode()
    assert child.wait() == 141
    assert err == ""


def test_a_misspelt_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration_s: 600\nwarmup_s: 60\nservices:\n  exchange:\n    capasity: 4\n")
    done = _ccsim("validate", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"ccsim: {bad}:5: services.exchange.capasity: Extra inputs are not permitted; "
                                   "did you mean 'capacity'?")


def test_a_bad_set_is_reported_against_the_set_argument() -> None:
    done = _ccsim("validate", str(JIT), "--set", "services.issuer.capacity=abc", "--set", "issuer.max_slipage_bps=5")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith("ccsim: --set 'services.issuer.capacity=abc': services.issuer.capacity: ")
               for line in lines)
    assert "--set 'issuer.max_slipage_bps=5': issuer.max_slipage_bps: Extra inputs are not permitted; did you mean " \
           "'max_slippage_bps'?" in done.stderr


def test_a_fault_window_after_the_run_ends_is_a_warning_not_an_error() -> None:
    done = _ccsim("validate", str(JIT), "--set", "duration_s=3600",
                  "--set", "services.exchange.outages=[{start_s: 5000, duration_s: 60}]")
    assert done.returncode == 0
    assert "warning: services.exchange.outages.0: starts at 5,000 s, after the run ends at 3,600 s" in done.stderr


def test_exports_are_0644_and_keep_18_decimal_amounts_whole(tmp_path: Path) -> None:
    scenario, text = load_scenario(JIT, ["duration_s=900", "warmup_s=60", "population.cardholders.count=300",
                                         "population.merchants.count=30"])
    run_dir = tmp_path / "run"
    simulate(scenario, text, 1, run_dir)
    assert cli.main(["export", str(run_dir), "--format", "csv"]) == 0
    files = sorted((run_dir / "export").iterdir())
    assert files and all(f.stat().st_mode & 0o777 == 0o644 for f in files)
    with (run_dir / "export" / "payments.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["asset_sold"] == "ETH"]
    assert rows, "the run sold some ETH"
    for row in rows:
        assert Decimal(row["crypto_amount"]) * 10**18 == int(row["crypto_minor"])
        assert len(row["crypto_amount"].split(".")[1]) == 18


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) == 1
    return dict(found[0].choices)


def test_a_simulation_command_line_parses_as_with_every_command() -> None:
    """``ccsim run …`` (and the other simulation commands) get a parser without the live and
    database commands, whose modules are not imported for them: each of its commands parses and
    helps exactly as in the full parser, and those are the only ones it leaves out."""
    full, light = _subparsers(cli._parser()), _subparsers(cli._parser(live=False))
    assert set(light) == set(cli._SIMULATION_COMMANDS)
    assert set(full) - set(light) == {"load", "calibrate", "serve", "db"}
    for name, sub in light.items():
        assert sub.format_help() == full[name].format_help(), name
    argv = ["run", "scenarios/jit.yaml", "--seed", "7", "--set", "duration_s=60", "--quiet"]
    assert cli._parser(live=False).parse_args(argv) == cli._parser().parse_args(argv)


@pytest.mark.parametrize("argv", [["run", "scenarios/jit.yaml", "--bogus"],
                                  ["run", "scenarios/jit.yaml", "--seed", "x"], ["validate"], ["verify"]])
def test_a_simulation_command_lines_usage_error_is_the_full_parsers(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as full:
        cli._parser().parse_args(argv)
    expected = capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == full.value.code == 2
    assert capsys.readouterr() == expected
    assert "load,calibrate,serve,db" in expected.err or argv[0] in expected.err.splitlines()[0]
