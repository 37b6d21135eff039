"""``OUT/sweep.html``: the sweep as curves with confidence bands, knees, the cheapest configuration.

Built with the run report's page and figure helpers (:mod:`sim.report.page`), so it is just as
self-contained: plotly.js inlined once, no URLs. One chart per key metric (the scenario's SLO
metrics included) and per grid axis with at least two values: the axis on x, one line per
combination of the other axes, a shaded 95 % confidence band around each line, the knee of each
line marked (rule in :mod:`sim.sweep.stats`) and an SLO's threshold drawn as a dashed line.
"""

from __future__ import annotations

import itertools
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go

from sim.report.figures import COLORS, Chart, new_figure
from sim.report.page import Section, chart_html, esc, render_page, table_html, write_atomic
from sim.sweep.aggregate import cheapest, condition_keys, slo_bound
from sim.sweep.metrics import KEY_METRICS, fmt_metric
from sim.sweep.run import SweepOutcome
from sim.sweep.stats import knee_index

__all__ = ["SWEEP_HTML", "build_sweep_report"]

SWEEP_HTML: Final = "sweep.html"


def _is_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _chart_metrics(outcome: SweepOutcome) -> list[str]:
    slos = [s.metric for s in outcome.plan.scenarios[0].parsed_slos()]
    return list(dict.fromkeys([*KEY_METRICS, *slos]))


