"""Live throughput: payments per second, latency and CPU per payment of ``ccsim serve`` under ``ccsim load``.

Targets, measured in the same run by the same open-loop generator (``ccsim load``, its own
process) at the same offered rates:

- ``baseline``: a trivial FastAPI endpoint (``POST /v1/payments`` answering a constant) under one
  uvicorn worker — what the HTTP stack alone costs on this machine;
- ``sqlite``: ``ccsim serve`` with a SQLite file per party (network → issuer → exchange/bank over HTTP);
- ``postgresql``: ``ccsim serve --database-url`` (skipped, with the reason, when unreachable).

Per target and offered rate it records answered/s, p50/p99/max, stand-ins, declines by code, late
sends, the CPU each party process spent per answered payment (``/proc/<pid>/stat``; on PostgreSQL
also the server backends serving the chain), and the host's load average. CPU per payment is the
figure to compare on a shared machine: other work stretches latency far more than it changes
the CPU one payment costs.

``--against DIR`` measures a second checkout (another commit of ccsim, e.g. ``git archive``d to a
directory) in the same run, interleaved rate by rate with this one, so a change is judged
against a baseline that saw the same machine. ``--repeat N`` runs every case N times; the table
gives medians. ``--sweep`` raises the offered rate until the chain stops keeping up (an answer
missing, a stand-in, p99 over the deadline, or answered/s below 95 % of offered) and reports the
last rate it sustained.

    python -m benchmarks live [--quick] [--targets sqlite] [--rates 20,60] [--duration-s 20]
                              [--repeat 3] [--sweep] [--against DIR] [--pg-url URL]

Writes ``benchmarks/results/live.json`` (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
DEADLINE_MS = 3000.0  # jit.yaml's network deadline (the scenario default)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def trivial_app() -> FastAPI:
    """The baseline: the same route and body shape as the network's, doing nothing."""
    app = FastAPI()

    @app.post("/v1/payments")
    def pay(body: dict[str, Any]) -> dict[str, Any]:
        return {"id": body.get("id", ""), "code": "00", "approved": True, "approval_code": "000000",
                "stand_in": False, "merchant_id": body.get("merchant_id", ""), "acquirer_id": "acq-1"}

    return app


# -- processes --------------------------------------------------------------------------------
def _free_port_block(size: int) -> int:
    """A block of free ports below the kernel's range for outgoing connections: a port from that
    range, free when chosen, is often taken before the service binds it by one of the chain's own
    client connections (on PostgreSQL each party opens dozens), and the chain fails to start."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(max(low - 12_000, 1_024), low - size)
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free block of ports")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


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


def _env(source: Path) -> dict[str, str]:
    """The environment that runs ``source``'s ccsim (its packages first on the path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# -- CPU ----------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _pg_backend_pids(pg_url: str, database: str) -> list[int]:
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                                {"d": database}).all()
    finally:
        engine.dispose()
    return [int(r[0]) for r in rows]


@dataclass
class Chain:
    """A running target: where ``ccsim load`` sends, whose CPU counts, the keys the POS signs with."""

    target: str
    pids: dict[str, int]
    credentials: Path | None = None
    pg_url: str = ""
    pg_database: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        out = {name: cpu_s(pid) for name, pid in self.pids.items()}
        if self.pg_url:
            out["postgresql"] = sum(cpu_s(p) for p in _pg_backend_pids(self.pg_url, self.pg_database))
        return out


