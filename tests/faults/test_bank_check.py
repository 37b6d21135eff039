"""The bank check on SQLite and PostgreSQL, short: 8 workers, 3 SIGKILLs of the service.

The kills wait for events, not for the clock: each comes after the service acknowledged 25
transfers since it last started, and the run ends 25 acknowledgements after the last restart, so
a slow machine makes a longer run, never a smaller one. ``make faults`` runs the long one (120 s,
30 kills per database); docs/reliability.md has its figures.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import require_postgres

from .bank_check import ARTIFACTS, BankCheckConfig, Database, format_summary, run_bank_check

SHORT = BankCheckConfig(duration_s=3.0, kills=3, workers=8, acks_per_phase=25)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_bank_check_survives_kills(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        db = Database("postgresql", require_postgres(), f"bc_{uuid.uuid4().hex[:10]}_")
    else:
        db = Database("sqlite", f"sqlite:///{tmp_path / 'bank.db'}")
    summary = run_bank_check(db, SHORT, tmp_path, artifact=ARTIFACTS / f"bank_check_{backend}.json")
    print(format_summary(summary))
    assert summary["problems"] == []  # incl. a phase in which the service acknowledged too little
    assert summary["ok"]
    # Every kill was made, and after each one the restarted service acknowledged transfers again.
    assert summary["kills"] == SHORT.kills
    assert len(summary["recovery_s"]) == len(summary["first_ack_after_kill_s"]) == SHORT.kills
    # The run did what it claims: money moved, reads were checked, and kills cut requests off.
    assert summary["transfers_ok"] >= (SHORT.kills + 1) * SHORT.acks_per_phase and summary["reads_checked"] > 20
    assert summary["transfers_rejected"] > 0  # some overdrafts, refused by the ledger
    assert summary["transfers_retried"] > 0  # a kill interrupted requests, which retried the same key
    assert summary["transfers_unknown"] == 0  # every retry got an answer once the service was back
    for name in ("wrong_totals", "negatives", "stale_or_impossible_reads", "missing_acknowledged",
                 "rejected_but_applied", "duplicate_effects", "foreign_transfers", "unexpected_answers",
                 "final_balance_mismatches", "invariant_violations"):
        assert summary[name] == 0, name
    assert summary["journal_transfers"] == summary["transfers_ok"] + summary["unknown_applied"]
