"""Jepsen-style bank check of the ledger service, with SIGKILLs (issue 8 item 3; docs/reliability.md).

Ten wallets are funded from a house account, so their total is known. Worker threads then move
random amounts between the wallets over HTTP (each transfer with its own id and ``Idempotency-Key``,
retried with the SAME key after a timeout, a lost connection or a 5xx) and read all ten balances
in one snapshot (``GET /v1/snapshot/accounts``). Meanwhile the service process is SIGKILLed a
few times and restarted on the same database. Every operation goes into a history, which
:func:`tests.faults.history.check_history` judges against the journal afterwards: every read sums
to the total, nothing is negative, every acknowledged transfer is in the journal exactly once, no
rejected one is, no effect is doubled, reads respect real time, and ``check_invariants()`` is empty.

Run: ``python -m tests.faults.bank_check --duration-s 120 --kills 30`` (SQLite and PostgreSQL;
``--db sqlite`` for one). Writes ``tests/artifacts/bank_check_<db>.json``. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.api.idempotency import IdempotencyStore
from services.ledger.sql import SqlLedger
from services.money import DEFAULT_ASSETS, format_amount, parse_amount

from .history import CheckReport, History, JournalEntry, Op, Outcome, check_history
from .service import ServiceProcess

__all__ = ["ARTIFACTS", "BankCheckConfig", "Database", "format_summary", "postgres_unreachable", "run_bank_check",
           "setup_accounts"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # as tests/conftest.py
KZT = next(a for a in DEFAULT_ASSETS if a.code == "KZT")
HOUSE = "house"


@dataclass(frozen=True)
class BankCheckConfig:
    """The kills are spread over ``duration_s`` of load, and each waits for events too: before a
    kill, and before the run ends after the last restart, the service must have acknowledged
    ``acks_per_phase`` transfers since it (re)started. On a slow machine the run lasts longer; it
    never makes fewer kills. A phase that gets no such acknowledgements within ``phase_timeout_s``
    is a failure of the service, reported in ``problems``."""

    duration_s: float = 15.0  # of load, at least
    kills: int = 3
    acks_per_phase: int = 20
    phase_timeout_s: float = 120.0
    workers: int = 8
    accounts: int = 10
    funding_minor: int = 1_000_000  # 10,000.00 KZT per wallet
    amount_max_minor: int = 400_000  # large enough that some transfers overdraw and are refused
    read_share: float = 0.3
    request_timeout_s: float = 2.0
    grace_s: float = 30.0  # after the run, how long an unanswered transfer keeps being retried
    min_up_s: float = 0.5  # the service serves at least this long between two kills
    idempotency_lease_s: float = 2.0  # a key claimed by a killed process is free again after this
    seed: int = 20_260_8


@dataclass(frozen=True)
class Database:
    name: str  # "sqlite" or "postgresql": the artifact's suffix
    url: str
    table_prefix: str = ""


def postgres_unreachable(url: str) -> str | None:
    """Why PostgreSQL cannot be used (None when it can)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "not reachable"; the reason is shown
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def _wallets(cfg: BankCheckConfig) -> list[str]:
    return [f"acct-{i:02d}" for i in range(cfg.accounts)]


def setup_accounts(base_url: str, cfg: BankCheckConfig) -> None:
    """The house account, the wallets (never below zero), and their funding in one batch."""
    with httpx.Client(base_url=base_url, timeout=10.0) as c:
        for body in [{"id": HOUSE, "asset": "KZT", "kind": "equity"}] + [
                {"id": w, "asset": "KZT", "kind": "wallet", "flags": ["debits_must_not_exceed_credits"]}
                for w in _wallets(cfg)]:
            r = c.post("/v1/accounts", json=body)
            r.raise_for_status()
        r = c.post("/v1/transfers", headers={"Idempotency-Key": "funding"}, json={"transfers": [
            {"id": f"fund-{w}", "debit_account_id": HOUSE, "credit_account_id": w,
             "amount": format_amount(cfg.funding_minor, KZT), "asset": "KZT"} for w in _wallets(cfg)]})
        r.raise_for_status()


