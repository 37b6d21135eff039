"""The plain-language summary at the top of the report, for a reader who is not an engineer.

Each figure in a sentence is a ``<span class="fig">`` carrying the exact value it was rendered from
(``data-key``/``data-value``), so a test — or a sceptical reader with the page source — can check
every number against summary.json.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sim.report.charts_flow import reason_label
from sim.report.fmt import (
    fmt_count,
    fmt_kzt_human,
    fmt_ms_bound,
    fmt_pct,
    fmt_share_pct,
    kzt_decimal,
)
from sim.report.headline import HEADLINE, Kind, lookup, metric_for, violation_list
from sim.report.page import esc, table_html

__all__ = ["breached_slos", "headline_table_html", "slo_html", "summary_html", "verdict_html"]


def _fig(key: str, value: object, text: str) -> str:
    return f'<span class="fig" data-key="{esc(key)}" data-value="{esc(value)}">{esc(text)}</span>'


def _ledger_ok(summary: dict[str, Any], integrity_ok: bool) -> bool:
    return bool(lookup(summary, "ledger.invariants_ok")) and integrity_ok


def summary_sentences(summary: dict[str, Any], integrity_ok: bool) -> list[str]:
    pay = summary.get("payments") or {}
    attempted = int(pay.get("attempted") or 0)
    approved = int(pay.get("approved") or 0)
    declined: dict[str, int] = {str(k): int(v) for k, v in (pay.get("declined") or {}).items()}
    lat = summary.get("auth_latency_ms") or {}
    out: list[str] = []
    measured = pay.get("measured")
    if measured is not None and int(measured) != attempted:
        # Statistics cover the payments after warm-up (and before cool-down), counts the whole run.
        out.append(
            f"{_fig('approval_share', approved, fmt_share_pct(approved, int(measured)))} of the "
            f"{_fig('payments.measured', measured, fmt_count(int(measured)))} payments measured "
            f"after warm-up were approved "
            f"({_fig('payments.approved', approved, fmt_count(approved))}); "
            f"{_fig('payments.attempted', attempted, fmt_count(attempted))} payments were "
            "attempted in the whole run."
        )
    else:
        out.append(
            f"{_fig('approval_share', approved, fmt_share_pct(approved, attempted))} of "
            f"{_fig('payments.attempted', attempted, fmt_count(attempted))} payments were "
            f"approved ({_fig('payments.approved', approved, fmt_count(approved))})."
        )
    miss = summary.get("deadline_miss_rate")
    if lat.get("p99") is not None:
        deadline = summary.get("deadline_ms")
        against = (f" against a {_fig('deadline_ms', deadline, fmt_ms_bound(float(deadline)))} "
                   "network deadline" if deadline is not None else "")
        out.append(
            f"99 % of authorizations were answered within "
            f"{_fig('auth_latency_ms.p99', lat['p99'], fmt_ms_bound(float(lat['p99'])))}{against}; "
            f"half within "
            f"{_fig('auth_latency_ms.p50', lat.get('p50'), fmt_ms_bound(lat.get('p50')))}, and "
            f"{_fig('deadline_miss_rate', miss, fmt_pct(miss))} missed the deadline."
        )
    if declined:
        top_reason, top_n = max(declined.items(), key=lambda item: (item[1], item[0]))
        total = sum(declined.values())
        out.append(
            f"{_fig('declined_total', total, fmt_count(total))} payments were declined, most often "
            f"for “{esc(reason_label(top_reason))}” "
            f"({_fig('payments.declined.' + top_reason, top_n, fmt_count(top_n))})."
        )
    stand_in = int(pay.get("stand_in") or 0)
    orphaned = int(pay.get("orphaned_sales") or 0)
    out.append(
        f"The card network stood in for the issuer "
        f"{_fig('payments.stand_in', stand_in, fmt_count(stand_in))} times, and "
        f"{_fig('payments.orphaned_sales', orphaned, fmt_count(orphaned))} crypto sales finished "
        "after the network had already answered (orphaned sales)."
    )
    if _ledger_ok(summary, integrity_ok):
        out.append('<strong class="pass badge" data-key="ledger.invariants_ok" data-value="True">'
                   "No money was created or lost</strong>: every ledger invariant and the "
                   "reconciliation passed.")
    else:
        n = len(violation_list(summary))
        out.append('<strong class="fail badge" data-key="ledger.invariants_ok" data-value="False">'
                   "The money checks FAILED</strong>: "
                   f"{_fig('violations', n, fmt_count(n))} ledger violations; "
                   'see <a href="#integrity">Integrity</a>.')
    tax = summary.get("tax") or {}
    if tax:
        parts = [
            (f"{_fig(f'tax.{key}', tax.get(key), fmt_kzt_human(kzt_decimal(tax.get(key))))}")
            for key in ("realized_gain_kzt", "pit_due_kzt", "pit_withheld_kzt", "tax_gap_kzt")
        ]
        out.append(
            f"{parts[0]} of taxable gains were realized on crypto sales; {parts[1]} of personal income "
            f"tax is due, of which {parts[2]} was withheld at source; the tax gap is {parts[3]}."
        )
    liq = summary.get("liquidity") or {}
    if liq:
        ex = liq.get("exchange_peak_prefund_kzt")
        iss = liq.get("issuer_peak_prefund_kzt")
        out.append(
            f"At the peak the exchange needed "
            f"{_fig('liquidity.exchange_peak_prefund_kzt', ex, fmt_kzt_human(kzt_decimal(ex)))} "
            f"of tenge in place and the issuer "
            f"{_fig('liquidity.issuer_peak_prefund_kzt', iss, fmt_kzt_human(kzt_decimal(iss)))}."
        )
    return out


def _slo_parts(name: str, slo: dict[str, Any]) -> tuple[str, str]:
    """(target, value) of an SLO in its metric's unit, rounded as the summary sentence rounds."""
    path = name.split(maxsplit=1)[0] if name.split() else name
    for op in ("<=", ">=", "==", "<", ">"):
        path = path.split(op)[0]
    metric = metric_for(path.strip())
    value, threshold = slo.get("value"), slo.get("threshold")

    def shown(number: Any) -> str:
        if not isinstance(number, int | float):
            return str(number)
        if metric.kind is Kind.MS:
            return fmt_ms_bound(float(number))
        if metric.kind is Kind.KZT:
            return fmt_kzt_human(Decimal(str(number)))
        return metric.fmt(_as_kind(metric.kind, number))

    return f"{slo.get('op', '')} {shown(threshold)}", shown(value)


