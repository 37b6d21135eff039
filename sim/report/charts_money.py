"""Charts of the money: market prices and costs, settlement and pre-funding, tax.

Plot coordinates are floats (Plotly draws floats); every KZT figure shown as text comes from the
exact Decimal strings of summary.json or integer minor-unit sums from SQL.
"""

from __future__ import annotations

from typing import Any

from plotly.subplots import make_subplots
from sqlalchemy import Connection

from sim.report import queries
from sim.report.figures import COLORS, FONT_STACK, TIME_AXIS_TITLE, Chart, new_figure, time_axis
from sim.report.fmt import kzt_decimal

__all__ = ["market_charts", "settlement_charts", "tax_charts", "tax_collection"]


def _minor_to_float_kzt(amount_minor: int) -> float:
    """Plot coordinate only: tiyn as a float number of tenge."""
    return amount_minor / 100


def market_charts(conn: Connection, summary: dict[str, Any]) -> list[Chart]:
    charts: list[Chart] = []
    prices = queries.timeseries_by_key(conn, "mid_price_kzt")
    if prices:
        assets = sorted(prices)
        fig = make_subplots(rows=len(assets), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                            subplot_titles=[f"{a} mid price (KZT)" for a in assets])
        for row, (asset, color) in enumerate(zip(assets, COLORS, strict=False), start=1):
            fig.add_scatter(x=prices[asset].t_s, y=prices[asset].values, mode="lines", name=asset,
                            line={"color": color}, row=row, col=1)
        fig.update_layout(template="none", height=max(260, 170 * len(assets) + 80),
                          title={"text": "Mid price per asset", "x": 0.01},
                          font={"family": FONT_STACK, "size": 12}, showlegend=False,
                          margin={"l": 80, "r": 20, "t": 70, "b": 40})
        fig.update_xaxes(title_text=TIME_AXIS_TITLE, row=len(assets), col=1)
        time_axis(fig, summary)
        charts.append(Chart("chart-market-price", "Each asset on its own scale: a crash shows as a "
                            "cliff, and the sales after it realize less tenge.", fig))
    else:
        charts.append(Chart("chart-market-price", "", None, "The run sampled no market prices."))

    bands = queries.slippage_by_ticket(conn)
    if bands:
        fig = new_figure("Slippage against ticket size", "ticket size (KZT, log scale)",
                         "slippage (basis points)")
        fig.update_xaxes(type="log")
        x = [b[0] for b in bands]
        fig.add_scatter(x=x, y=[b[1] for b in bands], mode="lines+markers", name="mean",
                        text=[f"{b[3]:,} sales" for b in bands], line={"color": COLORS[0]})
        fig.add_scatter(x=x, y=[b[2] for b in bands], mode="lines+markers", name="worst",
                        line={"color": COLORS[3], "dash": "dot"})
        cap = (summary.get("timeline") or {}).get("slippage_cap_bps")
        if cap is not None:
            fig.add_hline(float(cap), line={"color": "#b03a48", "width": 2},
                          annotation_text=f"slippage cap {float(cap):,.0f} bps (a sale past it declines 05)",
                          annotation_position="top left", annotation_font_color="#b03a48")
        charts.append(Chart("chart-market-slippage", "Larger tickets eat deeper into the order "
                            "book; the worst case should stay under the slippage cap.", fig))
    else:
        charts.append(Chart("chart-market-slippage", "", None, "No crypto was sold in this run."))

    fees = queries.fees_by_asset(conn)
    if fees:
        fig = new_figure("Exchange fees by asset sold", "asset", "fees (KZT)")
        fig.add_bar(x=[f[0] for f in fees], y=[_minor_to_float_kzt(f[1]) for f in fees],
                    text=[f"{f[2]:,} sales" for f in fees], marker_color=COLORS[1], name="fees")
        charts.append(Chart("chart-market-fees", "Taker fees the cardholders paid, per asset.",
                            fig))
    else:
        charts.append(Chart("chart-market-fees", "", None, "No crypto was sold in this run."))
    return charts


def settlement_charts(conn: Connection, summary: dict[str, Any]) -> list[Chart]:
    charts: list[Chart] = []
    hist = queries.settlement_latency_histogram(conn)
    if hist.total:
        fig = new_figure("Settlement latency: authorization to merchant credit",
                         "hours", "payments", barmode="stack", bargap=0.02)
        for group, color in zip(sorted(hist.counts), COLORS, strict=False):
            counts = hist.counts[group]
            fig.add_bar(x=[x + hist.width / 2 for x in hist.lefts[: len(counts)]], y=counts,
                        width=hist.width, name=group, marker_color=color)
        charts.append(Chart("chart-settlement-latency", "How long merchants wait for their "
                            "money, by funding mode.", fig))
    else:
        charts.append(Chart("chart-settlement-latency", "", None,
                            "No payment reached the merchant's bank within the simulated time."))

    positions = queries.settlement_positions(conn)
    if positions:
        fig = new_figure("Net position per participant per settlement window",
                         "settlement window", "net (KZT; positive receives)", barmode="relative")
        for (participant, rows), color in zip(sorted(positions.items()), COLORS, strict=False):
            fig.add_bar(x=[w for _, w, _ in rows], y=[_minor_to_float_kzt(n) for _, _, n in rows],
                        name=participant, marker_color=color)
        charts.append(Chart("chart-settlement-positions", "Bars above zero receive, below zero "
                            "pay; in every window they cancel out exactly.", fig))
    else:
        charts.append(Chart("chart-settlement-positions", "", None,
                            "No settlement window closed within the simulated time."))

    fig = new_figure("Pre-funding drawn so far: opening tenge minus the lowest point yet",
                     TIME_AXIS_TITLE, "KZT")
    drawn = 0
    for metric, name, color in (("exchange_cash_kzt", "exchange", COLORS[2]),
                                ("issuer_funding_kzt", "issuer", COLORS[3])):
        line = queries.prefunding_drawn(conn, metric)
        if line.t_s:
            fig.add_scatter(x=line.t_s, y=line.values, mode="lines", name=name,
                            line={"color": color, "shape": "hv"})
            drawn += 1
    if drawn:
        time_axis(fig, summary)
        charts.append(Chart("chart-settlement-funding", "How much tenge each party has had to "
                            "draw from what it held at the start; where each line ends is its "
                            "peak pre-funding in the summary.", fig))
    else:
        charts.append(Chart("chart-settlement-funding", "", None, "The run sampled no balances."))
    return charts


def tax_collection(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """PIT due, withheld at source, declared by the cardholders, and the gap — exact Decimals.

    Declared comes from the summary; a summary without it implies it: due - withheld - gap.
    """
    tax = summary.get("tax") or {}
    due = kzt_decimal(tax.get("pit_due_kzt"))
    withheld = kzt_decimal(tax.get("pit_withheld_kzt"))
    gap = kzt_decimal(tax.get("tax_gap_kzt"))
    declared = kzt_decimal(tax.get("pit_declared_kzt"))
    if declared is None and due is not None and withheld is not None and gap is not None:
        declared = due - withheld - gap
    return [("PIT due", due), ("withheld at source", withheld), ("declared", declared),
            ("tax gap", gap)]


def tax_charts(conn: Connection, summary: dict[str, Any]) -> list[Chart]:
    charts: list[Chart] = []
    by_residency = queries.tax_by_residency(conn)
    if by_residency:
        fig = new_figure("Realized gains and PIT by residency", "residency", "KZT",
                         barmode="group")
        names = [r[0] for r in by_residency]
        fig.add_bar(x=names, y=[_minor_to_float_kzt(r[1]) for r in by_residency],
                    name="realized gain", marker_color=COLORS[0])
        fig.add_bar(x=names, y=[_minor_to_float_kzt(r[2]) for r in by_residency],
                    name="PIT", marker_color=COLORS[1])
        charts.append(Chart("chart-tax-residency", "Residents pay 10 % PIT on gains, "
                            "non-residents 20 %, each sale on its own gain.", fig))
    else:
        charts.append(Chart("chart-tax-residency", "", None, "No crypto was sold in this run."))
    parts = [(name, value) for name, value in tax_collection(summary) if value is not None]
    if parts:
        fig = new_figure("PIT: due, withheld, declared and the gap", "", "KZT")
        fig.add_bar(x=[p[0] for p in parts], y=[float(p[1]) for p in parts],
                    marker_color=[COLORS[8], COLORS[2], COLORS[0], COLORS[3]][: len(parts)],
                    text=[f"{p[1]:,.2f}" for p in parts], name="PIT")
        charts.append(Chart("chart-tax-collection", "Withheld at source by the exchange plus "
                            "declared by cardholders plus the gap equals what is due.", fig))
    else:
        charts.append(Chart("chart-tax-collection", "", None, "The run reported no tax figures."))
    return charts
