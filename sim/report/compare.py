"""``compare_runs`` and ``format_compare_table``: two or more runs side by side.

For questions like "JIT or pre-funded?" and "before and after the outage": the headline figures of
every run with a difference column against the first run (the baseline), and overlaid charts.
Runs of different ccsim versions are refused, because their figures may not mean the same thing.

When one of the runs is a live one (``ccsim load``), the **stages** follow the headline figures:
per service of the chain, the time a measured payment spent there (mean, p50, p99;
:func:`sim.report.queries.stage_latency`), read the same way from the simulated and the live run —
so a calibrated simulation and the live run it was calibrated from are checked stage by stage.
(Between simulated runs the report's per-leg section has the same figures, split into waiting and
service.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Final

import yaml

from sim.report import queries
from sim.report.charts_flow import CDF_QUANTILES, reason_label
from sim.report.errors import ReportError
from sim.report.figures import COLORS, Chart, new_figure
from sim.report.fmt import kzt_decimal
from sim.report.headline import HEADLINE, Kind, Metric, Value, lookup
from sim.report.page import Section, chart_html, esc, render_page, table_html, write_atomic
from sim.report.rails import rail_metrics
from sim.report.rundata import RunData, open_run, read_summary
from sim.scenario_load import ScenarioError, parse_scenario
from sim.summary import flatten

__all__ = ["COMPARE_HTML", "compare_runs", "format_compare_table", "scenario_differences"]

COMPARE_HTML: Final = "compare.html"
_STAGE_ORDER: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")
_STAGE_FIGURES: Final = (("mean", "mean"), ("p50", "p50"), ("p99", "p99"))
_MAX_FIELDS: Final = 20  # differing scenario fields listed on the terminal


@dataclass(frozen=True, slots=True)
class _StageMetric(Metric):
    """A stage's time: a few milliseconds, so shown to a tenth of one."""

    def fmt(self, value: Value) -> str:
        return "n/a" if value is None else f"{float(self.rounded(value) or 0):,.1f} ms"

    def rounded(self, value: Value) -> Value:
        if value is None:
            return None
        return Decimal(str(float(value))).quantize(Decimal("0.1"), ROUND_HALF_UP)


def _with_stages(summary: dict[str, Any], run: RunData) -> dict[str, Any]:
    """The summary plus ``stages``: per-stage time per measured payment, from the run's legs."""
    from_s = float(summary.get("warmup_s") or 0.0)
    until_s = float(summary.get("sim_duration_s") or 0.0) - float(summary.get("cooldown_s") or 0.0)
    if until_s <= from_s:
        until_s = math.inf
    return {**summary, "stages": queries.stage_latency(run.conn, from_s, until_s)}


def _stage_metrics(summaries: Sequence[dict[str, Any]]) -> list[Metric]:
    """A row per stage any run passed through and figure, in the chain's order; none unless a
    live run is compared."""
    if not any(s.get("mode") == "live" for s in summaries):
        return []
    names = {name for s in summaries for name in s.get("stages", {})}
    ordered = [n for n in _STAGE_ORDER if n in names] + sorted(names - set(_STAGE_ORDER))
    return [_StageMetric(f"stages.{name}.{key}", f"{name}: time per payment, {label}", Kind.MS)
            for name in ordered for key, label in _STAGE_FIGURES]


def _effective_scenario(text: str) -> dict[str, Any]:
    """A run's scenario with every default filled in (the text as run, validated again), flat; the
    raw YAML when it no longer validates."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(raw, dict):
        return {}
    try:
        return flatten(parse_scenario(raw).model_dump(mode="json"))
    except ScenarioError:
        return flatten(raw)


def scenario_differences(run_dirs: Sequence[Path]) -> list[tuple[str, list[str]]]:
    """Each scenario field (defaults included) and the seed where the runs differ: (field, value per run)."""
    flats = []
    for d in run_dirs:
        with open_run(Path(d)) as run:
            row = queries.run_row(run.conn) or {}
            flat = _effective_scenario(str(row.get("scenario_yaml") or ""))
            flat["seed"] = run.summary.get("seed")
            flat.pop("name", None)  # a file's stem; the runs are listed by name already
            flats.append(flat)
    keys = sorted(set().union(*flats))
    out = []
    for key in keys:
        values = [flat.get(key, "(not set)") for flat in flats]
        if any(v != values[0] for v in values[1:]):
            out.append((key, [json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
                              for v in values]))
    return out


def _differences_text(run_dirs: Sequence[Path]) -> str:
    rows = scenario_differences(run_dirs)
    if not rows:
        return "the runs' scenarios and seeds are the same\n"
    lines = ["scenario fields that differ:"]
    for key, values in rows[:_MAX_FIELDS]:
        lines.append(f"  {key}: " + " | ".join(f"{i + 1}: {_short(v)}" for i, v in enumerate(values)))
    if len(rows) > _MAX_FIELDS:
        lines.append(f"  … {len(rows) - _MAX_FIELDS} more (compare.html lists them all)")
    return "\n".join(lines) + "\n"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    return [f"{i + 1}: {Path(d).resolve().name}" for i, d in enumerate(run_dirs)]


def _checked_summaries(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Every run exists and has a summary; all share one ccsim version."""
    if len(run_dirs) < 2:
        raise ReportError("a comparison needs at least two run directories")
    summaries = [read_summary(Path(d)) for d in run_dirs]
    versions = {str(s.get("ccsim_version")) for s in summaries}
    if len(versions) > 1:
        listing = ", ".join(f"{Path(d)} = {s.get('ccsim_version')}"
                            for d, s in zip(run_dirs, summaries, strict=True))
        raise ReportError(f"runs come from different ccsim versions ({listing}); "
                          "re-run them with one version before comparing")
    return summaries


