"""``ccsim calibrate LIVE_RUN_DIR``: fit each service's service time from a live run; write an overlay.

A live run (``ccsim load``) records, per payment and leg, the time that leg took (``legs``): each
party service's **own** time, read from the ``Server-Timing`` header of the payment's answer with
the time of the services it waited on subtracted (:mod:`services.api.timing`), and the
``acquirer`` leg, the POS's wait beyond the network service's own time (:mod:`sim.live.load`).

Live legs and simulated stages (``ServicesSpec``): ``acquirer``, ``network``, ``issuer``,
``exchange`` and ``bank`` are fitted each from its own leg. The simulation's ``custody`` stage is
part of the exchange's sale live (one service moves the crypto and sells it), so when the exchange
is fitted, custody becomes a zero-time constant. The network and the acquirer are measured there
and back in one leg, so their ``return_service_time`` is set to none. The simulated issuer serves a
payment in two calls when it sells crypto (screening, then finalizing after the sale) and in one
otherwise; its live leg is the sum over the payment, so the issuer's per-call time is fitted by the
moments of a sum of ``k`` independent calls (``mean = Σ S / Σ k``, ``variance = Σ (S − k·mean)² /
Σ k``) whenever some payment had a sale; every other fit is a lognormal by maximum likelihood — for
a lognormal the MLE is closed form: ``mu`` and ``sigma`` are the mean and the (1/n) standard
deviation of ``ln x`` — reported the way scenarios write it, as the mean and the coefficient of
variation (``mean = exp(mu + sigma²/2)``, ``cv = sqrt(exp(sigma²) - 1)``).

Payments the network answered by stand-in are left out: the network's leg then holds its wait for
the issuer's deadline, not its work. So are payments that got no answer.

When the services reported no per-leg times, the end-to-end latency is fitted instead and put on
the ``acquirer`` leg, the other legs becoming zero-time constants: the simulated chain then
reproduces the measured end-to-end distribution, not where the time went. The overlay says which
of the two it is.

The overlay is YAML in the scenario's own shape (``services.<name>.service_time``) and the same
fields as ``--set`` arguments (``overlay.set``), so ``ccsim run SCENARIO $(cat overlay.set)`` simulates the
calibrated chain and ``ccsim compare SIM_RUN LIVE_RUN`` shows simulated and measured side by side,
per stage too.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from services.errors import CcsimError
from sim.scenario import SERVICE_NAMES

__all__ = ["MIN_SAMPLES", "CalibrationError", "Fit", "calibrate_run", "fit_lognormal", "fit_per_call",
           "overlay_mapping", "overlay_set_args", "sim_calls"]

MIN_SAMPLES: Final = 30  # fewer samples than this give no fit: a tail cannot be read from them
END_TO_END_LEG: Final = "acquirer"
INSIDE_EXCHANGE: Final = "custody"  # a simulated stage that is part of the exchange's sale live
ROUND_TRIP_LEGS: Final = ("acquirer", "network")  # measured there and back in one live leg
UNANSWERED: Final = ("timeout", "connect_error", "http_error")


class CalibrationError(CcsimError):
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
    p50_ms: float  # of the samples (per payment), for the docs and the check against the fit
    p99_ms: float
    method: str = "lognormal MLE"  # or "moments per call" (fit_per_call)
    calls: int = 0  # simulated calls the samples stand for (n when one per payment)

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
               float(np.percentile(x, 99.0)), calls=int(x.size))


def fit_per_call(service: str, samples_ms: np.ndarray, calls: np.ndarray) -> Fit:
    """The per-call time of a service that a payment calls ``calls[i]`` times, from each payment's
    total ``samples_ms[i]``, by the moments of a sum of independent calls: ``E[S] = k·m`` and
    ``Var[S] = k·v`` give ``m = Σ S / Σ k`` and ``v = Σ (S − k·m)² / Σ k``; reported as a lognormal
    of that mean and cv. With one call per payment everywhere this is :func:`fit_lognormal`."""
    x = np.asarray(samples_ms, dtype=float)
    k = np.asarray(calls, dtype=float)
    keep = np.isfinite(x) & (x > 0) & (k >= 1)
    x, k = x[keep], k[keep]
    if np.all(k == 1):
        return fit_lognormal(service, x)
    if x.size < MIN_SAMPLES:
        raise CalibrationError(f"{service}: {x.size} positive samples, at least {MIN_SAMPLES} are needed")
    mean_ms = float(x.sum() / k.sum())
    variance = float(((x - k * mean_ms) ** 2).sum() / k.sum())
    cv = math.sqrt(variance) / mean_ms
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean_ms) - sigma * sigma / 2.0
    return Fit(service, int(x.size), mean_ms, cv, mu, sigma, float(np.percentile(x, 50.0)),
               float(np.percentile(x, 99.0)), method="moments per call", calls=int(k.sum()))


def sim_calls(service: str, legs_of_payment: Mapping[str, float] | Iterable[str]) -> int:
    """How many times the simulated chain calls ``service`` for a payment that had these live legs:
    the issuer twice when the payment sold crypto (an exchange leg), every other stage once."""
    return 2 if service == "issuer" and "exchange" in legs_of_payment else 1


def _read_samples(db_path: Path) -> tuple[dict[int, dict[str, float]], np.ndarray, int]:
    """Per payment its legs, the answered end-to-end latencies, and how many payments with legs
    were left out (stand-ins, unanswered) of a run's results.db."""
    if not db_path.is_file():
        raise CalibrationError(f"{db_path}: no results database (run ccsim load first)")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    unanswered = ", ".join(f"'{r}'" for r in UNANSWERED)
    try:
        per_payment: dict[int, dict[str, float]] = {}
        left_out: set[int] = set()
        for pid, service, ms, usable in conn.execute(
                "SELECT l.payment_id, l.service, l.service_ms, "
                f"p.payment_id IS NOT NULL AND NOT p.stand_in AND p.reason NOT IN ({unanswered}) "
                "FROM legs l LEFT JOIN payments p ON p.payment_id = l.payment_id"):
            if not usable:
                left_out.add(int(pid))
                continue
            legs = per_payment.setdefault(int(pid), {})
            legs[str(service)] = legs.get(str(service), 0.0) + float(ms)
        e2e = [float(v) for (v,) in conn.execute(
            f"SELECT latency_ms FROM payments WHERE reason NOT IN ({unanswered})")]
    except sqlite3.DatabaseError as exc:
        raise CalibrationError(f"{db_path}: not a ccsim results database ({exc})") from None
    finally:
        conn.close()
    return per_payment, np.asarray(e2e, dtype=float), len(left_out)


