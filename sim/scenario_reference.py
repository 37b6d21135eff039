"""The scenario reference page, generated from the pydantic schema.

``python -m sim.scenario_reference > docs/scenario-reference.md`` (or ``make scenario-reference``)
writes it; ``tests/test_docs_reference.py`` fails when the page and the schema differ, so the page
cannot drift from the code. Everything on the page comes from the schema — field names, types,
constraints, defaults, and the ``Field(description=...)`` texts in :mod:`sim.scenario` and
:mod:`sim.scenario_types` — except the short texts of the cross-field rules in :data:`RULES`, which
the test checks cover every validator the schema has.
"""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from services.money import DEFAULT_ASSETS
from sim.scenario import Capacity, Scenario, slo_metric_paths
from sim.scenario_types import AmountDist, Kzt, PriceKzt, TimeDist

__all__ = ["RULES", "Row", "main", "model_classes", "render", "rows"]

# Cross-field rules (model and field validators), keyed by (class, validator). The test checks that
# every validator of every class reachable from Scenario has an entry, and no entry is stale.
RULES: Final[dict[tuple[str, str], str]] = {
    ("ServicesSpec", "_merge_onto_service_defaults"): "a written service block is merged onto that "
    "service's own defaults: fields it leaves out keep the values shown on the service's row",
    ("Scenario", "_consistent"): "`warmup_s + cooldown_s < duration_s`; every asset in `market.assets` and "
    "`population.cardholders.holdings` is in the registry and every holding and `asset_priority` asset has a "
    "`market.assets` entry; `exchange.stablecoin_asset` is a known asset without a market entry; at least as "
    "many merchants as categories; every KYC tier in `population.cardholders.kyc_tiers` has an `issuer.tiers` "
    "entry; added `assets` do not clash with built-in ones; every `direct.segments` key is a merchant category",
    ("BookSpec", "_positive_prices"): "the deepest level's price stays positive: "
    "`spread_bps + 2 × level_step_bps × (levels − 1) < 20000`",
    ("LotSpec", "_ordered"): "`count_min ≤ count_max`",
    ("CardholdersSpec", "_some_mode"): "at least one funding mode has a positive share",
    ("TierLimits", "_ordered"): "`0 < per_txn_kzt ≤ daily_kzt ≤ monthly_kzt`",
    ("IssuerSpec", "_top_up"): "with an auto top-up (`top_up_below_kzt > 0`), `top_up_to_kzt ≥ top_up_below_kzt`",
    ("FeesSpec", "_mdr_covers"): "`mdr_bps ≥ interchange_bps + scheme_fee_bps`",
    ("ClearingSpec", "_ordered"): "`delay_min_s ≤ delay_max_s` and `partial_rate + over_capture_rate ≤ 1`",
    ("UniformTime", "_ordered"): "`min_ms ≤ max_ms`",
    ("UniformAmount", "_ordered"): "`min_kzt ≤ max_kzt`",
    ("DirectAssets", "_sum_to_one"): "`crypto + stablecoin = 1`",
    ("ConversionSpec", "_threshold"): "policy `threshold` needs `threshold_kzt > 0`",
}

# What a key of a mapping of objects stands for, by the mapping's field name.
_KEY_NAMES: Final = {"assets": "asset", "holdings": "asset", "categories": "category", "tiers": "tier",
                     "segments": "category",
                     "ServicesSpec": "service"}

# Units of fields whose names do not end in a unit suffix.
_UNITS_BY_NAME: Final = {
    "cv": "ratio", "weight": "weight", "multiplier": "×", "rate_scale": "×", "hourly_profile": "×",
    "kyc_tiers": "weights", "funding_modes": "weights", "acquirers": "weights", "levels": "levels",
    "retries": "attempts", "scale": "decimals",
    "share": "fraction", "sigma_per_year": "1/√year",
}
_UNIT_SUFFIXES: Final = (
    ("_per_s", "1/s"), ("_per_day", "1/day"), ("_per_year", "1/year"), ("_ms", "ms"), ("_s", "s"),
    ("_kzt", "KZT"), ("_bps", "bps"), ("_pct", "%"), ("_share", "fraction"), ("_rate", "fraction"),
    ("_payments", "payments"), ("_count", ""),
)

