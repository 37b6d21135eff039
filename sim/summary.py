"""``summary.json``: the headline figures of a run, and the SLO verdicts.

Latencies are numbers (milliseconds or seconds, as their names say); amounts are KZT as decimal
strings (``"1234.56"``), never floats. Statistics cover payments that arrived after warm-up and
before cool-down; counts of stand-ins, orphaned sales and money cover the whole run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.money import DEFAULT_ASSETS, format_amount
from services.tax import AuthoritySummary
from sim.metrics import Metrics, percentiles
from sim.scenario import Scenario

__all__ = ["build_summary", "evaluate_slos", "flatten", "kzt", "lookup", "timeline"]

_KZT = DEFAULT_ASSETS[0]


def kzt(minor: int) -> str:
    return format_amount(int(minor), _KZT)


def build_summary(scenario: Scenario, metrics: Metrics, stations: dict[str, Any],
                  tax: AuthoritySummary, *, exchange_fees_kzt: int) -> dict[str, Any]:
    """The summary's figures; ``exchange_fees_kzt`` is the exchange's fee account at the end of the
    run (every sale's fee: the payments', the auto top-ups' and the stand-in advices')."""
    m = metrics
    lat = np.frombuffer(m.latency_ms, dtype=float)
    span_s = scenario.measure_until_s - scenario.measure_from_s
    legs: dict[str, Any] = {}
    for name, st in stations.items():
        waits = np.frombuffer(st.waits_s, dtype=float) * 1000.0
        served_measured = st.measured_calls
        legs[name] = {
            "mean_wait_ms": float(waits.mean()) if waits.size else 0.0,
            "p99_wait_ms": float(np.percentile(waits, 99.0)) if waits.size else 0.0,
            "mean_service_ms": st.service_sum_s * 1000.0 / served_measured if served_measured else 0.0,
            "utilization": (st.busy_area_s / (st.capacity * span_s)) if st.capacity is not None else None,
            "mean_queue_len": st.queue_area_s / span_s,
            "served": st.served,
            "capacity": st.capacity if st.capacity is not None else "unlimited",
            "timeouts": st.timeouts,
            "failed_calls": st.failed_calls,
        }
    mean_rate, peak_rate = m.approved_rates()
    settle = np.frombuffer(m.settlement_latency_s, dtype=float)
    slip = np.frombuffer(m.slippage_bps, dtype=float)
    exch_start = m.probe_start.get("exchange_cash_kzt", 0)
    exch_min = m.probe_min.get("exchange_cash_kzt", exch_start)
    fund_start = m.probe_start.get("issuer_funding_kzt", 0)
    fund_min = m.probe_min.get("issuer_funding_kzt", fund_start)
    return {
        "payments": {
            "attempted": m.attempted,
            "measured": m.measured,
            "approved": m.approved,
            "declined": dict(sorted(m.declined.items())),
            "approval_rate": m.approved / m.measured if m.measured else 0.0,
            "stand_in": m.stand_in,
            "stand_in_approved_kzt": kzt(m.stand_in_approved_kzt),
            "orphaned_sales": m.orphaned,
            # The sale completed after the deadline and the network had approved by stand-in: its
            # tenge funds that approval. The rest have no approved payment behind them.
            "orphaned_sales_funding_stand_in": m.orphaned_stand_in,
            "orphaned_sales_unbacked": m.orphaned - m.orphaned_stand_in,
        },
        "auth_latency_ms": percentiles(lat),
        "deadline_miss_rate": m.deadline_missed / m.measured if m.measured else 0.0,
        "legs": legs,
        "throughput": {"approved_per_s_mean": mean_rate, "approved_per_s_peak": peak_rate},
        "settlement_latency_s": {
            "p50": float(np.percentile(settle, 50.0)) if settle.size else 0.0,
            "p99": float(np.percentile(settle, 99.0)) if settle.size else 0.0,
            "max": float(settle.max()) if settle.size else 0.0,
        },
        "market": {
            "slippage_bps_mean": float(slip.mean()) if slip.size else 0.0,
            "fees_kzt": kzt(exchange_fees_kzt),  # every sale's fee, as the exchange's fee account holds it
            "payment_sale_fees_kzt": kzt(m.fees_kzt),  # of which the payments' own sales
        },
        "liquidity": {
            # The most tenge each had to have put up front: opening balance minus its lowest point.
            "exchange_peak_prefund_kzt": kzt(max(0, exch_start - exch_min)),
            "issuer_peak_prefund_kzt": kzt(max(0, fund_start - fund_min)),
            "stand_in_exposure_peak_kzt": kzt(m.probe_max.get("stand_in_exposure_kzt", 0)),
        },
        "tax": {  # the domain's tax book: every sale, including advice and top-up sales
            "policy": scenario.tax.policy.value,
            "sales": tax.sales,
            "proceeds_kzt": kzt(tax.proceeds_kzt),
            # PIT is charged per sale on its gain; a loss offsets nothing (docs/model-exchange-and-tax.md).
            # So the headline gain is the taxable one, with the losses and the net beside it.
            "realized_gain_kzt": kzt(tax.gains_kzt),
            "realized_loss_kzt": kzt(tax.losses_kzt),
            "net_gain_kzt": kzt(tax.realized_gain_kzt),
            "pit_due_kzt": kzt(tax.pit_due_kzt),
            "pit_due_by_residency_kzt": {r.value: kzt(v) for r, v in sorted(tax.pit_due_by_residency_kzt.items())},
            "pit_withheld_kzt": kzt(tax.pit_withheld_kzt),
            "pit_declared_kzt": kzt(tax.pit_expected_declared_kzt),
            "tax_gap_kzt": kzt(tax.tax_gap_kzt),
        },
    }


def lookup(summary: dict[str, Any], path: str) -> float:
    """The number at a dotted path of the summary (KZT strings are read as numbers). A figure the
    run never produced — a decline reason it never gave, a rail it did not use — is absent and
    reads as 0 (the path itself was checked against :func:`sim.scenario.slo_metric_paths`)."""
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return 0.0
        node = node[part]
    if node is None:
        return 0.0
    return float(node)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"dotted.path": leaf}`` (lists are leaves)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def evaluate_slos(scenario: Scenario, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for slo in scenario.parsed_slos():
        value = lookup(summary, slo.metric)
        out[slo.text] = {"pass": slo.holds(value), "value": value, "threshold": slo.threshold, "op": slo.op}
    return out


def timeline(scenario: Scenario) -> dict[str, Any]:
    """What the report's time axes need: the clock at t = 0 and every fault window, so charts read
    in the time of the simulated day with each outage, halt and crash shaded."""
    windows: list[dict[str, Any]] = []

    def add(start_s: float, duration_s: float, label: str) -> None:
        windows.append({"start_s": start_s, "end_s": start_s + duration_s, "label": label})

    for name in ("acquirer", "network", "issuer", "exchange", "custody", "bank"):
        for w in getattr(scenario.services, name).outages:
            add(w.start_s, w.duration_s, "bank downtime" if name == "bank" else f"{name} outage")
    for code, asset in sorted(scenario.market.assets.items()):
        for w in asset.halts:
            add(w.start_s, w.duration_s, f"{code} trading halt")
        for move in asset.moves:
            if move.change_pct <= -10:
                add(move.at_s, max(move.over_s, 60.0), f"{code} {move.change_pct:+g} % price move")
    for w in scenario.market.maker_withdrawals:
        add(w.start_s, w.duration_s, "market makers withdrawn")
    return {
        "start_hour": scenario.arrivals.start_hour,
        "fault_windows": sorted(windows, key=lambda w: (w["start_s"], w["label"])),
        "slippage_cap_bps": scenario.issuer.max_slippage_bps,
    }