class _Run:
    """What the workers share: the service's address, the clock zero, the stop times."""

    def __init__(self, base_url: str, cfg: BankCheckConfig) -> None:
        self.base_url = base_url
        self.cfg = cfg
        self.wallets = _wallets(cfg)
        self.history = History()
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + cfg.duration_s  # at the earliest
        self.stopping = threading.Event()
        self.give_up_at = math.inf  # set when the run stops: unanswered transfers are retried until then
        self.problems: list[str] = []

    def stop(self) -> None:
        self.give_up_at = time.monotonic() + self.cfg.grace_s
        self.stopping.set()

    def wait_phase(self, acked_at_start: int, what: str) -> bool:
        """Wait until the service has acknowledged ``acks_per_phase`` transfers more than
        ``acked_at_start``; False (and a problem) if it did not within ``phase_timeout_s``."""
        want = acked_at_start + self.cfg.acks_per_phase
        if self.history.wait_acknowledged(want, self.cfg.phase_timeout_s):
            return True
        self.problems.append(f"{what}: the service acknowledged {self.history.acknowledged - acked_at_start} "
                             f"of {self.cfg.acks_per_phase} transfers within {self.cfg.phase_timeout_s:g} s")
        return False

    def now(self) -> float:
        return time.monotonic() - self.t0

    def worker(self, w: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + w)
        timeout = httpx.Timeout(self.cfg.request_timeout_s, connect=1.0)
        with httpx.Client(base_url=self.base_url, timeout=timeout) as client:
            n = 0
            while not self.stopping.is_set():
                if rng.random() < self.cfg.read_share:
                    self.history.add(self._read(client, w))
                else:
                    n += 1
                    self.history.add(self._transfer(client, w, n, rng))

    def _read(self, client: httpx.Client, w: int) -> Op:
        start = self.now()
        try:
            r = client.get("/v1/snapshot/accounts", params={"ids": ",".join(self.wallets)})
        except httpx.TransportError as exc:
            return Op(w, "read", start, self.now(), "fail", detail=type(exc).__name__)
        if r.status_code != 200:
            return Op(w, "read", start, self.now(), "fail", status=r.status_code, detail=r.text[:200])
        balances = tuple(parse_amount(a["credit_balance"], KZT, allow_negative=True)
                         for a in r.json()["accounts"])
        return Op(w, "read", start, self.now(), "ok", status=200, balances_minor=balances)

    def _transfer(self, client: httpx.Client, w: int, n: int, rng: random.Random) -> Op:
        debit, credit = rng.sample(self.wallets, 2)
        amount = rng.randint(1, self.cfg.amount_max_minor)
        tid = f"t-{w}-{n}"
        body = {"transfers": [{"id": tid, "debit_account_id": debit, "credit_account_id": credit,
                               "amount": format_amount(amount, KZT), "asset": "KZT"}]}
        headers = {"Idempotency-Key": f"key-{tid}"}
        start = self.now()
        attempt, status, detail = 0, None, ""

        def op(outcome: Outcome, replayed: bool = False) -> Op:
            return Op(w, "transfer", start, self.now(), outcome, attempt, status, tid, debit, credit,
                      amount, replayed=replayed, detail=detail)

        while True:
            attempt += 1
            try:
                r = client.post("/v1/transfers", json=body, headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timed out: the same key again
                status, detail = None, type(exc).__name__
            else:
                status, detail = r.status_code, r.text[:200]
                if status in (200, 201):
                    return op("ok", r.headers.get("Idempotent-Replayed") == "true")
                if status == 422 and "exceeds-credits" in r.text:
                    return op("fail")
                in_flight = status == 409 and "idempotency-key-in-flight" in r.text
                if not (in_flight or status >= 500):
                    return op("fail")  # unexpected: the checker reports it
            if time.monotonic() > self.give_up_at:
                return op("unknown")
            time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * rng.uniform(0.5, 1.0))


