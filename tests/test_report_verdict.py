"""The report leads with the verdict and reads in the units and the clock of the simulated day.

One short exchange-outage run from 11:00 with three SLOs, two of them breached: the page opens with
a FAIL banner naming both (not a green "no money was created or lost"), SLO values carry units and
the summary sentence's rounding, every time chart ticks in clock time with the outage shaded, the
slippage cap is drawn, decline codes say what causes them, the throughput chart peaks at the
headline's peak, and the page cites no document the reader does not have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sim.report import build_report
from sim.report.fmt import fmt_ms_bound
from sim.runner import simulate
from sim.scenario_load import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
RUN = [
    "duration_s=5400", "warmup_s=60", "arrivals.start_hour=11", "population.cardholders.count=600",
    "population.merchants.count=60", "services.exchange.outages=[{start_s: 1800, duration_s: 900}]",
    "slos=['auth_latency_ms.p99 < 500', 'deadline_miss_rate < 0.001', 'payments.approval_rate > 0.5']",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    scenario, text = load_scenario(SCENARIOS / "exchange_outage.yaml", RUN)
    out = tmp_path_factory.mktemp("verdict") / "run"
    simulate(scenario, text, 2, out)
    html = build_report(out).read_text(encoding="utf-8")
    return html, json.loads((out / "summary.json").read_text())


def _figures(html: str) -> dict[str, dict[str, Any]]:
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<script type="application/json" class="figure-data" data-target="([^"]+)">(.*?)</script>', html, re.S)}


def test_the_page_opens_with_a_fail_banner_naming_every_breached_slo(page: tuple[str, dict[str, Any]]) -> None:
    html, summary = page
    assert [name for name, v in summary["slo"].items() if not v["pass"]] == [
        "auth_latency_ms.p99 < 500", "deadline_miss_rate < 0.001"]
    verdict = html.index('id="verdict"')
    assert verdict < html.index('id="plain-summary"') < html.index("No money was created or lost")
    banner = html[verdict:html.index("</div>", verdict)]
    assert 'class="verdict fail"' in html[verdict - 40:verdict] and "FAIL" in banner
    assert "2 of 3 service-level objectives breached" in banner
    p99 = summary["auth_latency_ms"]["p99"]
    assert re.search(r"auth_latency_ms\.p99 &lt; 500 ms \(value [\d.,]+ (ms|s)\)", banner)
    shown = fmt_ms_bound(p99)  # the summary sentence's rounding
    assert f"(value {shown})" in banner
    assert re.search(rf'data-key="auth_latency_ms.p99" data-value="[^"]+">{re.escape(shown)}<', html)
    assert re.search(r"deadline_miss_rate &lt; 0\.10 % \(value [\d.]+ %\)", banner)
    assert "approval_rate" not in banner  # met, so not named


def test_slo_table_shows_units(page: tuple[str, dict[str, Any]]) -> None:
    html, _ = page
    table = html[html.index('id="slo-table"'):]
    table = table[:table.index("</table>")]
    assert "&lt; 500 ms" in table and "&gt; 50.00 %" in table and "&lt; 0.10 %" in table


def test_time_charts_tick_in_clock_time_with_the_outage_shaded(page: tuple[str, dict[str, Any]]) -> None:
    html, _ = page
    figures = _figures(html)
    timed = [cid for cid, fig in figures.items() if fig["layout"].get("xaxis", {}).get("ticktext")]
    assert {"chart-latency-over-time", "chart-throughput", "chart-outcomes", "chart-legs-utilization",
            "chart-settlement-funding", "chart-market-price"} <= set(timed)
    for cid in timed:
        layout = figures[cid]["layout"]
        assert layout["xaxis"]["ticktext"][0] == "11:00"
        assert "12:00" in layout["xaxis"]["ticktext"]
        outage = [s for s in layout.get("shapes", []) if s.get("x0") == 1800 and s.get("x1") == 2700]
        assert outage, f"{cid}: the exchange outage is not shaded"
        assert any(a.get("text") == "exchange outage" for a in layout.get("annotations", []))


def test_slippage_cap_is_drawn_and_declines_say_what_causes_them(page: tuple[str, dict[str, Any]]) -> None:
    html, summary = page
    slippage = _figures(html)["chart-market-slippage"]["layout"]
    cap = summary["timeline"]["slippage_cap_bps"]
    assert any(s.get("y0") == cap == s.get("y1") for s in slippage["shapes"])
    declines = html[html.index('id="declines-table"'):]
    declines = declines[:declines.index("</table>")]
    assert "what causes it in ccsim" in declines
    assert "the card&#x27;s tenge and the crypto it may sell do not cover the payment" in declines or \
        "51" not in summary["payments"]["declined"]


def test_throughput_chart_peaks_at_the_headline_peak(page: tuple[str, dict[str, Any]]) -> None:
    html, summary = page
    fig = _figures(html)["chart-throughput"]
    approved = next(t for t in fig["data"] if t.get("name") == "approved")
    warm = summary["warmup_s"]
    after_warmup = [y for x, y in zip(approved["x"], approved["y"], strict=True) if x > warm]
    assert max(after_warmup) == pytest.approx(summary["throughput"]["approved_per_s_peak"])


def test_the_page_cites_no_document_the_reader_does_not_have(page: tuple[str, dict[str, Any]]) -> None:
    html, _ = page
    assert "seed §" not in html and "§" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)


def test_integrity_section_says_how_to_verify(page: tuple[str, dict[str, Any]]) -> None:
    html, summary = page
    assert f'<code id="journal-chain-head">{summary["evidence"]["journal_chain_head"]}</code>' in html
    assert "ccsim verify run" in html and "ccsim bundle run" in html
