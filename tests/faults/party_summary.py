"""The text summary of a party-fault run (:mod:`.party_faults`), and its partition section."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .party_plan import FaultsConfig

if TYPE_CHECKING:
    from .party_actions import FaultRun

__all__ = ["format_summary"]


def _partition_summary(cfg: FaultsConfig, run: FaultRun, pays: dict[str, Any], audit: dict[str, Any]) -> dict[str, Any]:
    if run.partition is None:
        return {}
    rec = next((r for r in run.records if r.kind == "partition"), None)
    lat = pays["latency"]["partition_all"]
    bound_ms = cfg.deadline_ms + 1_000.0  # the deadline, plus the stand-in decision and its advice's staging
    return {"start_s": round(run.partition[0], 3), "end_s": round(run.partition[1], 3),
            "deadline_ms": cfg.deadline_ms, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "max_ms": lat["max_ms"],
            "p99_within_deadline": lat["p99_ms"] is not None and lat["p99_ms"] <= bound_ms,
            "bound_ms": bound_ms, "outcomes": pays.get("partition_payments", {}),
            "needs_sale_outcomes": pays.get("partition_needs_sale_payments", {}),
            "breaker_closed_after_s": rec.recovery_s if rec else None,
            "held_in_blackhole": rec.detail.get("held_in_blackhole") if rec else None,
            "delivered_late_after_heal": rec.detail.get("held_at_heal") if rec else None,
            "sales_for_partition_payments": audit["sales"].get("sold_partition", 0),
            "their_proceeds_booked_at_issuer": audit["sales"].get("proceeds_booked_partition", 0)}


def format_summary(s: dict[str, Any]) -> str:
    if "payments" not in s:
        return f"party faults [{s['database']}]: FAILED\n  " + "\n  ".join(map(str, s.get("problems", [])))
    p = s["payments"]
    k = s["faults_by_kind"].get("kill", {})
    part = s.get("partition") or {}
    lines = [
        f"party faults [{s['database']}]: {'OK' if s['ok'] else 'FAILED'} in {s['wall_s']} s; "
        f"{s['kills']} kills {s['kills_by_service']} ({s['kills_recovered']} recovered; SIGKILL->healthy median "
        f"{k.get('recovery_s_median')} s, max {k.get('recovery_s_max')} s)",
        "  faults: " + ", ".join(f"{kind} x{v['count']}" for kind, v in s["faults_by_kind"].items()),
        f"  payments {p['attempted']}: approved {p['approved']}, declined {p['declined']}, stand-in approved "
        f"{p['stand_in_approved']}, stand-in declined {p['stand_in_declined']}, errors {p['errors']}, retried "
        f"{p['retried']}; captured {p['captured']}, reversed {p['reversed']}",
        f"  latency p50/p99 {p['latency']['final_answer']['p50_ms']}/{p['latency']['final_answer']['p99_ms']} ms; "
        f"partition p50/p99/max {part.get('p50_ms')}/{part.get('p99_ms')}/{part.get('max_ms')} ms "
        f"(deadline {part.get('deadline_ms')} ms)",
        f"  in doubt found {s['in_doubt']['found']}, resolved {s['in_doubt']['resolved']}, left {s['in_doubt']['left']}"
        f" (at end {s['in_doubt']['left_at_end']}); violations {s['violations']}; breaks {s['breaks']}",
    ]
    lines += [f"  problem: {x}" for x in s["problems"][:15]]
    return "\n".join(lines)


def _fmt(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"