def _lines(outcome: SweepOutcome, axis: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per combination of the other axes: its label and its points ordered along ``axis``."""
    plan = outcome.plan
    others = [a for a in plan.axes if a.key != axis]
    order = next(a for a in plan.axes if a.key == axis).values
    out = []
    for combo in itertools.product(*(a.values for a in others)):
        fixed = dict(zip((a.key for a in others), combo, strict=True))
        pts = [p for p in outcome.points if all(p[k] == v for k, v in fixed.items())]
        pts.sort(key=lambda p: order.index(p[axis]))
        label = ", ".join(f"{'.'.join(k.split('.')[-2:])}={v}" for k, v in fixed.items()) or "all"
        out.append((label, pts))
    return out


def _knees(outcome: SweepOutcome, metric: str, axis: str) -> list[tuple[str, dict[str, Any] | None]]:
    out = []
    for label, pts in _lines(outcome, axis):
        xs = [float(p[axis]) for p in pts]
        ys = [float(p[f"{metric}.mean"]) for p in pts]
        i = knee_index(xs, ys)
        out.append((label, pts[i] if i is not None else None))
    return out


def _chart(outcome: SweepOutcome, metric: str, axis: str, n: int) -> Chart:
    numeric = _is_numeric(next(a for a in outcome.plan.axes if a.key == axis).values)
    short = ".".join(axis.split(".")[-2:])
    fig = new_figure(f"{metric} vs {short}", axis, metric)
    if not numeric:
        fig.update_xaxes(type="category")
    drew = False
    for i, (label, pts) in enumerate(_lines(outcome, axis)):
        color = COLORS[i % len(COLORS)]
        xs = [p[axis] for p in pts]
        mean = [p[f"{metric}.mean"] for p in pts]
        low = [p[f"{metric}.ci95_low"] for p in pts]
        high = [p[f"{metric}.ci95_high"] for p in pts]
        if all(math.isnan(float(m)) for m in mean):
            continue
        drew = True
        if not all(math.isnan(float(v)) for v in low):
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=high + low[::-1], fill="toself",
                                     mode="lines", fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, name=f"{label} 95 % CI"))
        fig.add_trace(go.Scatter(x=xs, y=mean, mode="lines+markers", name=label, line={"color": color},
                                 hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}}<extra></extra>"))
        if numeric:
            knee = _knees(outcome, metric, axis)[i][1]
            if knee is not None:
                fig.add_trace(go.Scatter(x=[knee[axis]], y=[knee[f"{metric}.mean"]], mode="markers",
                                         marker={"symbol": "star", "size": 14, "color": color},
                                         name=f"knee ({label})"))
    for slo in outcome.plan.scenarios[0].parsed_slos():
        if slo.metric == metric:
            fig.add_hline(y=slo.threshold, line_dash="dash", line_color="#b03a48",
                          annotation_text=f"SLO {slo.text}", annotation_position="top left")
    caption = ("Mean over replications with its 95 % confidence band, one line per value of the other axes; "
               "a star marks the knee (the point farthest from the chord of the scaled curve).")
    if not drew:
        return Chart(f"curve-{n}", caption, None, f"No replication of this sweep has a value of {metric}.")
    return Chart(f"curve-{n}", caption, fig)


def _stat(point: dict[str, Any], metric: str) -> tuple[float, float, float]:
    return point[f"{metric}.mean"], point[f"{metric}.ci95_low"], point[f"{metric}.ci95_high"]


def _slo_figure(metric: str, point: dict[str, Any], bound: float) -> str:
    return f"{esc(metric)} {esc(fmt_metric(metric, point[f'{metric}.mean']))} (bound {esc(fmt_metric(metric, bound))})"


def _cheapest_html(outcome: SweepOutcome) -> str:
    plan = outcome.plan
    slos = plan.scenarios[0].parsed_slos()
    if not slos:
        return ('<p id="cheapest">The scenario declares no SLOs (<code>slos:</code>), so every grid point meets '
                "them; add SLOs to the scenario or use <code>ccsim capacity --target</code>.</p>")
    rows = []
    for entry in cheapest(plan, outcome.points):
        condition = ", ".join(f"{k}={v}" for k, v in entry.condition) or "(whole grid)"
        if entry.point is None:
            rows.append([esc(condition), "<b>none meets the SLOs</b>", "", ""])
            continue
        p = entry.point
        figures = "; ".join(_slo_figure(s.metric, p, slo_bound(s, *_stat(p, s.metric))) for s in slos)
        rows.append([esc(condition), f"<b>{esc(p['label'])}</b>", esc(p["cost_workers"]), figures])
    rule = ("A point meets an SLO when the 95 % confidence bound on the unfavourable side does (the upper bound "
            "for <code>&lt;</code>); every replication must have succeeded with balanced books. Cost = total "
            "workers of the services with finite capacity. "
            + ("The cheapest point is found per value of the non-capacity axes "
               f"({esc(', '.join(condition_keys(plan)))})." if condition_keys(plan) else ""))
    return (f"<p>SLOs: {esc('; '.join(s.text for s in slos))}. {rule}</p>"
            + table_html(["condition", "cheapest point", "cost (workers)", "SLO metrics (mean; bound)"], rows,
                         numeric_from=2, table_id="cheapest"))


def _knee_table(outcome: SweepOutcome, metrics: Sequence[str]) -> str:
    rows = []
    for axis in [a for a in outcome.plan.axes if len(a.values) >= 3 and _is_numeric(a.values)]:
        for metric in metrics:
            for label, knee in _knees(outcome, metric, axis.key):
                where = f"{axis.key} = {knee[axis.key]}" if knee else "no knee"
                value = fmt_metric(metric, knee[f"{metric}.mean"]) if knee else ""
                rows.append([esc(metric), esc(axis.key), esc(label), esc(where), esc(value)])
    if not rows:
        return '<p id="knees">A knee needs an axis with at least three numeric values.</p>'
    return table_html(["metric", "along", "line", "knee", "mean there"], rows, numeric_from=4, table_id="knees")


def _failed_html(outcome: SweepOutcome) -> str:
    failed = outcome.failed
    if not failed:
        return f'<p id="failed">None: all {len(outcome.rows)} replications succeeded.</p>'
    plan = outcome.plan
    rows = []
    for r in failed:
        point = next(p for p in plan.points if p.point_id == r["point"])
        sets = [*plan.overrides, *point.overrides()]
        cmd = shlex.join(["ccsim", "run", str(plan.scenario_path), "--seed", str(r["seed"]),
                          *itertools.chain.from_iterable(("--set", s) for s in sets)])
        rows.append([esc(point.label), esc(r["replication"]), esc(r["seed"]), esc(r["error"]),
                     f"<code>{esc(cmd)}</code>"])
    return table_html(["point", "replication", "seed", "error", "reproduce"], rows, numeric_from=99,
                      table_id="failed")


_POINT_METRICS: Final = ("auth_latency_ms.p99", "deadline_miss_rate", "payments.approval_rate",
                         "throughput.approved_per_s_mean", "liquidity.exchange_peak_prefund_kzt")
_POINT_LABELS: Final = ("p99 latency", "deadline misses", "approval rate", "approved per s",
                        "exchange pre-funding peak")


def _points_html(outcome: SweepOutcome) -> str:
    rows = []
    for p in outcome.points:
        cells = [esc(p["label"]), esc(f"{p['n_ok']} / {p['n_failed']}"), esc(p["cost_workers"]),
                 '<span class="badge pass">yes</span>' if p["meets_slos"] else '<span class="badge fail">no</span>']
        for m in _POINT_METRICS:
            mean, low, high = p[f"{m}.mean"], p[f"{m}.ci95_low"], p[f"{m}.ci95_high"]
            ci = "" if math.isnan(low) else f"<br><small>{esc(fmt_metric(m, low))} – {esc(fmt_metric(m, high))}</small>"
            cells.append(esc(fmt_metric(m, mean)) + ci)
        rows.append(cells)
    headers = ["point", "ok / failed", "cost (workers)", "meets SLOs", *_POINT_LABELS]
    return table_html(headers, rows, numeric_from=1, table_id="points") + (
        "<p>Each figure is the mean over the point's successful replications with its 95 % confidence "
        "interval below it. Every metric of every point, with its CI, is in <code>points.csv</code> / "
        "<code>points.parquet</code>; "
        "every replication in <code>replications.csv</code> / <code>.parquet</code>.</p>")


def build_sweep_report(outcome: SweepOutcome) -> Path:
    plan = outcome.plan
    metrics = _chart_metrics(outcome)
    charts: list[Chart] = []
    for axis in [a for a in plan.axes if len(a.values) >= 2]:
        for metric in metrics:
            charts.append(_chart(outcome, metric, axis.key, len(charts)))
    grid = "; ".join(f"{a.key} = {', '.join(str(v) for v in a.values)}" for a in plan.axes)
    overview = table_html(["", ""], [
        ["scenario", esc(f"{plan.scenarios[0].name} ({plan.scenario_path})")],
        ["grid", esc(grid)],
        ["replications per point", esc(plan.replications)],
        ["sweep seed", esc(f"{plan.seed} (replication r uses the same spawned seed at every point)")],
        ["overrides", esc(" ".join(plan.overrides) or "none")],
        ["executed / resumed / failed", esc(f"{outcome.executed} / {outcome.skipped} / {len(outcome.failed)}")],
        ["executor", esc(outcome.executor)],
    ], numeric_from=99, table_id="overview")
    sections = [
        Section("overview", "Sweep", overview),
        Section("cheapest-section", "Cheapest configuration meeting the SLOs", _cheapest_html(outcome)),
        Section("curves", "Curves", '<div class="grid">' + "".join(chart_html(c) for c in charts) + "</div>"
                if charts else "<p>No axis has two or more values: nothing to draw.</p>"),
        Section("knees-section", "Knees", "<p>Where each curve turns: both axes scaled to [0, 1], the grid point "
                "farthest from the straight line through the first and last points; no knee when every point is "
                "within 0.1 of that line or the means span less than 5 % of their largest value (flat).</p>"
                + _knee_table(outcome, metrics)),
        Section("failed-section", "Failed replications", _failed_html(outcome)),
        Section("points-section", "All points", _points_html(outcome)),
    ]
    page = render_page(f"Sweep · {plan.scenarios[0].name}", esc(grid), sections)
    return write_atomic(outcome.out_dir / SWEEP_HTML, page)
