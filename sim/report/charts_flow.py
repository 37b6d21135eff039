"""Charts of the payment flow: latency, where the time goes, throughput and outcomes."""

from __future__ import annotations

from typing import Any, Final

import plotly.graph_objects as go
from sqlalchemy import Connection

from sim.report import queries
from sim.report.figures import COLORS, TIME_AXIS_TITLE, Chart, new_figure, time_axis

__all__ = [
    "CDF_QUANTILES",
    "DECLINE_CAUSES",
    "DECLINE_REASONS",
    "flow_bucket_s",
    "latency_charts",
    "leg_charts",
    "outcome_charts",
    "reason_cause",
    "throughput_charts",
]

# ISO 8583 response codes a card network returns; the simulation may add fault names.
DECLINE_REASONS: Final = {
    "05": "do not honour",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card",
    "51": "insufficient funds",
    "54": "expired card",
    "57": "not permitted to cardholder",
    "59": "suspected fraud",
    "61": "exceeds amount limit",
    "62": "restricted card",
    "65": "exceeds frequency limit",
    "68": "response received too late",
    "91": "issuer unavailable",
    "94": "duplicate transmission",
    "96": "system malfunction",
}

# What makes ccsim answer with each code (the declines table shows it beside the code).
DECLINE_CAUSES: Final = {
    "05": "the crypto sale would have moved the price past the slippage cap, or its quote expired",
    "12": "the merchant is not routed through that acquirer",
    "13": "the amount is not a valid payment amount",
    "14": "the issuer has no such card",
    "51": "the card's tenge and the crypto it may sell do not cover the payment",
    "54": "the card has expired",
    "59": "anti-money-laundering rule: repeated payments just under the card's limit",
    "61": "over the card tier's per-payment, daily or monthly limit",
    "62": "the card is blocked",
    "65": "anti-money-laundering rule: too many payments in a short time",
    "91": "the issuer, or the exchange, custody or bank leg it waited for, did not answer",
    "94": "a duplicate of a payment already answered",
    "96": "the acquirer or network leg failed before the issuer was asked",
}

# Dense in the tail, where the deadline bites.
CDF_QUANTILES: Final = tuple(
    [i / 200 for i in range(1, 198)]
    + [0.99 + i / 1000 for i in range(0, 10)]
    + [0.999 + i / 10000 for i in range(0, 10)]
    + [1.0]
)
_MARKS: Final = (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))


def reason_label(code: str) -> str:
    name = DECLINE_REASONS.get(code)
    return f"{code} {name}" if name else code


def reason_cause(code: str) -> str:
    """What makes ccsim answer ``code`` (a fault name explains itself)."""
    return DECLINE_CAUSES.get(code, "")


def flow_bucket_s(conn: Connection) -> float:
    return queries.bucket_seconds(queries.span_seconds(conn))


def _deadline_and_marks(fig: go.Figure, summary: dict[str, Any], vertical: bool) -> None:
    """Draw the network deadline, and on a vertical latency axis the summary's percentiles."""
    lat = summary.get("auth_latency_ms") or {}
    add = fig.add_vline if vertical else fig.add_hline
    for (key, label), dash in zip(_MARKS if vertical else (), ("dot", "dash", "dashdot"),
                                  strict=False):
        value = lat.get(key)
        if value is not None:
            # Named in the legend, not annotated: close percentiles would print over each other.
            add(float(value), line={"color": "#5b6770", "dash": dash, "width": 1.5},
                name=f"{label} {float(value):,.0f} ms (measured)", showlegend=True)
    deadline = summary.get("deadline_ms")
    if deadline is not None:
        add(float(deadline), line={"color": "#b03a48", "width": 2},
            annotation_text=f"deadline {float(deadline):,.0f} ms",
            annotation_position="top right",
            annotation_font_color="#b03a48")


def latency_charts(conn: Connection, summary: dict[str, Any], bucket_s: float) -> list[Chart]:
    hist = queries.latency_histogram(conn)
    if hist.total == 0:
        reason = "No payment was attempted in this run."
        return [Chart(c, "", None, reason) for c in
                ("chart-latency-histogram", "chart-latency-cdf", "chart-latency-over-time")]
    fig_hist = new_figure("Authorization latency, every payment of the run", "latency (ms)",
                          "payments",
                          barmode="stack", bargap=0.02)
    for group in sorted(hist.counts):
        counts = hist.counts[group]
        fig_hist.add_bar(x=[x + hist.width / 2 for x in hist.lefts[: len(counts)]], y=counts,
                         width=hist.width, name=group,
                         marker_color=COLORS[0] if group == "approved" else COLORS[3])
    _deadline_and_marks(fig_hist, summary, vertical=True)

    points = queries.latency_quantiles(conn, CDF_QUANTILES)
    fig_cdf = new_figure("Share of authorizations answered within a time (CDF)",
                         "latency (ms)", "share of payments")
    fig_cdf.add_scatter(x=[ms for _, ms in points], y=[q for q, _ in points], mode="lines",
                        name="CDF", line={"color": COLORS[0], "shape": "hv"})
    fig_cdf.update_yaxes(tickformat=".1%", range=[0, 1.01])
    _deadline_and_marks(fig_cdf, summary, vertical=True)

    bands = queries.latency_bands(conn, bucket_s)
    fig_time = new_figure(f"Latency percentiles per {bucket_s:g} s of arrivals",
                          TIME_AXIS_TITLE, "latency (ms)")
    for (q, series), color in zip(sorted(bands.items()), COLORS, strict=False):
        fig_time.add_scatter(x=series.t_s, y=series.values, mode="lines", name=f"p{q * 100:g}",
                             line={"color": color})
    _deadline_and_marks(fig_time, summary, vertical=False)
    time_axis(fig_time, summary)
    return [
        Chart("chart-latency-histogram", "How many payments took how long; red is the network's "
              "deadline, dotted lines the percentiles of the summary.", fig_hist),
        Chart("chart-latency-cdf", "Read across: the share of payments answered by a given time.",
              fig_cdf),
        Chart("chart-latency-over-time", "Percentile bands over the run: a rising p99 shows "
              "queues building up.", fig_time),
    ]


