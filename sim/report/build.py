"""``build_report(run_dir)``: the self-contained report.html of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sim.report import queries
from sim.report.charts_flow import (
    flow_bucket_s,
    latency_charts,
    leg_charts,
    outcome_charts,
    reason_cause,
    reason_label,
    throughput_charts,
)
from sim.report.charts_live import live_leg_charts
from sim.report.charts_money import market_charts, settlement_charts, tax_charts, tax_collection
from sim.report.figures import Chart
from sim.report.fmt import fmt_count, fmt_kzt_exact, fmt_ms, fmt_pct, kzt_decimal, kzt_from_minor
from sim.report.headline import lookup, violation_list
from sim.report.page import Section, chart_html, esc, render_page, table_html, write_atomic
from sim.report.rails import rails_html
from sim.report.rundata import RunData, open_run
from sim.report.summary import summary_html

__all__ = ["REPORT_HTML", "SECTION_IDS", "build_report"]

REPORT_HTML: Final = "report.html"
SECTION_IDS: Final = ("summary", "rails", "latency", "legs", "throughput", "outcomes", "market",
                      "settlement", "tax", "integrity", "scenario")


def _charts(charts: list[Chart]) -> str:
    return '<div class="grid">' + "".join(chart_html(c) for c in charts) + "</div>"


def _legs_table(summary: dict[str, Any]) -> str:
    legs: dict[str, dict[str, Any]] = summary.get("legs") or {}
    rows = [[esc(name), fmt_ms(leg.get("mean_wait_ms")), fmt_ms(leg.get("p99_wait_ms")),
             fmt_ms(leg.get("mean_service_ms")), fmt_pct(leg.get("utilization"), 1),
             f"{float(leg.get('mean_queue_len') or 0):.2f}", fmt_count(leg.get("served"))]
            for name, leg in legs.items()]
    return table_html(["service", "mean wait", "p99 wait", "mean service", "utilization",
                       "mean queue", "served"], rows, table_id="legs-table")


def _declines_table(summary: dict[str, Any]) -> str:
    declined: dict[str, Any] = lookup(summary, "payments.declined") or {}
    if not declined:
        return "<p>No payment was declined.</p>"
    rows = [[esc(reason_label(str(code))), esc(reason_cause(str(code))), fmt_count(int(n))]
            for code, n in sorted(declined.items(), key=lambda item: -int(item[1]))]
    return table_html(["reason", "what causes it in ccsim", "payments"], rows, numeric_from=2,
                      table_id="declines-table")


def _integrity_html(run: RunData) -> tuple[str, bool]:
    checks = queries.integrity_rows(run.conn)
    all_ok = all(ok for _, ok, _ in checks)
    rows = [[esc(check), f'<span class="badge {"pass" if ok else "fail"}" '
             f'data-check="{esc(check)}" data-ok="{ok}">{"pass" if ok else "FAIL"}</span>',
             esc(detail)] for check, ok, detail in checks]
    ledger = run.summary.get("ledger") or {}
    verdict = ("Every check passed: money was conserved in every party's ledger and every message "
               "between parties is booked on both sides." if all_ok and ledger.get("invariants_ok")
               else "At least one check FAILED; the details name what did not balance.")
    violations = violation_list(run.summary)
    listing = "".join(f"<li>{esc(v)}</li>" for v in violations)
    body = (f"<p>{esc(verdict)} Ledger invariant violations: "
            f'<span class="fig" data-key="violations" data-value="{len(violations)}">'
            f"{len(violations)}</span>.</p>"
            + (f'<ul class="fail" id="violations">{listing}</ul>' if listing else "")
            + (table_html(["check", "result", "detail"], rows, numeric_from=9,
                          table_id="integrity-table") if rows else
               '<p class="fail">The run recorded no integrity checks.</p>'))
    return body + _evidence_html(run), all_ok and bool(rows)


def _evidence_html(run: RunData) -> str:
    """How a reader checks this run without trusting the report (docs/verifying-a-run.md)."""
    evidence = run.summary.get("evidence") or {}
    head = evidence.get("journal_chain_head")
    chain = (f'<p>The ledger journals ({fmt_count(evidence.get("journal_transfers"))} transfers) are sealed by '
             f'a SHA-256 hash chain of {fmt_count(evidence.get("journal_chain_batches"))} batches; its head is '
             f'<code id="journal-chain-head">{esc(head)}</code>. Changing, removing or reordering any '
             "transfer changes it.</p>") if head else (
        "<p>This run was written without a journal hash chain (an older ccsim, or a live run).</p>")
    return ("<h3>Check this run yourself</h3>" + chain
            + f"<p>The scenario as run has SHA-256 <code>{esc(run.summary.get('scenario_sha256'))}</code>. "
            "To recompute every figure of this report from the run's own database, run "
            f"<code>ccsim verify {esc(run.run_dir.name)}</code> (exit code 0: every figure matches; 1: the "
            "differing figures are named). <code>ccsim verify --rerun</code> simulates the same scenario "
            f"and seed again and compares. <code>ccsim bundle {esc(run.run_dir.name)}</code> packs the run, "
            "its scenario, the exact software versions and the verification into one archive whose "
            "SHA-256 digest it prints; anyone can check that archive with <code>ccsim verify</code>.</p>")


def _tax_html(run: RunData) -> str:
    collection = [[esc(name), fmt_kzt_exact(value)] for name, value in tax_collection(run.summary)]
    gain = kzt_decimal(lookup(run.summary, "tax.realized_gain_kzt"))
    residency = [[esc(r), fmt_kzt_exact(kzt_from_minor(g)), fmt_kzt_exact(kzt_from_minor(p)),
                  fmt_count(n)] for r, g, p, n in queries.tax_by_residency(run.conn)]
    by_residency: dict[str, Any] = lookup(run.summary, "tax.pit_due_by_residency_kzt") or {}
    due_rows = [[esc(r), fmt_kzt_exact(kzt_decimal(v))] for r, v in by_residency.items()]
    policy = lookup(run.summary, "tax.policy")
    return (f"<p>Realized gains: <strong>{esc(fmt_kzt_exact(gain))}</strong>"
            + (f"; collection policy: <strong>{esc(policy)}</strong>" if policy else "")
            + ". Sales of digital assets are exempt from VAT; the gains are the cardholders' "
            "personal income, taxed per sale.</p>"
            + table_html(["personal income tax", "KZT"], collection, table_id="tax-table")
            + (table_html(["residency", "PIT due, all sales"], due_rows,
                          table_id="tax-due-residency-table") if due_rows else "")
            + "<p>Card payments that sold crypto (top-up and advice sales are in the totals "
            "above, not here):</p>"
            + table_html(["residency", "realized gain", "PIT", "sales"], residency,
                         table_id="tax-residency-table"))


def _settlement_html(summary: dict[str, Any]) -> str:
    s = summary.get("settlement_latency_s") or {}
    liq = summary.get("liquidity") or {}

    def hours(v: Any) -> str:
        return "n/a" if v is None else f"{float(v) / 3600:,.2f} h"

    return (f"<p>Merchants were credited a median {hours(s.get('p50'))} after authorization "
            f"(p99 {hours(s.get('p99'))}, max {hours(s.get('max'))}). Peak pre-funding: exchange "
            f"{esc(fmt_kzt_exact(kzt_decimal(liq.get('exchange_peak_prefund_kzt'))))}, issuer "
            f"{esc(fmt_kzt_exact(kzt_decimal(liq.get('issuer_peak_prefund_kzt'))))}.</p>")


def _scenario_html(run: RunData) -> str:
    row = queries.run_row(run.conn) or {}
    s = run.summary
    meta = [["scenario", esc(s.get("scenario", ""))], ["name", esc(s.get("scenario_name", ""))],
            ["seed", esc(s.get("seed"))],
            ["scenario SHA-256", f"<code>{esc(s.get('scenario_sha256'))}</code>"],
            ["ccsim version", esc(s.get("ccsim_version"))],
            ["started at", esc(s.get("started_at"))],
            ["simulated time", f"{float(s.get('sim_duration_s') or 0):,.0f} s"],
            ["wall time", f"{float(s.get('wall_s') or 0):,.2f} s"],
            ["network deadline", fmt_ms(s.get("deadline_ms"))]]
    yaml_text = row.get("scenario_yaml") or "(the results database holds no scenario text)"
    return (table_html(["", ""], meta, numeric_from=9, table_id="scenario-table")
            + "<p>The scenario exactly as run, overrides applied:</p>"
            + f'<pre id="scenario-yaml">{esc(yaml_text)}</pre>')


def _sections(run: RunData) -> list[Section]:
    conn, summary = run.conn, run.summary
    bucket_s = flow_bucket_s(conn)
    rates = queries.payment_rates(conn, bucket_s)
    integrity_body, integrity_ok = _integrity_html(run)
    market = summary.get("market") or {}
    return [
        Section("summary", "Summary", summary_html(summary, integrity_ok)),
        Section("rails", "Rails compared", rails_html(summary)),
        Section("latency", "Authorization latency",
                _charts(latency_charts(conn, summary, bucket_s))),
        Section("legs", "Per-leg breakdown",
                _legs_table(summary) + _charts(leg_charts(conn, summary) + live_leg_charts(summary))),
        Section("throughput", "Throughput", _charts(throughput_charts(conn, rates, bucket_s, summary))),
        Section("outcomes", "Approvals and declines",
                _declines_table(summary) + _charts(outcome_charts(rates, bucket_s, summary))),
        Section("market", "Market",
                f"<p>Mean slippage {float(market.get('slippage_bps_mean') or 0):,.2f} bps; fees "
                f"{esc(fmt_kzt_exact(kzt_decimal(market.get('fees_kzt'))))}.</p>"
                + _charts(market_charts(conn, summary))),
        Section("settlement", "Settlement",
                _settlement_html(summary) + _charts(settlement_charts(conn, summary))),
        Section("tax", "Tax", _tax_html(run) + _charts(tax_charts(conn, summary))),
        Section("integrity", "Integrity", integrity_body),
        Section("scenario", "Scenario as run", _scenario_html(run)),
    ]


def build_report(run_dir: Path) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path.

    Raises ``ReportError`` for a missing directory, a missing summary.json or an unreadable
    results.db; the page is written to a temporary file and renamed, so a failure leaves no
    partial report (an earlier report.html, if any, stays as it was).
    """
    run_dir = Path(run_dir)
    with open_run(run_dir) as run:
        sections = _sections(run)
        s = run.summary
        subtitle = (f"Run of <strong>{esc(s.get('scenario_name'))}</strong>, seed "
                    f"{esc(s.get('seed'))}, ccsim {esc(s.get('ccsim_version'))}")
        text = render_page(f"ccsim report — {s.get('scenario_name', '')}", subtitle, sections)
    return write_atomic(run_dir / REPORT_HTML, text)
