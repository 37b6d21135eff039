"""Shared chart styling and the figure type the page embeds.

Every chart is a Plotly figure with the bare ``"none"`` template plus a few layout settings, so
each figure's JSON stays a few kilobytes (Plotly's default template alone is ~6 kB per chart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import plotly.graph_objects as go

__all__ = ["COLORS", "FONT_STACK", "TIME_AXIS_TITLE", "Chart", "clock_label", "new_figure", "shade_warmup",
           "time_axis"]

TIME_AXIS_TITLE: Final = "time of the simulated day"
_HOUR_S: Final = 3600.0
_DAY_S: Final = 86_400.0
_TICK_STEPS_H: Final = (0.25, 0.5, 1, 2, 3, 4, 6, 12, 24, 48)

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


def clock_label(t_s: float, start_hour: int, multi_day: bool) -> str:
    """Simulated seconds as the clock of the simulated day: ``18:30``, or ``day 2 06:00``."""
    clock_s = start_hour * _HOUR_S + t_s
    day, rest = divmod(clock_s, _DAY_S)
    hours, minutes = int(rest // _HOUR_S), int(rest % _HOUR_S // 60)
    text = f"{hours:02d}:{minutes:02d}"
    return f"day {int(day) + 1} {text}" if multi_day else text


def time_axis(fig: go.Figure, summary: dict[str, Any]) -> None:
    """A time chart's x axis in clock time of the simulated day (day number when the run spans
    midnight), with the warm-up, cool-down and every fault window (outages, halts, bank downtime,
    price crashes) shaded and named."""
    shade_warmup(fig, summary)
    timeline = summary.get("timeline") or {}
    start_hour = int(timeline.get("start_hour") or 0)
    duration_s = float(summary.get("sim_end_s") or summary.get("sim_duration_s") or 0.0)
    for w in timeline.get("fault_windows") or ():
        fig.add_vrect(x0=float(w["start_s"]), x1=float(w["end_s"]), fillcolor="#b03a48", opacity=0.12,
                      line_width=0, layer="below", annotation_text=str(w["label"]),
                      annotation_position="top right", annotation_font_size=10,
                      annotation_font_color="#8d1c1c")
    if duration_s <= 0:
        return
    step_h = next((h for h in _TICK_STEPS_H if duration_s / (h * _HOUR_S) <= 12), _TICK_STEPS_H[-1])
    step_s = step_h * _HOUR_S
    # Ticks on whole steps of the clock, not of the run: a run starting at 17:00 ticks 18:00, 20:00 …
    first = (-(start_hour * _HOUR_S) % step_s)
    multi_day = start_hour * _HOUR_S + duration_s > _DAY_S
    ticks = [first + i * step_s for i in range(int((duration_s - first) // step_s) + 1)]
    fig.update_xaxes(tickmode="array", tickvals=ticks,
                     ticktext=[clock_label(t, start_hour, multi_day) for t in ticks])
    fig.update_xaxes(title_text=TIME_AXIS_TITLE, selector={"anchor": "y"})
