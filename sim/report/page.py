"""The self-contained HTML page: one inlined copy of plotly.js, figures as JSON, no URLs.

The page must open from a USB stick on a regulator's laptop with no network: plotly.js is inlined
once in <head> (about 4.8 MB, the bulk of every report), each chart's figure is a small JSON block
next to its <div>, and one script at the end draws them all. No <link>, no src= and no web font
appear in our markup; the only URLs in the file are string constants inside plotly.js itself (map
tile servers and licence notices for chart types the report does not use).
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import plotly.io as pio
from plotly.offline import get_plotlyjs

from sim.report.figures import FONT_STACK, Chart

__all__ = ["Section", "chart_html", "esc", "plotly_js", "render_page", "table_html",
           "write_atomic"]

_CONFIG: Final = {"responsive": True, "displaylogo": False, "showLink": False,
                  "showSendToCloud": False, "showEditInChartStudio": False,
                  "modeBarButtonsToRemove": ["sendDataToCloud"]}

_CSS: Final = f"""
body {{ font-family: {FONT_STACK}; color: #1d2329; margin: 0; background: #f5f6f8; }}
header, main {{ max-width: 1180px; margin: 0 auto; padding: 0 20px; }}
header {{ padding-top: 18px; }}
h1 {{ font-size: 1.6rem; margin: 0.4rem 0; }}
h2 {{ font-size: 1.25rem; margin: 0 0 0.6rem; border-bottom: 2px solid #1f5fa8;
      padding-bottom: 4px; }}
nav a {{ margin-right: 0.9rem; color: #1f5fa8; text-decoration: none; font-size: 0.92rem; }}
section {{ background: white; border-radius: 6px; padding: 18px 22px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
.lead {{ font-size: 1.12rem; line-height: 1.6; }}
.chart {{ width: 100%; min-height: 300px; }}
figure {{ margin: 12px 0 20px; }}
figcaption {{ color: #5b6770; font-size: 0.9rem; }}
.no-data {{ color: #5b6770; font-style: italic; border: 1px dashed #c9ced4; padding: 10px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; font-size: 0.93rem; }}
th, td {{ border-bottom: 1px solid #e3e6ea; padding: 5px 10px; text-align: left; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.pass {{ background: #dff3e4; color: #17602f; font-weight: 600; }}
.fail {{ background: #fbe0e0; color: #8d1c1c; font-weight: 600; }}
.badge {{ border-radius: 4px; padding: 2px 8px; }}
.verdict {{ border-radius: 6px; padding: 10px 14px; margin: 0 0 1rem; font-size: 1.1rem; }}
.verdict.fail {{ border: 2px solid #b03a48; }}
.verdict ul {{ margin: 0.4rem 0 0; }}
pre {{ background: #f1f3f5; padding: 12px; overflow-x: auto; font-size: 0.85rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 8px; }}
"""

_RENDER_JS: Final = """
(function () {
  var config = %s;
  document.querySelectorAll('script.figure-data').forEach(function (el) {
    var fig = JSON.parse(el.textContent);
    Plotly.newPlot(el.getAttribute('data-target'), fig.data, fig.layout, config);
  });
})();
""".replace("%s", json.dumps(_CONFIG))


@dataclass(frozen=True, slots=True)
class Section:
    """One <section> of the page: its anchor id, heading, and body HTML."""

    section_id: str
    title: str
    body_html: str


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle shipped with the plotly package (read once per process)."""
    return str(get_plotlyjs())


def _script_json(text: str) -> str:
    """JSON safe inside <script>: ``</`` cannot close the element early."""
    return text.replace("</", "<\\/")


def chart_html(chart: Chart) -> str:
    """A chart's <figure>: the target <div> and its figure JSON, or a note when the run had none."""
    if chart.figure is None:
        return (f'<figure><p class="no-data" id="{esc(chart.chart_id)}" data-empty="1">'
                f"{esc(chart.empty_reason)}</p></figure>")
    figure_json = pio.to_json(chart.figure, validate=False)
    return (
        f'<figure><div class="chart" id="{esc(chart.chart_id)}"></div>'
        f'<script type="application/json" class="figure-data" data-target="{esc(chart.chart_id)}">'
        f"{_script_json(figure_json)}</script>"
        f"<figcaption>{esc(chart.caption)}</figcaption></figure>"
    )


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
               numeric_from: int = 1, table_id: str = "") -> str:
    """A plain table; cells are pre-escaped HTML. Columns from ``numeric_from`` align right."""
    attr = f' id="{esc(table_id)}"' if table_id else ""

    def cls(i: int) -> str:
        return "num" if i >= numeric_from else ""

    head = "".join(f'<th class="{cls(i)}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls(i)}">{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(title: str, subtitle_html: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{esc(s.section_id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.section_id)}"><h2>{esc(s.title)}</h2>{s.body_html}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly_js()}</script></head>'
        f"<body><header><h1>{esc(title)}</h1><p>{subtitle_html}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f'<script type="text/javascript">{_RENDER_JS}</script></body></html>\n'
    )


def write_atomic(path: Path, text: str) -> Path:
    """Write next to the target and rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
