"""A live load run written like a simulation: ``summary.json``, ``results.db`` and ``report.html``.

The summary has the simulation's keys (:mod:`sim.summary`) wherever the load generator can measure
them from the POS side: payments, approvals, declines by reason, stand-ins, latency percentiles
(from the scheduled send time), deadline misses, throughput, and per-leg times when the services
report them (``Server-Timing``; per leg and payment in ``legs``, their percentiles in the summary's
``legs``). What only the parties' books know (settlement, liquidity, market, tax) is ``null``
and listed under ``unmeasured``; the ledger verdict comes from the gateway's cross-party checks
when ``--gateway`` is given. ``load`` adds what only a live run has: late sends and send lag.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from sim.live.load import LoadOutcome, Sample
from sim.live.load_direct import DIRECT
from sim.metrics import PAYMENT_COLUMNS, percentiles
from sim.results import ResultsWriter, integrity, legs, payments, runs, timeseries
from sim.runner import ccsim_version
from sim.scenario import Scenario
from sim.scenario_load import scenario_sha256
from sim.summary import evaluate_slos

__all__ = ["UNMEASURED", "build_live_summary", "write_live_run"]

UNMEASURED: Final = ("settlement_latency_s", "market", "liquidity", "tax", "clearing",
                     "payments.orphaned_sales", "payments.stand_in_approved_kzt", "legs.*.utilization",
                     "legs.*.mean_queue_len", "legs.*.mean_wait_ms")


def _answered(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not math.isnan(s.done_s)]


_CHAIN_ORDER: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")


def _leg_order(name: str) -> tuple[int, str]:
    return (_CHAIN_ORDER.index(name) if name in _CHAIN_ORDER else len(_CHAIN_ORDER), name)


def _legs_summary(samples: list[Sample]) -> dict[str, Any]:
    """Per leg, the distribution of its time per payment (:func:`sim.live.load.leg_times_ms`), over
    the payments whose answer carried it. The keys are the simulation's where they mean the same
    (``mean_service_ms``, ``served``); queueing inside a service is part of its time here, so the
    wait and utilization figures are ``null``."""
    by_leg: dict[str, list[float]] = {}
    for s in samples:
        for name, ms in s.legs_ms.items():
            by_leg.setdefault(name, []).append(ms)
    out: dict[str, Any] = {}
    for name in sorted(by_leg, key=_leg_order):
        arr = np.asarray(by_leg[name], dtype=float)
        p50, p95, p99 = (float(v) for v in np.percentile(arr, [50.0, 95.0, 99.0]))
        out[name] = {"mean_wait_ms": None, "p99_wait_ms": None, "mean_service_ms": float(arr.mean()),
                     "p50_service_ms": p50, "p95_service_ms": p95, "p99_service_ms": p99,
                     "max_service_ms": float(arr.max()), "utilization": None,
                     "mean_queue_len": None, "served": int(arr.size), "capacity": "unknown",
                     "timeouts": 0, "failed_calls": 0}
    return out


def _direct_summary(samples: list[Sample]) -> dict[str, Any]:
    """The direct rail's payments apart (sim.live.load_direct): how many went direct, were paid,
    fell back to the card (and how many of those the card approved), were declined and why, and
    their latency from the scheduled send to the last answer (quote, acceptance, card)."""
    direct = [s for s in samples if s.payment.rail == DIRECT]
    latency = np.asarray([s.latency_ms for s in _answered(direct)], dtype=float)
    card = [s for s in direct if s.direct == "card"]
    return {
        "payments": len(direct), "card_payments": len(samples) - len(direct),
        "paid": sum(1 for s in direct if s.direct == "paid"),
        "fell_back_to_card": len(card), "card_approved": sum(1 for s in card if s.approved),
        "declined": dict(sorted(Counter(s.reason for s in direct if s.direct == "declined").items())),
        "latency_ms": percentiles(latency),
    }


def build_live_summary(scenario: Scenario, scenario_text: str, seed: int, outcome: LoadOutcome, *,
                       target: str, from_s: float, duration_s: float, started_at: str,
                       integrity_rows: list[tuple[str, bool, str]]) -> dict[str, Any]:
    samples = outcome.samples
    done = _answered(samples)
    latency = np.asarray([s.latency_ms for s in done], dtype=float)
    lag = np.asarray([s.send_lag_ms for s in samples if not math.isnan(s.sent_s)], dtype=float)
    approved = sum(1 for s in done if s.approved)
    declined = Counter(s.reason for s in samples if not s.approved)
    deadline_ms = float(scenario.network.deadline_ms)
    missed = int((latency > deadline_ms).sum())
    span_s = max(duration_s, 1e-9)
    rates = _bucket_counts([s.payment.t_s for s in done if s.approved], _bucket_s(duration_s), duration_s)
    measured_ok = [ok for _, ok, _ in integrity_rows]
    violations = [f"{check}: {detail}" for check, ok, detail in integrity_rows if not ok]
    summary: dict[str, Any] = {
        "mode": "live",
        "scenario": scenario.name, "scenario_name": scenario.name,
        "scenario_sha256": scenario_sha256(scenario_text), "seed": seed, "ccsim_version": ccsim_version(),
        "started_at": started_at, "sim_duration_s": duration_s, "sim_end_s": outcome.wall_s,
        "warmup_s": 0.0, "cooldown_s": 0.0, "deadline_ms": deadline_ms, "wall_s": outcome.wall_s,
        "payments_per_wall_s": len(done) / outcome.wall_s if outcome.wall_s > 0 else 0.0,
        "payments": {
            "attempted": len(samples), "measured": len(samples), "approved": approved,
            "declined": dict(sorted(declined.items())),
            "approval_rate": approved / len(samples) if samples else 0.0,
            "stand_in": sum(1 for s in done if s.stand_in), "stand_in_approved_kzt": None, "orphaned_sales": None,
        },
        "auth_latency_ms": {**percentiles(latency),
                            "p95": float(np.percentile(latency, 95.0)) if latency.size else 0.0},
        "deadline_miss_rate": missed / len(samples) if samples else 0.0,
        "legs": _legs_summary(done),
        "throughput": {"approved_per_s_mean": approved / span_s, "approved_per_s_peak": max(rates, default=0.0)},
        "settlement_latency_s": {"p50": None, "p99": None, "max": None},
        "market": {"slippage_bps_mean": None, "fees_kzt": None},
        "liquidity": {"exchange_peak_prefund_kzt": None, "issuer_peak_prefund_kzt": None,
                      "stand_in_exposure_peak_kzt": None},
        "tax": {"policy": scenario.tax.policy.value, "sales": None, "proceeds_kzt": None,
                "realized_gain_kzt": None, "realized_loss_kzt": None, "net_gain_kzt": None,
                "pit_due_kzt": None, "pit_due_by_residency_kzt": {}, "pit_withheld_kzt": None,
                "pit_declared_kzt": None, "tax_gap_kzt": None},
        "clearing": None,
        "ledger": {"invariants_ok": (all(measured_ok) if measured_ok else None), "violations": violations,
                   "measured": bool(measured_ok)},
        "unmeasured": list(UNMEASURED) + ([] if measured_ok else ["ledger"]),
        "load": {
            "target": target, "from_s": from_s, "scheduled": len(samples), "answered": len(done),
            "late_threshold_ms": outcome.late_threshold_ms,
            "late_sends": int((lag > outcome.late_threshold_ms).sum()),
            "send_lag_ms": percentiles(lag), "max_in_flight": outcome.max_in_flight,
            "in_flight_peak": outcome.in_flight_peak,
            "errors": dict(sorted(Counter(s.reason for s in samples if not s.reason[:1].isdigit()
                                          and s.reason != "??" and s.direct != "declined").items())),
            "offered_per_s": len(samples) / span_s,
            "timed_payments": sum(1 for s in done if s.legs_ms),
            "direct": _direct_summary(samples),
        },
    }
    summary["slo"] = evaluate_slos(scenario, _slo_view(summary))
    return summary


def _slo_view(summary: dict[str, Any]) -> dict[str, Any]:
    """SLOs on unmeasured figures read as 0 here; ``evaluate_slos`` reads numbers only."""
    view: dict[str, Any] = json.loads(json.dumps(summary),
                                      object_hook=lambda d: {k: (0.0 if v is None else v) for k, v in d.items()})
    return view


def _bucket_s(duration_s: float) -> float:
    return 1.0 if duration_s <= 600 else 60.0


def _bucket_counts(times_s: list[float], bucket_s: float, duration_s: float) -> list[float]:
    n = max(1, math.ceil(duration_s / bucket_s))
    counts = [0] * n
    for t in times_s:
        counts[min(n - 1, max(0, int(t // bucket_s)))] += 1
    return [c / bucket_s for c in counts]


def _timeseries_rows(samples: list[Sample], duration_s: float) -> list[tuple[Any, ...]]:
    bucket_s = _bucket_s(duration_s)
    n = max(1, math.ceil(duration_s / bucket_s))
    rows: list[tuple[Any, ...]] = []
    by_bucket: list[list[Sample]] = [[] for _ in range(n)]
    for s in samples:
        by_bucket[min(n - 1, max(0, int(s.payment.t_s // bucket_s)))].append(s)
    for i, group in enumerate(by_bucket):
        t = i * bucket_s
        rows.append((t, "arrivals_per_s", "", len(group) / bucket_s))
        rows.append((t, "approved_per_s", "", sum(1 for s in group if s.approved) / bucket_s))
        for reason, count in Counter(s.reason for s in group if not s.approved).items():
            rows.append((t, "declined_per_s", reason, count / bucket_s))
        lat = np.asarray([s.latency_ms for s in group if not math.isnan(s.done_s)], dtype=float)
        if lat.size:
            rows.append((t, "p50_ms", "", float(np.percentile(lat, 50.0))))
            rows.append((t, "p99_ms", "", float(np.percentile(lat, 99.0))))
    return rows


def _payment_row(s: Sample) -> tuple[Any, ...]:
    p = s.payment
    answered = not math.isnan(s.done_s)
    values = {
        "payment_id": p.payment_id, "t_arrival_s": p.t_s, "t_done_s": s.done_s if answered else p.t_s,
        "latency_ms": s.latency_ms if answered else 0.0, "outcome": "approved" if s.approved else "declined",
        "reason": "00" if s.approved else (s.reason or "??"), "stand_in": s.stand_in,
        "deadline_missed": False, "orphaned": False, "amount_kzt_minor": p.amount_kzt_minor,
        "merchant_id": p.merchant_id, "category": p.category, "acquirer_id": p.acquirer_id,
        "funding_mode": p.funding_mode, "residency": p.residency, "asset_sold": None, "crypto_minor": None,
        "slippage_bps": None, "fee_kzt_minor": 0, "gain_kzt_minor": 0, "pit_kzt_minor": 0,
        "captured_at_s": None, "settled_at_s": None,
    }
    return tuple(values[c] for c in PAYMENT_COLUMNS)


def write_live_run(run_dir: Path, scenario: Scenario, scenario_text: str, seed: int, outcome: LoadOutcome, *,
                   target: str, from_s: float, duration_s: float,
                   integrity_rows: list[tuple[str, bool, str]]) -> dict[str, Any]:
    """Write ``summary.json`` and ``results.db`` into ``run_dir``; the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    db_path = run_dir / "results.db"
    for stale in (db_path, run_dir / "results.db-wal", run_dir / "results.db-shm"):
        stale.unlink(missing_ok=True)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    summary = build_live_summary(scenario, scenario_text, seed, outcome, target=target, from_s=from_s,
                                 duration_s=duration_s, started_at=started_at, integrity_rows=integrity_rows)
    deadline_ms = summary["deadline_ms"]
    writer = ResultsWriter(db_path)
    try:
        rows = []
        for s in outcome.samples:
            row = list(_payment_row(s))
            row[PAYMENT_COLUMNS.index("deadline_missed")] = (not math.isnan(s.done_s)) and s.latency_ms > deadline_ms
            rows.append(tuple(row))
        writer.add_rows(payments, rows)
        writer.add_rows(legs, [(s.payment.payment_id, name, 0.0, ms)
                               for s in outcome.samples for name, ms in s.legs_ms.items()])
        writer.add_rows(timeseries, _timeseries_rows(outcome.samples, duration_s))
        for check, ok, detail in integrity_rows:
            writer.add(integrity, {"check": check, "ok": ok, "detail": detail})
        writer.add(runs, {"run_id": f"live-{scenario.name}-{seed}", "scenario_name": scenario.name, "seed": seed,
                          "scenario_sha256": summary["scenario_sha256"], "ccsim_version": summary["ccsim_version"],
                          "wall_s": outcome.wall_s, "summary_json": json.dumps(summary, sort_keys=True),
                          "scenario_yaml": scenario_text})
    finally:
        writer.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary
