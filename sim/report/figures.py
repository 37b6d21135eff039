"""Shared chart styling and the figure type the page embeds.

Every chart is a Plotly figure with the bare ``"none"`` template plus a few layout settings, so
each figure's JSON stays a few kilobytes (Plotly's default template alone is ~6 kB per chart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import plotly.graph_objects as go

__all__ = ["COLORS", "FONT_STACK", "Chart", "new_figure", "shade_warmup"]

FONT_STACK: Final = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
COLORS: Final = ("#1f5fa8", "#d9822b", "#2e8b57", "#b03a48", "#7b5ea7", "#4a9bb0", "#8c6d31",
                 "#c75d9c", "#5b6770", "#a3a830")


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of the report: its element id, caption, and figure (``None`` = no data in run)."""

    chart_id: str
    caption: str
    figure: go.Figure | None
    empty_reason: str = ""


def new_figure(title: str, x_title: str, y_title: str, height_px: int = 380,
               **layout: Any) -> go.Figure:
    """A figure with the report's look: white, light grid, system fonts, legend on top."""
    axis = {"gridcolor": "#e3e6ea", "zerolinecolor": "#c9ced4", "linecolor": "#9aa3ab",
            "automargin": True}
    fig = go.Figure(layout={"template": "none"})
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        font={"family": FONT_STACK, "size": 12, "color": "#1d2329"},
        height=height_px,
        margin={"l": 60, "r": 20, "t": 60, "b": 90},
        legend={"orientation": "h", "y": -0.3, "x": 0, "yanchor": "top"},
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(COLORS),
        xaxis={**axis, "title": {"text": x_title}},
        yaxis={**axis, "title": {"text": y_title}},
        hovermode="closest",
        **layout,
    )
    return fig


def shade_warmup(fig: go.Figure, summary: dict[str, Any]) -> None:
    """Grey out the warm-up and cool-down on a time axis: the statistics exclude them."""
    duration_s = summary.get("sim_duration_s")
    spans = []
    if summary.get("warmup_s"):
        spans.append((0.0, float(summary["warmup_s"]), "warm-up"))
    if summary.get("cooldown_s") and duration_s:
        spans.append((float(duration_s) - float(summary["cooldown_s"]), float(duration_s),
                      "cool-down"))
    for start_s, end_s, label in spans:
        fig.add_vrect(x0=start_s, x1=end_s, fillcolor="#5b6770", opacity=0.08, line_width=0,
                      layer="below", annotation_text=f"{label} (not in statistics)",
                      annotation_position="top left", annotation_font_size=10)
