"""The audit of the party-fault harness (:mod:`.party_faults`): every payment the POS saw against
the issuer's record of it, and the summaries of payments, latencies and faults by kind."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .party_load import Payment
from .party_plan import FaultRecord
from .party_summary import _fmt

if TYPE_CHECKING:
    from .party_actions import FaultRun

__all__ = ["audit_payments", "by_kind", "latency_stats", "payment_summary"]


def _pct(values: Iterable[float], q: float) -> float | None:
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return None
    k = (len(data) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def latency_stats(values_s: Iterable[float]) -> dict[str, Any]:
    data = [v for v in values_s if not math.isnan(v)]
    out: dict[str, Any] = {"n": len(data)}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0)):
        v = _pct(data, q)
        out[name] = None if v is None else round(v * 1000.0, 1)
    return out


def audit_payments(run: FaultRun, payments: list[Payment]) -> dict[str, Any]:
    """Each payment as the POS saw it, against the issuer's record of its authorization."""
    issuer, exchange = run.url("issuer"), run.url("exchange")
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}

    def bad(kind: str, p: Payment, state: object) -> None:
        counts[kind] += 1
        examples.setdefault(kind, [])
        if len(examples[kind]) < 10:
            examples[kind].append(f"{p.pid}: POS {p.outcome}/{p.code} {p.end_action} clearing={p.clearing!r}; "
                                  f"issuer {state}")

    issuer_states: Counter[str] = Counter()
    orphans = 0
    completed_by_network = 0
    halves = run.client.get(f"{issuer}/v1/ledger/halves", timeout=120.0).json()["halves"]
    proceeds_booked = {h["message_id"] for h in halves if h["purpose"] == "proceeds"}
    sales: Counter[str] = Counter()
    lo, hi = run.partition or (math.inf, -math.inf)
    for p in payments:
        r = run.client.get(f"{issuer}/v1/authorizations/{p.pid}")
        auth = r.json() if r.status_code == 200 else None
        state = auth["state"] if auth else "unknown"
        issuer_states[f"{p.outcome or 'unsent'}->{state}"] += 1
        if p.approved:
            want = {"captured": "captured", "reversed": "reversed"}.get(p.clearing)
            if want is None and p.clearing == "gave_up" and p.presentment_recorded:
                # The presenter stopped retrying (its give_up_s is wall time, short on a busy
                # machine) after the network had recorded the capture: the network owes it, and
                # its relay has completed it by now, the relays having drained. Checked below.
                want = "captured"
                completed_by_network += 1
            if want is None:
                bad("approved_not_cleared", p, auth)
            elif auth is None or auth["state"] != want:
                bad("approved_not_honoured", p, auth)
            elif want == "captured" and auth["captured"] != _fmt(p.amount_minor):
                bad("captured_amount_differs", p, auth)
        elif p.outcome in ("declined", "stand_in_declined") and auth is not None \
                and auth["state"] in ("held", "captured"):
            bad("declined_but_held", p, auth)
        if not p.needs_sale or p.first_status < 0:
            continue
        sale = run.client.get(f"{exchange}/v1/sells/{p.pid}:sale")
        if sale.status_code != 200 or not sale.json().get("ok"):
            continue
        during = "partition" if lo <= p.t_s <= hi else "rest"
        sales[f"sold_{during}"] += 1
        orphans += not p.approved
        if f"{p.pid}:sale" in proceeds_booked:  # the issuer booked the sale's proceeds
            sales[f"proceeds_booked_{during}"] += 1
        else:
            bad("sold_without_proceeds", p, sale.json())
    return {"problems": dict(counts), "examples": examples, "pos_outcome_to_issuer_state": dict(issuer_states),
            "orphaned_sales": orphans, "sales": dict(sales), "captures_completed_by_network": completed_by_network}


def payment_summary(payments: list[Payment], partition: tuple[float, float] | None, late_sends: int) -> dict[str, Any]:
    outcomes = Counter(p.outcome or "unsent" for p in payments)
    codes = Counter(f"{p.outcome}:{p.code}" for p in payments if p.outcome not in ("approved", ""))
    clearing = Counter((p.clearing.split(":")[0] if p.clearing else "none") for p in payments if p.approved)
    out: dict[str, Any] = {
        "attempted": len(payments),
        "approved": outcomes["approved"],
        "declined": outcomes["declined"],
        "stand_in_approved": outcomes["stand_in_approved"],
        "stand_in_declined": outcomes["stand_in_declined"],
        "refused_4xx": outcomes["refused"],
        "errors": outcomes["error"],
        "retried": sum(1 for p in payments if p.attempts > 1),
        "answered_from_idempotency_store": sum(1 for p in payments if p.replayed),
        "codes": dict(sorted(codes.items())),
        "captured": clearing["captured"],
        "reversed": clearing["reversed"],
        "clearing_failed": clearing["refused"] + clearing["gave_up"] + clearing["none"],
        "clearing_failed_by_answer": dict(Counter(p.clearing or "none" for p in payments
                                                  if p.approved and p.clearing not in ("captured", "reversed"))),
        "captures_waiting_for_advice": sum(1 for p in payments if p.clearing_unknown_auth),
        "late_sends": late_sends,
    }
    lat: dict[str, Any] = {
        "final_answer": latency_stats(p.latency_s for p in payments if p.answered),
        "first_attempt": latency_stats(p.first_latency_s for p in payments if p.first_status == 200),
    }
    if partition is not None:
        lo, hi = partition
        during = [p for p in payments if lo <= p.t_s <= hi]
        lat["partition_all"] = latency_stats(p.first_latency_s for p in during if p.first_status > 0)
        lat["partition_needs_sale"] = latency_stats(p.first_latency_s for p in during
                                                    if p.needs_sale and p.first_status > 0)
        out["partition_payments"] = dict(Counter(p.outcome or "unsent" for p in during))
        out["partition_needs_sale_payments"] = dict(Counter(p.outcome or "unsent" for p in during if p.needs_sale))
        out["partition_unanswered_first_attempt"] = sum(1 for p in during if p.first_status == 0)
    out["latency"] = lat
    return out


def by_kind(records: list[FaultRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r.kind for r in records}):
        rs = [r for r in records if r.kind == kind]
        rec = [r.recovery_s for r in rs if r.recovery_s is not None]
        settled = [r.settled_s for r in rs if r.settled_s is not None]
        out[kind] = {
            "count": len(rs), "recovered": sum(r.recovered for r in rs),
            "by_target": dict(Counter(r.target for r in rs)),
            "recovery_s_median": round(statistics.median(rec), 3) if rec else None,
            "recovery_s_max": max(rec) if rec else None,
            "settled_s_median": round(statistics.median(settled), 3) if settled else None,
            "settled_s_max": max(settled) if settled else None,
            "in_doubt_found": sum(r.in_doubt_found for r in rs),
            "in_doubt_resolved": sum(r.in_doubt_resolved for r in rs),
            "in_doubt_left": sum(max(r.in_doubt_left, 0) for r in rs),
            "first_approval_s_max": max((r.first_approval_s for r in rs if r.first_approval_s is not None),
                                        default=None),
        }
    return out
