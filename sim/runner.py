"""One run, end to end: build the world, simulate, check the books, write the results.

``simulate()`` returns a :class:`RunResult` even when the ledger checks fail (desmod's rule: a run
always yields its result, with config, seed and runtime in it); the exit code says what went wrong:

- 0: ok;
- 1: a ledger invariant or the cross-party reconciliation failed;
- 3: an SLO was breached (the summary's ``slo`` says which).

Bad input (exit code 2) never reaches here: the scenario is validated before a directory is made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from services.ledger import Transfer
from sim.results import ResultsWriter, integrity, runs, transfers
from sim.scenario import Scenario
from sim.scenario_load import scenario_sha256
from sim.summary import build_summary, evaluate_slos
from sim.world import Progress, World

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTEGRITY", "EXIT_OK", "EXIT_SLO", "RunResult", "ccsim_version", "simulate"]

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_BAD_INPUT = 2
EXIT_SLO = 3


def ccsim_version() -> str:
    try:
        return version("ccsim")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    exit_code: int
    problems: list[str] = field(default_factory=list)  # integrity failures and SLO breaches, for people


def _integrity(world: World) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) for every party's ledger invariants and the reconciliation."""
    rows: list[tuple[str, bool, str]] = []
    for party, violations in sorted(world.chain.check_invariants().items()):
        detail = "; ".join(str(v) for v in violations[:20])
        if len(violations) > 20:
            detail += f"; … {len(violations) - 20} more"
        rows.append((f"invariants:{party}", not violations, detail or "all invariants hold"))
    breaks = world.chain.reconcile()
    detail = "; ".join(f"{b.kind} {b.message_id}: {b.detail}" for b in breaks[:20])
    if len(breaks) > 20:
        detail += f"; … {len(breaks) - 20} more"
    rows.append(("reconciliation", not breaks, detail or "every message booked on both sides"))
    return rows


def _party_journals(world: World) -> Iterator[tuple[str, Iterator[Transfer]]]:
    chain = world.chain
    yield chain.config.exchange_id, chain.exchange_ledger.journal()
    yield chain.issuer.id, chain.issuer.ledger.journal()
    yield chain.network.id, chain.network.ledger.journal()
    for acquirer in chain.acquirers.values():
        yield acquirer.id, acquirer.ledger.journal()
    for bank in chain.banks.values():
        yield bank.id, bank.ledger.journal()


def _write_transfers(world: World, writer: ResultsWriter) -> None:
    for party, journal in _party_journals(world):
        writer.add_many(transfers, [
            {"party": party, "seq": seq, "transfer_id": t.id, "debit_account_id": t.debit_account_id,
             "credit_account_id": t.credit_account_id, "amount_minor": str(t.amount), "asset": t.asset,
             "code": t.code, "flags": int(t.flags), "pending_id": t.pending_id, "user_data": t.user_data,
             "t_s": t.timestamp}
            for seq, t in enumerate(journal)
        ])


def simulate(
    scenario: Scenario, scenario_text: str, seed: int, run_dir: Path, progress: Progress | None = None
) -> RunResult:
    """Run ``scenario`` with ``seed`` and write ``summary.json`` and ``results.db`` into ``run_dir``."""
    started = datetime.now(UTC)
    wall0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    db_path = run_dir / "results.db"
    for stale in (db_path, run_dir / "results.db-wal", run_dir / "results.db-shm"):
        stale.unlink(missing_ok=True)
    writer = ResultsWriter(db_path)
    try:
        world = World(scenario, seed, writer)
        world.run(progress)
        world.metrics.bucket_series()
        checks = _integrity(world)
        for check, ok, detail in checks:
            writer.add(integrity, {"check": check, "ok": ok, "detail": detail})
        if scenario.metrics.write_transfers:
            _write_transfers(world, writer)
        body = build_summary(scenario, world.metrics, world.stations, world.chain.tax_summary())
        wall_s = time.perf_counter() - wall0
        sha = scenario_sha256(scenario_text)
        summary: dict[str, Any] = {
            "scenario": scenario.name,
            "scenario_name": scenario.name,
            "scenario_sha256": sha,
            "seed": seed,
            "ccsim_version": ccsim_version(),
            "started_at": started.isoformat(timespec="seconds"),
            "sim_duration_s": scenario.duration_s,
            "sim_end_s": world.env.now,
            "warmup_s": scenario.warmup_s,
            "cooldown_s": scenario.cooldown_s,
            "deadline_ms": scenario.network.deadline_ms,
            "wall_s": wall_s,
            "payments_per_wall_s": world.metrics.attempted / wall_s if wall_s > 0 else 0.0,
            **body,
            "clearing": {
                "captured": world.after.counts.captured,
                "capture_failed": world.after.counts.capture_failed,
                "reversals": world.after.counts.reversals,
                "refunds": world.after.counts.refunds,
                "refund_failed": world.after.counts.refund_failed,
                "chargebacks": world.after.counts.chargebacks,
                "settlement_windows": world.after.counts.windows,
            },
        }
        summary["payments"]["advices_applied"] = world.path.advices_applied
        violations = [f"{check}: {detail}" for check, ok, detail in checks if not ok]
        summary["ledger"] = {"invariants_ok": not violations, "violations": violations}
        summary["slo"] = evaluate_slos(scenario, summary)
        writer.add(runs, {
            "run_id": f"{scenario.name}-{seed}", "scenario_name": scenario.name, "seed": seed,
            "scenario_sha256": sha, "ccsim_version": summary["ccsim_version"], "wall_s": wall_s,
            "summary_json": json.dumps(summary, sort_keys=True), "scenario_yaml": scenario_text,
        })
        writer.fold_payment_events()
    finally:
        writer.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    breached = [f"SLO breached: {name} (value {v['value']:.6g})" for name, v in summary["slo"].items()
                if not v["pass"]]
    if violations:
        return RunResult(run_dir, summary, EXIT_INTEGRITY, violations + breached)
    if breached:
        return RunResult(run_dir, summary, EXIT_SLO, breached)
    return RunResult(run_dir, summary, EXIT_OK)
