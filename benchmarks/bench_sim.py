"""Simulator speed: ccsim's full model against the bare SimPy pipeline, measured in the same run.

design.md §5: payments per wall second of ``ccsim run`` on ``cryptocity_day.yaml`` scaled to a
million payments must reach the rate of a bare SimPy 4-stage M/M/c pipeline with one process per
customer (:mod:`benchmarks.simpy_pipeline`), measured in the same run on the same machine.

The cases are interleaved so that a machine whose speed drifts (other work on shared cores)
drifts for both: baseline, ccsim small, baseline, ccsim large, baseline, … Each ccsim case runs in
a fresh subprocess (``python -m benchmarks.bench_sim --child N``) that goes through
:func:`sim.runner.simulate`, the code behind ``ccsim run``: world, simulation, integrity checks,
results database; its peak RSS is read from the kernel when the parent reaps it (``os.wait4``).

Memory: ``ccsim run`` keeps bounded books (:mod:`services.bounded_books`), so a run's memory should
follow what is in flight and the size of the city, not the number of payments done. Each case
reports its peak RSS (median of its runs), the RSS once the world is built (the city: cards, wallets,
lots, accounts), and the growth from there to the peak per payment; the table ends with the largest
case's peak over the smallest's.

"Scaled" keeps the day's shape: the arrival rate, the cardholders and the merchants are all
multiplied by the same factor, so each card still pays about three times a day and meets the same
limits; only the city is bigger.

    python -m benchmarks sim [--quick] [--runs 3] [--large-runs 1]

Results: a table on stdout and ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.simpy_pipeline import run_pipeline
from sim.runner import simulate
from sim.scenario_load import load_scenario
from sim.world import World

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "cryptocity_day.yaml"
RESULTS = Path(__file__).with_name("results") / "latest.json"
FULL_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (20_000, 100_000)
BASELINE_CUSTOMERS = 200_000
QUICK_BASELINE_CUSTOMERS = 50_000


def scale_overrides(payments: int) -> list[str]:
    """``--set`` overrides that make ``cryptocity_day`` about ``payments`` payments long."""
    scenario, _ = load_scenario(SCENARIO)
    arr = scenario.arrivals
    hours = int(scenario.duration_s // 3600)
    profile = arr.hourly_profile
    start = int(arr.start_hour)
    expected = arr.rate_per_s * arr.rate_scale * 3600.0 * sum(profile[(start + h) % 24] for h in range(hours))
    k = payments / expected
    pop = scenario.population
    return [
        f"arrivals.rate_scale={arr.rate_scale * k:.6f}",
        f"population.cardholders.count={max(1, round(pop.cardholders.count * k))}",
        f"population.merchants.count={max(1, round(pop.merchants.count * k))}",
        # The tenge put up front scales with the volume it funds (otherwise the exchange runs dry
        # and most payments are cheap declines: a different workload).
        f"exchange.kzt_cash_kzt='{scenario.exchange.kzt_cash_kzt * Decimal(repr(k)):.2f}'",
        f"issuer.float_kzt='{scenario.issuer.float_kzt * Decimal(repr(k)):.2f}'",
        f"network.acquirer_float_kzt='{scenario.network.acquirer_float_kzt * Decimal(repr(k)):.2f}'",
    ]


# -- the child: one ccsim run ------------------------------------------------------------------
def child(payments: int, seed: int) -> dict[str, Any]:
    """Run the scaled scenario through ``simulate`` (as ``ccsim run`` does) and report."""
    overrides = scale_overrides(payments)
    scenario, text = load_scenario(SCENARIO, overrides)
    worlds: list[World] = []
    built: list[float] = []
    built_rss: list[float] = []
    original_init = World.__init__

    def init(self: World, *args: Any, **kwargs: Any) -> None:  # records the world, its build time and RSS
        t0 = time.perf_counter()
        original_init(self, *args, **kwargs)
        built.append(time.perf_counter() - t0)
        built_rss.append(_rss_mb())
        worlds.append(self)

    World.__init__ = init  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="ccsim-bench-") as tmp:
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = simulate(scenario, text, seed, Path(tmp) / "run")
        total_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        db_mb = (Path(tmp) / "run" / "results.db").stat().st_size / 1e6
    env = worlds[0].env
    # Events processed: every event ever scheduled (SimPy numbers them) minus those still queued.
    events = next(env._eid) - len(env._queue)  # SimPy keeps no public counter
    s = result.summary
    return {
        "payments": s["payments"]["attempted"], "wall_s": s["wall_s"], "total_s": total_s, "cpu_s": cpu_s,
        "build_s": built[0], "built_rss_mb": built_rss[0], "events": events, "exit_code": result.exit_code,
        "invariants_ok": s["ledger"]["invariants_ok"], "approval_rate": s["payments"]["approval_rate"],
        "results_db_mb": db_mb, "overrides": overrides,
    }


def _rss_mb() -> float:
    """This process's resident set now, in MB (Linux: /proc; elsewhere the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource  # noqa: PLC0415 — only where /proc is missing

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(payments: int, seed: int) -> dict[str, Any]:
    """One ccsim case in a fresh interpreter; its peak RSS from the kernel's accounting."""
    cmd = [sys.executable, "-m", "benchmarks.bench_sim", "--child", str(payments), "--seed", str(seed)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"ccsim benchmark child for {payments} payments failed ({proc.returncode})")
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    row["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # Linux reports KiB
    row["growth_kb_per_payment"] = (row["peak_rss_mb"] - row["built_rss_mb"]) * 1024.0 / row["payments"]
    row["payments_per_s"] = row["payments"] / row["wall_s"]
    row["events_per_s"] = row["events"] / row["wall_s"]
    row["payments_per_cpu_s"] = row["payments"] / row["cpu_s"]
    return row


# -- the parent: interleaved cases -------------------------------------------------------------
def baseline(customers: int, seed: int) -> dict[str, Any]:
    cpu0 = time.process_time()
    wall_s, events = run_pipeline(customers, seed)
    cpu_s = time.process_time() - cpu0  # includes drawing the variates (milliseconds), as ccsim's includes its build
    return {"customers": customers, "wall_s": wall_s, "cpu_s": cpu_s, "events": events,
            "customers_per_s": customers / wall_s, "events_per_s": events / wall_s,
            "customers_per_cpu_s": customers / cpu_s}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def measure(sizes: tuple[int, ...], runs: int, large_runs: int, customers: int) -> dict[str, Any]:
    plan: list[tuple[str, int]] = [("baseline", customers)]
    for r in range(max(runs, large_runs)):
        for size in sizes:
            if r < (large_runs if size == sizes[-1] else runs):
                plan += [(f"ccsim {size:,}", size), ("baseline", customers)]
    while sum(1 for name, _ in plan if name == "baseline") < 3:
        plan.append(("baseline", customers))
    base_rows: list[dict[str, Any]] = []
    ccsim_rows: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for i, (name, n) in enumerate(plan):
        t0 = time.perf_counter()
        if name == "baseline":
            row = baseline(n, seed=1 + len(base_rows))
            base_rows.append(row)
            what = f"{row['customers_per_s']:,.0f} customers/s"
        else:
            row = run_child(n, seed=1)
            ccsim_rows[n].append(row)
            what = f"{row['payments_per_s']:,.0f} payments/s, peak RSS {row['peak_rss_mb']:,.0f} MB"
        print(f"[{i + 1}/{len(plan)}] {name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
    base_rate = statistics.median(r["customers_per_s"] for r in base_rows)
    cases = [{
        "case": "bare SimPy pipeline (4 stages, M/M/4, a process per customer)",
        "runs": len(base_rows), "customers": customers,
        "median_per_s": base_rate,
        "median_events_per_s": statistics.median(r["events_per_s"] for r in base_rows),
        "runs_per_s": [round(r["customers_per_s"]) for r in base_rows], "ratio": 1.0,
        "median_per_cpu_s": statistics.median(r["customers_per_cpu_s"] for r in base_rows), "ratio_cpu": 1.0,
    }]
    base_cpu_rate = cases[0]["median_per_cpu_s"]
    for size, rows in ccsim_rows.items():
        rate = statistics.median(r["payments_per_s"] for r in rows)
        cases.append({
            "case": f"ccsim run cryptocity_day scaled to {size:,} payments",
            "runs": len(rows), "payments": rows[0]["payments"],
            "median_per_s": rate,
            "median_events_per_s": statistics.median(r["events_per_s"] for r in rows),
            "runs_per_s": [round(r["payments_per_s"]) for r in rows],
            "ratio": rate / base_rate,
            "median_per_cpu_s": statistics.median(r["payments_per_cpu_s"] for r in rows),
            "ratio_cpu": statistics.median(r["payments_per_cpu_s"] for r in rows) / base_cpu_rate,
            "median_wall_s": statistics.median(r["wall_s"] for r in rows),
            "median_build_s": statistics.median(r["build_s"] for r in rows),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
            "peak_rss_mb_runs": [round(r["peak_rss_mb"]) for r in rows],
            "built_rss_mb": statistics.median(r["built_rss_mb"] for r in rows),
            "growth_kb_per_payment": statistics.median(r["growth_kb_per_payment"] for r in rows),
            "results_db_mb": rows[0]["results_db_mb"],
            "exit_codes": [r["exit_code"] for r in rows],
            "invariants_ok": all(r["invariants_ok"] for r in rows),
            "approval_rate": rows[0]["approval_rate"],
            "overrides": rows[0]["overrides"],
        })
    small, large = cases[1], cases[-1]
    memory = {"peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
              "payments_ratio": large["payments"] / small["payments"],
              "built_rss_ratio": large["built_rss_mb"] / small["built_rss_mb"]}
    return {"benchmark": "sim", "machine": _machine(), "cases": cases, "memory": memory}


def print_table(report: dict[str, Any]) -> None:
    print(f"{'case':<64} {'runs':>4} {'per s':>9} {'ratio':>6} {'per CPU s':>9} {'ratio':>6} "
          f"{'events/s':>9} {'peak RSS':>9} {'built':>8} {'KB/pay':>6}")
    for c in report["cases"]:
        rss = f"{c['peak_rss_mb']:,.0f} MB" if "peak_rss_mb" in c else "-"
        built = f"{c['built_rss_mb']:,.0f} MB" if "built_rss_mb" in c else "-"
        growth = f"{c['growth_kb_per_payment']:.2f}" if "growth_kb_per_payment" in c else "-"
        print(f"{c['case']:<64} {c['runs']:>4} {c['median_per_s']:>9,.0f} {c['ratio']:>6.3f} "
              f"{c['median_per_cpu_s']:>9,.0f} {c['ratio_cpu']:>6.3f} {c['median_events_per_s']:>9,.0f} {rss:>9} "
              f"{built:>8} {growth:>6}")
    m = report["memory"]
    print(f"peak RSS, largest case / smallest: {m['peak_rss_ratio']:.2f} for {m['payments_ratio']:.1f}x the "
          f"payments (after building the world: {m['built_rss_ratio']:.2f})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k and 100k payments instead of 100k and 1M")
    parser.add_argument("--runs", type=int, default=3, help="runs of the smaller ccsim case (baseline: one more)")
    parser.add_argument("--large-runs", type=int, default=1, help="runs of the largest ccsim case")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)  # `make bench` hands every benchmark the same options
    if args.child is not None:
        print(json.dumps(child(args.child, args.seed)))
        return
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    customers = QUICK_BASELINE_CUSTOMERS if args.quick else BASELINE_CUSTOMERS
    t0 = time.perf_counter()
    report = measure(sizes, args.runs, args.large_runs, customers)
    report.update({"quick": args.quick, "wall_s": round(time.perf_counter() - t0, 1)})
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
