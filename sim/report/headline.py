"""The headline figures of a run, read from summary.json, shared by the report and the comparison.

Each :class:`Metric` knows where its value lives in the summary, its kind (which decides how it is
parsed, shown and subtracted), and a label. KZT figures are exact Decimals end to end, so a
difference column in a comparison is the exact difference of two summaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, ClassVar, Final

from sim.report.fmt import fmt_count, fmt_kzt_exact, fmt_ms, fmt_pct, kzt_decimal

__all__ = ["HEADLINE", "Kind", "Metric", "lookup", "metric_for", "violation_list"]

Value = int | float | Decimal | bool | None


class Kind(Enum):
    COUNT = "count"
    MS = "ms"
    RATE = "rate"  # a share in [0, 1]
    KZT = "kzt"
    BPS = "bps"
    PER_S = "per_s"
    SECONDS = "seconds"
    BOOL = "bool"
    NUMBER = "number"  # a figure of no particular unit (an SLO on a count-like or derived value)


def lookup(summary: dict[str, Any], path: str) -> Any:
    """``lookup(s, "payments.attempted")``; ``None`` when any step is missing."""
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def violation_list(summary: dict[str, Any]) -> list[str]:
    """The ledger violations of a run as text lines (the summary holds a list, or a count)."""
    raw = lookup(summary, "ledger.violations")
    if isinstance(raw, list):
        return [str(item) for item in raw]
    if isinstance(raw, int) and raw > 0:
        return [f"{raw} violations (no details in summary.json)"]
    return []


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # dotted path into summary.json, or a derived name below
    label: str
    kind: Kind

    def value(self, summary: dict[str, Any]) -> Value:
        if self.key == "approval_rate":
            attempted = lookup(summary, "payments.measured") or lookup(
                summary, "payments.attempted") or 0
            approved = lookup(summary, "payments.approved") or 0
            return approved / attempted if attempted else None
        if self.key == "violations":
            return len(violation_list(summary))
        if self.key == "declined_total":
            declined = lookup(summary, "payments.declined") or {}
            return sum(int(n) for n in declined.values())
        raw = lookup(summary, self.key)
        if raw is None:
            return None
        if self.kind is Kind.KZT:
            return kzt_decimal(raw)
        if self.kind is Kind.COUNT:
            return int(raw)
        if self.kind is Kind.BOOL:
            return bool(raw)
        return float(raw)

    def fmt(self, value: Value) -> str:
        if value is None:
            return "n/a"
        value = self.rounded(value)  # what is shown is what differences are computed from
        if value is None:
            return "n/a"
        match self.kind:
            case Kind.COUNT:
                return fmt_count(int(value))
            case Kind.MS:
                return fmt_ms(float(value))
            case Kind.RATE:
                return fmt_pct(float(value))
            case Kind.KZT:
                return fmt_kzt_exact(value if isinstance(value, Decimal) else Decimal(str(value)))
            case Kind.BPS:
                return f"{float(value):,.2f} bps"
            case Kind.PER_S:
                return f"{float(value):,.2f} /s"
            case Kind.SECONDS:
                return f"{float(value) / 3600:,.2f} h"
            case Kind.BOOL:
                return "pass" if value else "FAIL"
            case Kind.NUMBER:
                return f"{float(value):,.4g}"

    # Decimal places :meth:`fmt` shows, in the metric's own unit (a rate's 2 places of a percent
    # are 4 of the share; hours to 2 places are seconds to a multiple of 36).
    _SHOWN_PLACES: ClassVar[dict[Kind, int]] = {Kind.MS: 0, Kind.RATE: 4, Kind.BPS: 2, Kind.PER_S: 2}

    def rounded(self, value: Value) -> Value:
        """``value`` as :meth:`fmt` shows it (a Decimal), so differences of shown figures add up."""
        if value is None or isinstance(value, bool) or self.kind in (Kind.KZT, Kind.COUNT, Kind.BOOL):
            return value
        exact = Decimal(str(float(value)))
        if self.kind is Kind.SECONDS:
            return (exact / 3600).quantize(Decimal("0.01"), ROUND_HALF_UP) * 3600
        places = self._SHOWN_PLACES.get(self.kind)
        if places is None:
            return exact
        return exact.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)

    def delta(self, base: Value, other: Value) -> Value:
        """``other - base`` of the figures as shown (:meth:`rounded`), so the difference column
        is the difference of the columns beside it; ``None`` when not comparable."""
        if base is None or other is None:
            return None
        if self.kind is Kind.BOOL:
            return bool(base) == bool(other)
        if self.kind is Kind.COUNT:
            return int(other) - int(base)
        a, b = self.rounded(base), self.rounded(other)
        assert isinstance(a, Decimal) and isinstance(b, Decimal)
        return b - a

    def fmt_delta(self, delta: Value) -> str:
        if delta is None:
            return "n/a"
        if self.kind is Kind.BOOL:
            return "same" if delta else "differs"
        if self.kind is Kind.RATE:
            return f"{float(delta) * 100:+.2f} pp"
        text = self.fmt(delta)
        return text if text.startswith("-") else f"+{text}"


HEADLINE: Final = (
    Metric("payments.attempted", "payments attempted", Kind.COUNT),
    Metric("payments.measured", "payments measured (after warm-up)", Kind.COUNT),
    Metric("payments.approved", "payments approved", Kind.COUNT),
    Metric("approval_rate", "approval rate", Kind.RATE),
    Metric("declined_total", "payments declined", Kind.COUNT),
    Metric("payments.stand_in", "approved by network stand-in", Kind.COUNT),
    Metric("payments.orphaned_sales", "orphaned sales", Kind.COUNT),
    Metric("payments.stand_in_approved_kzt", "approved by stand-in", Kind.KZT),
    Metric("auth_latency_ms.p50", "authorization latency p50", Kind.MS),
    Metric("auth_latency_ms.p99", "authorization latency p99", Kind.MS),
    Metric("auth_latency_ms.p999", "authorization latency p99.9", Kind.MS),
    Metric("auth_latency_ms.max", "authorization latency max", Kind.MS),
    Metric("deadline_miss_rate", "deadline miss rate", Kind.RATE),
    Metric("throughput.approved_per_s_mean", "approvals per second, mean", Kind.PER_S),
    Metric("throughput.approved_per_s_peak", "approvals per second, peak", Kind.PER_S),
    Metric("settlement_latency_s.p50", "settlement latency p50", Kind.SECONDS),
    Metric("settlement_latency_s.p99", "settlement latency p99", Kind.SECONDS),
    Metric("market.slippage_bps_mean", "mean slippage", Kind.BPS),
    Metric("market.fees_kzt", "exchange fees", Kind.KZT),
    Metric("liquidity.exchange_peak_prefund_kzt", "exchange peak pre-funding", Kind.KZT),
    Metric("liquidity.issuer_peak_prefund_kzt", "issuer peak pre-funding", Kind.KZT),
    Metric("liquidity.stand_in_exposure_peak_kzt", "peak stand-in exposure", Kind.KZT),
    Metric("tax.sales", "crypto sales taxed", Kind.COUNT),
    Metric("tax.proceeds_kzt", "sale proceeds", Kind.KZT),
    Metric("tax.realized_gain_kzt", "realized gains (taxable)", Kind.KZT),
    Metric("tax.realized_loss_kzt", "realized losses (no offset)", Kind.KZT),
    Metric("tax.pit_due_kzt", "PIT due", Kind.KZT),
    Metric("tax.pit_withheld_kzt", "PIT withheld at source", Kind.KZT),
    Metric("tax.pit_declared_kzt", "PIT declared", Kind.KZT),
    Metric("tax.tax_gap_kzt", "tax gap", Kind.KZT),
    Metric("ledger.invariants_ok", "ledger invariants", Kind.BOOL),
    Metric("violations", "ledger invariant violations", Kind.COUNT),
)


_SUFFIX_KINDS: Final = (("_ms", Kind.MS), ("_kzt", Kind.KZT), ("_bps", Kind.BPS), ("_rate", Kind.RATE),
                        ("utilization", Kind.RATE), ("_per_s_mean", Kind.PER_S), ("_per_s_peak", Kind.PER_S),
                        ("_s.p50", Kind.SECONDS), ("_s.p99", Kind.SECONDS), ("_s.max", Kind.SECONDS))


def metric_for(path: str) -> Metric:
    """The headline metric at ``path`` (an SLO's metric), or one whose kind its name implies:
    ``…_ms`` milliseconds, ``…_kzt`` tenge, ``…_rate`` and utilizations shares, else a count."""
    for metric in HEADLINE:
        if metric.key in {path, path.removeprefix("payments.")}:
            return metric
    head = path.rsplit(".", 1)[0] if path.startswith(("auth_latency_ms.", "legs.")) else path
    for suffix, kind in _SUFFIX_KINDS:
        if head.endswith(suffix) or path.endswith(suffix):
            return Metric(path, path, kind)
    return Metric(path, path, Kind.NUMBER)
