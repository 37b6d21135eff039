"""The documentation's commands are run and their output compared with what the page shows.

Every fenced ```` ```console ```` block in ``docs/`` is a shell session: a line starting with
``$ `` is a command (a trailing ``\\`` continues it on the next line), the lines after it up to the
next command are its recorded output. Each page's commands run in order, with ``bash``, in a fresh
temporary directory holding a copy of ``scenarios/``, with the project's ``ccsim`` first on the
``PATH``. A command must exit 0 unless it shows its exit code itself (``...; echo "exit code $?"``).

Output is compared after normalizing what legitimately differs between two runs: wall-clock times
(``23.4 s wall``), the progress lines ``ccsim: virtual 06:00:00, …`` (written to stderr while a
run goes), the temporary directory's path and runs of spaces (table layout). Every figure of the
simulation is compared: the same scenario and seed give the same run.

When the code changes what a command prints, do not edit the page by hand: regenerate every
recorded output with

    .venv/bin/python tests/test_docs_commands.py --update [docs/page.md ...]

and read the diff before committing it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TIMEOUT_S = 600
UPDATE_COMMAND = ".venv/bin/python tests/test_docs_commands.py --update"

_FENCE_OPEN = re.compile(r"^```console\s*$")
_FENCE_CLOSE = re.compile(r"^```\s*$")
_PROGRESS = re.compile(r"^ccsim: virtual \d\d:\d\d:\d\d, [\d,]+ payments\s*$")
_WALL = re.compile(r"\b\d+(?:\.\d+)? s wall\b")
_SPACES = re.compile(r"[ \t]+")


@dataclass
class Command:
    text: str  # as run by bash (continuation lines joined with newlines)
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    start: int  # index of the line after the opening fence
    end: int  # index of the closing fence
    commands: list[Command] = field(default_factory=list)


def parse_blocks(text: str) -> list[Block]:
    """The console blocks of a page, with their commands and recorded outputs."""
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not _FENCE_OPEN.match(lines[i]):
            i += 1
            continue
        block = Block(start=i + 1, end=i + 1)
        j = i + 1
        while j < len(lines) and not _FENCE_CLOSE.match(lines[j]):
            line = lines[j]
            if line.startswith("$ "):
                cmd = [line[2:]]
                while cmd[-1].endswith("\\") and j + 1 < len(lines) and not _FENCE_CLOSE.match(lines[j + 1]):
                    j += 1
                    cmd.append(lines[j])
                block.commands.append(Command("\n".join(cmd)))
            elif block.commands:
                block.commands[-1].expected.append(line)
            else:
                raise ValueError(f"line {j + 1}: output before the first command of a console block")
            j += 1
        if j >= len(lines):
            raise ValueError(f"line {i + 1}: console block is not closed")
        block.end = j
        blocks.append(block)
        i = j + 1
    return blocks


def pages_with_commands() -> list[Path]:
    return [p for p in sorted(DOCS.rglob("*.md")) if parse_blocks(p.read_text(encoding="utf-8"))]


def normalize(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if _PROGRESS.match(line):
            continue
        out.append(_SPACES.sub(" ", _WALL.sub("… s wall", line)).strip())
    while out and not out[-1]:
        out.pop()
    return out


@dataclass
class Outcome:
    command: Command
    output: list[str]  # as printed, progress lines dropped, the work directory's path removed
    exit_code: int


def run_page(page: Path) -> list[Outcome]:
    """Run every command of ``page`` in order, in one fresh work directory."""
    outcomes: list[Outcome] = []
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="80", TERM="dumb", NO_COLOR="1", PYTHONUNBUFFERED="1", LC_ALL="C.UTF-8",
    )
    with tempfile.TemporaryDirectory(prefix="ccsim-docs-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "scenarios", work / "scenarios")
        for block in parse_blocks(page.read_text(encoding="utf-8")):
            for command in block.commands:
                proc = subprocess.run(
                    ["bash", "-c", command.text], cwd=work, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S, check=False,
                )
                text = proc.stdout.replace(str(work.resolve()) + "/", "").replace(str(work) + "/", "")
                lines = [ln.rstrip() for ln in text.split("\n") if not _PROGRESS.match(ln)]
                while lines and not lines[-1]:
                    lines.pop()
                outcomes.append(Outcome(command, lines, proc.returncode))
    return outcomes


def problems(outcomes: list[Outcome]) -> list[str]:
    found = []
    for o in outcomes:
        if o.exit_code != 0 and "$?" not in o.command.text:
            found.append(f"$ {o.command.text}\nexited {o.exit_code} (show it with `; echo \"exit code $?\"` if "
                         f"intended):\n" + "\n".join(o.output))
            continue
        want, got = normalize(o.command.expected), normalize(o.output)
        if want != got:
            diff = "\n".join(difflib.unified_diff(want, got, "page", "actual", lineterm=""))
            found.append(f"$ {o.command.text}\n{diff}")
    return found


def update_page(page: Path) -> bool:
    """Rewrite the recorded outputs of ``page`` from a fresh run; True when the page changed."""
    text = page.read_text(encoding="utf-8")
    ran = run_page(page)
    failed = [o for o in ran if o.exit_code != 0 and "$?" not in o.command.text]
    if failed:
        raise SystemExit(f"{page}: not updated, a command failed:\n" + "\n".join(problems(failed)))
    outcomes = iter(ran)
    lines = text.split("\n")
    new: list[str] = []
    last = 0
    for block in parse_blocks(text):
        new.extend(lines[last:block.start])
        for _ in block.commands:
            o = next(outcomes)
            first, *rest = o.command.text.split("\n")
            new.append(f"$ {first}")
            new.extend(rest)
            new.extend(o.output)
        last = block.end
    new.extend(lines[last:])
    result = "\n".join(new)
    if result != text:
        page.write_text(result, encoding="utf-8")
    return result != text


# -- tests -----------------------------------------------------------------------------------
def test_the_block_parser() -> None:
    page = "text\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n```sh\n$ not run\n```\n"
    (block,) = parse_blocks(page)
    assert [c.text for c in block.commands] == ["echo a \\\n  b", "true"]
    assert block.commands[0].expected == ["a b"]
    assert block.commands[1].expected == []
    with pytest.raises(ValueError, match="not closed"):
        parse_blocks("```console\n$ true\n")


def test_normalize_ignores_wall_time_progress_and_layout_only() -> None:
    a = ["  x · seed 1 · 23.4 s wall ", "ccsim: virtual 06:00:00, 1,234 payments", "│ a   │  1 │", ""]
    b = ["x · seed 1 · 2.3 s wall", "│ a │ 1 │"]
    assert normalize(a) == normalize(b)
    assert normalize(["│ a │ 1 │"]) != normalize(["│ a │ 2 │"])


def test_a_wrong_recorded_output_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("```console\n$ echo 1\n2\n$ false\n```\n", encoding="utf-8")
    found = problems(run_page(page))
    assert len(found) == 2
    assert "-2" in found[0] and "+1" in found[0]
    assert "exited 1" in found[1]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_commands(), ids=lambda p: str(p.relative_to(DOCS)))
def test_the_page_commands_print_what_the_page_shows(page: Path) -> None:
    found = problems(run_page(page))
    assert not found, (f"{page.relative_to(ROOT)}: commands print something else than the page shows "
                       f"(regenerate with `{UPDATE_COMMAND} {page.relative_to(ROOT)}` and read the diff):\n\n"
                       + "\n\n".join(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the docs' console blocks; --update rewrites their output")
    parser.add_argument("--update", action="store_true", help="rewrite the recorded outputs")
    parser.add_argument("pages", nargs="*", type=Path, help="pages (default: every page with console blocks)")
    args = parser.parse_args(argv)
    pages = [p.resolve() for p in args.pages] or pages_with_commands()
    failed = 0
    for page in pages:
        if args.update:
            print(f"{page.relative_to(ROOT)}: {'updated' if update_page(page) else 'unchanged'}")
            continue
        found = problems(run_page(page))
        failed += bool(found)
        print(f"{page.relative_to(ROOT)}: {'ok' if not found else 'DIFFERS'}")
        for item in found:
            print(item, end="\n\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
