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
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import Table

from services.exchange.accounts import FEES_KZT
from services.ledger import LedgerRepository
from sim.journal_chain import CHAIN_BATCH_ROWS, GENESIS
from sim.journal_chain import journal_chain as journal_chain_of
from sim.results import ResultsWriter, accounts, integrity, journal_chain, runs, transfers
from sim.run_dir import publish, staging_dir
from sim.scenario import Scenario
from sim.scenario_load import scenario_sha256
from sim.summary import build_summary, evaluate_slos, timeline
from sim.summary_rails import rails_summary, write_direct_rows
from sim.world import Progress, World, few_collections

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTEGRITY", "EXIT_OK", "EXIT_SLO", "RunResult", "ccsim_version", "simulate",
           "simulate_summary"]

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
    run_dir: Path | None  # None for an in-memory run (simulate_summary)
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


def _write_evidence(world: World, writer: ResultsWriter) -> dict[str, Any]:
    """Every party's accounts and the hash chain over the journal (``ccsim verify`` checks both);
    what ``summary.json`` records of them."""
    for party, ledger in _party_ledgers(world):
        writer.add_rows(accounts, (
            (party, a.id, a.asset, a.kind, int(a.flags), str(a.debits_pending), str(a.debits_posted),
             str(a.credits_pending), str(a.credits_posted))
            for a in ledger.accounts()
        ))
    writer.flush()
    raw = writer.engine.raw_connection()
    try:
        batches = list(journal_chain_of(raw.driver_connection))  # type: ignore[arg-type]
    finally:
        raw.close()
    writer.add_many(journal_chain, [
        {"batch": b.index, "party": b.party, "first_seq": b.first_seq, "rows": b.rows, "digest": b.digest}
        for b in batches
    ])
    return {
        "journal_transfers": sum(b.rows for b in batches),
        "journal_chain_batches": len(batches),
        "journal_chain_batch_rows": CHAIN_BATCH_ROWS,
        "journal_chain_head": batches[-1].digest if batches else GENESIS,
    }


def _exchange_fees_kzt(world: World) -> int:
    """The exchange's fee income: its fee account's balance (every sale it made, whoever asked)."""
    account = world.chain.exchange_ledger.account(FEES_KZT)
    return 0 if account is None else account.credit_balance


def _party_ledgers(world: World) -> Iterator[tuple[str, LedgerRepository]]:
    """Every party's ledger."""
    chain = world.chain
    yield chain.config.exchange_id, chain.exchange_ledger
    yield chain.issuer.id, chain.issuer.ledger
    yield chain.network.id, chain.network.ledger
    for acquirer in chain.acquirers.values():
        yield acquirer.id, acquirer.ledger
    for bank in chain.banks.values():
        yield bank.id, bank.ledger
    yield chain.direct.books.name, chain.direct.books.ledger


def _write_transfers(world: World, writer: ResultsWriter) -> None:
    """Every party's whole journal (a world with bounded books has streamed them already)."""
    for party, ledger in _party_ledgers(world):
        journal = ledger.journal()
        # Tuples in the table's column order, streamed: the writer inserts them batch by batch.
        writer.add_rows(transfers, (
            (party, seq, t.id, t.debit_account_id, t.credit_account_id, str(t.amount), t.asset, t.code,
             int(t.flags), t.pending_id, t.user_data, t.timestamp)
            for seq, t in enumerate(journal)
        ))


