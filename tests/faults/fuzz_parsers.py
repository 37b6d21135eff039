"""Coverage-guided fuzzing (atheris, libFuzzer) of the amount parser and the scenario loader.

Not part of ``make test``: Hypothesis covers the same promises there (tests/test_fuzz.py). This one
runs as long as you let it and learns from coverage which inputs reach new code. Install the
optional extra first: ``.venv/bin/pip install -e '.[fuzz]'``. Then::

    .venv/bin/python tests/faults/fuzz_parsers.py amount -atheris_runs=500000
    .venv/bin/python tests/faults/fuzz_parsers.py scenario -max_total_time=120

A crash (any exception other than ``MoneyError`` / ``ScenarioError``, or a broken round trip) stops
the run and writes the input to ``crash-<sha1>``. The scenario target starts from a copy of
``scenarios/*.yaml`` in a temporary corpus directory (libFuzzer adds its finds to that directory,
so the real files are never touched), unless you pass a corpus directory yourself.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from services.money import AMOUNT_MAX, DEFAULT_ASSETS, MoneyError, format_amount, parse_amount
    from sim.scenario_load import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[2]
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_SCRATCH = Path(tempfile.mkdtemp(prefix="fuzz-scenario-")) / "scenario.yaml"


def amount_target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    asset = DEFAULT_ASSETS[fdp.ConsumeIntInRange(0, len(DEFAULT_ASSETS) - 1)]
    allow_negative = fdp.ConsumeBool()
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        minor = parse_amount(text, asset, allow_negative=allow_negative)
    except MoneyError:
        return
    if not (PLAIN_DECIMAL.fullmatch(text) and abs(minor) <= AMOUNT_MAX and (allow_negative or minor >= 0)):
        raise AssertionError(f"accepted {text!r} as {minor}")
    if Decimal(text) * asset.unit != minor:
        raise AssertionError(f"{text!r} parsed to {minor}, not its value")
    if parse_amount(format_amount(minor, asset), asset, allow_negative=True) != minor:
        raise AssertionError(f"{minor} does not round-trip")


def scenario_target(data: bytes) -> None:
    _SCRATCH.write_bytes(data)
    with contextlib.suppress(ScenarioError):
        load_scenario(_SCRATCH)


def main() -> None:
    targets = {"amount": amount_target, "scenario": scenario_target}
    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(targets)}}} [libFuzzer options] [corpus dir]")
    name = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    if name == "scenario" and not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
        for path in sorted((REPO / "scenarios").glob("*.yaml")):
            shutil.copy(path, corpus / path.name)
        args.append(str(corpus))
    atheris.Setup(args, targets[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