def leg_charts(conn: Connection, summary: dict[str, Any]) -> list[Chart]:
    legs: dict[str, dict[str, Any]] = summary.get("legs") or {}
    charts: list[Chart] = []
    if legs:
        names = list(legs)
        fig = new_figure("Where the time goes: mean wait and service per leg", "service",
                         "mean time per payment (ms)", barmode="stack")
        fig.add_bar(x=names, y=[float(legs[n].get("mean_wait_ms") or 0) for n in names],
                    name="waiting for a worker", marker_color=COLORS[1])
        fig.add_bar(x=names, y=[float(legs[n].get("mean_service_ms") or 0) for n in names],
                    name="being served", marker_color=COLORS[0])
        charts.append(Chart("chart-legs-breakdown", "A tall orange part means the service is "
                            "short of workers; a tall blue part means the work itself is slow.",
                            fig))
    else:
        charts.append(Chart("chart-legs-breakdown", "", None, "The run recorded no legs."))
    for metric, chart_id, title, unit in (
        ("utilization", "chart-legs-utilization", "Utilization per service", "busy / capacity"),
        ("queue_len", "chart-legs-queue", "Queue length per service", "payments waiting"),
    ):
        series = queries.timeseries_by_key(conn, metric)
        if not series:
            charts.append(Chart(chart_id, "", None, f"The run sampled no {metric}."))
            continue
        fig = new_figure(title, TIME_AXIS_TITLE, unit)
        for key, line in sorted(series.items()):
            fig.add_scatter(x=line.t_s, y=line.values, mode="lines", name=key)
        if metric == "utilization":
            fig.update_yaxes(tickformat=".0%")
        time_axis(fig, summary)
        charts.append(Chart(chart_id, "Utilization near 100 % with a growing queue is saturation."
                            if metric == "utilization" else
                            "Payments waiting for a worker, sampled over the run.", fig))
    return charts


def throughput_charts(conn: Connection, rates: dict[str, dict[str, queries.Series]], bucket_s: float,
                      summary: dict[str, Any]) -> list[Chart]:
    """Arrivals and approvals per second, at the bucket the headline's peak uses
    (``throughput.bucket_s``) so the chart's highest approval point is that peak."""
    headline_bucket_s = (summary.get("throughput") or {}).get("bucket_s")
    if headline_bucket_s:
        bucket_s = float(headline_bucket_s)
        rates = queries.payment_rates(conn, bucket_s)
    arrivals = rates["arrivals"].get("")
    approved = rates["approved"].get("")
    if arrivals is None:
        return [Chart("chart-throughput", "", None, "No payment arrived in this run.")]
    fig = new_figure(f"Throughput per {bucket_s:g} s", TIME_AXIS_TITLE, "payments per second")
    fig.add_scatter(x=arrivals.t_s, y=arrivals.values, mode="lines", name="arrivals",
                    line={"color": COLORS[8], "dash": "dash"})
    if approved is not None:
        fig.add_scatter(x=approved.t_s, y=approved.values, mode="lines", name="approved",
                        line={"color": COLORS[0]}, fill="tozeroy")
    peak = (summary.get("throughput") or {}).get("approved_per_s_peak")
    if peak is not None:
        fig.add_hline(float(peak), line={"color": "#5b6770", "dash": "dot", "width": 1.5},
                      annotation_text=f"headline peak {float(peak):,.2f} /s (after warm-up)",
                      annotation_position="top left")
    time_axis(fig, summary)
    return [Chart("chart-throughput", "When approvals fall below arrivals for long, payments are "
                  "being declined or queued.", fig)]


def outcome_charts(rates: dict[str, dict[str, queries.Series]], bucket_s: float,
                   summary: dict[str, Any]) -> list[Chart]:
    fig = new_figure(f"Approvals and declines by reason per {bucket_s:g} s", TIME_AXIS_TITLE,
                     "payments per second")
    approved = rates["approved"].get("")
    if approved is None and not rates["declined"]:
        return [Chart("chart-outcomes", "", None, "No payment completed in this run.")]
    if approved is not None:
        fig.add_scatter(x=approved.t_s, y=approved.values, mode="lines", name="approved",
                        line={"color": COLORS[0], "width": 3})
    for (reason, series), color in zip(sorted(rates["declined"].items()), COLORS[1:], strict=False):
        fig.add_scatter(x=series.t_s, y=series.values, mode="lines",
                        name=f"declined: {reason_label(reason)}", line={"color": color})
    fig.update_yaxes(type="log" if rates["declined"] else "linear")
    time_axis(fig, summary)
    return [Chart("chart-outcomes", "One line per outcome; the axis is logarithmic so that rare "
                  "decline reasons stay visible next to the approvals (zero is not drawn).", fig)]
