"""``ccsim calibrate LIVE_RUN_DIR``: fit each service's service time from a live run; write an overlay.

A live run (``ccsim load``) records, per payment, the time each service reported spending on it
(``legs.service_ms``, from the services' ``Server-Timing`` header). For every scenario service
with enough samples this fits a lognormal by maximum likelihood — for a lognormal the MLE is closed
form: ``mu`` and ``sigma`` are the mean and the (1/n) standard deviation of ``ln x`` — and reports
it the way scenarios write it, as the mean and the coefficient of variation
(``mean = exp(mu + sigma²/2)``, ``cv = sqrt(exp(sigma²) - 1)``).

When the services reported no per-leg times, the end-to-end latency is fitted instead and put on
the ``acquirer`` leg, the other legs becoming zero-time constants: the simulated chain then
reproduces the measured end-to-end distribution, not where the time went. The overlay says which
of the two it is.

The overlay is YAML in the scenario's own shape (``services.<name>.service_time``) and the same
fields as ``--set`` arguments (``overlay.set``), so ``ccsim run SCENARIO $(cat overlay.set)`` simulates the
calibrated chain and ``ccsim compare SIM_RUN LIVE_RUN`` shows simulated and measured side by side.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from sim.scenario import SERVICE_NAMES

__all__ = ["MIN_SAMPLES", "CalibrationError", "Fit", "calibrate_run", "fit_lognormal", "overlay_mapping",
           "overlay_set_args"]

MIN_SAMPLES: Final = 30  # fewer samples than this give no fit: a tail cannot be read from them
END_TO_END_LEG: Final = "acquirer"


class CalibrationError(Exception):
    """The run directory cannot be calibrated from (missing, not a live run, too few samples)."""


@dataclass(frozen=True)
class Fit:
    """A lognormal fitted to one service's samples, in the scenario's terms and the normal's."""

    service: str
    n: int
    mean_ms: float
    cv: float
    mu: float
    sigma: float
    p50_ms: float  # of the samples, for the docs and the check against the fit
    p99_ms: float

    def service_time(self) -> dict[str, Any]:
        if self.cv <= 0:
            return {"dist": "constant", "mean_ms": round(self.mean_ms, 4)}
        return {"dist": "lognormal", "mean_ms": round(self.mean_ms, 4), "cv": round(self.cv, 4)}


def fit_lognormal(service: str, samples_ms: np.ndarray) -> Fit:
    """MLE of a lognormal on positive samples (zeros, negatives and non-finite values dropped)."""
    x = np.asarray(samples_ms, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < MIN_SAMPLES:
        raise CalibrationError(f"{service}: {x.size} positive samples, at least {MIN_SAMPLES} are needed")
    logs = np.log(x)
    mu = float(logs.mean())
    sigma = float(logs.std())  # ddof=0: the maximum-likelihood estimate
    mean_ms = math.exp(mu + sigma * sigma / 2.0)
    cv = math.sqrt(math.expm1(sigma * sigma))
    return Fit(service, int(x.size), mean_ms, cv, mu, sigma, float(np.percentile(x, 50.0)),
               float(np.percentile(x, 99.0)))


def _read_samples(db_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-leg service times and the answered end-to-end latencies of a run's results.db."""
    if not db_path.is_file():
        raise CalibrationError(f"{db_path}: no results database (run ccsim load first)")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        legs: dict[str, list[float]] = {}
        for service, ms in conn.execute("SELECT service, service_ms FROM legs"):
            legs.setdefault(str(service), []).append(float(ms))
        e2e = [float(v) for (v,) in conn.execute(
            "SELECT latency_ms FROM payments WHERE reason NOT IN ('timeout', 'connect_error', 'http_error')")]
    except sqlite3.DatabaseError as exc:
        raise CalibrationError(f"{db_path}: not a ccsim results database ({exc})") from None
    finally:
        conn.close()
    return {k: np.asarray(v, dtype=float) for k, v in legs.items()}, np.asarray(e2e, dtype=float)


def calibrate_run(run_dir: Path) -> tuple[list[Fit], str, list[str]]:
    """The fits, the method (``per-leg`` or ``end-to-end``) and notes on what was left out."""
    legs, e2e = _read_samples(run_dir / "results.db")
    notes: list[str] = []
    fits: list[Fit] = []
    for name, values in sorted(legs.items()):
        if name not in SERVICE_NAMES:
            notes.append(f"leg {name!r} is not a scenario service ({', '.join(SERVICE_NAMES)}): not fitted")
            continue
        try:
            fits.append(fit_lognormal(name, values))
        except CalibrationError as exc:
            notes.append(str(exc))
    if fits:
        return fits, "per-leg", notes
    notes.append("the services reported no per-leg times: the end-to-end latency is fitted onto the "
                 f"{END_TO_END_LEG} leg and the other legs take no time")
    return [fit_lognormal(END_TO_END_LEG, e2e)], "end-to-end", notes


def overlay_mapping(fits: list[Fit], method: str) -> dict[str, Any]:
    """The scenario fragment: ``services.<name>.service_time`` for every fit (zero-time legs too)."""
    services: dict[str, Any] = {f.service: {"service_time": f.service_time()} for f in fits}
    if method == "end-to-end":
        for name in SERVICE_NAMES:
            services.setdefault(name, {"service_time": {"dist": "constant", "mean_ms": 0.0}})
            services[name].setdefault("return_service_time", None)
    return {"services": services}


def overlay_set_args(mapping: dict[str, Any]) -> list[str]:
    """The overlay as ``--set`` values without whitespace, so ``$(cat overlay.set)`` passes them.

    Each distribution is first emptied (``service_time={}``) and then filled field by field, so no
    field of the scenario's own distribution (``min_ms`` of a uniform) is left behind.
    """
    out = []
    for name, spec in mapping["services"].items():
        for key, value in spec.items():
            path = f"services.{name}.{key}"
            if isinstance(value, dict):
                out.append(f"{path}={{}}")
                out += [f"{path}.{field}={_scalar(v)}" for field, v in value.items()]
            else:
                out.append(f"{path}={_scalar(value)}")
    return out


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if "e" not in repr(value) else f"{value:.12f}"
    return str(value)


def write_overlay(run_dir: Path, out: Path | None = None) -> tuple[Path, list[Fit], str, list[str]]:
    """Write ``overlay.yaml`` (and ``overlay.set`` beside it); the path, fits, method and notes."""
    fits, method, notes = calibrate_run(run_dir)
    mapping = overlay_mapping(fits, method)
    out = out or run_dir / "overlay.yaml"
    header = [f"# ccsim calibrate {run_dir}: {method} fit, lognormal by maximum likelihood"]
    header += [f"#   {f.service}: n={f.n}, mean {f.mean_ms:.3f} ms, cv {f.cv:.3f} "
               f"(samples: p50 {f.p50_ms:.3f} ms, p99 {f.p99_ms:.3f} ms)" for f in fits]
    header += [f"# note: {n}" for n in notes]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    out.with_suffix(".set").write_text(
        "".join(f"--set={arg}\n" for arg in overlay_set_args(mapping)), encoding="utf-8")
    return out, fits, method, notes
