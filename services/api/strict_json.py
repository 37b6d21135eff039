"""Strict JSON for request bodies: the parser in front of every model.

Python's ``json.loads`` accepts what a money API must not: ``NaN`` and ``Infinity``, ``1e309``
(which becomes ``inf``), a key given twice (the last one silently wins, so two parties can read two
different requests from the same bytes), and nesting deep enough to exhaust the stack. This module
rejects all of them with a :class:`JsonRejectedError` carrying a reason, before pydantic sees the body.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from services.errors import CcsimError

__all__ = ["JSON_DEPTH_MAX_DEFAULT", "JsonRejectedError", "json_depth", "parse_json_strict"]

JSON_DEPTH_MAX_DEFAULT: Final = 32

# Strings are skipped when counting nesting (a "[" inside a string opens nothing).
_STRING_RE: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN: Final = frozenset(b"[{")
_CLOSE: Final = frozenset(b"]}")


class JsonRejectedError(CcsimError, ValueError):
    """The body is not strict JSON; ``reason`` says why in words a client can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw``, counted without parsing (no recursion)."""
    depth = deepest = 0
    for byte in _STRING_RE.sub(b'""', raw):
        if byte in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in _CLOSE:
            depth -= 1
    return deepest


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRejectedError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JsonRejectedError(f"{name} is not a JSON number; amounts are decimal strings")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejectedError(f"number {text[:40]} is out of range; amounts are decimal strings")
    return value


def parse_json_strict(raw: bytes, *, depth_max: int = JSON_DEPTH_MAX_DEFAULT) -> Any:
    """Parse a request body, or raise :class:`JsonRejectedError` (the caller answers 400)."""
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise JsonRejectedError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    depth = json_depth(raw)
    if depth > depth_max:
        raise JsonRejectedError(f"JSON nested {depth} deep; at most {depth_max} levels are accepted")
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except JsonRejectedError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRejectedError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise JsonRejectedError(f"invalid JSON: {str(exc)[:120]}") from None
