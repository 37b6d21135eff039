"""Calibration: the lognormal fit recovers known parameters, and the overlay is a valid scenario override."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.distributions import lognormal_params
from sim.live.calibrate import (
    MIN_SAMPLES,
    CalibrationError,
    calibrate_run,
    fit_lognormal,
    overlay_mapping,
    overlay_set_args,
    write_overlay,
)
from sim.live.cli_ops import calibrate_command
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


def _live_run(run_dir: Path, leg_samples: dict[str, np.ndarray], e2e_ms: np.ndarray) -> Path:
    run_dir.mkdir(parents=True)
    writer = ResultsWriter(run_dir / "results.db")
    for i, latency in enumerate(e2e_ms):
        writer.add(payments, {"payment_id": i, "t_arrival_s": i * 0.1, "t_done_s": i * 0.1 + latency / 1000,
                              "latency_ms": float(latency), "outcome": "approved", "reason": "00", "stand_in": False,
                              "deadline_missed": False, "orphaned": False, "amount_kzt_minor": 100, "merchant_id": "m",
                              "category": "c", "acquirer_id": "a", "funding_mode": "jit", "residency": "resident",
                              "fee_kzt_minor": 0, "gain_kzt_minor": 0, "pit_kzt_minor": 0})
    for service, values in leg_samples.items():
        writer.add_rows(legs, [(i, service, 0.0, float(v)) for i, v in enumerate(values)])
    writer.close()
    return run_dir


def test_per_leg_overlay_is_a_valid_scenario_override(tmp_path: Path) -> None:
    run = _live_run(tmp_path / "live", {"issuer": _draws(6.0, 0.5, 4000, 1), "exchange": _draws(45.0, 0.9, 4000, 2),
                                        "db": _draws(1.0, 0.1, 4000, 3)}, _draws(60.0, 0.7, 4000, 4))
    fits, method, notes = calibrate_run(run)
    assert method == "per-leg"
    assert [f.service for f in fits] == ["exchange", "issuer"]
    assert any("'db'" in n for n in notes)  # not a scenario service: reported, not fitted

    scenario, _ = load_scenario(JIT, overlay_set_args(overlay_mapping(fits, method)))
    issuer = scenario.services.get("issuer").service_time
    assert isinstance(issuer, LognormalTime)
    assert issuer.mean_ms == pytest.approx(6.0, rel=0.05) and issuer.cv == pytest.approx(0.5, rel=0.07)
    assert scenario.services.get("exchange").service_time.mean_ms == pytest.approx(45.0, rel=0.05)

    path, *_ = write_overlay(run)
    raw, _, _ = read_raw(JIT)
    merged = _merge(raw, yaml.safe_load(path.read_text()))
    assert parse_scenario(merged).services.get("issuer").service_time == issuer  # YAML merge == --set
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
    run = _live_run(tmp_path / "live", {}, _draws(120.0, 0.6, 3000, 5))
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
    run = _live_run(tmp_path / "tiny", {}, _draws(5.0, 0.5, 5, 6))
    assert calibrate_command(argparse.Namespace(run_dir=run, out=None)) == 2
    assert not (run / "overlay.yaml").exists()
