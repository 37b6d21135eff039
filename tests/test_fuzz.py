"""Fuzzing the two parsers that read untrusted text: amounts and scenario files (issue 8 item 4).

Hypothesis generates many inputs, random and near-valid, and each target checks one promise:

- ``services.money.parse_amount`` raises :class:`MoneyError` and nothing else, whatever it is
  given; what it accepts is plain ASCII decimal text within the asset's scale and ``AMOUNT_MAX``,
  parses to exactly the value the text means, and round-trips through ``format_amount``;
- ``sim.scenario_load.load_scenario`` returns a Scenario or raises :class:`ScenarioError` (a message
  that names the file), never another exception, for random YAML-ish text, random YAML documents
  built from the scenario schema's own keys, random mutations of the real scenario files, and
  random ``--set`` overrides.

``CCSIM_FUZZ_SCALE=20 pytest tests/test_fuzz.py`` runs 20 times as many examples. A coverage-guided
target for the same two functions is ``tests/faults/fuzz_parsers.py`` (atheris; docs/reliability.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.money import AMOUNT_MAX, DEFAULT_ASSETS, Asset, MoneyError, format_amount, parse_amount
from sim.scenario import Scenario
from sim.scenario_load import ScenarioError, load_scenario

SCALE = int(os.environ.get("CCSIM_FUZZ_SCALE", "1"))
SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def fuzz(examples: int) -> Any:
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- amounts -----------------------------------------------------------------------------------

ASSETS = st.sampled_from(DEFAULT_ASSETS) | st.builds(Asset, st.sampled_from(["ZZ", "SATS", "X0"]),
                                                     st.integers(0, 18))
TOKENS = ["0", "1", "9", "00", "12", ".", "-", "+", "e", "E", "e-5", ",", "_", " ", "\n", "\t", "\x00",
          "NaN", "nan", "Infinity", "inf", "١٠", "１０", "٫", "\u00a0", "\u2212", "0x1f", "1e309",
          "9" * 31, "0" * 40, "²", "Ⅻ", "𝟗", "ǅ"]
AMOUNT_TEXT = (
    st.text(max_size=60)
    | st.from_regex(r"\A-?[0-9]{0,45}(\.[0-9]{0,22})?\Z")
    | st.lists(st.sampled_from(TOKENS), max_size=8).map("".join)
    | st.binary(max_size=40).map(lambda b: b.decode("utf-8", errors="surrogateescape"))
)


_EXACT = Context(prec=100)


def _check_amount(text: str, asset: Asset, allow_negative: bool) -> None:
    try:
        minor = parse_amount(text, asset, allow_negative=allow_negative)
    except MoneyError:
        return
    assert type(minor) is int
    assert PLAIN_DECIMAL.fullmatch(text), f"accepted non-plain text {text!r}"
    assert abs(minor) <= AMOUNT_MAX
    assert allow_negative or minor >= 0
    # Exactly what the text means, no rounding: the oracle itself must not round either, so it
    # multiplies in a context wider than any accepted amount (the default 28 digits is not).
    assert _EXACT.multiply(Decimal(text), Decimal(asset.unit)) == minor
    formatted = format_amount(minor, asset)
    assert parse_amount(formatted, asset, allow_negative=True) == minor
    assert formatted.count(".") == (1 if asset.scale else 0)
    assert len(formatted.partition(".")[2]) == asset.scale


@fuzz(2000)
@given(AMOUNT_TEXT, ASSETS, st.booleans())
def test_parse_amount_raises_only_money_error(text: str, asset: Asset, allow_negative: bool) -> None:
    _check_amount(text, asset, allow_negative)


@fuzz(300)
@given(st.one_of(st.binary(max_size=10), st.integers(), st.floats(allow_nan=True), st.none(),
                 st.booleans(), st.decimals(allow_nan=True), st.lists(st.text(max_size=3), max_size=2)),
       ASSETS)
def test_parse_amount_refuses_every_non_string(value: object, asset: Asset) -> None:
    with pytest.raises(MoneyError):
        parse_amount(value, asset)  # type: ignore[arg-type]


@fuzz(1000)
@given(st.integers(-AMOUNT_MAX, AMOUNT_MAX), ASSETS)
def test_every_amount_round_trips_through_its_text(minor: int, asset: Asset) -> None:
    assert parse_amount(format_amount(minor, asset), asset, allow_negative=True) == minor


# -- scenario files ----------------------------------------------------------------------------

def _keys(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _keys(v)


REAL_TEXTS = [p.read_text(encoding="utf-8") for p in SCENARIOS]
SCHEMA_KEYS = sorted({k for t in REAL_TEXTS for k in _keys(yaml.safe_load(t))})
NASTY_VALUES = ["-1", "0", "1e309", ".inf", "-.inf", ".nan", "99999999999999999999999", "0.0000001", "null",
                "[]", "{}", "~", "'x'", "!!binary aGVsbG8=", "&a [*a]", "*missing", "!!python/name:os.system",
                "\"\\ud800\"", "2024-02-30", "2001-12-14t21:59:43.10-99:99", "[" * 3000, "0x10", "0o17", "yes",
                "1_000", "-0", "'٣'", "[1, [2, [3]]]"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "scenario.yaml"


def _load(path: Path, text: str | bytes, overrides: tuple[str, ...] = ()) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        scenario, _ = load_scenario(path, overrides)
    except ScenarioError as exc:
        assert str(exc).startswith((str(path), "--set")), str(exc)
        return
    assert isinstance(scenario, Scenario)


YAMLISH = st.text(alphabet=st.sampled_from(list("abcxyz_019 :-[]{},#&*!|>'\"%@?.\n\t")) | st.characters(),
                  max_size=300)


@fuzz(400)
@given(YAMLISH | st.binary(max_size=200))
def test_loader_on_random_text_returns_a_scenario_or_scenario_error(scratch: Path, text: str | bytes) -> None:
    _load(scratch, text)


SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["45000000", "0.5", "jit", "lognormal", "KZT", "BTC"]))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(SCHEMA_KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)


@fuzz(150)
@given(st.dictionaries(st.sampled_from(SCHEMA_KEYS), DOCUMENTS, max_size=8))
def test_loader_on_documents_of_schema_keys(scratch: Path, doc: dict[str, Any]) -> None:
    _load(scratch, yaml.safe_dump(doc, allow_unicode=True))


MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 200)),
    st.tuples(st.just("duplicate"), st.integers(0, 200)),
    st.tuples(st.just("swap"), st.integers(0, 200), st.integers(0, 200)),
    st.tuples(st.just("indent"), st.integers(0, 200), st.integers(-4, 4)),
    st.tuples(st.just("value"), st.integers(0, 200), st.sampled_from(NASTY_VALUES)),
    st.tuples(st.just("splice"), st.integers(0, 10_000), st.integers(0, 40), YAMLISH.map(lambda t: t[:20])),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
)


def _mutate(text: str, mutations: list[tuple[Any, ...]]) -> str:
    lines = text.split("\n")
    for m in mutations:
        i = m[1] % max(len(lines), 1) if m[0] not in ("splice", "truncate") else 0
        if m[0] == "delete" and lines:
            del lines[i]
        elif m[0] == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif m[0] == "swap" and lines:
            j = m[2] % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif m[0] == "indent" and lines:
            lines[i] = " " * max(0, m[2]) + (lines[i][-m[2]:] if m[2] < 0 else lines[i])
        elif m[0] == "value" and lines:
            key, sep, _ = lines[i].partition(":")
            lines[i] = f"{key}: {m[2]}" if sep else lines[i]
        elif m[0] == "splice":
            joined = "\n".join(lines)
            at = m[1] % (len(joined) + 1)
            lines = (joined[:at] + m[3] + joined[at + m[2]:]).split("\n")
        elif m[0] == "truncate":
            joined = "\n".join(lines)
            lines = joined[:m[1] % (len(joined) + 1)].split("\n")
    return "\n".join(lines)


@fuzz(250)
@given(st.sampled_from(REAL_TEXTS), st.lists(MUTATION, min_size=1, max_size=5))
def test_loader_on_mutated_real_scenarios(scratch: Path, text: str, mutations: list[tuple[Any, ...]]) -> None:
    _load(scratch, _mutate(text, mutations))


OVERRIDE = st.builds(
    lambda path, value: f"{path}={value}",
    st.lists(st.sampled_from(SCHEMA_KEYS) | st.sampled_from(["0", "1", "9", ""]), min_size=1, max_size=4)
    .map(".".join),
    st.sampled_from(NASTY_VALUES) | st.text(max_size=10),
) | st.text(max_size=30)


@fuzz(100)
@given(st.sampled_from(REAL_TEXTS), st.lists(OVERRIDE, max_size=3))
def test_loader_with_random_overrides(scratch: Path, text: str, overrides: list[str]) -> None:
    _load(scratch, text, tuple(overrides))


def test_the_real_scenarios_load() -> None:
    """The mutation targets start from valid files (else they would only test the error path)."""
    assert len(SCENARIOS) >= 5
    for path in SCENARIOS:
        assert isinstance(load_scenario(path)[0], Scenario)
