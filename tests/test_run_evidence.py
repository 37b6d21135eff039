"""What a run's evidence says agrees with the books it came from, and a run directory never mixes runs.

One short exchange-outage run (stand-in approvals, advice sales, auto top-ups, orphaned sales) is
checked against its own results.db: the exchange's fees are its fee account, orphaned sales are
split by what each payment did, the pre-funding chart peaks at the headline figure. Then the run
directory: an interrupted re-run leaves the previous run whole, and ``report``/``compare``/``export``
refuse a directory whose files come from two runs or from a run that did not finish.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sim import cli
from sim.report import ReportError, build_report, compare_runs, export_run
from sim.report.charts_money import settlement_charts
from sim.report.rundata import open_run
from sim.runner import simulate
from sim.scenario_load import load_scenario
from sim.world import World

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
OUTAGE = [
    "duration_s=1800", "warmup_s=60", "arrivals.start_hour=18", "population.cardholders.count=800",
    "population.merchants.count=80", "services.exchange.outages=[{start_s: 600, duration_s: 600}]",
]


def _run(out: Path, seed: int = 3, overrides: list[str] = OUTAGE) -> Path:
    scenario, text = load_scenario(SCENARIOS / "exchange_outage.yaml", overrides)
    simulate(scenario, text, seed, out)
    return out


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("evidence") / "outage")


def _summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))


def _rows(run_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "results.db") as conn:
        return conn.execute(query).fetchall()


def test_exchange_fees_are_the_exchange_s_fee_account_top_ups_and_advice_sales_included(outage: Path) -> None:
    summary = _summary(outage)
    booked = sum(int(amount) for (amount,) in _rows(
        outage, "SELECT amount_minor FROM transfers WHERE party = 'exchange' AND credit_account_id = 'fees:KZT'"))
    assert Decimal(summary["market"]["fees_kzt"]) == Decimal(booked) / 100
    payment_sales = sum(int(fee) for (fee,) in _rows(outage, "SELECT fee_kzt_minor FROM payments"))
    assert Decimal(summary["market"]["payment_sale_fees_kzt"]) == Decimal(payment_sales) / 100
    assert booked > payment_sales  # the run had auto top-ups and advice sales, and their fees count


def test_orphaned_sales_split_into_those_funding_stand_in_approvals_and_those_with_none(outage: Path) -> None:
    p = _summary(outage)["payments"]
    ((funding, unbacked),) = _rows(outage, """
        SELECT SUM(orphaned AND stand_in AND outcome = 'approved'),
               SUM(orphaned AND NOT (stand_in AND outcome = 'approved')) FROM payments""")
    assert p["orphaned_sales_funding_stand_in"] == funding > 0
    assert p["orphaned_sales_unbacked"] == unbacked
    assert funding + unbacked == p["orphaned_sales"]


def test_pre_funding_chart_peaks_at_the_headline_figure(outage: Path) -> None:
    with open_run(outage) as run:
        chart = next(c for c in settlement_charts(run.conn, run.summary) if c.chart_id == "chart-settlement-funding")
        liquidity = run.summary["liquidity"]
    assert chart.figure is not None
    peaks = {trace.name: max(trace.y) for trace in chart.figure.data}
    assert Decimal(str(peaks["exchange"])) == Decimal(liquidity["exchange_peak_prefund_kzt"])
    assert Decimal(str(peaks["issuer"])) == Decimal(liquidity["issuer_peak_prefund_kzt"])


# --- one run per directory --------------------------------------------------------------------------


def test_an_interrupted_re_run_leaves_the_previous_run_whole_and_says_so_in_one_line(
        outage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(outage, run_dir)
    build_report(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    def interrupted(self: World, progress: Any = None) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the run

    monkeypatch.setattr(World, "run", interrupted)
    code = cli.main(["run", str(SCENARIOS / "exchange_outage.yaml"), "--out", str(run_dir), "--quiet",
                     *[arg for item in OUTAGE for arg in ("--set", item)]])
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip().count("\n") == 0 and "interrupted" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging directory left behind


def test_report_compare_and_export_refuse_a_directory_mixing_two_runs(outage: Path, tmp_path: Path) -> None:
    other = _run(tmp_path / "other", seed=4)
    mixed = tmp_path / "mixed"
    shutil.copytree(outage, mixed)
    shutil.copy(other / "results.db", mixed / "results.db")
    for attempt in (lambda: build_report(mixed), lambda: compare_runs([outage, mixed], tmp_path / "cmp"),
                    lambda: export_run(mixed, "csv", tmp_path / "exp")):
        with pytest.raises(ReportError, match="mixes two runs"):
            attempt()
    assert not (mixed / "report.html").exists() and not (tmp_path / "cmp").exists()


def test_report_refuses_a_results_db_whose_run_did_not_finish(outage: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(outage, cut)
    with sqlite3.connect(cut / "results.db") as conn:
        conn.execute("DELETE FROM runs")  # the runs row is the last thing a run writes
    with pytest.raises(ReportError, match="did not finish"):
        build_report(cut)


def test_a_run_into_a_directory_of_other_files_is_refused_before_it_starts(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code = cli.main(["run", str(SCENARIOS / "exchange_outage.yaml"), "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "notes.txt" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
