"""``ccsim run scenarios/cryptocity_direct.yaml`` end to end (shortened to a lunch hour): the direct
rail takes its share of the zone payments, the books and the reconciliation hold, ``ccsim verify``
recomputes every figure (the rails too) and exits 0, and a changed direct row or a changed rails
figure is caught. A crash while merchants hold shows in their exposure."""

from __future__ import annotations

import json
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sim import cli
from sim.runner import EXIT_INTEGRITY, simulate_summary
from sim.scenario_load import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SHORT = ["duration_s=3600", "warmup_s=120", "arrivals.start_hour=12", "population.cardholders.count=1500",
         "population.merchants.count=150", "arrivals.rate_per_s=1.2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("direct") / "run"
    args = ["run", str(SCENARIOS / "cryptocity_direct.yaml"), "--out", str(out), "--quiet", "--seed", "3"]
    for override in SHORT:
        args += ["--set", override]
    assert cli.main(args) == 0
    return out


def _summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))


def test_the_direct_day_runs_with_clean_books_and_both_rails(run: Path) -> None:
    s = _summary(run)
    assert s["ledger"]["invariants_ok"], s["ledger"]["violations"]
    rails = s["rails"]
    crypto, stable = rails["direct_crypto"], rails["direct_stablecoin"]
    assert crypto["approved"] > 50 and stable["approved"] > 20
    assert rails["card_jit"]["approved"] > 500
    # The direct rail charges no MDR: the merchant's cost is the exchange's fees, slippage and price.
    assert Decimal(rails["card_jit"]["merchant_cost_per_10000_kzt"]["total"]) == Decimal("150.00")
    assert Decimal(stable["merchant_cost_per_10000_kzt"]["slippage"]) == 0
    assert Decimal(stable["merchant_cost_per_10000_kzt"]["price_pnl"]) == 0
    # food converts at once: its merchants hold tenge within seconds, not at a settlement window.
    assert 0 < crypto["tenge_to_merchant_s"]["p50"] < rails["card_jit"]["tenge_to_merchant_s"]["p50"]
    assert crypto["tenge_to_merchant_s"]["still_held"] > 0  # transport holds, retail waits for midnight
    assert Decimal(crypto["pit_due_kzt"]) > 0 and Decimal(stable["pit_due_kzt"]) == 0
    assert set(rails["merchants"]["cit_estimate_by_segment_kzt"]) == {"food", "retail", "transport", "hotel"}
    with sqlite3.connect(run / "results.db") as db:
        paid = db.execute("SELECT COUNT(*) FROM direct_payments WHERE outcome = 'paid'").fetchone()[0]
        booked = db.execute("SELECT COUNT(*) FROM transfers WHERE party = 'merchants' "
                            "AND code = 'direct_payment'").fetchone()[0]
    assert paid == booked  # every direct payment is in the merchant's own books too


def test_verify_recomputes_the_rails_and_exits_0(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(run)]) == 0
    out = capsys.readouterr().out
    assert "0 differ" in out


@pytest.fixture
def copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def test_a_changed_direct_row_is_caught(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(copy / "results.db") as db:
        db.execute("UPDATE direct_payments SET quantity_minor = '1' WHERE payment_id = "
                   "(SELECT MIN(payment_id) FROM direct_payments WHERE outcome = 'paid' AND stablecoin = 0)")
    assert cli.main(["verify", str(copy)]) == 1
    assert "the exchange's journal books" in capsys.readouterr().out


def test_a_changed_rails_figure_is_caught(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _summary(copy)
    summary["rails"]["direct_crypto"]["paid_kzt"] = "1.00"
    (copy / "summary.json").write_text(json.dumps(summary))
    with sqlite3.connect(copy / "results.db") as db:
        db.execute("UPDATE runs SET summary_json = ?", (json.dumps(summary, sort_keys=True),))
    assert cli.main(["verify", str(copy)]) == 1
    assert "DIFFERS rails.direct_crypto.paid_kzt: summary.json says 1.00" in capsys.readouterr().out


@pytest.mark.slow
def test_merchants_holding_through_a_crash_carry_the_loss() -> None:
    def merchants(name: str) -> dict[str, Any]:
        scenario, text = load_scenario(SCENARIOS / f"{name}.yaml", [
            "duration_s=7200", "warmup_s=120", "arrivals.start_hour=17", "population.cardholders.count=1500",
            "population.merchants.count=150", "market.maker_withdrawals=[{start_s: 3600, duration_s: 1800}]",
            "market.assets.BTC.moves=[{at_s: 3600, change_pct: -30, over_s: 600}]",
            "market.assets.ETH.moves=[{at_s: 3600, change_pct: -35, over_s: 600}]"]
            if name.endswith("crash") else [
            "duration_s=7200", "warmup_s=120", "arrivals.start_hour=17", "population.cardholders.count=1500",
            "population.merchants.count=150", "direct.segments.hotel.policy=hold"])
        result = simulate_summary(scenario, text, 4)
        assert result.exit_code != EXIT_INTEGRITY, result.problems
        return dict(result.summary["rails"]["merchants"])

    crash, calm = merchants("cryptocity_direct_crash"), merchants("cryptocity_direct")
    assert Decimal(crash["worst_window_1h_kzt"]) < Decimal(calm["worst_window_1h_kzt"])
    assert Decimal(crash["unrealized_pnl_at_end_kzt"]) < 0
    assert Decimal(crash["unrealized_pnl_at_end_kzt"]) < Decimal(calm["unrealized_pnl_at_end_kzt"])


@pytest.mark.parametrize(("fallback", "card"), [("card", True), ("fail", False)])
def test_an_exchange_outage_fails_direct_payments_or_sends_them_to_the_card(fallback: str, card: bool) -> None:
    scenario, text = load_scenario(SCENARIOS / "cryptocity_direct.yaml", [
        "duration_s=2400", "warmup_s=60", "arrivals.start_hour=12", "population.cardholders.count=800",
        "population.merchants.count=80", "arrivals.rate_per_s=1.0", f"direct.fallback={fallback}",
        "services.exchange.outages=[{start_s: 600, duration_s: 900}]"])
    result = simulate_summary(scenario, text, 2)
    assert result.exit_code != EXIT_INTEGRITY, result.problems
    crypto = result.summary["rails"]["direct_crypto"]
    assert crypto["declined"].get("exchange_unavailable", 0) > 0
    assert (crypto["fell_back_to_card"] > 0) is card
