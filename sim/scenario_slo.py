"""Service-level objectives in a scenario: ``"metric.path OP number"``, checked after a run.

Split out of :mod:`sim.scenario` (one concept per module); :mod:`sim.scenario` re-exports it.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator

from sim.scenario_types import Model

__all__ = ["SERVICE_NAMES", "Slo", "SloText", "slo_metric_paths"]

SERVICE_NAMES: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")


# -- SLOs ------------------------------------------------------------------------------------
_SLO_RE: Final = re.compile(r"^\s*([a-z0-9_]+(?:\.[a-z0-9_]+)*)\s*(<=|>=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")


def slo_metric_paths() -> frozenset[str]:
    """The numeric paths of ``summary.json`` an SLO may name."""
    paths = {f"auth_latency_ms.{p}" for p in ("mean", "p50", "p90", "p99", "p999", "max")}
    paths |= {"deadline_miss_rate", "payments.approval_rate", "payments.stand_in",
              "payments.orphaned_sales", "payments.attempted", "payments.approved"}
    for svc in SERVICE_NAMES:
        for m in ("mean_wait_ms", "p99_wait_ms", "mean_service_ms", "utilization", "mean_queue_len"):
            paths.add(f"legs.{svc}.{m}")
    paths |= {"throughput.approved_per_s_mean", "throughput.approved_per_s_peak"}
    paths |= {f"settlement_latency_s.{p}" for p in ("p50", "p99", "max")}
    paths |= {"market.slippage_bps_mean", "market.fees_kzt"}
    paths |= {"liquidity.exchange_peak_prefund_kzt", "liquidity.issuer_peak_prefund_kzt"}
    paths |= {f"tax.{k}" for k in ("realized_gain_kzt", "pit_due_kzt", "pit_withheld_kzt", "tax_gap_kzt")}
    return frozenset(paths)


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
