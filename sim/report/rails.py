"""The report's "Rails compared" section and the rails' rows of ``ccsim compare``.

One screen for a regulator or a pilot designer asking *card or direct, and what does each cost
whom?*: per rail (card JIT, card pre-funded, card stablecoin, direct crypto, direct stablecoin) the
payments, approvals, authorization latency, the time until the merchant holds tenge and the
merchant's cost per 10,000 KZT; then what the rails share (the tenge the exchange and issuer
pre-fund) and what the zone merchants bear on the direct rail (their price exposure, estimated CIT,
the VAT in the goods). Every figure is read from ``summary.json``'s ``rails`` section
(:mod:`sim.summary_rails` defines each; ``ccsim verify`` recomputes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from sim.report.figures import COLORS, Chart, new_figure
from sim.report.fmt import fmt_count, fmt_kzt_exact, kzt_decimal
from sim.report.headline import Kind, Metric, Value, lookup
from sim.report.page import chart_html, esc, table_html

__all__ = ["RAILS", "rail_metrics", "rails_chart", "rails_html"]

RAILS: Final = (("card_jit", "card JIT"), ("card_prefunded", "card pre-funded"),
                ("card_stablecoin", "card stablecoin"), ("direct_crypto", "direct crypto"),
                ("direct_stablecoin", "direct stablecoin"))

_COST_PARTS: Final = (  # (key, label) of merchant_cost_per_10000_kzt's parts, card then direct
    ("interchange", "interchange"), ("scheme_fees", "scheme fees"), ("acquirer_margin", "acquirer margin"),
    ("exchange_fees", "exchange fees"), ("slippage", "slippage"), ("price_loss", "price loss"),
)


@dataclass(frozen=True, slots=True)
class _Duration(Metric):
    """A time until the merchant holds tenge: seconds on the direct rail, hours on the card's, so
    shown in whole seconds with hours beside when long (differences from the shown seconds)."""

    def fmt(self, value: Value) -> str:
        shown = self.rounded(value)
        if shown is None:
            return "n/a"
        seconds = Decimal(str(shown))
        text = f"{seconds:,.0f} s"
        return text + (f" ({seconds / 3600:,.1f} h)" if abs(seconds) >= 3600 else "")

    def rounded(self, value: Value) -> Value:
        if value is None:
            return None
        return Decimal(str(float(value))).quantize(Decimal(1), ROUND_HALF_UP)

    def fmt_delta(self, delta: Value) -> str:
        if delta is None:
            return "n/a"
        return f"{Decimal(str(delta)):+,.0f} s"


def _present(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The rails of a run that carried at least one payment."""
    rails = summary.get("rails") or {}
    return [(key, label) for key, label in RAILS if int((rails.get(key) or {}).get("payments") or 0) > 0]


def rail_metrics(summaries: list[dict[str, Any]]) -> list[Metric]:
    """The rows ``ccsim compare`` adds per rail that any of the runs used, when any of them used
    the direct rail (between card-only runs the headline figures already compare the card)."""
    used = [rail for rail in RAILS if any(rail in _present(s) for s in summaries)]
    if not any(key.startswith("direct") for key, _ in used):
        return []
    out: list[Metric] = []
    for key, label in used:
        base = f"rails.{key}"
        out += [Metric(f"{base}.payments", f"{label}: payments", Kind.COUNT),
                Metric(f"{base}.approval_rate", f"{label}: approval rate", Kind.RATE),
                Metric(f"{base}.auth_latency_ms.p99", f"{label}: authorization latency p99", Kind.MS),
                _Duration(f"{base}.tenge_to_merchant_s.p50", f"{label}: merchant holds tenge, p50", Kind.SECONDS),
                Metric(f"{base}.merchant_cost_per_10000_kzt.total", f"{label}: merchant cost per 10,000 KZT",
                       Kind.KZT)]
    out.append(Metric("rails.merchants.worst_window_1h_kzt", "zone merchants: worst 1-hour P&L", Kind.KZT))
    out.append(Metric("rails.merchants.held_at_end_kzt", "zone merchants: crypto held at the end", Kind.KZT))
    return out


