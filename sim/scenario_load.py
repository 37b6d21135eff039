"""Reading a scenario: YAML in, a validated :class:`~sim.scenario.Scenario` out, or one clear error.

Every error names the file, the field path and, where the YAML can tell, the line
(``my.yaml:14: services.exchange.capacity: …``). Overrides (``--set dotted.key=value``) are applied
to the parsed mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path
from typing import Any, Final, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from services.errors import CcsimError
from sim.scenario import Scenario

__all__ = ["ScenarioError", "apply_overrides", "load_scenario", "parse_scenario", "read_raw", "scenario_sha256",
           "scenario_warnings"]


class ScenarioError(CcsimError):
    """A scenario that cannot be used; ``str()`` is the message for the user, file and field named."""


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based YAML line of the deepest node along ``loc`` that exists."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if str(k.value) == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


_CROSS_FIELD_RE: Final = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_]+)*): (.*)$", re.DOTALL)


def _user_loc(loc: tuple[int | str, ...], raw: object) -> tuple[int | str, ...]:
    """The error's path as the user wrote it: drop the union tags pydantic adds (``lognormal``)."""
    out: list[int | str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and node.get("dist") == part:
            continue  # the discriminator's tag, not a key
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        out.append(part)
    return tuple(out)


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (through Optional, Annotated, tuples), and whether it is the value
    of a mapping (``dict[str, Model]``: the next path part is a key, not a field)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        return _model_in(get_args(annotation)[1])[0], True
    for arg in get_args(annotation):
        model, mapping = _model_in(arg)
        if model is not None:
            return model, mapping
    return None, False


def _known_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed where ``loc``'s last part was found (empty when it cannot tell)."""
    model: type[BaseModel] | None = Scenario
    key_next = False
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if key_next:
            key_next = False
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return []
        model, key_next = _model_in(field.annotation)
    return list(model.model_fields) if model is not None and not key_next else []


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], _known_fields(loc), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _override_of(path: str, overrides: tuple[str, ...] | list[str]) -> str | None:
    """The ``--set`` argument that put the value at ``path`` there (the last one wins)."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return item
    return None


def _format_errors(exc: ValidationError, source: str, root: yaml.Node | None, raw: object,
                   overrides: tuple[str, ...] | list[str] = ()) -> str:
    lines = []
    for err in exc.errors():
        loc = _user_loc(tuple(err["loc"]), raw)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += _did_you_mean(loc)
        cross = _CROSS_FIELD_RE.match(msg) if not loc else None
        if cross:  # a whole-scenario rule names its field in the message
            loc = tuple(int(p) if p.isdigit() else p for p in cross.group(1).split("."))
            msg = cross.group(2)
        path = ".".join(str(p) for p in loc) or "(top level)"
        override = _override_of(path, overrides)
        if override is not None:  # the value came from the command line, not the file
            lines.append(f"--set {override!r}: {path}: {msg}")
            continue
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)


def parse_scenario(raw: object, source: str = "<scenario>", root: yaml.Node | None = None,
                   overrides: tuple[str, ...] | list[str] = ()) -> Scenario:
    """Validate an already-parsed mapping; errors become one :class:`ScenarioError` (an error in a
    value set by ``overrides`` is reported against that ``--set`` argument)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario must be a YAML mapping, not {type(raw).__name__}")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(exc, source, root, raw, overrides)) from None


def read_raw(path: Path) -> tuple[dict[str, Any], yaml.Node | None, str]:
    """The file's mapping, its node tree (for line numbers) and its text; syntax errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # found by tests/test_fuzz.py
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ScenarioError(f"{where}: YAML syntax error: {exc.problem or exc}{context}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: YAML error: {exc}") from None
    except (ValueError, RecursionError) as exc:  # a date like 2024-02-30; nesting too deep (test_fuzz.py)
        raise ScenarioError(f"{path}: YAML error: {type(exc).__name__}: {str(exc)[:200]}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario must be a YAML mapping, not {type(raw).__name__}")
    return raw, root, text


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.path=value`` set; values are parsed as YAML.

    ``services.issuer.capacity=8``, ``arrivals.hourly_profile=[1,1,...]``, ``market.assets.BTC.moves.0.change_pct=-40``.
    Applied before validation, so an override is checked like the file.
    """
    out: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ScenarioError(f"--set {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: 2024-02-30
            raise ScenarioError(f"--set {item!r}: value is not valid YAML: {str(exc)[:200]}") from None
        parts = key.split(".")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, item, ".".join(parts[: depth + 1]))
        _assign(node, parts[-1], value, item)
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _child(node: Any, part: str, item: str, path: str) -> Any:
    if isinstance(node, dict):
        if not isinstance(node.get(part), dict | list):
            node[part] = {}
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise ScenarioError(f"--set {item!r}: {path} is not a mapping or a valid list index")


def _assign(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, dict):
        node[part] = value
    elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
        node[int(part)] = value
    else:
        raise ScenarioError(f"--set {item!r}: cannot set {part!r} here")


def load_scenario(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Scenario, str]:
    """The scenario in ``path`` with ``overrides`` applied, and the YAML text as run.

    The name defaults to the file's stem. The text returned is the file itself when there are no
    overrides, else the merged mapping dumped back to YAML (what the report shows and the hash covers).
    """
    raw, root, text = read_raw(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    raw.setdefault("name", path.stem)
    scenario = parse_scenario(raw, str(path), root, overrides)
    return scenario, text


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What validates but cannot do what it says: a fault window or price move that starts after
    the run ends (``ccsim validate`` and ``ccsim run`` print these; they do not stop the run)."""
    end_s = scenario.duration_s
    found: list[tuple[str, float]] = []
    for name in ("acquirer", "network", "issuer", "exchange", "custody", "bank"):
        found += [(f"services.{name}.outages.{i}", w.start_s)
                  for i, w in enumerate(getattr(scenario.services, name).outages)]
    for code, asset in scenario.market.assets.items():
        found += [(f"market.assets.{code}.halts.{i}", w.start_s) for i, w in enumerate(asset.halts)]
        found += [(f"market.assets.{code}.moves.{i}", m.at_s) for i, m in enumerate(asset.moves)]
    found += [(f"market.maker_withdrawals.{i}", w.start_s) for i, w in enumerate(scenario.market.maker_withdrawals)]
    found += [(f"arrivals.bursts.{i}", b.start_s) for i, b in enumerate(scenario.arrivals.bursts)]
    return [f"{path}: starts at {start_s:,.0f} s, after the run ends at {end_s:,.0f} s (duration_s): "
            "it has no effect" for path, start_s in found if start_s >= end_s]


def scenario_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