def _rows(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, list[str], list[str]]]:
    """Per headline metric, then per stage figure: label, formatted values per run, formatted
    deltas vs the first."""
    out = []
    for metric in (*HEADLINE, *rail_metrics(list(summaries)), *_stage_metrics(summaries)):
        values = [metric.value(s) for s in summaries]
        deltas = [metric.fmt_delta(metric.delta(values[0], v)) for v in values[1:]]
        out.append((metric.label, [metric.fmt(v) for v in values], deltas))
    return out


def format_compare_table(run_dirs: Sequence[Path]) -> str:
    """The comparison as a fixed-width text table for the terminal."""
    run_dirs = [Path(d) for d in run_dirs]
    summaries = _checked_summaries(run_dirs)
    if any(s.get("mode") == "live" for s in summaries):
        with ExitStack() as stack:
            summaries = [_with_stages(s, stack.enter_context(open_run(d)))
                         for s, d in zip(summaries, run_dirs, strict=True)]
    labels = _labels(run_dirs)
    header = ["figure", labels[0]]
    for label in labels[1:]:
        header += [label, f"Δ {label.split(':')[0]}−1"]
    table = [header]
    for label, values, deltas in _rows(summaries):
        row = [label, values[0]]
        for value, delta in zip(values[1:], deltas, strict=True):
            row += [value, delta]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    differences = _differences_text(run_dirs)
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                            strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return differences + "\n" + "\n".join(lines) + "\n"


def _table_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    head = '<th>figure</th><th class="num">' + esc(labels[0]) + "</th>"
    for i, label in enumerate(labels[1:], start=2):
        head += f'<th class="num">{esc(label)}</th><th class="num">Δ {i}−1</th>'
    body = ""
    live = any(r.summary.get("mode") == "live" for r in runs)
    summaries = [_with_stages(r.summary, r) if live else r.summary for r in runs]
    for metric in (*HEADLINE, *rail_metrics(list(summaries)), *_stage_metrics(summaries)):
        values = [metric.value(s) for s in summaries]
        cells = (f'<td class="num" data-run="1" data-value="{esc(values[0])}">'
                 f"{esc(metric.fmt(values[0]))}</td>")
        for i, value in enumerate(values[1:], start=2):
            delta = metric.delta(values[0], value)
            cells += (f'<td class="num" data-run="{i}" data-value="{esc(value)}">'
                      f"{esc(metric.fmt(value))}</td>"
                      f'<td class="num delta" data-run="{i}" data-delta="{esc(delta)}">'
                      f"{esc(metric.fmt_delta(delta))}</td>")
        body += f'<tr data-metric="{esc(metric.key)}"><td>{esc(metric.label)}</td>{cells}</tr>'
    return (f'<table id="compare-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table>")


def _charts(runs: Sequence[RunData], labels: Sequence[str]) -> list[Chart]:
    cdf = new_figure("Authorization latency CDF", "latency (ms)", "share of payments")
    cdf.update_yaxes(tickformat=".1%")
    spans = [queries.span_seconds(r.conn) for r in runs]
    bucket_s = queries.bucket_seconds(max(spans))
    thr = new_figure(f"Approvals per second, per {bucket_s:g} s", "simulated time since each run's start (s)",
                     "approvals per second")
    reasons = sorted({str(k) for r in runs for k in (lookup(r.summary, "payments.declined") or {})})
    dec = new_figure("Declines by reason", "reason", "payments", barmode="group")
    costs = new_figure("Costs: exchange fees (KZT)", "run", "KZT")
    slip = new_figure("Costs: mean slippage (bps)", "run", "basis points")
    tax = new_figure("Tax", "", "KZT", barmode="group")
    tax_keys = (("realized_gain_kzt", "realized gains"), ("pit_due_kzt", "PIT due"),
                ("pit_withheld_kzt", "withheld"), ("tax_gap_kzt", "tax gap"))
    for run, label, color in zip(runs, labels, COLORS * 10, strict=False):
        points = queries.latency_quantiles(run.conn, CDF_QUANTILES)
        cdf.add_scatter(x=[ms for _, ms in points], y=[q for q, _ in points], mode="lines",
                        name=label, line={"color": color, "shape": "hv"})
        approved = queries.payment_rates(run.conn, bucket_s)["approved"].get("")
        if approved is not None:
            thr.add_scatter(x=approved.t_s, y=approved.values, mode="lines", name=label,
                            line={"color": color})
        declined = lookup(run.summary, "payments.declined") or {}
        dec.add_bar(x=[reason_label(c) for c in reasons],
                    y=[int(declined.get(c, 0)) for c in reasons], name=label, marker_color=color)
        fees = kzt_decimal(lookup(run.summary, "market.fees_kzt"))
        costs.add_bar(x=[label], y=[float(fees or 0)], name=label, marker_color=color)
        slip.add_bar(x=[label], y=[float(lookup(run.summary, "market.slippage_bps_mean") or 0)],
                     name=label, marker_color=color)
        tax.add_bar(x=[name for _, name in tax_keys],
                    y=[float(kzt_decimal(lookup(run.summary, f"tax.{k}")) or 0)
                       for k, _ in tax_keys],
                    name=label, marker_color=color)
    deadlines: dict[float, list[str]] = {}
    for run, label in zip(runs, labels, strict=True):
        if run.summary.get("deadline_ms") is not None:
            deadlines.setdefault(float(run.summary["deadline_ms"]), []).append(label.split(":")[0])
    for deadline, which in sorted(deadlines.items()):  # each run's own deadline, named by its runs
        cdf.add_vline(deadline, line={"color": "#b03a48", "width": 2},
                      annotation_text=f"deadline {deadline:,.0f} ms (run {', '.join(which)})",
                      annotation_font_color="#b03a48")
    return [
        Chart("chart-compare-cdf", "The further left and the steeper, the faster.", cdf),
        Chart("chart-compare-throughput", "Approvals per second over simulated time.", thr),
        Chart("chart-compare-declines", "Declined payments per reason code.", dec),
        Chart("chart-compare-fees", "Taker fees the cardholders paid.", costs),
        Chart("chart-compare-slippage", "Mean price slippage on crypto sales.", slip),
        Chart("chart-compare-tax", "Gains realized and personal income tax.", tax),
    ]


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``OUT_DIR/compare.html`` comparing the runs against the first; return its path."""
    run_dirs = [Path(d) for d in run_dirs]
    _checked_summaries(run_dirs)
    labels = _labels(run_dirs)
    with ExitStack() as stack:
        runs = [stack.enter_context(open_run(d)) for d in run_dirs]
        listing = "".join(f"<li>{esc(label)}: {esc(r.label)}, <code>{esc(r.run_dir)}</code></li>"
                          for label, r in zip(labels, runs, strict=True))
        differences = scenario_differences(run_dirs)
        diff_rows = [[f"<code>{esc(key)}</code>", *(f"<code>{esc(v)}</code>" for v in values)]
                     for key, values in differences]
        diff_html = (table_html(["scenario field", *labels], diff_rows, numeric_from=99, table_id="scenario-diff")
                     if diff_rows else "<p>The runs' scenarios and seeds are the same.</p>")
        sections = [
            Section("runs", "Runs compared", f"<ul>{listing}</ul><p>Δ columns are each run minus "
                    "run 1, computed from the rounded figures shown; rates in percentage points (pp).</p>"
                    "<h3>What differs between the runs</h3>" + diff_html),
            Section("headline", "Headline figures", _table_html(runs, labels)),
            Section("charts", "Side by side",
                    '<div class="grid">' + "".join(chart_html(c) for c in _charts(runs, labels))
                    + "</div>"),
        ]
        text = render_page("ccsim comparison", f"{len(runs)} runs, ccsim "
                           f"{esc(runs[0].summary.get('ccsim_version'))}", sections)
    return write_atomic(Path(out_dir) / COMPARE_HTML, text)