def run_bank_check(db: Database, cfg: BankCheckConfig, work_dir: Path, *, drop_tables: bool = True,
                   artifact: Path | None = None) -> dict[str, Any]:
    """Run the check on ``db`` and return its summary (also written to ``artifact``)."""
    env = {"CCSIM_PARTY": "bank", "CCSIM_DATABASE_URL": db.url, "CCSIM_TABLE_PREFIX": db.table_prefix,
           "CCSIM_IDEMPOTENCY_LEASE_S": str(cfg.idempotency_lease_s), "CCSIM_DATA_DIR": str(work_dir)}
    service = ServiceProcess(env, work_dir / f"service-{db.name}.log")
    kill_rng = random.Random(cfg.seed)
    recoveries: list[tuple[float, float]] = []  # (kill time, restart-to-healthy seconds) from t0
    try:
        first_start_s = service.start()
        setup_accounts(service.base_url, cfg)
        run = _Run(service.base_url, cfg)
        threads = [threading.Thread(target=run.worker, args=(w,), name=f"bank-worker-{w}", daemon=True)
                   for w in range(cfg.workers)]
        for t in threads:
            t.start()
        try:
            last_ready, acked_at_ready = time.monotonic(), 0
            for i in range(cfg.kills):
                # The schedule spreads the kills over the run; a kill never comes before the
                # service has served since its last start (events, so a slow machine gets a
                # longer run, not fewer kills).
                target = run.t0 + (i + kill_rng.uniform(0.3, 0.7)) * cfg.duration_s / cfg.kills
                time.sleep(max(0.0, max(target, last_ready + cfg.min_up_s) - time.monotonic()))
                if not run.wait_phase(acked_at_ready, f"before kill {i + 1}"):
                    break
                killed_at = run.now()
                service.kill()
                service.start()
                last_ready, acked_at_ready = time.monotonic(), run.history.acknowledged
                recoveries.append((killed_at, run.now() - killed_at))
            else:
                time.sleep(max(0.0, run.stop_at - time.monotonic()))
                run.wait_phase(acked_at_ready, f"after restart {cfg.kills}")
        finally:
            run.stop()
        for t in threads:
            t.join()
        with httpx.Client(base_url=service.base_url, timeout=30.0) as c:
            invariants_http = c.get("/v1/ledger/invariants").json()
    finally:
        service.stop()
    summary = _judge(db, cfg, run.history.ops, recoveries=recoveries, invariants_http=invariants_http,
                     drop_tables=drop_tables, harness_problems=run.problems)
    summary["first_start_s"] = round(first_start_s, 3)
    summary["service_log"] = str(service.log_path)
    if artifact is not None:
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _judge(db: Database, cfg: BankCheckConfig, ops: list[Op], *, recoveries: list[tuple[float, float]],
           invariants_http: dict[str, Any], drop_tables: bool, harness_problems: list[str]) -> dict[str, Any]:
    """Read the database directly (the service is stopped) and check the history against it."""
    ledger = SqlLedger(db.url, table_prefix=db.table_prefix)
    try:
        wallets = set(_wallets(cfg))
        journal = [JournalEntry(t.id, t.debit_account_id, t.credit_account_id, t.amount)
                   for t in ledger.journal() if not t.id.startswith("fund-")]
        final = {a.id: a.credit_balance for a in ledger.accounts() if a.id in wallets}
        violations = [str(v) for v in ledger.check_invariants()]
        report = check_history(ops, _wallets(cfg), cfg.funding_minor, journal, final)
    finally:
        if drop_tables and db.table_prefix:
            ledger.drop_tables()
            keys = IdempotencyStore(db.url, table_prefix=db.table_prefix)
            keys.drop_table()
            keys.close()
        ledger.close()
    for problem in harness_problems:
        report.fail(problem)
    if violations:
        report.fail(f"check_invariants: {violations[:5]}")
    if not invariants_http.get("ok"):
        report.fail(f"GET /v1/ledger/invariants: {invariants_http}")
    return _summary(db, cfg, ops, report, recoveries=recoveries, violations=violations)