def calibrate_run(run_dir: Path) -> tuple[list[Fit], str, list[str]]:
    """The fits, the method (``per-leg`` or ``end-to-end``) and notes on what was left out."""
    per_payment, e2e, left_out = _read_samples(run_dir / "results.db")
    notes: list[str] = []
    fits: list[Fit] = []
    names = sorted({name for legs in per_payment.values() for name in legs})
    for name in names:
        if name not in SERVICE_NAMES:
            notes.append(f"leg {name!r} is not a scenario service ({', '.join(SERVICE_NAMES)}): not fitted")
            continue
        rows = [(legs[name], sim_calls(name, legs)) for legs in per_payment.values() if name in legs]
        samples = np.asarray([ms for ms, _ in rows], dtype=float)
        calls = np.asarray([k for _, k in rows], dtype=float)
        try:
            fits.append(fit_per_call(name, samples, calls))
        except CalibrationError as exc:
            notes.append(str(exc))
    if left_out:
        notes.append(f"{left_out} payments answered by stand-in or not at all are left out "
                     "(their network leg holds the wait for the issuer's deadline)")
    if fits:
        fitted = {f.service for f in fits}
        if "exchange" in fitted:
            notes.append(f"{INSIDE_EXCHANGE} is part of the exchange's sale live: set to take no time")
        for f in fits:
            if f.calls != f.n:
                notes.append(f"{f.service}: {f.calls} simulated calls in {f.n} payments (two when a payment "
                             "sells crypto): the per-call time is fitted by moments")
        return fits, "per-leg", notes
    notes.append("the services reported no per-leg times: the end-to-end latency is fitted onto the "
                 f"{END_TO_END_LEG} leg and the other legs take no time")
    return [fit_lognormal(END_TO_END_LEG, e2e)], "end-to-end", notes


def overlay_mapping(fits: list[Fit], method: str) -> dict[str, Any]:
    """The scenario fragment: ``services.<name>.service_time`` for every fit, and what the live
    measurement implies for the stages it did not fit (see the module docstring)."""
    services: dict[str, Any] = {f.service: {"service_time": f.service_time()} for f in fits}
    if method == "end-to-end":
        for name in SERVICE_NAMES:
            services.setdefault(name, {"service_time": {"dist": "constant", "mean_ms": 0.0}})
            services[name].setdefault("return_service_time", None)
        return {"services": services}
    if "exchange" in services:
        services.setdefault(INSIDE_EXCHANGE, {"service_time": {"dist": "constant", "mean_ms": 0.0}})
    for name in ROUND_TRIP_LEGS:
        if name in services:
            services[name]["return_service_time"] = None
    return {"services": {name: services[name] for name in SERVICE_NAMES if name in services}}


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
    header = [f"# ccsim calibrate {run_dir}: {method} fit"]
    header += [f"#   {f.service}: {f.method}, n={f.n}, mean {f.mean_ms:.3f} ms, cv {f.cv:.3f} "
               f"(samples per payment: p50 {f.p50_ms:.3f} ms, p99 {f.p99_ms:.3f} ms)" for f in fits]
    header += [f"# note: {n}" for n in notes]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    out.with_suffix(".set").write_text(
        "".join(f"--set={arg}\n" for arg in overlay_set_args(mapping)), encoding="utf-8")
    return out, fits, method, notes
