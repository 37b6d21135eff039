"""Live throughput: authorizations per second and p50/p99 through ``ccsim load`` against ``ccsim serve``.

Three targets, measured in the same run by the same open-loop generator (``ccsim load``, its own
process) at the same offered rate:

- ``baseline``: a trivial FastAPI endpoint (``POST /v1/payments`` answering a constant) under one
  uvicorn worker — what the HTTP stack alone costs on this machine;
- ``sqlite``: ``ccsim serve`` with a SQLite file per party (network → issuer → exchange/bank over HTTP);
- ``postgresql``: ``ccsim serve --database-url`` (skipped, with the reason, when unreachable).

Each offered rate is held for ``--duration-s``; latencies count from each payment's scheduled send
time, so a saturated target shows up as growing latency and late sends, not as a lower offered rate.

    python -m benchmarks live [--duration-s 20] [--rates 20,60] [--pg-url URL] [--quick]

Writes ``benchmarks/results/live.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

RESULTS = Path(__file__).with_name("results") / "live.json"
ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "jit.yaml"
POPULATION = ["population.cardholders.count=2000", "population.merchants.count=200"]
PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def trivial_app() -> FastAPI:
    """The baseline: the same route and body shape as the network's, doing nothing."""
    app = FastAPI()

    @app.post("/v1/payments")
    def pay(body: dict[str, Any]) -> dict[str, Any]:
        return {"id": body.get("id", ""), "code": "00", "approved": True, "approval_code": "000000",
                "stand_in": False, "merchant_id": body.get("merchant_id", ""), "acquirer_id": "acq-1"}

    return app


def _free_port_block(size: int) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + size < 65_000 and all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free block of ports")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the target exited with {proc.returncode} before it answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy after {timeout_s:g} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # ccsim serve stops its children on Ctrl-C
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _load(target: str, rate_per_s: float, duration_s: float, out: Path, credentials: Path | None = None,
          ) -> dict[str, Any]:
    args = [sys.executable, "-m", "sim.cli", "load", str(SCENARIO), "--target", target, "--duration-s",
            str(duration_s), "--out", str(out), "--no-report", "--max-in-flight", "256", "--timeout-s", "30",
            *(["--credentials", str(credentials)] if credentials else []),
            *_sets([*POPULATION, f"arrivals.rate_per_s={rate_per_s}",
                    "arrivals.hourly_profile=[" + ",".join(["1"] * 24) + "]"])]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise RuntimeError(f"ccsim load failed ({done.returncode}): {done.stderr[-2000:]}")
    s = json.loads(summary_path.read_text())
    lat, load = s["auth_latency_ms"], s["load"]
    return {
        "offered_per_s": round(load["offered_per_s"], 2), "payments": s["payments"]["attempted"],
        "answered_per_s": round(load["answered"] / duration_s, 2),
        "approved_per_s": round(s["throughput"]["approved_per_s_mean"], 2),
        "approval_rate": round(s["payments"]["approval_rate"], 4),
        "p50_ms": round(lat["p50"], 2), "p99_ms": round(lat["p99"], 2), "max_ms": round(lat["max"], 2),
        "late_sends": load["late_sends"], "send_lag_p99_ms": round(load["send_lag_ms"]["p99"], 2),
        "errors": load["errors"], "load_exit_code": done.returncode,
    }


def _baseline(rates: list[float], duration_s: float, tmp: Path) -> dict[str, Any]:
    port = _free_port_block(1)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bench_live:trivial_app",
                             "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level",
                             "warning"], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/docs", proc, 30)
        return {str(r): _load(f"http://127.0.0.1:{port}", r, duration_s, tmp / f"baseline-{r}") for r in rates}
    finally:
        _stop(proc)


def _serve(name: str, rates: list[float], duration_s: float, tmp: Path, database_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in rates:  # a fresh chain per rate: every rate starts from the same books
        port = _free_port_block(5)
        data = tmp / f"{name}-{rate}"
        args = [sys.executable, "-m", "sim.cli", "serve", "--scenario", str(SCENARIO), "--port", str(port),
                "--data-dir", str(data), "--reset", *_sets(POPULATION)]
        if database_url:
            args += ["--database-url", database_url]
        proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while not (data / "ports.json").is_file():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ccsim serve ({name}) did not start; see {data}/logs")
                time.sleep(0.2)
            out[str(rate)] = _load(f"http://127.0.0.1:{port + 1}", rate, duration_s, tmp / f"load-{name}-{rate}",
                                   credentials=data / "credentials.json")  # serve's keys: the POS signs
            inv = httpx.get(f"http://127.0.0.1:{port}/v1/ledger/invariants", timeout=60).json()
            out[str(rate)]["invariants_ok"] = bool(inv.get("ok"))
        finally:
            _stop(proc)
    return out


def _pg_reason(url: str) -> str | None:
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect is the reason to skip, reported as such
        return f"PostgreSQL at {url} unreachable: {type(exc).__name__}"
    return None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live", description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rates", default="20,60", help="offered payments per second, comma separated")
    parser.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT))
    parser.add_argument("--quick", action="store_true", help="10 s at one rate")
    args = parser.parse_args(argv)
    rates = [20.0] if args.quick else [float(r) for r in args.rates.split(",")]
    duration_s = 10.0 if args.quick else args.duration_s
    results: dict[str, Any] = {
        "benchmark": "live", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "duration_s": duration_s, "scenario": SCENARIO.name, "population": POPULATION,
        "generator": "ccsim load (aiohttp, open loop, own process)", "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        results["targets"]["baseline"] = _baseline(rates, duration_s, tmp)
        print("baseline", json.dumps(results["targets"]["baseline"]))
        results["targets"]["sqlite"] = _serve("sqlite", rates, duration_s, tmp, "")
        print("sqlite", json.dumps(results["targets"]["sqlite"]))
        reason = _pg_reason(args.pg_url)
        if reason is None:
            results["targets"]["postgresql"] = _serve("postgresql", rates, duration_s, tmp, args.pg_url)
            print("postgresql", json.dumps(results["targets"]["postgresql"]))
        else:
            results["targets"]["postgresql"] = {"skipped": reason}
            print("postgresql skipped:", reason)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(RESULTS)
