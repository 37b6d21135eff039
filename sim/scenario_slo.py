"""Service-level objectives in a scenario: ``"metric.path OP number"``, checked after a run.

Split out of :mod:`sim.scenario` (one concept per module); :mod:`sim.scenario` re-exports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator

from services.contracts import ReasonCode
from services.flows.direct import DirectDecline
from sim.scenario_types import Model

__all__ = ["SERVICE_NAMES", "Slo", "SloText", "slo_metric_paths"]

SERVICE_NAMES: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")


# -- SLOs ------------------------------------------------------------------------------------
_SLO_RE: Final = re.compile(r"^\s*([a-z0-9_]+(?:\.[a-z0-9_]+)*)\s*(<=|>=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")


def slo_metric_paths() -> frozenset[str]:
    """The numeric paths of ``summary.json`` an SLO may name: every figure of the run's outcome
    (tests/test_slo_paths.py fails when the summary gains one that is neither here nor declared a
    description of the run's set-up)."""
    paths = {f"auth_latency_ms.{p}" for p in ("mean", "p50", "p90", "p99", "p999", "max")}
    paths |= {"deadline_miss_rate", "payments.approval_rate", "payments.stand_in", "payments.advices_applied",
              "payments.orphaned_sales", "payments.orphaned_sales_funding_stand_in",
              "payments.orphaned_sales_unbacked", "payments.stand_in_approved_kzt",
              "payments.attempted", "payments.measured", "payments.approved"}
    paths |= {f"payments.declined.{code.value}" for code in ReasonCode if code is not ReasonCode.APPROVED}
    for svc in SERVICE_NAMES:
        for m in ("mean_wait_ms", "p99_wait_ms", "mean_service_ms", "utilization", "mean_queue_len",
                  "served", "timeouts", "failed_calls"):
            paths.add(f"legs.{svc}.{m}")
    paths |= {"throughput.approved_per_s_mean", "throughput.approved_per_s_peak"}
    paths |= {f"settlement_latency_s.{p}" for p in ("p50", "p99", "max")}
    paths |= {f"clearing.{k}" for k in ("captured", "capture_failed", "reversals", "refunds", "refund_failed",
                                        "chargebacks", "settlement_windows")}
    paths |= {"market.slippage_bps_mean", "market.fees_kzt", "market.payment_sale_fees_kzt"}
    paths |= {"liquidity.exchange_peak_prefund_kzt", "liquidity.issuer_peak_prefund_kzt",
              "liquidity.stand_in_exposure_peak_kzt"}
    paths |= {f"tax.{k}" for k in ("sales", "proceeds_kzt", "realized_gain_kzt", "realized_loss_kzt", "net_gain_kzt",
                                   "pit_due_kzt", "pit_withheld_kzt", "pit_declared_kzt", "tax_gap_kzt")}
    paths |= {f"tax.pit_due_by_residency_kzt.{r}" for r in ("resident", "non_resident")}
    return frozenset(paths | _rail_paths())


def _rail_paths() -> set[str]:
    """The ``rails`` section's figures (sim.summary_rails): per rail, the zone merchants', pre-funding."""
    paths: set[str] = set()
    for rail in ("card_jit", "card_prefunded", "card_stablecoin", "direct_crypto", "direct_stablecoin"):
        paths |= {f"rails.{rail}.{k}" for k in ("payments", "approved", "approval_rate", "pit_due_kzt",
                                                "auth_latency_ms.p50", "auth_latency_ms.p99",
                                                "tenge_to_merchant_s.p50", "tenge_to_merchant_s.p99",
                                                "merchant_cost_per_10000_kzt.total")}
    for rail in ("card_jit", "card_prefunded", "card_stablecoin"):
        paths |= {f"rails.{rail}.merchant_cost_per_10000_kzt.{k}"
                  for k in ("interchange", "scheme_fees", "acquirer_margin")}
    for rail in ("direct_crypto", "direct_stablecoin"):
        paths |= {f"rails.{rail}.{k}" for k in ("fell_back_to_card", "tenge_to_merchant_s.still_held", "paid_kzt",
                                                "pit_withheld_kzt", "refunds.refunded", "refunds.refused")}
        paths |= {f"rails.{rail}.merchant_cost_per_10000_kzt.{k}"
                  for k in ("exchange_fees", "slippage", "price_pnl")}
        paths |= {f"rails.{rail}.declined.{d.value}" for d in DirectDecline if d.value}
    paths |= {f"rails.merchants.{k}" for k in ("conversions", "conversions_refused", "worst_window_1h_kzt",
                                               "held_at_end_kzt", "unrealized_pnl_at_end_kzt", "vat_in_goods_kzt")}
    paths |= {f"rails.merchants.conversion_pnl_bps.{k}" for k in ("min", "p1", "p50", "p99", "max")}
    paths |= {f"rails.prefunding.{k}" for k in ("exchange_peak_prefund_kzt", "issuer_peak_prefund_kzt")}
    return paths


class Slo(Model):
    text: str
    metric: str
    op: Literal["<", "<=", ">", ">="]
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Slo:
        m = _SLO_RE.match(text)
        if m is None:
            raise ValueError(f"SLO {text!r} is not 'metric.path OP number' (OP one of < <= > >=)")
        metric, op, threshold = m.group(1), m.group(2), float(m.group(3))
        if metric not in slo_metric_paths():
            raise ValueError(f"SLO {text!r}: unknown metric {metric!r}")
        return cls(text=f"{metric} {op} {m.group(3)}", metric=metric, op=op, threshold=threshold)

    def holds(self, value: float) -> bool:
        return {"<": value < self.threshold, "<=": value <= self.threshold,
                ">": value > self.threshold, ">=": value >= self.threshold}[self.op]


def _slo_text(text: str) -> str:
    return Slo.parse(text).text


SloText = Annotated[str, AfterValidator(_slo_text)]
