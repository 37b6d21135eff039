"""The generated scenario reference (docs/scenario-reference.md) matches the schema it documents.

When this fails after a schema change, regenerate the page:
``make scenario-reference`` (``python -m sim.scenario_reference > docs/scenario-reference.md``).
"""

from __future__ import annotations

from pathlib import Path

from sim.scenario import Scenario
from sim.scenario_load import parse_scenario
from sim.scenario_reference import RULES, model_classes, render, rows
from sim.scenario_types import ConstantTime, LognormalTime

PAGE = Path(__file__).resolve().parents[1] / "docs" / "scenario-reference.md"


def test_page_matches_the_schema() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/scenario-reference.md differs from the schema: run `make scenario-reference`"
    )


def test_every_field_has_a_description() -> None:
    missing = [f"{cls.__name__}.{name}" for cls in model_classes()
               for name, info in cls.model_fields.items() if not (info.description or "").strip()]
    assert missing == []


def test_every_field_of_the_scenario_has_a_row() -> None:
    paths = {r.path for r in rows(Scenario)}
    for expected in ("duration_s", "network.deadline_ms", "arrivals.rate_scale", "services.exchange",
                     "services.<service>.capacity", "services.<service>.outages[].start_s",
                     "market.assets.<asset>.book.depth_per_level_kzt", "issuer.tiers.<tier>.daily_kzt",
                     "population.cardholders.holdings.<asset>.lots.mean_discount_pct", "tax.compliance_rate"):
        assert expected in paths
    assert len(paths) == len(list(rows(Scenario)))  # no path twice


def test_the_cross_field_rules_are_all_described_and_none_is_stale() -> None:
    validators = set()
    for cls in model_classes():
        decorators = cls.__pydantic_decorators__
        validators |= {(cls.__name__, name) for name in (*decorators.model_validators, *decorators.field_validators)}
    assert validators == set(RULES)


def test_the_page_describes_defaults_and_constraints_from_the_schema() -> None:
    page = render()
    assert "| `network.deadline_ms` | number | ms | `3000` | > 0 |" in page
    assert "| `services.<service>.capacity` | integer or `unlimited` |  | `16` | [1, 100000] or `unlimited` |" in page
    assert "| `tax.policy` | string |  | `withhold` | one of `withhold`, `self_declare` |" in page
    assert "`{capacity: 64, service_time: {dist: lognormal, mean_ms: 15, cv: 0.5}}`" in page


def test_a_service_block_changes_only_the_fields_it_names() -> None:
    """The page says so; keep it true. A capacity sweep must not also change service times."""
    default = Scenario()
    assert isinstance(default.services.exchange.service_time, LognormalTime)
    written = parse_scenario({"services": {"exchange": {"capacity": 4}}})
    assert written.services.exchange.capacity == 4
    assert written.services.exchange.service_time == default.services.exchange.service_time
    assert written.services.bank == default.services.bank
    replaced = parse_scenario({"services": {"exchange": {"service_time": {"dist": "constant", "mean_ms": 5}}}})
    assert replaced.services.exchange.service_time == ConstantTime(mean_ms=5.0)
    assert replaced.services.exchange.capacity == default.services.exchange.capacity


def test_an_asset_list_written_in_a_file_replaces_the_default() -> None:
    only_btc = parse_scenario({
        "market": {"assets": {"BTC": {"start_price_kzt": "45000000"}}},
        "population": {"cardholders": {"holdings": {"BTC": {}}, "asset_priority": [{"order": ["BTC"]}]}},
    })
    assert set(only_btc.market.assets) == {"BTC"}