def _as_kind(kind: Kind, number: float) -> Any:
    if kind is Kind.COUNT:
        return int(number)
    if kind is Kind.BOOL:
        return bool(number)
    return float(number)


def breached_slos(summary: dict[str, Any]) -> list[str]:
    """Each breached SLO as ``"metric op target (value …)"`` in the metric's unit."""
    out = []
    for name, slo in (summary.get("slo") or {}).items():
        if not slo.get("pass"):
            target, value = _slo_parts(name, slo)
            out.append(f"{name.split()[0] if ' ' in name else name} {target} (value {value})")
    return out


def verdict_html(summary: dict[str, Any], integrity_ok: bool) -> str:
    """The first thing on the page: PASS only when every SLO is met and the money checks passed;
    FAIL names every breached SLO and the failed money checks."""
    breached = breached_slos(summary)
    money_ok = _ledger_ok(summary, integrity_ok)
    total = len(summary.get("slo") or {})
    if not breached and money_ok:
        slos = f"all {total} service-level objectives met" if total else "no service-level objectives set"
        return (f'<div class="verdict pass" id="verdict" data-pass="True"><strong>PASS</strong>: {slos}; '
                "no money was created or lost (every ledger invariant and the reconciliation passed).</div>")
    items = [f"<li>SLO breached: {esc(b)}</li>" for b in breached]
    if not money_ok:
        items.append('<li>money checks FAILED: see <a href="#integrity">Integrity</a></li>')
    head = (f"{len(breached)} of {total} service-level objectives breached" if breached
            else "the money checks failed")
    return (f'<div class="verdict fail" id="verdict" data-pass="False"><strong>FAIL</strong>: {esc(head)}'
            f'<ul id="verdict-reasons">{"".join(items)}</ul></div>')


def slo_html(summary: dict[str, Any]) -> str:
    slos: dict[str, dict[str, Any]] = summary.get("slo") or {}
    if not slos:
        return "<p>The scenario sets no service-level objectives.</p>"
    met = sum(1 for s in slos.values() if s.get("pass"))
    rows = []
    for name, slo in slos.items():
        ok = bool(slo.get("pass"))
        verdict = (f'<span class="badge {"pass" if ok else "fail"}" data-slo="{esc(name)}" '
                   f'data-pass="{ok}">{"met" if ok else "BREACHED"}</span>')
        target, shown = _slo_parts(name, slo)
        rows.append([esc(name), esc(target), f'<span data-value="{esc(slo.get("value"))}">{esc(shown)}</span>',
                     verdict])
    return (f'<p><span class="fig" data-key="slo.met" data-value="{met}">{met}</span> of '
            f'<span class="fig" data-key="slo.total" data-value="{len(slos)}">{len(slos)}</span> '
            "service-level objectives met.</p>"
            + table_html(["objective", "target", "value", "verdict"], rows, numeric_from=9,
                         table_id="slo-table"))


def headline_table_html(summary: dict[str, Any]) -> str:
    rows = []
    for metric in HEADLINE:
        value = metric.value(summary)
        rows.append([esc(metric.label),
                     f'<span data-key="{esc(metric.key)}">{esc(metric.fmt(value))}</span>'])
    return table_html(["figure", "value"], rows, table_id="headline-table")


def summary_html(summary: dict[str, Any], integrity_ok: bool) -> str:
    sentences = " ".join(summary_sentences(summary, integrity_ok))
    return (verdict_html(summary, integrity_ok) + f'<p class="lead" id="plain-summary">{sentences}</p>'
            "<h3>Service-level objectives</h3>" + slo_html(summary)
            + "<h3>Headline figures</h3>" + headline_table_html(summary))
