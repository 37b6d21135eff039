"""Ledger throughput: transfers per second for each repository, against a plain-dict baseline.

All cases run the same workload in the same process: posted KZT transfers of 1 tiyn around a ring
of 100 funded wallets flagged ``debits_must_not_exceed_credits``. The baseline is what a ledger
minimally does with dicts (an id check for idempotency, a balance check, two balance updates, a
journal entry) and sets the scale for the ratios. Each case runs ``--runs`` times on fresh books;
the median is reported. Setup (opening the database, creating and funding accounts, building the
Transfer objects) is not timed.

    python -m benchmarks ledger [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.clock import FixedClock
from services.ledger import Account, AccountFlags, InMemoryLedger, Transfer, TransferResult
from services.ledger.sql import SqlLedger

WALLETS = 100
FUNDING_MINOR = 10**12
RESULTS = Path(__file__).with_name("results") / "ledger.json"


@dataclass(frozen=True)
class Case:
    name: str
    transfers: int
    batch: int
    run: Callable[[Sequence[Transfer], int], float]  # (workload, batch) -> seconds


def workload(n: int) -> list[Transfer]:
    return [Transfer(f"t{i}", f"w{i % WALLETS}", f"w{(i + 1) % WALLETS}", 1, "KZT")
            for i in range(n)]


def _accounts() -> list[Account]:
    dnec = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    return [Account("house", "KZT"), *(Account(f"w{i}", "KZT", flags=dnec) for i in range(WALLETS))]


def _funding() -> list[Transfer]:
    return [Transfer(f"fund{i}", "house", f"w{i}", FUNDING_MINOR, "KZT") for i in range(WALLETS)]


def run_dict(transfers: Sequence[Transfer], _batch: int) -> float:
    balance = {f"w{i}": FUNDING_MINOR for i in range(WALLETS)}
    seen: dict[str, Transfer] = {}
    journal: list[Transfer] = []
    start = time.perf_counter()
    for t in transfers:
        if t.id in seen or balance[t.debit_account_id] < t.amount:
            continue
        balance[t.debit_account_id] -= t.amount
        balance[t.credit_account_id] += t.amount
        seen[t.id] = t
        journal.append(t)
    elapsed = time.perf_counter() - start
    assert len(journal) == len(transfers)
    return elapsed


def _drive(ledger: InMemoryLedger | SqlLedger, transfers: Sequence[Transfer], batch: int) -> float:
    assert all(r is TransferResult.OK for r in ledger.create_transfers(_funding()))
    start = time.perf_counter()
    for i in range(0, len(transfers), batch):
        results = ledger.create_transfers(transfers[i:i + batch])
        if any(r is not TransferResult.OK for r in results):
            raise AssertionError(f"benchmark transfer refused: {set(results)}")
    return time.perf_counter() - start


def run_memory(transfers: Sequence[Transfer], batch: int) -> float:
    ledger = InMemoryLedger(clock=FixedClock())
    ledger.create_accounts(_accounts())
    return _drive(ledger, transfers, batch)


def run_sqlite(transfers: Sequence[Transfer], batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SqlLedger(f"sqlite:///{tmp}/bench.db", clock=FixedClock())
        try:
            ledger.create_accounts(_accounts())
            elapsed = _drive(ledger, transfers, batch)
            assert len(ledger) == WALLETS + len(transfers)
            return elapsed
        finally:
            ledger.close()


def cases(scale: float) -> list[Case]:
    def n(count: int) -> int:
        return max(100, int(count * scale))

    return [
        Case("dict baseline", n(300_000), 1, run_dict),
        Case("InMemoryLedger, 1 per call", n(100_000), 1, run_memory),
        Case("InMemoryLedger, batches of 1000", n(100_000), 1000, run_memory),
        Case("SqlLedger SQLite, 1 per commit", n(3_000), 1, run_sqlite),
        Case("SqlLedger SQLite, batches of 100", n(30_000), 100, run_sqlite),
        Case("SqlLedger SQLite, batches of 1000", n(60_000), 1000, run_sqlite),
    ]


def measure(case: Case, runs: int) -> list[float]:
    transfers = workload(case.transfers)
    return [case.transfers / case.run(transfers, case.batch) for _ in range(runs)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ledger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per case; the median is kept")
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke run)")
    args = parser.parse_args(argv)
    rows = []
    baseline_per_s = 0.0
    wall_start = time.perf_counter()
    for case in cases(0.1 if args.quick else 1.0):
        rates = measure(case, args.runs)
        median = statistics.median(rates)
        baseline_per_s = baseline_per_s or median  # the first case is the baseline
        rows.append({
            "case": case.name, "transfers": case.transfers, "batch": case.batch,
            "median_transfers_per_s": round(median),
            "runs_transfers_per_s": [round(r) for r in rates],
            "ratio_to_dict": median / baseline_per_s,
        })
        print(f"  {case.name:<36} {median:>12,.0f} /s   {median / baseline_per_s:8.4f}× dict",
              flush=True)
    report = {
        "benchmark": "ledger", "runs": args.runs, "quick": args.quick,
        "wall_s": round(time.perf_counter() - wall_start, 1),
        "machine": {
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
        },
        "cases": rows,
    }
    print(_table(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {RESULTS}")


def _table(rows: list[dict[str, object]]) -> str:
    lines = [f"| {'case':<36} | {'transfers/s (median)':>20} | {'× dict':>8} |",
             f"|{'-' * 38}|{'-' * 21}:|{'-' * 9}:|"]
    for r in rows:
        lines.append(f"| {r['case']!s:<36} | {r['median_transfers_per_s']:>20,} | "
                     f"{r['ratio_to_dict']:>8.4f} |")
    return "\n".join(lines)