_TIME_DISTS: Final = get_args(get_args(TimeDist)[0])
_AMOUNT_DISTS: Final = get_args(get_args(AmountDist)[0])


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    unit: str
    default: str
    allowed: str
    description: str


# -- values ----------------------------------------------------------------------------------
def _num(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _class_default(cls: type[BaseModel], name: str) -> Any:
    return cls.model_fields[name].get_default(call_default_factory=True)


def flow(value: Any) -> str:
    """``value`` as YAML flow text, as one would write it in a scenario file.

    A distribution is written in full; any other object names only the fields that differ from its
    class's defaults (and its required ones), which is exactly what a file has to say.
    """
    if isinstance(value, BaseModel):
        cls = type(value)
        full = "dist" in cls.model_fields
        items = []
        for name, info in cls.model_fields.items():
            v = getattr(value, name)
            if full or info.is_required() or v != _class_default(cls, name):
                items.append(f"{name}: {flow(v)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, Decimal):
        return f'"{value.normalize():f}"'
    if isinstance(value, int | float):
        return _num(value)
    text = str(value)
    return text if text else '""'


# -- types and constraints -------------------------------------------------------------------
def _alias_matches(alias: Any, metadata: Sequence[Any]) -> bool:
    extra = get_args(alias)[1:]
    return bool(extra) and all(any(m is e for m in metadata) for e in extra)


def _bounds(metadata: Sequence[Any]) -> str:
    lo = hi = ""
    lo_open = hi_open = False
    length: list[int | None] = [None, None]
    for m in metadata:
        if isinstance(m, at.Ge):
            lo = _num(m.ge)  # type: ignore[arg-type]
        elif isinstance(m, at.Gt):
            lo, lo_open = _num(m.gt), True  # type: ignore[arg-type]
        elif isinstance(m, at.Le):
            hi = _num(m.le)  # type: ignore[arg-type]
        elif isinstance(m, at.Lt):
            hi, hi_open = _num(m.lt), True  # type: ignore[arg-type]
        elif isinstance(m, at.MinLen):
            length[0] = m.min_length
        elif isinstance(m, at.MaxLen):
            length[1] = m.max_length
    parts = []
    if lo and hi:
        parts.append(f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")
    elif lo:
        parts.append(f"{'>' if lo_open else '≥'} {lo}")
    elif hi:
        parts.append(f"{'<' if hi_open else '≤'} {hi}")
    if length[0] is not None and length[0] == length[1]:
        parts.append(f"exactly {length[0]} items")
    elif length[0]:
        parts.append(f"at least {length[0]} item{'s' if length[0] != 1 else ''}")
    return ", ".join(parts)


def _split_annotated(tp: Any) -> tuple[Any, list[Any]]:
    if get_origin(tp) is Annotated:
        args = get_args(tp)
        meta: list[Any] = []
        for m in args[1:]:
            meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        return args[0], meta
    return tp, []


def _describe(tp: Any, metadata: Sequence[Any]) -> tuple[str, str]:
    """(type text, allowed values) of an annotation with its constraint metadata."""
    if _alias_matches(Kzt, metadata):
        return "KZT amount", "≥ 0, at most 2 decimals"
    if _alias_matches(PriceKzt, metadata):
        return "decimal", "> 0"
    if _alias_matches(Capacity, metadata):
        return "integer or `unlimited`", "[1, 100000] or `unlimited`"
    tp, inner_meta = _split_annotated(tp)
    metadata = [*metadata, *inner_meta]
    origin = get_origin(tp)
    if tp is TimeDist or (origin in (Union, types.UnionType) and set(get_args(tp)) == set(_TIME_DISTS)):
        return "[time distribution](#time-distributions)", ""
    if tp is AmountDist or (origin in (Union, types.UnionType) and set(get_args(tp)) == set(_AMOUNT_DISTS)):
        return "[amount distribution](#amount-distributions)", ""
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner_t, inner_a = _describe(args[0] if len(args) == 1 else Union[tuple(args)], metadata)  # noqa: UP007
        return f"{inner_t} or null", inner_a
    if origin is Literal:
        return "string", "one of " + ", ".join(f"`{v}`" for v in get_args(tp))
    if origin is tuple:
        item_t, item_a = _describe(get_args(tp)[0], [])
        allowed = ", ".join(x for x in (_bounds(metadata), f"each {item_a}" if item_a else "") if x)
        return f"list of {item_t}", allowed
    if origin is dict:
        key, val = get_args(tp)
        _, key_a = _describe(key, [])
        val_t, val_a = _describe(val, [])
        allowed = ", ".join(x for x in (f"keys {key_a}" if key_a else "", f"values {val_a}" if val_a else "",
                                        _bounds(metadata)) if x)
        return f"mapping name → {val_t}", allowed
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "string", "one of " + ", ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object", ""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Decimal: "decimal"}
    return names.get(tp, getattr(tp, "__name__", str(tp))), _bounds(metadata)


def _unit(name: str) -> str:
    if name in _UNITS_BY_NAME:
        return _UNITS_BY_NAME[name]
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


# -- walking the schema ----------------------------------------------------------------------
def _model_of(tp: Any) -> type[BaseModel] | None:
    tp, _ = _split_annotated(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    model = _model_of(info.annotation)
    if model is not None and "dist" not in model.model_fields:
        text = flow(value)
        return "see below" if text == "{}" else f"`{text}`"
    return f"`{flow(value)}`"


def rows(cls: type[BaseModel], prefix: str = "") -> Iterator[Row]:
    """One row per field of ``cls``, depth first; objects nested in mappings and lists too."""
    field_models = {_model_of(info.annotation) for info in cls.model_fields.values()}
    if len(cls.model_fields) > 1 and len(field_models) == 1 and None not in field_models:
        yield from _same_shaped(cls, prefix)
        return
    for name, info in cls.model_fields.items():
        yield from _field_rows(name, info, prefix)


def _field_rows(name: str, info: FieldInfo, prefix: str) -> Iterator[Row]:
    path = prefix + name
    type_text, allowed = _describe(info.annotation, info.metadata)
    yield Row(path, type_text, _unit(name), _default_text(info), allowed, info.description or "")
    tp, _ = _split_annotated(info.annotation)
    model = _model_of(tp)
    if model is not None and "dist" not in model.model_fields:
        yield from rows(model, path + ".")
    elif get_origin(tp) is dict and (inner := _model_of(get_args(tp)[1])) is not None:
        yield from rows(inner, f"{path}.<{_KEY_NAMES.get(name, 'name')}>.")
    elif get_origin(tp) is tuple and (inner := _model_of(get_args(tp)[0])) is not None:
        yield from rows(inner, f"{path}[].")


def _same_shaped(cls: type[BaseModel], prefix: str) -> Iterator[Row]:
    """A model whose fields are all objects of one class (the services): one row per field with its
    default, then that class's fields once, under ``<name>``."""
    inner: type[BaseModel] | None = None
    for name, info in cls.model_fields.items():
        inner = _model_of(info.annotation)
        yield Row(prefix + name, "object", "", _default_text(info), "", info.description or "")
    assert inner is not None
    yield from rows(inner, f"{prefix}<{_KEY_NAMES.get(cls.__name__, 'name')}>.")


def model_classes(root: type[BaseModel] = Scenario) -> list[type[BaseModel]]:
    """Every model class reachable from ``root``, distributions included."""
    seen: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        tp, _ = _split_annotated(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.append(tp)
                for info in tp.model_fields.values():
                    visit(info.annotation)
            return
        for arg in get_args(tp):
            visit(arg)

    visit(root)
    return seen


# -- the page --------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(items: Sequence[Row], *, relative_to: str = "") -> list[str]:
    out = ["| field | type | unit | default | allowed | description |", "|---|---|---|---|---|---|"]
    for r in items:
        path = r.path.removeprefix(relative_to)
        out.append("| " + " | ".join(_cell(x) for x in (f"`{path}`", r.type, r.unit, r.default, r.allowed,
                                                          r.description)) + " |")
    return out


def _doc(cls: type[BaseModel]) -> str:
    return " ".join((cls.__doc__ or "").split())


_INTRO: Final = """\
# Scenario reference (generated)

<!-- Generated by `python -m sim.scenario_reference` (make scenario-reference) from the pydantic schema
in sim/scenario.py and sim/scenario_types.py. Do not edit: tests/test_docs_reference.py fails when this
page and the schema differ. -->

Every field a scenario file may set, generated from the schema the simulator validates against,
so it is exactly what `ccsim validate` accepts. For how to write and run scenarios see
[Scenarios](scenarios.md); for a worked example, the
[CryptoCity day walkthrough](cryptocity-day-walkthrough.md).

**How to read the tables.** *field* is the dotted path, as used by `--set` (`--set
network.deadline_ms=2000`); `<asset>`, `<category>`, `<tier>`, `<service>` stand for a key you choose
or one of the six services, and `[]` for any item of a list (`--set` takes its index:
`arrivals.bursts.0.multiplier=3`). *unit*: `s` seconds of simulated time, `ms` milliseconds, `KZT`
tenge, `bps` basis points (1/10,000), `%` percent, `fraction` a number from 0 to 1, `weight(s)`
relative shares (they need not add up to 1), `×` a multiplier. *allowed*: `[a, b]` includes both
ends, `(a, b]` excludes `a`. KZT amounts are written as numbers or decimal strings with at most
two decimals (`"50000"`, `1234.56`) and become integer tiyn; prices are decimals. Unknown keys are
errors.

**A service block changes only what it names.** A file (or `--set`) that writes
`services: {exchange: {capacity: 4}}` gets an exchange with 4 workers and the exchange's own
default service time (lognormal, 80 ms), so a capacity sweep changes capacity alone. Other
objects are replaced as a whole when written: a file that lists `market.assets.BTC` alone trades
only BTC, and fields left out of such a block take the defaults of its *class* (the rows below
it), not the scenario's default shown on the object's row.
"""


def render() -> str:
    lines = [_INTRO]
    top = [Row(r.path, r.type, r.unit, r.default, r.allowed, r.description)
           for name, info in Scenario.model_fields.items() if _model_of(info.annotation) is None
           for r in _field_rows(name, info, "")]
    lines += ["## Top level", "", _doc(Scenario), "", *_table(top), ""]
    asset_list = ", ".join(f"{a.code} ({a.scale} decimals)" for a in DEFAULT_ASSETS)
    lines += [f"Built-in assets: {asset_list}.", ""]
    for name, info in Scenario.model_fields.items():
        model = _model_of(info.annotation)
        if model is None:
            continue
        lines += [f"## `{name}`", "", _doc(model), ""]
        lines += [*_table(list(rows(model, name + "."))), ""]
    for title, dists in (("Time distributions", _TIME_DISTS), ("Amount distributions", _AMOUNT_DISTS)):
        lines += [f"## {title}", "",
                  "Written as a mapping whose `dist` names the distribution, e.g. "
                  + ("`{dist: lognormal, mean_ms: 80, cv: 0.8}`." if dists is _TIME_DISTS else
                     "`{dist: lognormal, mean_kzt: 8000, cv: 1.2}`; draws are clipped to "
                     "`[min_kzt, max_kzt]` where the distribution has them."), ""]
        for cls in dists:
            tag = get_args(cls.model_fields["dist"].annotation)[0]
            lines += [f"### `dist: {tag}`", "", _doc(cls), "", *_table(list(rows(cls))), ""]
    lines += ["## Rules across fields", "",
              "Checked after the fields themselves; a breach is a validation error naming the field.", ""]
    for cls in model_classes():
        for validator in _validators(cls):
            lines.append(f"- `{cls.__name__}`: {RULES[(cls.__name__, validator)]}")
    lines += ["", "## SLO metrics", "",
              "An SLO is `\"PATH OP NUMBER\"` with `OP` one of `<`, `<=`, `>`, `>=`, and `PATH` one of "
              "these numbers of `summary.json` (an unknown path is a validation error):", ""]
    lines += [f"`{p}`" + (" ·" if i < len(slo_metric_paths()) - 1 else "")
              for i, p in enumerate(sorted(slo_metric_paths()))]
    return "\n".join(lines).rstrip("\n") + "\n"


def _validators(cls: type[BaseModel]) -> list[str]:
    decorators = cls.__pydantic_decorators__
    return sorted({*decorators.model_validators, *decorators.field_validators})


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
