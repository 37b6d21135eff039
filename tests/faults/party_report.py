"""The party-fault run as a self-contained HTML page: a table per fault kind and a timeline.

Built with the simulation report's page kit (:mod:`sim.report.page`): plotly.js inlined once, no
URL in the markup, so the file opens offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go

from sim.report.figures import COLORS, Chart, new_figure
from sim.report.page import Section, chart_html, esc, render_page, table_html, write_atomic

__all__ = ["write_html"]

_SERVICE_COLORS: Final = {"exchange": COLORS[1], "issuer": COLORS[0], "network": COLORS[2], "bank": COLORS[4],
                          "postgresql": COLORS[3]}
_OUTCOME_COLORS: Final = {"approved": "#2e8b57", "declined": "#8c6d31", "stand_in_approved": "#4a9bb0",
                          "stand_in_declined": "#d9822b", "error": "#b03a48", "refused": "#7b5ea7"}
_KIND_TITLES: Final = {"kill": "SIGKILL and restart on the same database (CCSIM_RESUME=1)",
                       "pg_crash": "PostgreSQL crash (pg_ctl stop -m immediate) and restart",
                       "partition": "Exchange partition (issuer → exchange blackholed, then refused)",
                       "chaos": "TCP proxy issuer → exchange: latency, drops, duplicates",
                       "clock_jump": "Clock jump of a running service",
                       "unexpected_exit": "A service that exited on its own"}


def _n(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return esc(value)


def _badge(ok: bool) -> str:
    return f'<span class="badge {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span>'


def _verdict(s: dict[str, Any]) -> str:
    p = s.get("payments", {})
    part = s.get("partition") or {}
    ind = s.get("in_doubt", {})
    kill = s.get("faults_by_kind", {}).get("kill", {})
    rows = [
        ["kills (SIGKILL + restart)", _n(s.get("kills")), _badge(s.get("kills") == s.get("kills_recovered"))],
        ["kills per service", esc(", ".join(f"{k} {v}" for k, v in s.get("kills_by_service", {}).items())), ""],
        ["recovery, SIGKILL → healthy: median / max (s)",
         f"{_n(kill.get('recovery_s_median'))} / {_n(kill.get('recovery_s_max'))}", ""],
        ["SIGKILL → nothing in doubt: median / max (s)",
         f"{_n(kill.get('settled_s_median'))} / {_n(kill.get('settled_s_max'))}", ""],
        ["in-doubt operations found / resolved / left",
         f"{_n(ind.get('found'))} / {_n(ind.get('resolved'))} / {_n(ind.get('left'))}", _badge(ind.get("left") == 0)],
        ["in doubt or owed at the end", f"{_n(ind.get('left_at_end'))} / {_n(ind.get('outbox_pending_at_end'))}",
         _badge(not ind.get("left_at_end") and not ind.get("outbox_pending_at_end"))],
        ["invariant violations", _n(s.get("violations")), _badge(s.get("violations") == 0)],
        ["reconciliation breaks", _n(s.get("breaks")), _badge(s.get("breaks") == 0)],
        ["payments attempted", _n(p.get("attempted")), ""],
        ["approved / declined", f"{_n(p.get('approved'))} / {_n(p.get('declined'))}", ""],
        ["stand-in approved / declined", f"{_n(p.get('stand_in_approved'))} / {_n(p.get('stand_in_declined'))}", ""],
        ["no answer after retries", _n(p.get("errors")), _badge(p.get("errors") == 0)],
        ["captured / reversed / clearing failed",
         f"{_n(p.get('captured'))} / {_n(p.get('reversed'))} / {_n(p.get('clearing_failed'))}",
         _badge(p.get("clearing_failed") == 0)],
        ["partition: p50 / p99 / max (ms), deadline",
         f"{_n(part.get('p50_ms'))} / {_n(part.get('p99_ms'))} / {_n(part.get('max_ms'))}, "
         f"{_n(part.get('deadline_ms'))}", _badge(bool(part.get("p99_within_deadline"))) if part else ""],
        ["partition: sales made / their proceeds booked at the issuer",
         f"{_n(part.get('sales_for_partition_payments'))} / {_n(part.get('their_proceeds_booked_at_issuer'))}",
         _badge(part.get("sales_for_partition_payments") == part.get("their_proceeds_booked_at_issuer"))
         if part else ""],
    ]
    body = table_html(["", "value", ""], rows)
    problems = s.get("problems") or []
    if problems:
        body += ('<h3>Problems</h3><pre style="white-space: pre-wrap">'
                 + esc("\n".join(map(str, problems))[:20_000]) + "</pre>")
    return body


def _kind_tables(s: dict[str, Any]) -> str:
    out = []
    faults = s.get("faults", [])
    for kind, title in _KIND_TITLES.items():
        rows = [f for f in faults if f["kind"] == kind]
        if not rows:
            continue
        if kind == "kill":
            headers = ["#", "service", "at (s)", "→ healthy (s)", "→ settled (s)", "commands replayed", "replay (s)",
                       "in doubt found / resolved / left", "violations after", ""]
            cells = [[str(i + 1), esc(f["target"]), _n(f["at_s"]), _n(f["recovery_s"]), _n(f["settled_s"]),
                      _n(f["commands_replayed"]), _n(f["replay_s"]),
                      f"{f['in_doubt_found']} / {f['in_doubt_resolved']} / {f['in_doubt_left']}",
                      _n(f["violations_after"]), _badge(f["recovered"])] for i, f in enumerate(rows)]
        else:
            headers = ["#", "target", "at (s)", "→ recovered (s)", "→ settled (s)", "violations after", "detail", ""]
            cells = [[str(i + 1), esc(f["target"]), _n(f["at_s"]), _n(f["recovery_s"]), _n(f["settled_s"]),
                      _n(f["violations_after"]), esc(_detail(f["detail"])), _badge(f["recovered"])]
                     for i, f in enumerate(rows)]
        agg = s.get("faults_by_kind", {}).get(kind, {})
        out.append(f"<h3>{esc(title)}</h3><p>{agg.get('count', len(rows))} applied, {agg.get('recovered')} "
                   f"recovered; median / max to recovered {_n(agg.get('recovery_s_median'))} / "
                   f"{_n(agg.get('recovery_s_max'))} s.</p>" + table_html(headers, cells, numeric_from=2))
    return "".join(out)


def _detail(d: dict[str, Any]) -> str:
    keep = {k: v for k, v in d.items() if k not in ("log_tail", "found", "faults")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())[:400]


def _timeline(s: dict[str, Any]) -> Chart:
    points = s.get("timeline") or []
    if not points:
        return Chart("timeline-chart", "", None, "no payments")
    fig = new_figure("Payments and faults over the run", "seconds since the load started",
                     "first answer latency (ms, log)", height_px=480)
    fig.update_yaxes(type="log")
    for outcome, color in _OUTCOME_COLORS.items():
        xs = [t for t, lat, o, _ in points if o == outcome and lat is not None]
        ys = [lat * 1000.0 for t, lat, o, _ in points if o == outcome and lat is not None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=outcome.replace("_", " "),
                                     marker={"size": 4, "color": color, "opacity": 0.7}))
    for f in s.get("faults", []):
        color = _SERVICE_COLORS.get(f["target"], "#5b6770")
        if f["kind"] == "kill":
            fig.add_vline(x=f["at_s"], line={"color": color, "width": 1, "dash": "dot"})
        elif f["kind"] in ("pg_crash", "clock_jump", "unexpected_exit"):
            fig.add_vline(x=f["at_s"], line={"color": color, "width": 2})
            label = f["kind"].replace("_", " ") + (f" {f['target']} {f['detail'].get('step_s', 0):+g}s"
                                                   if f["kind"] == "clock_jump" else "")
            fig.add_annotation(x=f["at_s"], y=1.0, yref="paper", text=esc(label), showarrow=False,
                               textangle=-90, xanchor="right", yanchor="top", font={"size": 10})
    part = s.get("partition") or {}
    if part:
        fig.add_vrect(x0=part["start_s"], x1=part["end_s"], fillcolor="#b03a48", opacity=0.12, line_width=0,
                      annotation_text="partition", annotation_position="top left")
    chaos = [f for f in s.get("faults", []) if f["kind"] == "chaos"]
    if len(chaos) == 2:
        fig.add_vrect(x0=chaos[0]["at_s"], x1=chaos[1]["at_s"], fillcolor="#d9822b", opacity=0.08, line_width=0,
                      annotation_text="proxy chaos", annotation_position="top left")
    for name, color in _SERVICE_COLORS.items():  # a legend entry per killed service's line colour
        if any(f["kind"] == "kill" and f["target"] == name for f in s.get("faults", [])):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"kill {name}",
                                     line={"color": color, "dash": "dot"}))
    return Chart("timeline-chart", "Each dot is a payment at its scheduled time, by outcome, with the latency of the "
                             "first attempt's answer. Dotted lines: SIGKILLs, coloured by service. Solid lines: "
                             "PostgreSQL crashes and clock jumps. Shaded: the proxy chaos phase and the partition.",
                 fig)


def _recovery_chart(s: dict[str, Any]) -> Chart:
    kills = [f for f in s.get("faults", []) if f["kind"] == "kill"]
    if not kills:
        return Chart("recovery-chart", "", None, "no kills")
    fig = new_figure("Recovery per kill", "kill", "seconds", height_px=360, barmode="group")
    for name, color in _SERVICE_COLORS.items():
        mine = [(i + 1, f) for i, f in enumerate(kills) if f["target"] == name]
        if mine:
            fig.add_trace(go.Bar(x=[i for i, _ in mine], y=[f["recovery_s"] for _, f in mine], name=f"{name} → healthy",
                                 marker={"color": color}))
            fig.add_trace(go.Scatter(x=[i for i, _ in mine], y=[f["settled_s"] for _, f in mine], mode="markers",
                                     name=f"{name} → nothing in doubt", marker={"color": color, "symbol": "diamond",
                                                                                "size": 8}))
    return Chart("recovery-chart", "Bars: SIGKILL until the restarted process answers /healthz (process start, "
                                   "command-log replay, check against the books). Diamonds: until GET /v1/recovery "
                                   "shows nothing in doubt.", fig)


def _payments(s: dict[str, Any]) -> str:
    p = s.get("payments")
    if not p:
        return "<p>No payments.</p>"
    rows = [[esc(k.replace("_", " ")), _n(v)] for k, v in p.items() if isinstance(v, int)]
    lat = p.get("latency", {})
    lat_rows = [[esc(k.replace("_", " ")), _n(v.get("n")), _n(v.get("p50_ms")), _n(v.get("p99_ms")),
                 _n(v.get("max_ms"))] for k, v in lat.items()]
    codes = [[esc(k), _n(v)] for k, v in p.get("codes", {}).items()]
    audit = s.get("audit", {})
    trans = [[esc(k), _n(v)] for k, v in sorted(audit.get("pos_outcome_to_issuer_state", {}).items())]
    return (table_html(["", "count"], rows)
            + "<h3>Latency, from the scheduled send time</h3>"
            + table_html(["", "n", "p50 (ms)", "p99 (ms)", "max (ms)"], lat_rows)
            + "<h3>Non-approvals by outcome and code</h3>" + table_html(["outcome:code", "count"], codes)
            + "<h3>What the POS saw → the issuer's record</h3>" + table_html(["POS → issuer", "count"], trans)
            + f"<p>Sales at the exchange for these payments: {esc(audit.get('sales'))}. Orphaned sales (sold, "
              f"payment not approved; the tenge stays on the card): {_n(audit.get('orphaned_sales'))}.</p>")


def _proxy(s: dict[str, Any]) -> str:
    rows = []
    for name, d in (("chaos phase", s.get("chaos") or {}), ("whole run", s.get("proxy_total") or {})):
        if d:
            rows.append([esc(name), _n(d.get("requests")), esc(d.get("dropped")), _n(d.get("duplicates")),
                         _n(d.get("duplicates_replayed")), esc(d.get("duplicates_not_replayed"))])
    return table_html(["", "requests", "dropped", "duplicates", "answered by replay", "other answers to copies"], rows)


def write_html(s: dict[str, Any], path: Path) -> Path:
    cfg = s.get("config", {})
    sub = (f"{esc(s.get('database'))}: {cfg.get('kills')} kills planned, load {cfg.get('rate_per_s')} payments/s "
           f"for at least {cfg.get('duration_s')} s (ran {s.get('load_s')} s), seed {cfg.get('seed')}. "
           f"Verdict: {_badge(bool(s.get('ok')))}")
    sections = [
        Section("verdict", "Verdict", _verdict(s)),
        Section("timeline", "Timeline", chart_html(_timeline(s)) + chart_html(_recovery_chart(s))),
        Section("faults", "Faults by kind", _kind_tables(s) or "<p>No faults.</p>"),
        Section("payments", "Payments", _payments(s)),
        Section("proxy", "Proxy between the issuer and the exchange", _proxy(s)),
    ]
    return write_atomic(path, render_page(f"Faults against the party services ({s.get('database')})", sub, sections))
