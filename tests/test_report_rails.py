"""The report's "Rails compared" section and the rails' rows of ``ccsim compare``."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sim.report.build import build_report
from sim.report.compare import format_compare_table
from sim.report.rails import rail_metrics, rails_chart, rails_html
from sim.runner import simulate
from sim.scenario_load import load_scenario

DIRECT = Path(__file__).resolve().parents[1] / "scenarios" / "cryptocity_direct.yaml"
SHORT = ["duration_s=7200", "warmup_s=600", "population.cardholders.count=1500", "population.merchants.count=150"]


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario, text = load_scenario(DIRECT, SHORT)
    run_dir = tmp_path_factory.mktemp("rails") / "direct"
    simulate(scenario, text, 3, run_dir)
    return run_dir


def _section(html: str) -> str:
    start = html.index('id="rails"')
    return html[start:html.index("<section", start)]


def _cells(section: str, row: str) -> list[str]:
    match = re.search(r"<tr[^>]*><td[^>]*>" + re.escape(row) + r"</td>(.*?)</tr>", section, re.S)
    assert match is not None, row
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.S)]


def test_the_report_sets_every_rail_used_side_by_side(direct_run: Path) -> None:


    summary = json.loads((direct_run / "summary.json").read_text())
    rails = summary["rails"]
    section = _section(build_report(direct_run).read_text())
    used = [k for k in ("card_jit", "card_prefunded", "card_stablecoin", "direct_crypto", "direct_stablecoin")
            if rails[k]["payments"] > 0]
    assert "direct_crypto" in used and "card_jit" in used  # the short day used both kinds of rail
    assert _cells(section, "payments (measured)") == [f"{rails[k]['payments']:,}" for k in used]
    costs = _cells(section, "merchant cost per 10,000 KZT")
    assert costs == [f"{Decimal(rails[k]['merchant_cost_per_10000_kzt']['total']):,.2f} KZT" for k in used]
    verdict = re.sub(r"<[^>]+>", "", re.search(r'<p id="rails-verdict">(.*?)</p>', section, re.S).group(1))
    assert "direct crypto" in verdict and "card JIT" in verdict
    assert "What the zone merchants bear on the direct rail" in section
    assert summary["rails"]["merchants"]["worst_window_1h_kzt"].lstrip("-") in section.replace(",", "")


def _card_only(summary: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(summary)
    for key in ("direct_crypto", "direct_stablecoin", "merchants"):
        out["rails"].pop(key, None)
    for key in ("card_prefunded", "card_stablecoin"):
        out["rails"][key]["payments"] = 0
    return out


def test_a_card_only_run_shows_its_card_rail_and_no_merchant_exposure(direct_run: Path) -> None:


    summary = _card_only(json.loads((direct_run / "summary.json").read_text()))
    html = rails_html(summary)
    assert "card JIT" in html and "direct crypto" not in html and "zone merchants" not in html
    assert rail_metrics([summary, summary]) == []  # card only: the headline rows already compare it
    assert rails_html({"payments": {}}).startswith("<p>This run's summary has no per-rail figures")


def test_the_cost_chart_stacks_each_rails_parts_with_a_price_gain_below_zero(direct_run: Path) -> None:


    summary = json.loads((direct_run / "summary.json").read_text())
    summary["rails"]["direct_crypto"]["merchant_cost_per_10000_kzt"].update(
        {"exchange_fees": "1.00", "slippage": "0.50", "price_pnl": "2.25", "total": "-0.75"})
    chart = rails_chart(summary)
    assert chart.figure is not None
    bars = {bar.name: dict(zip(bar.x, bar.y, strict=True)) for bar in chart.figure.data}
    card_interchange = summary["rails"]["card_jit"]["merchant_cost_per_10000_kzt"]["interchange"]
    assert Decimal(str(bars["interchange"]["card JIT"])) == Decimal(card_interchange)
    assert Decimal(str(bars["exchange fees"]["direct crypto"])) == Decimal("1.00")
    assert Decimal(str(bars["price loss"]["direct crypto"])) == Decimal("-2.25")


def test_compare_lists_the_rails_with_deltas_of_the_shown_figures(direct_run: Path, tmp_path: Path) -> None:
    scenario, text = load_scenario(DIRECT, [*SHORT, "direct.share=0.8"])
    other = tmp_path / "more-direct"
    simulate(scenario, text, 3, other)
    table = format_compare_table([direct_run, other])
    row = next(line for line in table.splitlines() if line.startswith("direct crypto: payments"))
    first, second, delta = re.findall(r"[-+]?[\d,]+", row.removeprefix("direct crypto: payments"))
    assert int(delta.replace(",", "")) == int(second.replace(",", "")) - int(first.replace(",", "")) > 0
    assert any(line.startswith("zone merchants: worst 1-hour P&L") for line in table.splitlines())
