"""One exception tree: every error class ccsim defines derives from ``CcsimError`` (services/errors.py),
and keeps the built-in base its callers catch."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from services.errors import CcsimError

ROOT = Path(__file__).resolve().parents[1]


def _defined_errors() -> list[tuple[str, str]]:
    """(module, class) of every class in services/ and sim/ whose name ends in Error."""
    found = []
    for package in ("services", "sim"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found += [(module, n.name) for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Error")]
    return found


# An HTTP problem is a live adapter's answer (a Starlette HTTPException), not a fault of the tree.
ANSWERS = {"services.api.problems.ProblemError"}


def test_every_error_ccsim_defines_is_a_ccsim_error() -> None:
    classes = {f"{m}.{c}": getattr(importlib.import_module(m), c) for m, c in _defined_errors()}
    errors = {name: cls for name, cls in classes.items() if issubclass(cls, Exception) and name not in ANSWERS}
    assert len(errors) >= 20  # the walk found the tree, not nothing
    assert [name for name, cls in errors.items() if not issubclass(cls, CcsimError)] == []


def test_errors_keep_the_builtin_their_callers_catch() -> None:
    from services.money import MoneyError  # noqa: PLC0415
    from sim.live.serve import SupervisorError  # noqa: PLC0415

    assert issubclass(MoneyError, ValueError) and issubclass(SupervisorError, RuntimeError)
