"""Faults against the live party services under load (issue 8 item 2; docs/reliability.md).

The exchange, issuer, network and bank run as four uvicorn processes on 127.0.0.1, each on its own
SQLite file or its own table prefix in PostgreSQL. An open-loop POS load (:mod:`.party_load`) pays
at the network: it captures or reverses what was approved, closes a settlement window every few
seconds, and retries with the same key whatever got no answer. While the load runs, one fault at
a time is applied, and the harness waits for recovery before the next one:

- ``kill``: SIGKILL of one service, round robin exchange → issuer → network → bank. It is then
  started again on the same port and database with ``CCSIM_RESUME=1``. Recovery is the time to
  ``/healthz`` 200 (``recovery_s``), then to ``GET /v1/recovery`` showing ``in_doubt_left == 0``
  (``settled_s``). Replaying the command log and checking it against the books is part of it.
- ``pg_crash`` (PostgreSQL): ``pg_ctl stop -m immediate``, a few seconds down, then a start (WAL
  crash recovery). Recovery is the time until every service answers ``/v1/recovery`` again.
- ``chaos``: the TCP proxy between the issuer and the exchange (the issuer's
  ``CCSIM_EXCHANGE_URL``) adds latency, drops requests at every point and duplicates them, for a
  phase of the run. Kills go on meanwhile.
- ``partition``: the exchange cannot be reached from the issuer. The proxy blackholes for the
  first half of the phase (it holds each request and delivers it late, after the partition is over
  and long after the issuer has given up) and refuses for the second half. Authorizations must decline or
  stand in within the network's deadline, and every sale made for them, even a late one, must
  have its proceeds booked once the relay has run.
- ``clock_jump``: one service's wall clock is stepped forward or back while it runs
  (:mod:`.clock_shift`), and later stepped back.

After each fault the invariants of every party are checked. At the end the load stops, the relays
drain, a last settlement window closes, and the harness checks: every party's invariants, the
cross-party reconciliation, 0 in-doubt operations left, and every payment the POS saw against the
issuer's record of it. The report goes to ``tests/artifacts/party_faults_<db>.json`` and ``.html``.

Run: ``python -m tests.faults.party_faults [--db sqlite|postgres|both] [--kills N] [--duration-s S]
[--out DIR]``. Loopback only; every process it starts is stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from services.api.parties import collect_invariants, collect_reconciliation, write_seed

from .bank_check import PG_URL_DEFAULT, postgres_unreachable
from .party_actions import FaultRun
from .party_audit import by_kind, payment_summary
from .party_cluster import PARTIES, Parties, PgServer, fault_seed, free_ports
from .party_load import LoadConfig, OpenLoopLoad
from .party_plan import FaultRecord, FaultsConfig, Planned, plan_faults
from .party_report import write_html
from .party_summary import _partition_summary, format_summary
from .service import drop_prefix
from .tcp_proxy import Faults, ProxyThread, TcpProxy

__all__ = ["ARTIFACTS", "FaultRecord", "FaultsConfig", "Planned", "main", "plan_faults", "run_party_faults"]

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "artifacts"


def run_party_faults(db: str, cfg: FaultsConfig, work_dir: Path, *, pg_shared_url: str = "",
                     out_dir: Path | None = ARTIFACTS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run on ``db`` ("sqlite" or "postgresql"); the summary (also written to ``out_dir``)."""
    started = time.monotonic()
    pg: PgServer | None = None
    database_url, prefix = "", ""
    proxy_thread: ProxyThread | None = None
    parties: Parties | None = None
    load: OpenLoopLoad | None = None
    run: FaultRun | None = None
    summary: dict[str, Any] = {"database": db, "config": asdict(cfg), "ok": False}
    problems: list[str] = []
    try:
        if db == "postgresql":
            pg = PgServer(cfg.pg_mode, pg_shared_url)
            database_url = pg.start()
            prefix = f"pf_{uuid.uuid4().hex[:8]}_"
            summary["postgresql"] = {"mode": cfg.pg_mode, "url": database_url.rpartition("@")[2]}
        seed = fault_seed(cfg.cards, cfg.merchants, cfg.deadline_ms)
        seed_file = work_dir / "seed.json"
        write_seed(seed, seed_file)
        ports = dict(zip(PARTIES, free_ports(len(PARTIES)), strict=True))
        proxy = TcpProxy("127.0.0.1", ports["exchange"], Faults(), seed=cfg.seed)
        proxy_thread = ProxyThread(proxy)
        proxy_port = proxy_thread.start()
        extra = {"CCSIM_IDEMPOTENCY_LEASE_S": str(cfg.idempotency_lease_s),
                 "CCSIM_OUTBOUND_TIMEOUT_S": str(cfg.outbound_timeout_s),
                 "CCSIM_BREAKER_COOLDOWN_S": str(cfg.breaker_cooldown_s), "CCSIM_RELAY_INTERVAL_S": "0.5"}
        parties = Parties(work_dir, seed_file, database_url, prefix, extra, ports,
                          exchange_via=f"http://127.0.0.1:{proxy_port}")
        summary["startup_s"] = parties.start_all(cfg.start_timeout_s)
        log(f"party faults [{db}]: services up {summary['startup_s']}; load {cfg.rate_per_s}/s for "
            f">= {cfg.duration_s:g} s, {cfg.kills} kills")
        load = OpenLoopLoad(parties.procs["network"].url, seed, LoadConfig(
            rate_per_s=cfg.rate_per_s, seed=cfg.seed, settle_every_s=cfg.settle_every_s, give_up_s=cfg.give_up_s),
            credentials=parties.credentials)
        load.start()
        run = FaultRun(cfg, parties, proxy, proxy_thread, load=load, pg=pg)
        plan = plan_faults(cfg, postgres=pg is not None)
        run.execute(plan)
        while load.now() < cfg.duration_s:
            run.watchdog()
            time.sleep(0.2)
        load.stop_arrivals()
        load_s = load.now()
        if not load.join(cfg.give_up_s + 120.0):
            problems.append("the load did not finish: requests still retrying after the give-up time")
        if load.error is not None:
            problems.append(f"the load generator failed: {load.error!r}")
        for record in run.records:
            first = min((p.done_s for p in load.payments if p.t_s >= record.at_s and p.outcome == "approved"),
                        default=None)
            record.first_approval_s = None if first is None else round(first - record.at_s, 3)
        run.watchdog()
        proxy.faults = Faults()
        with contextlib.suppress(TimeoutError):
            proxy_thread.settle(30.0)
        drain = run.drain(120.0)
        final = run.final_window()
        drain_after = run.drain(120.0)
        log(f"party faults [{db}]: load stopped at {load_s:.1f} s; {len(load.payments)} payments; checking")
        invariants = collect_invariants(parties.urls(), timeout_s=120.0, auth=run.gateway)
        breaks = collect_reconciliation(parties.urls(), timeout_s=120.0, auth=run.gateway)
        recovery = run.recovery_reports()
        audit = run.audit(load.payments)
        violations = {p: v["violations"] for p, v in invariants["parties"].items() if not v["ok"]}
        problems += run.problems
        if violations:
            problems.append(f"invariant violations at the end: {json.dumps(violations)[:2000]}")
        if breaks:
            problems.append(f"{len(breaks)} reconciliation breaks, e.g. {[str(b) for b in breaks[:5]]}")
        left_at_end = sum(int(r.get("in_doubt_left") or 0) for r in recovery.values())
        pending_at_end = sum(int(r.get("outbox_pending") or 0) for r in recovery.values())
        if left_at_end or pending_at_end:
            problems.append(f"in doubt at the end: {left_at_end} left, {pending_at_end} outbox rows pending")
        if drain_after["left"]:
            problems.append(f"still owed after draining: {drain_after['left']}")
        if final["status"] != 201:
            problems.append(f"the final settlement window answered {final['status']}")
        for kind, n in audit["problems"].items():
            problems.append(f"payments {kind}: {n}, e.g. {audit['examples'][kind][:3]}")
        pays = payment_summary(load.payments, run.partition, load.counters.late_sends)
        if pays["errors"]:
            problems.append(f"{pays['errors']} payments got no answer within {cfg.give_up_s:g} s of retries")
        kills = [r for r in run.records if r.kind == "kill"]
        summary.update({
            "ok": not problems,
            "problems": problems,
            "wall_s": round(time.monotonic() - started, 1),
            "load_s": round(load_s, 1),
            "kills": len(kills),
            "kills_by_service": dict(Counter(r.target for r in kills)),
            "kills_recovered": sum(r.recovered for r in kills),
            "faults_by_kind": by_kind(run.records),
            "payments": pays,
            "in_doubt": {
                "found": sum(r.in_doubt_found for r in run.records),
                "resolved": sum(r.in_doubt_resolved for r in run.records),
                "left": sum(max(r.in_doubt_left, 0) for r in run.records),
                "left_at_end": left_at_end,
                "outbox_pending_at_end": pending_at_end,
            },
            "violations": sum(len(v) for v in violations.values()),
            "violation_list": violations,
            "breaks": len(breaks),
            "break_list": [str(b) for b in breaks[:50]],
            "partition": _partition_summary(cfg, run, pays, audit),
            "chaos": run.chaos_stats,
            "proxy_total": run._proxy_delta({"requests": 0, "dropped": {}, "duplicates": 0}),
            "drain": {"before_final_window": drain, "after": drain_after},
            "final_window": final,
            "windows": [asdict(w) for w in load.windows],
            "recovery_reports": recovery,
            "audit": audit,
            "unexpected_exits": sum(1 for r in run.records if r.kind == "unexpected_exit"),
            "faults": [asdict(r) for r in run.records],
            "timeline": [[round(p.t_s, 3), round(p.first_latency_s, 4) if not math.isnan(p.first_latency_s) else None,
                          p.outcome, p.needs_sale] for p in load.payments],
            "load_in_flight_peak": load.counters.in_flight_peak,
            "retry_reasons": dict(load.counters.retry_reasons.most_common()),
        })
    except Exception as exc:
        summary["ok"] = False
        summary["problems"] = [*problems, *(run.problems if run else []),
                               f"the harness stopped: {exc!r}", traceback.format_exc()[-3000:]]
        if parties is not None:
            summary["log_tails"] = {n: p.log_tail(40) for n, p in parties.procs.items()}
    finally:
        # Every step runs even if an earlier one fails: no process of the run may outlive it.
        cleanup: list[Callable[[], None]] = []
        if load is not None:
            cleanup.append(load.stop_arrivals)
        if parties is not None:
            cleanup.append(parties.stop_all)
        if run is not None:
            cleanup.append(run.client.close)
        if proxy_thread is not None:
            cleanup.append(proxy_thread.stop)
        if pg is not None:
            if cfg.pg_mode == "shared" and database_url:
                cleanup.append(lambda: drop_prefix(database_url, prefix))
            cleanup.append(pg.close)
        for step in cleanup:
            try:
                step()
            except Exception as exc:  # reported, and the next step still runs
                log(f"party faults [{db}]: cleanup step failed: {exc!r}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"party_faults_{db}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        write_html(summary, out_dir / f"party_faults_{db}.html")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgres", "postgresql", "both"], default="both")
    p.add_argument("--kills", type=int, default=FaultsConfig.kills)
    p.add_argument("--duration-s", type=float, default=FaultsConfig.duration_s)
    p.add_argument("--rate", type=float, default=FaultsConfig.rate_per_s, help="payments per second")
    p.add_argument("--partition-s", type=float, default=FaultsConfig.partition_s)
    p.add_argument("--pg-crashes", type=int, default=FaultsConfig.pg_crashes)
    p.add_argument("--clock-jump-s", type=float, default=FaultsConfig.clock_jump_s, help="0: no clock jumps")
    p.add_argument("--seed", type=int, default=FaultsConfig.seed)
    p.add_argument("--restart-behind-s", type=float, default=0.0,
                   help="one network kill restarts it with its wall clock this far behind, for 40 s")
    p.add_argument("--pg", choices=["private", "shared"], default="private",
                   help="private: a throwaway cluster made with initdb (default); shared: the machine's cluster, "
                        "crashed with pg_ctlcluster (only where nothing else uses it)")
    p.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT),
                   help="with --pg shared: the database to use")
    p.add_argument("--out", type=Path, default=ARTIFACTS)
    args = p.parse_args(argv)
    cfg = FaultsConfig(duration_s=args.duration_s, kills=args.kills, rate_per_s=args.rate,
                       partition_s=args.partition_s, pg_crashes=args.pg_crashes, clock_jump_s=args.clock_jump_s,
                       seed=args.seed, pg_mode=args.pg, restart_behind_s=args.restart_behind_s)
    dbs = {"sqlite": ["sqlite"], "postgres": ["postgresql"], "postgresql": ["postgresql"],
           "both": ["sqlite", "postgresql"]}[args.db]
    failed = False
    for db in dbs:
        if db == "postgresql":
            reason = PgServer.unavailable(args.pg) or (postgres_unreachable(args.pg_url) if args.pg == "shared"
                                                       else None)
            if reason:
                print(f"party faults [postgresql]: SKIPPED: {reason}")
                continue
        with tempfile.TemporaryDirectory(prefix=f"party-faults-{db}-") as tmp:
            summary = run_party_faults(db, cfg, Path(tmp), pg_shared_url=args.pg_url, out_dir=args.out)
            if not summary["ok"]:
                keep = args.out / f"party_faults_{db}_logs"
                keep.mkdir(parents=True, exist_ok=True)
                for log_file in (Path(tmp) / "logs").glob("*.log"):
                    (keep / log_file.name).write_bytes(log_file.read_bytes())
        print(format_summary(summary))
        print(f"  report: {args.out / f'party_faults_{db}.json'} and .html")
        failed |= not summary["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