def _cost_parts(rail: dict[str, Any]) -> dict[str, Decimal]:
    """A rail's merchant cost per 10,000 KZT by part; the direct rail's price P&L is a cost when
    the price fell (a gain lowers the total, drawn as a negative part)."""
    cost = rail.get("merchant_cost_per_10000_kzt") or {}
    parts = {key: kzt_decimal(cost.get(key)) or Decimal(0) for key, _ in _COST_PARTS if key in cost}
    if "price_pnl" in cost:
        parts["price_loss"] = -(kzt_decimal(cost["price_pnl"]) or Decimal(0))
    return parts


def rails_chart(summary: dict[str, Any]) -> Chart:
    """The merchant's cost per 10,000 KZT on each rail used, stacked by what it pays for."""
    present = _present(summary)
    if not present:
        return Chart("chart-rails-cost", "", None, "no payment in this run")
    rails = summary["rails"]
    fig = new_figure("Merchant's cost per 10,000 KZT paid, by rail", "rail", "KZT per 10,000 KZT",
                     barmode="relative")
    labels = [label for _, label in present]
    for (part, part_label), color in zip(_COST_PARTS, COLORS, strict=False):
        values = [float(_cost_parts(rails[key]).get(part, Decimal(0))) for key, _ in present]
        if any(values):
            fig.add_bar(x=labels, y=values, name=part_label, marker_color=color)
    return Chart("chart-rails-cost", "What a merchant gives up per 10,000 KZT it is paid: on the card the "
                 "merchant discount rate (interchange, scheme fees, the acquirer's margin); on the direct rail "
                 "the exchange's fees, the slippage of its conversions, and the price it lost (or gained, "
                 "below zero) between receipt and conversion.", fig)


def _row_values(summary: dict[str, Any], present: list[tuple[str, str]], metric_of: Any) -> list[str]:
    return [esc(metric_of(key).fmt(metric_of(key).value(summary))) for key, _ in present]


def _rails_table(summary: dict[str, Any], present: list[tuple[str, str]]) -> str:
    figures = (
        ("payments (measured)", lambda k: Metric(f"rails.{k}.payments", "", Kind.COUNT)),
        ("approval rate", lambda k: Metric(f"rails.{k}.approval_rate", "", Kind.RATE)),
        ("authorization latency p50", lambda k: Metric(f"rails.{k}.auth_latency_ms.p50", "", Kind.MS)),
        ("authorization latency p99", lambda k: Metric(f"rails.{k}.auth_latency_ms.p99", "", Kind.MS)),
        ("merchant holds tenge, p50", lambda k: _Duration(f"rails.{k}.tenge_to_merchant_s.p50", "", Kind.SECONDS)),
        ("merchant holds tenge, p99", lambda k: _Duration(f"rails.{k}.tenge_to_merchant_s.p99", "", Kind.SECONDS)),
        ("merchant cost per 10,000 KZT",
         lambda k: Metric(f"rails.{k}.merchant_cost_per_10000_kzt.total", "", Kind.KZT)),
        ("PIT due on the holders' sales", lambda k: Metric(f"rails.{k}.pit_due_kzt", "", Kind.KZT)),
    )
    rows = [[esc(name), *_row_values(summary, present, metric_of)] for name, metric_of in figures]
    fell_back = [int(lookup(summary, f"rails.{k}.fell_back_to_card") or 0) for k, _ in present]
    if any(fell_back):
        rows.append(["fell back to the card", *(fmt_count(n) if k.startswith("direct") else "—"
                                                for n, (k, _) in zip(fell_back, present, strict=True))])
    return table_html(["figure", *(label for _, label in present)], rows, table_id="rails-table")