class _SummaryOnlyWriter(ResultsWriter):
    """A results writer that keeps no rows: a sweep replication needs only the summary.

    It subclasses :class:`ResultsWriter` (an in-memory SQLite engine, never written to) so the
    world and the metrics see the type they expect. Rows handed over by any method are dropped
    when their batch would be inserted, so memory stays at one batch per table.
    """

    keeps_rows = False

    def __init__(self) -> None:
        super().__init__(Path(":memory:"))

    def _flush_table(self, table: Table) -> None:
        self._buffers[table.name] = []

    def add(self, table: Table, row: dict[str, Any]) -> None:
        return None

    def add_many(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        return None

    def add_row(self, table: Table, row: tuple[Any, ...]) -> None:
        return None

    def add_rows(self, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
        return None

    def fold_payment_events(self) -> None:
        return None


def _simulate_with(
    scenario: Scenario, scenario_text: str, seed: int, writer: ResultsWriter, progress: Progress | None,
    *, write_rows: bool, bounded: bool, on_world: Callable[[World], None] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Run the world into ``writer``; the summary and the integrity violations."""
    started = datetime.now(UTC)
    wall0 = time.perf_counter()
    world = World(scenario, seed, writer, bounded=bounded)
    if on_world is not None:
        on_world(world)  # the live gateway reads KPIs in ``progress`` and tax statements after the run
    world.run(progress)
    world.metrics.bucket_series()
    checks = _integrity(world)
    for check, ok, detail in checks:
        writer.add(integrity, {"check": check, "ok": ok, "detail": detail})
    if write_rows and scenario.metrics.write_transfers and not bounded:
        _write_transfers(world, writer)  # a bounded world streamed them during the run
    body = build_summary(scenario, world.metrics, world.stations, world.chain.tax_summary(),
                         exchange_fees_kzt=_exchange_fees_kzt(world))
    body["rails"] = rails_summary(scenario, world.metrics, world.direct, body["liquidity"])
    if world.direct is not None:
        write_direct_rows(world.direct, writer)
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
    summary["throughput"]["bucket_s"] = scenario.metrics.bucket_s
    summary["timeline"] = timeline(scenario)
    if write_rows:
        summary["evidence"] = _write_evidence(world, writer)
        writer.add(runs, {
            "run_id": f"{scenario.name}-{seed}", "scenario_name": scenario.name, "seed": seed,
            "scenario_sha256": sha, "ccsim_version": summary["ccsim_version"], "wall_s": wall_s,
            "summary_json": json.dumps(summary, sort_keys=True), "scenario_yaml": scenario_text,
        })
        writer.fold_payment_events()
    return summary, violations


def _result(run_dir: Path | None, summary: dict[str, Any], violations: list[str]) -> RunResult:
    breached = [f"SLO breached: {name} (value {v['value']:.6g})" for name, v in summary["slo"].items()
                if not v["pass"]]
    if violations:
        return RunResult(run_dir, summary, EXIT_INTEGRITY, violations + breached)
    if breached:
        return RunResult(run_dir, summary, EXIT_SLO, breached)
    return RunResult(run_dir, summary, EXIT_OK)


def simulate_summary(scenario: Scenario, scenario_text: str, seed: int, progress: Progress | None = None) -> RunResult:
    """Run ``scenario`` with ``seed`` in memory: no files, only the summary (``run_dir`` is None).

    The summary is the one :func:`simulate` writes for the same scenario and seed (apart from the
    wall-clock fields); sweeps run thousands of these and need no per-payment rows. The books are
    bounded (:class:`~sim.world.World`).
    """
    writer = _SummaryOnlyWriter()
    try:
        with few_collections():  # see sim.world.GC_THRESHOLDS
            summary, violations = _simulate_with(scenario, scenario_text, seed, writer, progress,
                                                 write_rows=False, bounded=True)
    finally:
        writer.close()
    return _result(None, summary, violations)


def simulate(
    scenario: Scenario, scenario_text: str, seed: int, run_dir: Path, progress: Progress | None = None,
    *, on_world: Callable[[World], None] | None = None, keep_books: bool | None = None,
) -> RunResult:
    """Run ``scenario`` with ``seed`` and write ``summary.json`` and ``results.db`` into ``run_dir``.

    ``on_world`` (optional) is handed the world once it is built, before it runs: a caller that
    watches a run (the live gateway) reads its metrics from ``progress`` and its books afterwards.

    The run is written into a staging directory beside ``run_dir`` and replaces it only when
    complete (:mod:`sim.run_dir`): an interrupted run leaves ``run_dir`` as it was.

    ``keep_books``: keep every journal, authorization, sale and tax statement in memory for the
    caller to read after the run (memory grows with the run), or bound memory (journals streamed
    into ``results.db``, payments forgotten when over; :class:`~sim.world.World`). The default keeps
    them only for a caller that gets the world (``on_world``). The results are the same either way.
    """
    bounded = not (keep_books if keep_books is not None else on_world is not None)
    stage = staging_dir(run_dir)  # the run is written here and renamed into place when complete
    try:
        writer = ResultsWriter(stage / "results.db")
        try:
            with few_collections():  # see sim.world.GC_THRESHOLDS
                summary, violations = _simulate_with(scenario, scenario_text, seed, writer, progress,
                                                     write_rows=True, bounded=bounded, on_world=on_world)
        finally:
            writer.close()
        (stage / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        publish(stage, run_dir)
    except BaseException:  # an interrupted or failed run leaves run_dir as it was
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return _result(run_dir, summary, violations)
