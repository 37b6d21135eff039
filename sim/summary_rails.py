"""``summary.json``'s ``rails`` section: the card rails (JIT, pre-funded, stablecoin) and the direct
rails (crypto, stablecoin) side by side, and what the zone merchants bear on the direct rail.

Definitions (``docs/model-direct-rail.md``, "Measures"; ``ccsim verify`` recomputes each from
``results.db`` in :mod:`sim.verify_rails`):

- ``payments``, ``approved``, ``approval_rate``, ``auth_latency_ms`` (p50, p99): measured payments
  (arrived after warm-up, before cool-down). A direct payment's latency runs from the invoice to
  the on-exchange transfer (or its decline); one that fell back to the card is counted as a card
  payment there (its card row) and as ``fell_back_to_card`` here.
- ``tenge_to_merchant_s`` (p50, p99): card — until the settlement window that pays the merchant;
  direct — until the tenge of the conversion that sold the payment's crypto reached the merchant's
  bank account (``still_held``: paid, not converted by the end).
- ``merchant_cost_per_10000_kzt``: card — the merchant discount rate (interchange + scheme fee +
  the acquirer's margin); direct — the exchange's fees (direct fee, taker or redemption fee) plus
  slippage minus the price gain between receipt and conversion (what is still held at the end is
  marked at the last mid price), per 10,000 KZT paid.
- ``merchants``: CIT estimate per segment (20 % of a positive net conversion gain, seed §2.1.1,
  §2.2), VAT in the goods (12/112 of VAT-inclusive prices, seed §2.1.3; reported, not booked), the
  conversions' P&L in bps of their receipts' value, the worst 1-hour fall of the merchants'
  mark-to-market P&L.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.components.direct import DirectPath
from sim.metrics import FUNDING_MODES, Metrics
from sim.results import ResultsWriter, direct_conversions, direct_holdings, direct_payments
from sim.scenario import Scenario

__all__ = ["WINDOW_S", "per_10000", "rails_summary", "worst_window", "write_direct_rows"]

WINDOW_S = 3_600.0  # the exposure's worst window
_CIT_PCT = 20  # seed §2.1.1
_VAT_NUM, _VAT_DEN = 12, 112  # seed §2.1.3: 12 % on a VAT-inclusive price


def _kzt(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{whole}.{cents:02d}"


def _pct(values: list[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if arr.size else 0.0


def per_10000(cost_kzt: int, amount_kzt: int) -> str:
    """``cost_kzt`` per 10,000 KZT of ``amount_kzt`` (both tiyn), as KZT, rounded down to the tiyn."""
    return _kzt(cost_kzt * 10_000 // amount_kzt) if amount_kzt > 0 else _kzt(0)


def worst_window(values: list[int] | np.ndarray, sample_s: float, window_s: float = WINDOW_S) -> int:
    """The largest fall of a sampled series between two samples at most ``window_s`` apart (≤ 0)."""
    v = np.asarray(values, dtype=np.int64)
    worst = 0
    for k in range(1, min(len(v), int(window_s // sample_s) + 1)):
        worst = min(worst, int((v[k:] - v[:-k]).min()))
    return worst


def _card(scenario: Scenario, m: Metrics) -> dict[str, Any]:
    lat = np.frombuffer(m.latency_ms, dtype=float)
    mode = np.frombuffer(m.card_mode, dtype=np.int8)
    ok = np.frombuffer(m.card_approved, dtype=np.int8)
    settle = np.frombuffer(m.settlement_latency_s, dtype=float)
    settle_mode = np.frombuffer(m.settle_mode, dtype=np.int8)
    fees = scenario.fees
    cost = {"total": _kzt(fees.mdr_bps * 100), "interchange": _kzt(fees.interchange_bps * 100),
            "scheme_fees": _kzt(fees.scheme_fee_bps * 100),
            "acquirer_margin": _kzt((fees.mdr_bps - fees.interchange_bps - fees.scheme_fee_bps) * 100)}
    out: dict[str, Any] = {}
    for i, funding in enumerate(FUNDING_MODES):
        mine = mode == i
        n, approved = int(mine.sum()), int((ok[mine] == 1).sum())
        out[f"card_{funding.value}"] = {
            "payments": n, "approved": approved, "approval_rate": approved / n if n else 0.0,
            "auth_latency_ms": {"p50": _pct(lat[mine], 50.0), "p99": _pct(lat[mine], 99.0)},
            "tenge_to_merchant_s": {"p50": _pct(settle[settle_mode == i], 50.0),
                                    "p99": _pct(settle[settle_mode == i], 99.0)},
            "merchant_cost_per_10000_kzt": dict(cost),
            "pit_due_kzt": _kzt(m.pit_by_mode[i]),
        }
    return out


def _direct(direct: DirectPath, stablecoin: bool) -> dict[str, Any]:
    recs = [r for r in direct.records if r.stablecoin is stablecoin]
    measured = [r for r in recs if r.measured]
    paid = [r for r in recs if r.outcome == "paid"]
    declined: dict[str, int] = {}
    for r in measured:
        if r.outcome != "paid":
            declined[r.decline] = declined.get(r.decline, 0) + 1
    approved = sum(1 for r in measured if r.outcome == "paid")
    lat = [(r.t_done_s - r.t_arrival_s) * 1000.0 for r in measured if r.outcome != "card"]
    tenge = [r.tenge_at_s - r.t_arrival_s for r in paid if r.measured and r.tenge_at_s >= 0]
    stable = direct.stable_code
    convs = [c for c in direct.conversions if c.ok and (c.asset == stable) is stablecoin]
    held = [h for h in direct.held() if (h[1] == stable) is stablecoin]
    amount = sum(r.amount_kzt for r in paid)
    fees = sum(r.fee_kzt for r in paid) + sum(c.fee_kzt for c in convs)
    slippage = sum(c.mid_value_kzt - c.gross_kzt for c in convs)
    pnl = sum(c.mid_value_kzt - c.basis_kzt for c in convs) + sum(value - basis for _, _, value, basis in held)
    refunds = [r.refund for r in recs if r.refund]
    return {
        "payments": len(measured), "approved": approved,
        "approval_rate": approved / len(measured) if measured else 0.0,
        "declined": dict(sorted(declined.items())),
        "fell_back_to_card": sum(1 for r in measured if r.outcome == "card"),
        "auth_latency_ms": {"p50": _pct(lat, 50.0), "p99": _pct(lat, 99.0)},
        "tenge_to_merchant_s": {"p50": _pct(tenge, 50.0), "p99": _pct(tenge, 99.0),
                                "still_held": sum(1 for r in paid if r.tenge_at_s < 0)},
        "paid_kzt": _kzt(amount),
        "merchant_cost_per_10000_kzt": {
            "total": per_10000(fees + slippage - pnl, amount), "exchange_fees": per_10000(fees, amount),
            "slippage": per_10000(slippage, amount), "price_pnl": per_10000(pnl, amount)},
        "pit_due_kzt": _kzt(sum(r.pit_due_kzt for r in paid)),
        "pit_withheld_kzt": _kzt(sum(r.pit_withheld_kzt for r in paid)),
        "refunds": {"refunded": refunds.count("refunded"),
                    "refused": len(refunds) - refunds.count("refunded")},
    }


def _merchants(scenario: Scenario, direct: DirectPath, m: Metrics) -> dict[str, Any]:
    convs = [c for c in direct.conversions if c.ok]
    gains: dict[str, int] = dict.fromkeys(scenario.population.merchants.categories, 0)
    for c in convs:
        gains[c.category] += c.gain_kzt
    bps = [(c.mid_value_kzt - c.basis_kzt) * 10_000 / c.basis_kzt for c in convs if c.basis_kzt > 0]
    held = direct.held()
    paid = [r for r in direct.records if r.outcome == "paid"]
    series: list[int] = list(m.probe_series.get("merchant_unrealized_pnl_kzt", ()))
    return {
        "conversions": len(convs),
        "conversions_refused": sum(1 for c in direct.conversions if not c.ok),
        "conversion_pnl_bps": {"min": min(bps, default=0.0), "p1": _pct(bps, 1.0), "p50": _pct(bps, 50.0),
                               "p99": _pct(bps, 99.0), "max": max(bps, default=0.0)},
        "worst_window_1h_kzt": _kzt(worst_window(series, scenario.metrics.sample_s)),
        "held_at_end_kzt": _kzt(sum(h[2] for h in held)),
        "unrealized_pnl_at_end_kzt": _kzt(sum(h[2] - h[3] for h in held)),
        "realized_gain_by_segment_kzt": {k: _kzt(v) for k, v in sorted(gains.items())},
        "cit_estimate_by_segment_kzt": {k: _kzt(max(0, v) * _CIT_PCT // 100) for k, v in sorted(gains.items())},
        "vat_in_goods_kzt": _kzt(sum(r.amount_kzt * _VAT_NUM // _VAT_DEN for r in paid)),
    }


def rails_summary(scenario: Scenario, m: Metrics, direct: DirectPath | None,
                  liquidity: dict[str, Any]) -> dict[str, Any]:
    """The ``rails`` section (see the module docstring)."""
    out = _card(scenario, m)
    if direct is not None:
        out["direct_crypto"] = _direct(direct, stablecoin=False)
        out["direct_stablecoin"] = _direct(direct, stablecoin=True)
        out["merchants"] = _merchants(scenario, direct, m)
    out["prefunding"] = {  # one exchange and one issuer serve every rail
        "exchange_peak_prefund_kzt": liquidity["exchange_peak_prefund_kzt"],
        "issuer_peak_prefund_kzt": liquidity["issuer_peak_prefund_kzt"],
    }
    return out


def write_direct_rows(direct: DirectPath, writer: ResultsWriter) -> None:
    """The direct rail's rows (``direct_payments``, ``direct_conversions``, ``direct_holdings``)."""
    writer.add_rows(direct_payments, [
        (r.pid, r.t_arrival_s, r.t_done_s, (r.t_done_s - r.t_arrival_s) * 1000.0, r.outcome, r.decline,
         r.merchant_id, r.category, r.stablecoin, r.asset, str(r.quantity_minor), r.amount_kzt, r.fee_kzt,
         r.basis_kzt, r.gain_kzt, r.pit_due_kzt, r.pit_withheld_kzt, r.proceeds_kzt,
         r.tenge_at_s if r.tenge_at_s >= 0 else None, r.refund)
        for r in direct.records])
    writer.add_rows(direct_conversions, [
        (c.t_s, c.merchant_id, c.category, c.asset, c.ok, c.reason, str(c.quantity_minor), c.mid_value_kzt,
         c.gross_kzt, c.fee_kzt, c.net_kzt, c.basis_kzt, c.gain_kzt)
        for c in direct.conversions])
    writer.add_rows(direct_holdings, [(m, a, value, basis) for m, a, value, basis in direct.held()])