def _summary(db: Database, cfg: BankCheckConfig, ops: list[Op], report: CheckReport, *,
             recoveries: list[tuple[float, float]], violations: list[str]) -> dict[str, Any]:
    acks = sorted(o.end_s for o in ops if o.kind == "transfer" and o.outcome == "ok")
    first_ack: list[float] = []
    for killed_at, recovery_s in recoveries:  # first acknowledgement after the restart
        later = [t for t in acks if t >= killed_at + recovery_s]
        if later:
            first_ack.append(round(later[0] - killed_at, 3))
    rec = [round(s, 3) for _, s in recoveries]
    counts = asdict(report)
    problems = counts.pop("problems")
    return {
        "database": db.name,
        "config": asdict(cfg),
        "ok": report.ok,
        **counts,
        "invariant_violations": len(violations),
        "kills": len(recoveries),
        "recovery_s": rec,
        "recovery_s_median": round(statistics.median(rec), 3) if rec else None,
        "recovery_s_max": max(rec) if rec else None,
        "first_ack_after_kill_s": first_ack,
        "first_ack_after_kill_s_max": max(first_ack) if first_ack else None,
        "problems": problems,
    }


def format_summary(s: dict[str, Any]) -> str:
    return (f"bank check [{s['database']}]: {'OK' if s['ok'] else 'FAILED'}; {s['operations']} operations "
            f"({s['transfers_ok']} transfers acknowledged, {s['transfers_rejected']} refused, "
            f"{s['transfers_unknown']} unknown; {s['transfers_retried']} after a retry, "
            f"{s['transfers_replayed']} replayed, {s['transfers_found_done']} found done), "
            f"{s['reads_checked']} reads checked, "
            f"wrong totals {s['wrong_totals']}, negatives {s['negatives']}, stale reads "
            f"{s['stale_or_impossible_reads']}, missing {s['missing_acknowledged']}, doubled "
            f"{s['duplicate_effects']}, invariant violations {s['invariant_violations']}; "
            f"{s['kills']} kills, recovery median {s['recovery_s_median']} s, max {s['recovery_s_max']} s"
            + "".join(f"\n  problem: {p}" for p in s["problems"][:10]))


def databases(which: str, pg_url: str) -> tuple[list[Database], list[str]]:
    """The databases to check and, for those that cannot be, why."""
    out: list[Database] = []
    skipped: list[str] = []
    if which in ("sqlite", "both"):
        out.append(Database("sqlite", ""))  # the URL is filled in with the run's work directory
    if which in ("postgresql", "both"):
        reason = postgres_unreachable(pg_url)
        if reason is None:
            out.append(Database("postgresql", pg_url, f"bc_{uuid.uuid4().hex[:10]}_"))
        else:
            skipped.append(f"PostgreSQL not reachable at {pg_url}: {reason}")
    return out, skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--duration-s", type=float, default=120.0)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=BankCheckConfig.seed)
    p.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT))
    args = p.parse_args(argv)
    cfg = BankCheckConfig(duration_s=args.duration_s, kills=args.kills, workers=args.workers, seed=args.seed)
    targets, skipped = databases(args.db, args.pg_url)
    for reason in skipped:
        print(f"bank check [postgresql]: SKIPPED: {reason}")
    failed = False
    for target in targets:
        with tempfile.TemporaryDirectory(prefix=f"bank-check-{target.name}-") as tmp:
            work = Path(tmp)
            db = Database("sqlite", f"sqlite:///{work / 'bank.db'}") if target.name == "sqlite" else target
            summary = run_bank_check(db, cfg, work)
            summary["service_log"] = "(removed with the run's temporary directory)"
            (ARTIFACTS / f"bank_check_{db.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(format_summary(summary))
        print(f"  report: {ARTIFACTS / f'bank_check_{db.name}.json'}")
        failed |= not summary["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
