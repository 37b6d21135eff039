"""The documentation site says only what exists: its pages, commands and scenario files.

- every page in the ``mkdocs.yml`` nav exists, and every page in ``docs/`` is in the nav;
- no page carries a to-do marker;
- every ``ccsim <subcommand>`` named in code (spans or blocks) is a subcommand of the CLI;
- every scenario file named exists in ``scenarios/`` (names starting with ``my_`` and upper-case
  placeholders such as ``SCENARIO.yaml`` are examples of the reader's own files);
- every ``ccsim`` command in an ``sh`` block parses, and its scenario with its ``--set`` (and each
  ``--grid`` / ``--vary`` value) validates — those commands are too slow to run in the tests, so
  this is what keeps them honest (``console`` blocks are run: ``tests/test_docs_commands.py``);
- the YAML excerpts of the CryptoCity walkthrough are lines of ``scenarios/cryptocity_day.yaml``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cli import _parser
from sim.scenario_load import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_SUBCOMMAND = re.compile(r"(?:^|[\s/`(])ccsim\s+([a-z][a-z-]*)")
_SCENARIO_PATH = re.compile(r"scenarios/([A-Za-z0-9_.-]+\.ya?ml)")
_BARE_YAML = re.compile(r"(?<![/\w])([A-Za-z0-9_-]+\.yaml)\b")
_MARKER = re.compile(r"\b(TODO|TBD|FIXME)\b")


def _nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return [p for p in _nav_pages(config["nav"]) if not p.startswith(("http://", "https://"))]


def fenced_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """(language, lines) of every fenced block, indented ones included."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        yield lang, body
        i += 1


def code_texts(text: str) -> Iterator[str]:
    """Everything in code: fenced blocks and inline code spans outside them."""
    outside: list[str] = []
    in_block = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            yield line
        else:
            outside.append(line)
    for m in _CODE_SPAN.finditer("\n".join(outside)):
        yield m.group(1)


def cli_subcommands() -> set[str]:
    parser = _parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the ccsim parser has no subcommands")


def sh_commands(text: str) -> Iterator[list[str]]:
    """The ``ccsim`` commands of the page's ``sh`` blocks, as argument lists (without ``ccsim``)."""
    for lang, body in fenced_blocks(text):
        if lang not in ("sh", "bash", "shell"):
            continue
        joined = "\n".join(body).replace("\\\n", " ")
        for line in joined.split("\n"):
            if "ccsim" not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in (";", "&&", "||", "|", "&"):
                    if words and Path(words[0]).name == "ccsim":
                        yield words[1:]
                    words = []
                else:
                    words.append(token)


def _is_placeholder(name: str) -> bool:
    stem = Path(name).stem
    return stem.startswith("my_") or stem.isupper()


# -- tests -----------------------------------------------------------------------------------
def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    nav = nav_pages()
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert missing == [], f"in mkdocs.yml nav but not in docs/: {missing}"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    orphans = [str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in nav]
    assert orphans == [], f"pages missing from the mkdocs.yml nav: {orphans}"


def test_the_nav_starts_with_getting_started() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    first = config["nav"][0]
    assert isinstance(first, dict) and list(first) == ["Getting started"]
    assert "getting-started.md" in list(_nav_pages(first))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_page_carries_a_to_do_marker(page: Path) -> None:
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1)
            if _MARKER.search(line)]
    assert hits == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_ccsim_subcommand_named_exists(page: Path) -> None:
    known = cli_subcommands()
    named = {m.group(1) for code in code_texts(page.read_text(encoding="utf-8"))
             for m in _SUBCOMMAND.finditer(code)}
    assert named - known == set(), f"not ccsim subcommands (the CLI has {sorted(known)})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_scenario_file_named_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    names = {m.group(1) for m in _SCENARIO_PATH.finditer(text)}
    # A shell comment names outputs ("# writes overlay.yaml"), not scenario files to read.
    names |= {m.group(1) for code in code_texts(text) for line in code.split("\n")
              for m in _BARE_YAML.finditer(line.split(" #", 1)[0])}
    missing = sorted(n for n in names if not _is_placeholder(n) and not (ROOT / "scenarios" / n).is_file())
    assert missing == []


def _validations(args: argparse.Namespace) -> Iterator[list[str]]:
    """The override lists a documented command's scenario must accept."""
    base = list(getattr(args, "overrides", []) or [])
    yield base
    for axis in getattr(args, "grid", None) or []:
        key, _, values = axis.partition("=")
        for value in values.split(","):
            yield [*base, f"{key}={value}"]
    if getattr(args, "vary", None):
        for bound in (args.low, args.high):
            if bound is not None:
                yield [*base, f"{args.vary}={bound}"]


def _without_substitutions(argv: list[str]) -> list[str]:
    """Drop ``$(…)`` spans: they expand to outputs of earlier commands (``$(cat RUN/overlay.set)``),
    which the test cannot produce; the rest of the command must still parse and validate."""
    out: list[str] = []
    depth = 0
    for token in argv:
        depth += token.count("$(")
        if depth == 0:
            out.append(token)
        depth -= min(depth, token.count(")"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_ccsim_command_in_sh_blocks_parses_and_validates(page: Path) -> None:
    parser = _parser()
    for argv in map(_without_substitutions, sh_commands(page.read_text(encoding="utf-8"))):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"does not parse: ccsim {shlex.join(argv)}")
        if any("..." in a or "…" in a for a in argv):
            continue  # an elided example: parsing is all that can be checked
        scenario = getattr(args, "scenario", None) or getattr(args, "file", None)
        if scenario is None or _is_placeholder(str(scenario)):
            continue
        path = ROOT / scenario
        assert path.is_file(), f"ccsim {shlex.join(argv)}: no such scenario file"
        for overrides in _validations(args):
            try:
                load_scenario(path, overrides)
            except ScenarioError as exc:
                pytest.fail(f"ccsim {shlex.join(argv)}: {exc}")


def test_the_walkthrough_quotes_the_scenario_file() -> None:
    page = (DOCS / "cryptocity-day-walkthrough.md").read_text(encoding="utf-8")
    source = (ROOT / "scenarios" / "cryptocity_day.yaml").read_text(encoding="utf-8").split("\n")
    excerpts = [body for lang, body in fenced_blocks(page) if lang == "yaml"]
    assert len(excerpts) >= 8
    for body in excerpts:
        first = body[0]
        starts = [i for i, line in enumerate(source) if line == first]
        assert any(source[i:i + len(body)] == body for i in starts), f"not in the scenario file:\n{body}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The extractors find what they must, so the tests above are not vacuous."""
    text = ("Run `ccsim frobnicate` or\n```sh\nccsim run scenarios/none.yaml --set x=1 # c\n"
            ".venv/bin/ccsim validate my_day.yaml && echo ok\n```\n")
    assert {m.group(1) for c in code_texts(text) for m in _SUBCOMMAND.finditer(c)} == {"frobnicate", "run",
                                                                                        "validate"}
    assert list(sh_commands(text)) == [["run", "scenarios/none.yaml", "--set", "x=1"],
                                       ["validate", "my_day.yaml"]]
    assert "frobnicate" not in cli_subcommands()
    assert _is_placeholder("my_day.yaml") and _is_placeholder("SCENARIO.yaml")
    assert not _is_placeholder("cryptocity_day.yaml")