@contextmanager
def baseline_chain(source: Path) -> Iterator[Chain]:
    port = _free_port_block(1)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bench_live:trivial_app",
                             "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level",
                             "warning"], cwd=ROOT, start_new_session=True, env=_env(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/docs", proc, 30)
        yield Chain(f"http://127.0.0.1:{port}", {"app": proc.pid})
    finally:
        _stop(proc)


class StartError(RuntimeError):
    """A target did not start (on a loaded machine: a port taken meanwhile, a slow start)."""


@contextmanager
def served_chain(source: Path, data: Path, database_url: str) -> Iterator[Chain]:
    port = _free_port_block(5)
    args = [sys.executable, "-m", "sim.cli", "serve", "--scenario", str(SCENARIO), "--port", str(port),
            "--data-dir", str(data), "--reset", *_sets(POPULATION)]
    if database_url:
        args += ["--database-url", database_url]
    proc = subprocess.Popen(args, cwd=source, start_new_session=True, env=_env(source), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (data / "ports.json").is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                logs = "".join(f"\n-- {p.name}: {p.read_text(errors='replace')[-1500:]}"
                               for p in sorted((data / "logs").glob("*.log")))
                raise StartError(f"ccsim serve did not start (exit {proc.poll()}){logs}")
            time.sleep(0.2)
        ports = json.loads((data / "ports.json").read_text())
        pids = {name: int(pid) for name, pid in ports["pids"].items() if name != "gateway"}
        chain = Chain(f"http://127.0.0.1:{port + 1}", pids, credentials=data / "credentials.json")
        if database_url:
            from sqlalchemy.engine import make_url  # noqa: PLC0415

            url = make_url(database_url)
            chain.pg_url, chain.pg_database = database_url, str(url.database)
        chain.extra["ledger_url"] = f"http://127.0.0.1:{port}"
        yield chain
    finally:
        _stop(proc)


# -- one measurement ------------------------------------------------------------------------
def _load(chain: Chain, rate_per_s: float, duration_s: float, out: Path, source: Path) -> dict[str, Any]:
    args = [sys.executable, "-m", "sim.cli", "load", str(SCENARIO), "--target", chain.target, "--duration-s",
            str(duration_s), "--out", str(out), "--no-report", "--max-in-flight", "512", "--timeout-s", "30",
            *(["--credentials", str(chain.credentials)] if chain.credentials else []),
            *_sets([*POPULATION, f"arrivals.rate_per_s={rate_per_s}",
                    "arrivals.hourly_profile=[" + ",".join(["1"] * 24) + "]"])]
    load_before, cpu_before, t0 = load_average(), chain.cpu(), time.monotonic()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, env=_env(ROOT))
    cpu_after, wall_s = chain.cpu(), time.monotonic() - t0
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise RuntimeError(f"ccsim load failed ({done.returncode}): {done.stderr[-2000:]}")
    s = json.loads(summary_path.read_text())
    lat, load, pay = s["auth_latency_ms"], s["load"], s["payments"]
    refused = int(load["errors"].get("http_503", 0)) + int(load["errors"].get("http_429", 0))
    answered = max(int(load["answered"]) - refused, 1)  # payments decided (a refusal costs next to nothing)
    cpu_ms = {name: round(1000 * (cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0)) / answered, 2)
              for name in cpu_after}
    parties = [n for n in cpu_ms if n != "postgresql"]
    return {
        "offered_per_s": round(load["offered_per_s"], 2), "payments": pay["attempted"],
        "answered": load["answered"], "answered_per_s": round(load["answered"] / duration_s, 2),
        "decided_per_s": round((int(load["answered"]) - refused) / duration_s, 2),
        "approved_per_s": round(s["throughput"]["approved_per_s_mean"], 2),
        "approval_rate": round(pay["approval_rate"], 4), "declined": pay["declined"],
        "stand_ins": pay["stand_in"],
        "p50_ms": round(lat["p50"], 2), "p99_ms": round(lat["p99"], 2), "max_ms": round(lat["max"], 2),
        "late_sends": load["late_sends"], "send_lag_p99_ms": round(load["send_lag_ms"]["p99"], 2),
        "errors": load["errors"], "load_exit_code": done.returncode,
        "refused": refused,
        "cpu_ms_per_payment": cpu_ms, "party_cpu_ms_per_payment": round(sum(cpu_ms[n] for n in parties), 2),
        "load_average_before": load_before, "load_average_after": load_average(), "wall_s": round(wall_s, 1),
    }


def _invariants(chain: Chain) -> bool | None:
    url = chain.extra.get("ledger_url")
    if not url:
        return None
    try:
        return bool(httpx.get(f"{url}/v1/ledger/invariants", timeout=60).json().get("ok"))
    except (httpx.HTTPError, ValueError):
        return False


def measure(target: str, source: Path, rate: float, duration_s: float, tmp: Path, *, pg_url: str) -> dict[str, Any]:
    """One case: a fresh chain (every rate starts from the same books), one load, its figures. A
    chain that does not start is tried again once (its logs printed)."""
    try:
        return _measure(target, source, rate, duration_s, tmp, pg_url=pg_url)
    except StartError as exc:
        print(f"retrying {target} at {rate:g}/s: {exc}", file=sys.stderr, flush=True)
        return _measure(target, source, rate, duration_s, tmp, pg_url=pg_url)


def _measure(target: str, source: Path, rate: float, duration_s: float, tmp: Path, *, pg_url: str) -> dict[str, Any]:
    tag = f"{target}-{source.name}-{rate}-{time.monotonic_ns()}"
    if target == "baseline":
        with baseline_chain(source) as chain:
            return _load(chain, rate, duration_s, tmp / f"load-{tag}", source)
    with served_chain(source, tmp / tag, pg_url if target == "postgresql" else "") as chain:
        row = _load(chain, rate, duration_s, tmp / f"load-{tag}", source)
        row["invariants_ok"] = _invariants(chain)
        return row


