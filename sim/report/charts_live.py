"""The report's figure for a live run (``ccsim load``): where a payment's time went, leg by leg.

A live run knows each leg's time per payment (the services' ``Server-Timing``, see
:mod:`sim.live.load`), not the split into waiting and service a simulation has; this figure shows
the distribution of each leg's time — p50, p95 and p99 from ``summary.json`` — next to the
end-to-end latency, so a leg whose tail dominates the payment's stands out.
"""

from __future__ import annotations

from typing import Any, Final

from sim.report.figures import COLORS, Chart, new_figure

__all__ = ["live_leg_charts"]

_CHAIN: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")  # the order a payment meets them
_FIGURES: Final = (("p50", "p50_service_ms", "p50"), ("p95", "p95_service_ms", "p95"),
                   ("p99", "p99_service_ms", "p99"))


def live_leg_charts(summary: dict[str, Any]) -> list[Chart]:
    """``chart-legs-live``, for a live run whose services reported per-leg times; none otherwise."""
    if summary.get("mode") != "live":
        return []
    legs: dict[str, dict[str, Any]] = summary.get("legs") or {}
    names = sorted((n for n, leg in legs.items() if leg.get("p50_service_ms") is not None),
                   key=lambda n: (_CHAIN.index(n) if n in _CHAIN else len(_CHAIN), n))
    if not names:
        return [Chart("chart-legs-live", "", None,
                      "The services sent no per-leg times (no Server-Timing header on the answers).")]
    latency: dict[str, Any] = summary.get("auth_latency_ms") or {}
    x = [*names, "end to end"]
    fig = new_figure("Time per payment, by leg (measured)", "leg", "milliseconds", barmode="group")
    for (label, key, e2e_key), color in zip(_FIGURES, COLORS, strict=False):
        fig.add_bar(x=x, y=[float(legs[n][key]) for n in names] + [float(latency.get(e2e_key) or 0.0)],
                    name=label, marker_color=color)
    return [Chart("chart-legs-live", "Each service's own time per payment (what it spent less what it "
                  "waited on its callees), from the Server-Timing headers; acquirer is the POS's wait "
                  "beyond the network service's own time. The last group is the end-to-end latency.", fig)]
