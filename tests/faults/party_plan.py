"""What the party-fault harness (:mod:`.party_faults`) will do: its configuration, the planned
faults in time order, and the record kept of each fault applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .party_cluster import PARTIES

__all__ = ["FaultRecord", "FaultsConfig", "Planned", "plan_faults"]


@dataclass(frozen=True)
class FaultsConfig:
    duration_s: float = 180.0  # of load, at least; the load goes on until the last fault has recovered
    kills: int = 32
    rate_per_s: float = 4.0
    cards: int = 40
    merchants: int = 9
    deadline_ms: int = 3_000  # the network's wait for the issuer before it stands in
    partition_s: float = 12.0
    pg_crashes: int = 2
    pg_down_s: float = 2.0
    clock_jump_s: float = 600.0  # 0: no clock jumps
    chaos: bool = True
    settle_every_s: float = 20.0
    seed: int = 8
    start_timeout_s: float = 120.0
    recovery_timeout_s: float = 90.0  # a fault not recovered within this is a failure
    # Rows in doubt after a restart may take longer on a loaded machine: the wait goes on while they
    # keep being resolved, and fails after recovery_timeout_s without one resolved, or at this cap.
    in_doubt_cap_s: float = 900.0
    min_up_s: float = 1.0  # load flows at least this long between two faults
    idempotency_lease_s: float = 15.0  # a key held by a killed process is free again after this
    outbound_timeout_s: float = 2.0
    breaker_cooldown_s: float = 3.0
    check_after_fault: bool = True  # every party's invariants after each fault
    give_up_s: float = 120.0  # a POS retries an unanswered payment this long
    pg_mode: str = "private"  # or "shared": the machine's cluster (pg_ctlcluster)
    restart_behind_s: float = 0.0  # > 0: one network kill restarts it with its clock this far behind (a bad RTC)
    restart_behind_hold_s: float = 40.0  # how long the restarted network keeps the clock behind


@dataclass(frozen=True, slots=True)
class Planned:
    at_s: float
    kind: str  # kill | pg_crash | chaos_on | chaos_off | partition | clock_jump
    target: str = ""
    offset_s: float = 0.0


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float  # seconds since the load started
    recovery_s: float | None = None  # to healthy (kill: the restarted process answers /healthz)
    settled_s: float | None = None  # to nothing left in doubt (kill), breaker closed (partition)
    recovered: bool = False
    in_doubt_found: int = 0
    in_doubt_resolved: int = 0
    in_doubt_left: int = 0
    commands_replayed: int | None = None
    replay_s: float | None = None
    violations_after: int | None = None
    first_approval_s: float | None = None  # to the first payment sent after the fault and approved by the issuer
    detail: dict[str, Any] = field(default_factory=dict)


def plan_faults(cfg: FaultsConfig, postgres: bool) -> list[Planned]:
    """The run's faults in time order. Kills are spread evenly, round robin over the four
    services, outside the partition (which has the exchange link to itself)."""
    d = cfg.duration_s
    warm = min(5.0, 0.05 * d)
    plan: list[Planned] = []
    part_at = 0.62 * d
    quiet = (part_at, part_at + cfg.partition_s + 6.0)
    if cfg.partition_s > 0:
        plan.append(Planned(part_at, "partition", "exchange"))
    if cfg.chaos:
        plan += [Planned(0.25 * d, "chaos_on", "issuer->exchange"), Planned(0.5 * d, "chaos_off", "issuer->exchange")]
    if cfg.clock_jump_s:
        j = cfg.clock_jump_s
        plan += [Planned(0.33 * d, "clock_jump", "issuer", j), Planned(0.42 * d, "clock_jump", "issuer", 0.0),
                 Planned(0.78 * d, "clock_jump", "exchange", -j), Planned(0.86 * d, "clock_jump", "exchange", 0.0)]
    if postgres:
        plan += [Planned((i + 0.45) * d / cfg.pg_crashes, "pg_crash", "postgresql") for i in range(cfg.pg_crashes)]
    span = 0.97 * d - warm - (quiet[1] - quiet[0])
    behind = cfg.restart_behind_s
    for i in range(cfg.kills):
        t = warm + (i + 0.5) * span / max(cfg.kills, 1)
        if t >= quiet[0]:
            t += quiet[1] - quiet[0]
        target = PARTIES[i % len(PARTIES)]
        if behind and target == "network":
            plan += [Planned(t, "kill", target, -behind), Planned(t + cfg.restart_behind_hold_s, "clock_jump", target)]
            behind = 0.0
        else:
            plan.append(Planned(t, "kill", target))
    order = {"chaos_on": 0, "partition": 1, "pg_crash": 2, "clock_jump": 3, "kill": 4, "chaos_off": 5}
    return sorted(plan, key=lambda p: (p.at_s, order[p.kind]))
