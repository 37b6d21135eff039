"""Which figures of a run's summary a sweep records, flattened to one column each.

A sweep table has one row per replication and one column per metric, named by its dotted path in
``summary.json`` (``auth_latency_ms.p99``, ``legs.exchange.utilization``). KZT amounts stay exact
decimal strings in the replication table; only their means and confidence intervals, which are
statistical estimates and not amounts of money, are floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

from sim.scenario import SERVICE_NAMES, Scenario

__all__ = ["DEFAULT_METRICS", "KEY_METRICS", "fmt_metric", "is_kzt", "metric_columns", "metric_value", "row_metrics"]

DEFAULT_METRICS: Final[tuple[str, ...]] = (
    "auth_latency_ms.mean", "auth_latency_ms.p50", "auth_latency_ms.p99", "auth_latency_ms.p999",
    "auth_latency_ms.max", "deadline_miss_rate", "payments.approval_rate", "payments.attempted",
    "payments.measured", "payments.stand_in", "payments.orphaned_sales",
    "throughput.approved_per_s_mean", "throughput.approved_per_s_peak", "settlement_latency_s.p50",
    "market.slippage_bps_mean",
    "liquidity.exchange_peak_prefund_kzt", "liquidity.issuer_peak_prefund_kzt",
    "liquidity.stand_in_exposure_peak_kzt",
    *(f"legs.{svc}.utilization" for svc in SERVICE_NAMES),
    *(f"legs.{svc}.mean_wait_ms" for svc in SERVICE_NAMES),
    "ledger_ok", "slos_pass",
)

# The curves the sweep report draws (SLO metrics are added to these).
KEY_METRICS: Final[tuple[str, ...]] = (
    "auth_latency_ms.p99", "deadline_miss_rate", "payments.approval_rate",
    "throughput.approved_per_s_mean", "liquidity.exchange_peak_prefund_kzt",
)


def is_kzt(path: str) -> bool:
    return path.endswith("_kzt")


def metric_columns(scenario: Scenario, extra: Iterable[str] = ()) -> list[str]:
    """The default metrics, then the scenario's SLO metrics and ``extra`` ones not among them."""
    out = list(DEFAULT_METRICS)
    for path in [*(slo.metric for slo in scenario.parsed_slos()), *extra]:
        if path not in out:
            out.append(path)
    return out


def metric_value(summary: dict[str, Any], path: str) -> float | str | None:
    """The figure at ``path``: a float, a KZT decimal string, or None (absent / not applicable)."""
    if path == "ledger_ok":
        return 1.0 if summary["ledger"]["invariants_ok"] else 0.0
    if path == "slos_pass":
        return 1.0 if all(v["pass"] for v in summary["slo"].values()) else 0.0
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, dict | list):
        return None
    if is_kzt(path):
        return str(node)
    if isinstance(node, str):  # e.g. a capacity of "unlimited"
        return None
    return float(node)


def row_metrics(summary: dict[str, Any], columns: Iterable[str]) -> dict[str, float | str | None]:
    return {path: metric_value(summary, path) for path in columns}


def fmt_metric(metric: str, value: float | None) -> str:
    """A metric's value for people: ms, %, KZT, hours, or 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric.endswith("_ms") or metric.startswith("auth_latency_ms."):
        return f"{value:,.0f} ms"
    if metric.endswith(("rate", "utilization")) or metric in ("slos_pass", "ledger_ok"):
        return f"{value * 100:.2f} %"
    if metric.endswith("_kzt"):
        return f"{value:,.0f} KZT"
    if metric.startswith("settlement_latency_s."):
        return f"{value / 3600:.2f} h"
    return f"{value:,.4g}"