def sustained(row: dict[str, Any]) -> bool:
    """Kept up: every payment answered (none refused), no stand-in, p99 within the deadline, answered
    ≥ 95 % offered."""
    return (row["answered"] >= row["payments"] and not row["errors"] and row["stand_ins"] == 0
            and row["p99_ms"] <= DEADLINE_MS and row["answered_per_s"] >= 0.95 * row["offered_per_s"])


MEDIAN_KEYS = ("answered_per_s", "decided_per_s", "approved_per_s", "p50_ms", "p99_ms", "max_ms", "stand_ins",
               "late_sends", "refused", "party_cpu_ms_per_payment")


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 2) for k in MEDIAN_KEYS}
    names = sorted({n for r in runs for n in r["cpu_ms_per_payment"]})
    out["cpu_ms_per_payment"] = {n: round(statistics.median(r["cpu_ms_per_payment"].get(n, 0.0) for r in runs), 2)
                                 for n in names}
    out["sustained"] = sum(sustained(r) for r in runs) * 2 > len(runs)
    out["runs"] = runs
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


def _line(label: str, rate: float, m: dict[str, Any]) -> str:
    cpu = " ".join(f"{n}={v:g}" for n, v in m["cpu_ms_per_payment"].items())
    return (f"{label:<28} {rate:>6g}/s  answered {m['answered_per_s']:>7.2f}/s  p50 {m['p50_ms']:>8.1f}  "
            f"p99 {m['p99_ms']:>8.1f}  max {m['max_ms']:>8.1f} ms  stand-ins {m['stand_ins']:>4g}  "
            f"late {m['late_sends']:>4g}  refused {m['refused']:>5g}  "
            f"cpu/pay {m['party_cpu_ms_per_payment']:>6.2f} ms ({cpu})"
            f"{'' if m['sustained'] else '  NOT SUSTAINED'}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks live", description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--rates", default="20,60,100", help="offered payments per second, comma separated")
    parser.add_argument("--targets", default="baseline,sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the table gives medians")
    parser.add_argument("--sweep", action="store_true", help="raise the rate until the chain stops keeping up")
    parser.add_argument("--sweep-factor", type=float, default=1.25)
    parser.add_argument("--sweep-max", type=float, default=400.0)
    parser.add_argument("--against", default="", help="another checkout measured in the same run (before/after)")
    parser.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="10 s per case, SQLite at 20 and 60/s only")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s, args.rates, args.targets = 10.0, "20,60", "sqlite"
    rates = [float(r) for r in args.rates.split(",")]
    targets = [t for t in args.targets.split(",") if t]
    sources = [("this", ROOT)] + ([("against", Path(args.against).resolve())] if args.against else [])
    results: dict[str, Any] = {
        "benchmark": "live", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "duration_s": args.duration_s, "repeat": args.repeat, "scenario": SCENARIO.name, "population": POPULATION,
        "generator": "ccsim load (aiohttp, open loop, own process)",
        "sources": {label: str(path) for label, path in sources}, "targets": {},
    }
    if "postgresql" in targets and (reason := _pg_reason(args.pg_url)) is not None:
        targets.remove("postgresql")
        results["targets"]["postgresql"] = {"skipped": reason}
        print("postgresql skipped:", reason)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        for target in targets:
            here = sources if target != "baseline" else sources[:1]
            keys = {label: target if label == "this" else f"{target}@{label}" for label, _ in here}
            for key in keys.values():
                results["targets"][key] = {}
            going = {label for label, _ in here}
            for rate in _rates(rates, args):
                runs: dict[str, list[dict[str, Any]]] = {label: [] for label in going}
                for _ in range(args.repeat):  # interleaved: this, against, this, against, ...
                    for label, source in here:
                        if label in going:
                            runs[label].append(measure(target, source, rate, args.duration_s, tmp, pg_url=args.pg_url))
                for label, got in runs.items():
                    results["targets"][keys[label]][str(rate)] = m = median_row(got)
                    print(_line(keys[label], rate, m), flush=True)
                    if args.sweep and not m["sustained"]:
                        going.discard(label)
                if not going:
                    break
            if args.sweep:
                for key in keys.values():
                    kept = [float(r) for r, m in results["targets"][key].items() if m["sustained"]]
                    results["sustainable_per_s"] = {**results.get("sustainable_per_s", {}), key: max(kept, default=0.0)}
                    print(f"{key}: sustained up to {max(kept, default=0.0):g}/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(out)


def _rates(rates: list[float], args: argparse.Namespace) -> Iterator[float]:
    """The rates given; with ``--sweep``, then on from the last by ``--sweep-factor`` up to ``--sweep-max``."""
    yield from rates
    if args.sweep:
        rate = rates[-1]
        while (rate := round(rate * args.sweep_factor)) <= args.sweep_max:
            yield float(rate)