def _merchants_html(summary: dict[str, Any]) -> str:
    merchants = lookup(summary, "rails.merchants")
    if not merchants:
        return ""
    pnl = merchants.get("conversion_pnl_bps") or {}
    cit = merchants.get("cit_estimate_by_segment_kzt") or {}
    gains = merchants.get("realized_gain_by_segment_kzt") or {}
    vat = fmt_kzt_exact(kzt_decimal(merchants.get("vat_in_goods_kzt")))
    segments = [[esc(seg), fmt_kzt_exact(kzt_decimal(gains.get(seg))), fmt_kzt_exact(kzt_decimal(cit[seg]))]
                for seg in sorted(cit) if kzt_decimal(gains.get(seg)) or kzt_decimal(cit[seg])]
    return (
        "<h3>What the zone merchants bear on the direct rail</h3>"
        f"<p>They converted {fmt_count(merchants.get('conversions'))} times "
        f"({fmt_count(merchants.get('conversions_refused'))} refused). Between receipt and conversion a "
        f"conversion's price P&amp;L ran from {float(pnl.get('min') or 0):,.0f} to "
        f"{float(pnl.get('max') or 0):,.0f} bps of its value (p1 {float(pnl.get('p1') or 0):,.0f}, median "
        f"{float(pnl.get('p50') or 0):,.0f}). Their worst hour: "
        f'<strong class="fig" data-key="rails.merchants.worst_window_1h_kzt">'
        f"{esc(fmt_kzt_exact(kzt_decimal(merchants.get('worst_window_1h_kzt'))))}</strong> of mark-to-market "
        f"P&amp;L. Still held at the end: {esc(fmt_kzt_exact(kzt_decimal(merchants.get('held_at_end_kzt'))))} "
        f"(unrealized {esc(fmt_kzt_exact(kzt_decimal(merchants.get('unrealized_pnl_at_end_kzt'))))}).</p>"
        "<p>Their sale of digital assets is exempt from VAT; its gain counts toward corporate income tax at "
        "20 % (an estimate: the merchant's other income and costs are not modelled). VAT in the goods sold "
        f"on the direct rail, reported and not booked: {esc(vat)}.</p>"
        + (table_html(["segment", "conversion gain", "estimated CIT (20 %)"], segments,
                      table_id="rails-cit-table") if segments else "")
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _verdict(summary: dict[str, Any], present: list[tuple[str, str]]) -> str:
    """One sentence: what a merchant gave up per 10,000 KZT on each rail, dearest first (rails that
    cost the same are named together)."""
    by_cost: dict[Decimal, list[str]] = {}
    for key, label in present:
        cost = kzt_decimal(lookup(summary, f"rails.{key}.merchant_cost_per_10000_kzt.total"))
        if cost is not None:
            by_cost.setdefault(cost, []).append(label)
    if not by_cost:
        return ""
    parts = [f"<strong>{esc(fmt_kzt_exact(cost))}</strong> on {esc(_and(labels))}"
             for cost, labels in sorted(by_cost.items(), reverse=True)]
    listing = "; ".join(parts)
    return f'<p id="rails-verdict">Per 10,000 KZT it was paid, a merchant gave up {listing}.</p>'


def rails_html(summary: dict[str, Any]) -> str:
    """The section's body (an explanation when the run predates the rails figures)."""
    if not summary.get("rails"):
        return "<p>This run's summary has no per-rail figures (an older ccsim, or a live run).</p>"
    present = _present(summary)
    if not present:
        return "<p>No payment was measured on any rail.</p>"
    prefund = lookup(summary, "rails.prefunding") or {}
    return (_verdict(summary, present) + _rails_table(summary, present)
            + f"<p>Shared by every rail: the exchange pre-funded "
            f"{esc(fmt_kzt_exact(kzt_decimal(prefund.get('exchange_peak_prefund_kzt'))))} of tenge at its bank, "
            f"the issuer {esc(fmt_kzt_exact(kzt_decimal(prefund.get('issuer_peak_prefund_kzt'))))}. A direct "
            "payment needs neither: the crypto moves between two wallets at the exchange, and tenge moves only "
            "when the merchant converts.</p>"
            + '<div class="grid">' + chart_html(rails_chart(summary)) + "</div>"
            + _merchants_html(summary))
