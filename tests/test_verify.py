"""``ccsim verify`` recomputes a run's figures from results.db and catches what was changed.

A clean run verifies; then one thing at a time is changed in a copy — a transfer's amount, a removed
transfer, two transfers swapped, a payment's latency, a summary figure (in summary.json and the runs
row alike, so the directory still looks like one run) — and verify exits 1 naming what differs.
A bundle verifies on its own, and a changed file in it is named.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sim import cli
from sim.bundle import make_bundle
from sim.runner import simulate
from sim.scenario_load import load_scenario
from sim.verify import verify_run

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
OUTAGE = [
    "duration_s=1800", "warmup_s=60", "arrivals.start_hour=18", "population.cardholders.count=600",
    "population.merchants.count=60", "services.exchange.outages=[{start_s: 600, duration_s: 600}]",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario, text = load_scenario(SCENARIOS / "exchange_outage.yaml", OUTAGE)
    out = tmp_path_factory.mktemp("verify") / "outage"
    simulate(scenario, text, 5, out)
    return out


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _sql(run_dir: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    with sqlite3.connect(run_dir / "results.db") as conn:
        for sql, params in statements:
            conn.execute(sql, params)


def _verify(target: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = cli.main(["verify", str(target), *extra])
    return code, capsys.readouterr().out


def test_a_clean_run_verifies_with_every_figure_recomputed(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(run, capsys)
    assert code == 0, out
    verification = verify_run(run)
    assert {"payments.approved", "auth_latency_ms.p99", "market.fees_kzt", "tax.pit_withheld_kzt",
            "liquidity.exchange_peak_prefund_kzt", "evidence.journal_chain_head",
            "ledger replay: conservation", "ledger replay: reconciliation"} <= set(verification.checked)
    assert "DIFFERS" not in out


def test_a_changed_transfer_amount_breaks_the_chain_and_the_replayed_balances(
        copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(copy, ("UPDATE transfers SET amount_minor = CAST(amount_minor AS INTEGER) + 1 "
                "WHERE party = 'exchange' AND code = 'fee' AND seq = (SELECT MIN(seq) FROM transfers "
                "WHERE party = 'exchange' AND code = 'fee')", ()))
    code, out = _verify(copy, capsys)
    assert code == 1
    assert "DIFFERS evidence.journal_chain_head" in out and "first differing batch" in out
    assert "DIFFERS market.fees_kzt" in out  # the fee account no longer matches the summary
    assert "ledger replay: balances: exchange: fees:KZT replays to" in out


def test_a_removed_transfer_is_caught(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(copy, ("DELETE FROM transfers WHERE party = 'issuer' AND seq = 100", ()))
    code, out = _verify(copy, capsys)
    assert code == 1
    assert "DIFFERS evidence.journal_transfers" in out and "DIFFERS evidence.journal_chain_head" in out


def test_two_transfers_swapped_are_caught_though_every_balance_still_adds_up(
        copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(copy, ("UPDATE transfers SET seq = -1 WHERE party = 'bank-2' AND seq = 10", ()),
         ("UPDATE transfers SET seq = 10 WHERE party = 'bank-2' AND seq = 11", ()),
         ("UPDATE transfers SET seq = 11 WHERE party = 'bank-2' AND seq = -1", ()))
    code, out = _verify(copy, capsys)
    assert code == 1
    assert "DIFFERS evidence.journal_chain_head" in out
    assert "ledger replay: balances" not in out  # reordering alone keeps the totals: only the chain sees it


def test_a_changed_payment_row_names_the_figures_it_moves(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(copy, ("UPDATE payments SET latency_ms = 999999 WHERE payment_id = "
                "(SELECT payment_id FROM payments WHERE t_arrival_s >= 60 ORDER BY payment_id LIMIT 1)", ()))
    code, out = _verify(copy, capsys)
    assert code == 1
    assert "DIFFERS auth_latency_ms.max: summary.json says" in out
    assert "DIFFERS auth_latency_ms.mean" in out
    assert "journal_chain_head" not in out  # the books were not touched


def test_a_summary_figure_changed_in_both_places_is_caught(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((copy / "summary.json").read_text())
    summary["payments"]["approved"] += 1
    (copy / "summary.json").write_text(json.dumps(summary))
    _sql(copy, ("UPDATE runs SET summary_json = ?", (json.dumps(summary, sort_keys=True),)))
    code, out = _verify(copy, capsys)
    assert code == 1
    assert f"DIFFERS payments.approved: summary.json says {summary['payments']['approved']}, results.db gives " \
           f"{summary['payments']['approved'] - 1}" in out


def test_verify_refuses_what_is_not_one_complete_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["verify", str(tmp_path / "nowhere")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_a_bundle_verifies_on_its_own_and_names_a_changed_file(run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bundle, digest, verified = make_bundle(run, tmp_path / "run.tar.gz")
    assert verified and bundle.stat().st_mode & 0o777 == 0o644
    code, out = _verify(bundle, capsys)
    assert code == 0, out
    assert f"digest {digest}" in out
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        environment = json.loads(tar.extractfile(f"{run.name}/environment.json").read())  # type: ignore[union-attr]
    assert {f"{run.name}/{m}" for m in ("summary.json", "results.db", "report.html", "scenario.yaml",
                                        "verify.txt", "SHA256SUMS")} <= set(names)
    assert environment["seed"] == 5 and environment["packages"]["simpy"]
    # the same bundle with report.html changed
    unpacked = tmp_path / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / run.name / "report.html").write_text("<p>edited</p>")
    edited = tmp_path / "edited.tar.gz"
    with tarfile.open(edited, "w:gz") as tar:
        tar.add(unpacked / run.name, arcname=run.name)
    code, out = _verify(edited, capsys)
    assert code == 1 and "DIFFERS report.html" in out


def test_rerun_reproduces_the_run_from_its_recorded_scenario_and_seed(run: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(run, capsys, "--rerun")
    assert code == 0, out
    assert "journal chain head included" in out


def test_a_live_load_run_is_refused_with_one_line(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((copy / "summary.json").read_text())
    summary["mode"] = "live"
    (copy / "summary.json").write_text(json.dumps(summary))
    _sql(copy, ("UPDATE runs SET summary_json = ?", (json.dumps(summary, sort_keys=True),)))
    assert cli.main(["verify", str(copy)]) == 2
    assert "is a live load run" in capsys.readouterr().err
