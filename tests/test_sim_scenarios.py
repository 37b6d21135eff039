"""Every scenario in ``scenarios/`` validates, and a shortened run of each keeps the books whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sim.runner import EXIT_INTEGRITY, simulate
from sim.scenario_load import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))

# A short evening slice of each day, with a smaller population: the same rules, a fraction of the time.
SHORT = ["duration_s=1200", "warmup_s=60", "cooldown_s=0", "arrivals.start_hour=18",
         "population.cardholders.count=400", "population.merchants.count=40"]


def test_the_library_is_complete() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"cryptocity_day", "evening_peak", "price_crash", "exchange_outage", "prefunded", "jit",
            "stablecoin", "deadline_2s", "bank_downtime", "tourist_self_declared",
            "thin_book_short_tenge"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_validates_and_is_documented(path: Path) -> None:
    scenario, text = load_scenario(path)
    assert scenario.name == path.stem
    header = [line for line in text.splitlines()[:12] if line.startswith("#")]
    assert len(header) >= 3, f"{path.name} needs a comment header saying what it shows"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shortened_run_passes_invariants(path: Path, tmp_path: Path) -> None:
    scenario, text = load_scenario(path, SHORT)
    result = simulate(scenario, text, 1, tmp_path / path.stem)
    assert result.exit_code != EXIT_INTEGRITY, result.problems
    summary = result.summary
    assert summary["ledger"] == {"invariants_ok": True, "violations": []}
    assert summary["payments"]["attempted"] > 100
    with sqlite3.connect(tmp_path / path.stem / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM payments").fetchone()[0] == summary["payments"]["attempted"]
        assert db.execute("SELECT COUNT(*) FROM integrity WHERE NOT ok").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        # settlement windows net to zero
        for (total,) in db.execute("SELECT SUM(net_kzt_minor) FROM settlements GROUP BY window_id"):
            assert total == 0
