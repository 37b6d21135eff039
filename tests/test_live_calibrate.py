"""Calibration: the lognormal fit recovers known parameters, and the overlay is a valid scenario override."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest
import yaml
from faults.ports import free_port_block

from sim.cli import main as cli_main
from sim.distributions import lognormal_params
from sim.live.calibrate import (
    MIN_SAMPLES,
    CalibrationError,
    calibrate_run,
    fit_lognormal,
    fit_per_call,
    overlay_mapping,
    overlay_set_args,
    sim_calls,
    write_overlay,
)
from sim.live.cli_ops import calibrate_command
from sim.live.load import plan_payments, pos_signer, run_open_loop
from sim.live.load_results import write_live_run
from sim.live.serve import ServeConfig, Supervisor, seed_from_scenario
from sim.results import ResultsWriter, legs, payments
from sim.scenario_load import apply_overrides, load_scenario, parse_scenario, read_raw
from sim.scenario_types import ConstantTime, LognormalTime

ROOT = Path(__file__).resolve().parents[1]
JIT = ROOT / "scenarios" / "jit.yaml"


def _draws(mean_ms: float, cv: float, n: int, seed: int) -> np.ndarray:
    mu, sigma = lognormal_params(mean_ms, cv)
    return np.random.default_rng(seed).lognormal(mu, sigma, n)


@pytest.mark.parametrize(("mean_ms", "cv"), [(3.0, 0.4), (80.0, 0.8), (250.0, 1.5)])
def test_fit_recovers_known_lognormal_parameters(mean_ms: float, cv: float) -> None:
    fit = fit_lognormal("exchange", _draws(mean_ms, cv, 50_000, seed=11))
    assert fit.mean_ms == pytest.approx(mean_ms, rel=0.03)
    assert fit.cv == pytest.approx(cv, rel=0.03)
    mu, sigma = lognormal_params(mean_ms, cv)
    assert fit.mu == pytest.approx(mu, abs=0.02)
    assert fit.sigma == pytest.approx(sigma, rel=0.02)
    assert fit.n == 50_000


def test_fit_ignores_unusable_samples_and_needs_enough() -> None:
    good = _draws(10.0, 0.5, 200, seed=2)
    noisy = np.concatenate([good, [0.0, -1.0, np.nan, np.inf]])
    assert fit_lognormal("issuer", noisy) == fit_lognormal("issuer", good)
    with pytest.raises(CalibrationError, match=f"at least {MIN_SAMPLES}"):
        fit_lognormal("issuer", good[: MIN_SAMPLES - 1])


def _live_run(run_dir: Path, payment_legs: list[dict[str, float]], e2e_ms: np.ndarray,
              stand_in: Collection[int] = ()) -> Path:
    """A results.db as ``ccsim load`` writes it: a payments row each, a legs row per leg and payment."""
    run_dir.mkdir(parents=True)
    writer = ResultsWriter(run_dir / "results.db")
    for i, latency in enumerate(e2e_ms):
        writer.add(payments, {"payment_id": i, "t_arrival_s": i * 0.1, "t_done_s": i * 0.1 + latency / 1000,
                              "latency_ms": float(latency), "outcome": "approved", "reason": "00",
                              "stand_in": i in stand_in, "deadline_missed": False, "orphaned": False,
                              "amount_kzt_minor": 100, "merchant_id": "m", "category": "c", "acquirer_id": "a",
                              "funding_mode": "jit", "residency": "resident", "fee_kzt_minor": 0, "gain_kzt_minor": 0,
                              "pit_kzt_minor": 0})
    writer.add_rows(legs, [(i, service, 0.0, float(ms)) for i, by_leg in enumerate(payment_legs)
                           for service, ms in by_leg.items()])
    writer.close()
    return run_dir


def _columns(n: int, **draws: np.ndarray) -> list[dict[str, float]]:
    return [{name: float(values[i]) for name, values in draws.items()} for i in range(n)]


def test_per_call_fit_recovers_the_time_of_one_call() -> None:
    # Payments call the service once or twice (the simulated issuer: twice when crypto is sold);
    # each payment's sample is the sum of its calls, drawn from a known per-call lognormal.
    rng = np.random.default_rng(21)
    mu, sigma = lognormal_params(6.0, 0.5)
    calls = rng.integers(1, 3, 40_000)
    totals = np.asarray([rng.lognormal(mu, sigma, k).sum() for k in calls])
    fit = fit_per_call("issuer", totals, calls)
    assert fit.method == "moments per call" and fit.calls == int(calls.sum()) and fit.n == 40_000
    assert fit.mean_ms == pytest.approx(6.0, rel=0.02)
    assert fit.cv == pytest.approx(0.5, rel=0.05)
    # A lognormal fitted to the totals would be off: their mean is 1.5 calls' worth.
    assert fit_lognormal("issuer", totals).mean_ms == pytest.approx(6.0 * calls.mean(), rel=0.02)
    once = _draws(6.0, 0.5, 500, seed=3)
    assert fit_per_call("issuer", once, np.ones(500)) == fit_lognormal("issuer", once)
    assert sim_calls("issuer", {"network": 1.0, "exchange": 2.0}) == 2
    assert sim_calls("issuer", {"network": 1.0}) == 1 and sim_calls("exchange", {"exchange": 2.0}) == 1


def test_per_leg_overlay_is_a_valid_scenario_override(tmp_path: Path) -> None:
    n, sales = 4000, 2500  # the first 2,500 payments sell crypto: exchange and bank legs, two issuer calls
    rng = np.random.default_rng(8)
    mu, sigma = lognormal_params(6.0, 0.5)
    issuer = np.asarray([rng.lognormal(mu, sigma, 2 if i < sales else 1).sum() for i in range(n)])
    by_payment = _columns(n, acquirer=_draws(1.5, 0.4, n, 1), network=_draws(8.0, 0.6, n, 2), issuer=issuer,
                          db=_draws(1.0, 0.1, n, 3))
    for i, (exchange, bank) in enumerate(zip(_draws(45.0, 0.9, sales, 4), _draws(12.0, 0.7, sales, 5), strict=True)):
        by_payment[i].update(exchange=float(exchange), bank=float(bank))
    stand_ins = set(range(n, n + 300))  # the network waited for the issuer's deadline: left out
    by_payment += [{"acquirer": 1.5, "network": 2000.0, "issuer": 2100.0} for _ in stand_ins]
    run = _live_run(tmp_path / "live", by_payment, _draws(60.0, 0.7, n + 300, 6), stand_in=stand_ins)

    fits, method, notes = calibrate_run(run)
    assert method == "per-leg"
    fit = {f.service: f for f in fits}
    assert sorted(fit) == ["acquirer", "bank", "exchange", "issuer", "network"]
    assert any("'db'" in note for note in notes)  # not a scenario service: reported, not fitted
    assert any("300 payments answered by stand-in" in note for note in notes)
    assert fit["network"].n == n and fit["network"].mean_ms == pytest.approx(8.0, rel=0.05)
    assert fit["issuer"].calls == n + sales and fit["issuer"].mean_ms == pytest.approx(6.0, rel=0.05)
    assert fit["exchange"].n == sales

    scenario, _ = load_scenario(JIT, overlay_set_args(overlay_mapping(fits, method)))
    services = scenario.services
    issuer_time = services.get("issuer").service_time
    assert isinstance(issuer_time, LognormalTime)
    assert issuer_time.mean_ms == pytest.approx(6.0, rel=0.05) and issuer_time.cv == pytest.approx(0.5, rel=0.1)
    assert services.get("exchange").service_time.mean_ms == pytest.approx(45.0, rel=0.05)
    assert services.get("bank").service_time.mean_ms == pytest.approx(12.0, rel=0.05)
    assert services.get("custody").service_time == ConstantTime(mean_ms=0.0)  # inside the exchange's sale live
    assert services.get("acquirer").return_service_time is None and services.get("network").return_service_time is None

    path, *_ = write_overlay(run)
    raw, _, _ = read_raw(JIT)
    merged = _merge(raw, yaml.safe_load(path.read_text()))
    assert parse_scenario(merged).services == services  # YAML merge == --set
    assert load_scenario(JIT, path.with_suffix(".set").read_text().replace("--set=", "").split())[0] == scenario


def _merge(base: dict[str, object], overlay: dict[str, object]) -> dict[str, object]:
    out = dict(base)
    for key, value in overlay.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and key != "service_time":
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


def test_without_leg_timings_the_end_to_end_latency_is_fitted(tmp_path: Path) -> None:
    run = _live_run(tmp_path / "live", [], _draws(120.0, 0.6, 3000, 5))
    fits, method, notes = calibrate_run(run)
    assert method == "end-to-end" and [f.service for f in fits] == ["acquirer"]
    assert fits[0].mean_ms == pytest.approx(120.0, rel=0.05)
    assert any("no per-leg times" in n for n in notes)
    args = overlay_set_args(overlay_mapping(fits, method))
    scenario, _ = load_scenario(JIT, args)
    assert scenario.services.get("exchange").service_time == ConstantTime(mean_ms=0.0)
    assert isinstance(scenario.services.get("acquirer").service_time, LognormalTime)
    assert apply_overrides({}, args)["services"]["bank"]["return_service_time"] is None


def test_calibrate_command_reports_bad_run_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert calibrate_command(argparse.Namespace(run_dir=tmp_path / "nope", out=None)) == 2
    assert "no results database" in capsys.readouterr().err
    run = _live_run(tmp_path / "tiny", [], _draws(5.0, 0.5, 5, 6))
    assert calibrate_command(argparse.Namespace(run_dir=run, out=None)) == 2
    assert not (run / "overlay.yaml").exists()


# -- one real round: the services under uvicorn, the load generator, calibrate, run, compare ---------

# The network stands in when the issuer is later than its deadline (or its call times out), and a
# stand-in has no issuer leg to measure: a deadline and an outbound timeout far beyond any answer
# keep the round a measurement on a busy machine.
ROUND_SETS = ["population.cardholders.count=60", "population.merchants.count=10", "warmup_s=0",
              "arrivals.rate_scale=200", "network.deadline_ms=120000"]
ROUND_S = 5.0  # about 67 payments, most of them selling crypto


@pytest.mark.slow  # four service processes start (a few seconds), then a 5-second load
def test_a_calibration_round_against_the_live_services(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, text = load_scenario(JIT, [*ROUND_SETS, "duration_s=600"])
    plan = plan_payments(scenario, 1, duration_s=ROUND_S)
    config = ServeConfig(data_dir=tmp_path / "serve", port=free_port_block(5), gateway=False, start_timeout_s=120.0,
                         extra_env={"CCSIM_OUTBOUND_TIMEOUT_S": "120"})  # late on a busy machine, not failed
    with Supervisor(config, seed_from_scenario(scenario, 1)).running():
        sign = pos_signer(config.data_dir / "credentials.json")  # the keys serve wrote
        outcome = asyncio.run(run_open_loop(config.urls()["network"] + "/v1/payments", plan, sign=sign))

    samples = outcome.samples
    assert [s.status for s in samples] == [200] * len(plan) and not any(s.stand_in for s in samples)
    sales = 0
    for s in samples:
        # Every leg the payment passed through took time, and together they are no more than
        # the payment's latency (they split the answer time the POS measured from its send).
        assert {"acquirer", "network", "issuer"} <= set(s.legs_ms) <= {"acquirer", "network", "issuer", "exchange",
                                                                        "bank"}
        assert all(ms > 0 for ms in s.legs_ms.values()), s.legs_ms
        assert sum(s.legs_ms.values()) <= s.latency_ms
        sales += "exchange" in s.legs_ms
    assert sales >= 30, "too few sales to fit the exchange"

    live = tmp_path / "live"
    write_live_run(live, scenario, text, 1, outcome, target="network", from_s=0.0, duration_s=ROUND_S,
                   integrity_rows=[])
    assert cli_main(["calibrate", str(live)]) == 0
    fits, method, _ = calibrate_run(live)
    assert method == "per-leg" and {f.service for f in fits} >= {"acquirer", "network", "issuer", "exchange"}
    simulated = tmp_path / "sim"
    sets = [f"--set={s}" for s in (*ROUND_SETS, f"duration_s={ROUND_S}")]
    overlay = (live / "overlay.set").read_text().split()
    assert cli_main(["run", str(JIT), *sets, *overlay, "--out", str(simulated), "--quiet"]) == 0
    capsys.readouterr()
    assert cli_main(["compare", str(simulated), str(live), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    rows = {line.split("  ")[0]: line for line in table.splitlines()}
    assert re.search(rf"payments measured \(after warm-up\)\s+{len(plan)}\s+{len(plan)}\s", table)  # the same payments
    for stage in ("acquirer", "network", "issuer", "exchange"):
        for figure in ("mean", "p50", "p99"):
            values = re.findall(r"([\d,.]+) ms", rows[f"{stage}: time per payment, {figure}"])
            assert len(values) == 3, rows[f"{stage}: time per payment, {figure}"]  # simulated, live, difference
