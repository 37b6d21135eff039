"""Kills the supervisor answers: a real ``ccsim serve``, its children SIGKILLed under load (issue 15, F7).

The party-fault harness (:mod:`.party_faults`) starts the four services itself and restarts each one
it kills. Here the services are the children of a real ``ccsim serve`` (``--seed-file``,
``--no-gateway``, ``--max-restarts`` high enough for the run) and the harness only kills: it
SIGKILLs one child at a time (round robin exchange → issuer → network → bank) while the POS load
of :mod:`.party_load` pays at the network, and **the supervisor** must start it again on its
books. For each kill it records the time from the SIGKILL to ``/healthz`` 200 on the same port
(``back_s``: the supervisor noticing the death, its backoff, the process start, loading the newest
snapshot and replaying the log after it) and to nothing left in doubt (``settled_s``). Between kills
it sends the hostile probes of :mod:`.hostile_probes` (F1–F6: forged, unsigned, wrong-role and
replayed requests, a reused payment id with another body, disconnects mid-body, invariants under
load, spam on a rate-limited route), each of which must get its 4xx (never a 5xx) and change no
book.

At the end, as in the party-fault harness: the relays drain, a last window closes, and the run
checks 0 invariant violations, 0 reconciliation breaks, 0 in doubt, and every payment the POS saw
against the issuer's record of it (none lost, none doubled). ``make faults`` runs it on SQLite and
on a private PostgreSQL cluster with >= 30 kills each; ``tests/faults/test_supervised.py`` a short
run of each kind. Report: ``tests/artifacts/supervised_faults_<db>.json``.

Run: ``python -m tests.faults.supervised [--db sqlite|postgresql|both] [--kills N] [--duration-s S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import httpx

from services.api.auth import Credentials, SigningAuth, load_credentials
from services.api.parties import collect_invariants, collect_reconciliation, write_seed
from sim.live.restarts import RESTARTS_MAX

from .hostile_probes import Probe, run_probes
from .party_actions import FaultRun
from .party_audit import payment_summary
from .party_cluster import PARTIES, PgServer, fault_seed
from .party_load import LoadConfig, OpenLoopLoad
from .party_plan import FaultsConfig
from .ports import LOOPBACK, free_port_block
from .service import log_tail

__all__ = ["SupervisedConfig", "main", "run_supervised_faults"]

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "artifacts"
_REPO: Final = Path(__file__).resolve().parents[2]
_OFFSETS: Final = {"network": 1, "issuer": 2, "exchange": 3, "bank": 4}  # ccsim serve's ports from --port
_POLL_S: Final = 0.05
# The audit's findings (tests/faults/party_audit.py): money the POS was promised and the books do not
# show, and money the books hold twice or against a refusal.
_LOST: Final = ("approved_not_cleared", "approved_not_honoured", "sold_without_proceeds")
_DOUBLED: Final = ("captured_amount_differs", "declined_but_held")


@dataclass(frozen=True)
class SupervisedConfig:
    duration_s: float = 240.0  # of load, at least; it goes on until the last kill is back
    kills: int = 32
    rate_per_s: float = 4.0
    cards: int = 40
    merchants: int = 9
    deadline_ms: int = 3_000
    settle_every_s: float = 20.0
    seed: int = 8
    start_timeout_s: float = 180.0
    recovery_timeout_s: float = 120.0  # a child not back (or not settled) within this is a failure
    min_up_s: float = 1.0
    give_up_s: float = 120.0
    probes_every: int = 4  # the hostile probes after every this many kills (0: never)
    snapshot_every_commands: int = 200  # so that restarts start from snapshots within the run


@dataclass
class KillRecord:
    target: str
    at_s: float
    old_pid: int
    new_pid: int | None = None
    back_s: float | None = None  # SIGKILL -> /healthz 200 from the process the supervisor started
    settled_s: float | None = None  # SIGKILL -> /v1/recovery with nothing in doubt
    commands_replayed: int | None = None
    snapshot_log_seq: int | None = None
    recovered: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class _Proc:
    def __init__(self, url: str) -> None:
        self.url = url


def restarts_allowed(kills: int) -> int:
    """``--max-restarts`` for a run of ``kills``: the kills go round the four parties, so one child
    dies at most ``ceil(kills / 4)`` times, plus room for a death the harness did not cause (which
    the run then reports); within ``ccsim serve``'s bound of 100."""
    return min(RESTARTS_MAX, max(10, 2 * -(-kills // len(PARTIES))))


class ServeCluster:
    """``ccsim serve`` in a process of its own, and what the fault run needs of its children."""

    def __init__(self, work_dir: Path, seed_file: Path, database_url: str, cfg: SupervisedConfig) -> None:
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.port = free_port_block(5)
        self.procs = {name: _Proc(f"http://{LOOPBACK}:{self.port + off}") for name, off in _OFFSETS.items()}
        self.log_path = work_dir / "serve.log"
        argv = [str(Path(sys.executable).with_name("ccsim")), "serve", "--seed-file", str(seed_file), "--data-dir",
                str(self.data_dir), "--host", LOOPBACK, "--port", str(self.port), "--no-gateway",
                "--max-restarts", str(restarts_allowed(cfg.kills))]
        if database_url:
            argv += ["--database-url", database_url]
        self.env = {**os.environ, "PYTHONPATH": str(_REPO), "CCSIM_IDEMPOTENCY_LEASE_S": "15",
                    "CCSIM_OUTBOUND_TIMEOUT_S": "2", "CCSIM_BREAKER_COOLDOWN_S": "3",
                    "CCSIM_RELAY_INTERVAL_S": "0.5",
                    "CCSIM_SNAPSHOT_EVERY_COMMANDS": str(cfg.snapshot_every_commands)}
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.credentials: Credentials | None = None

    def urls(self) -> dict[str, str]:
        return {name: self.procs[name].url for name in PARTIES}

    def start(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        for name in PARTIES:
            self.wait_healthy(name, timeout_s - (time.monotonic() - t0))
        self.credentials = load_credentials(self.data_dir / "credentials.json")
        return round(time.monotonic() - t0, 3)

    def wait_healthy(self, name: str, timeout_s: float) -> float:
        t0 = time.monotonic()
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() - t0 < timeout_s:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"ccsim serve exited ({self.proc and self.proc.returncode}):\n"
                                       f"{log_tail(self.log_path, 40)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.procs[name].url}/healthz").status_code == 200:
                        return time.monotonic() - t0
                time.sleep(_POLL_S)
        raise RuntimeError(f"{name} was not healthy within {timeout_s:.0f} s")

    def child_pid(self, name: str) -> int | None:
        """The pid of the child serving ``name`` (a uvicorn process whose parent is ccsim serve)."""
        assert self.proc is not None
        port = str(self.port + _OFFSETS[name]).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == self.proc.pid and b"--port" in argv and port in argv:
                return int(entry.name)
        return None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # serve stops its children
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _kill(cluster: ServeCluster, name: str, at_s: float, client: httpx.Client, cfg: SupervisedConfig) -> KillRecord:
    pid = cluster.child_pid(name)
    record = KillRecord(name, round(at_s, 3), pid or -1)
    if pid is None:
        record.detail["error"] = "no child found for it"
        return record
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    try:
        cluster.wait_healthy(name, cfg.recovery_timeout_s)
    except RuntimeError as exc:
        record.detail["error"] = str(exc)[-2000:]
        return record
    record.back_s = round(time.monotonic() - t0, 3)
    record.new_pid = cluster.child_pid(name)
    url = cluster.procs[name].url
    while time.monotonic() - t0 < cfg.recovery_timeout_s:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = client.get(f"{url}/v1/recovery").json()
            if int(body.get("in_doubt_left") or 0) == 0:
                record.settled_s = round(time.monotonic() - t0, 3)
                state = body.get("state") or {}
                record.commands_replayed = state.get("commands_replayed")
                record.snapshot_log_seq = state.get("snapshot_log_seq")
                break
        time.sleep(_POLL_S)
    record.recovered = record.settled_s is not None and record.new_pid not in (None, pid)
    if record.new_pid == pid:
        record.detail["error"] = "the same process answers: it was not killed"
    return record


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def run_supervised_faults(db: str, cfg: SupervisedConfig, work_dir: Path, *, out_dir: Path | None = ARTIFACTS,
                          log: Any = print) -> dict[str, Any]:
    """One run on ``db`` ("sqlite" or "postgresql", a private cluster); the summary."""
    summary: dict[str, Any] = {"database": db, "config": asdict(cfg), "ok": False}
    problems: list[str] = []
    pg: PgServer | None = None
    cluster: ServeCluster | None = None
    load: OpenLoopLoad | None = None
    run: FaultRun | None = None
    started = time.monotonic()
    try:
        database_url = ""
        if db == "postgresql":
            pg = PgServer("private")
            database_url = pg.start()
        seed = fault_seed(cfg.cards, cfg.merchants, cfg.deadline_ms)
        seed_file = work_dir / "seed.json"
        work_dir.mkdir(parents=True, exist_ok=True)
        write_seed(seed, seed_file)
        cluster = ServeCluster(work_dir, seed_file, database_url, cfg)
        summary["startup_s"] = cluster.start(cfg.start_timeout_s)
        credentials = cast(Credentials, cluster.credentials)
        log(f"supervised faults [{db}]: ccsim serve up in {summary['startup_s']} s; {cfg.kills} kills")
        load = OpenLoopLoad(cluster.procs["network"].url, seed, LoadConfig(
            rate_per_s=cfg.rate_per_s, seed=cfg.seed, settle_every_s=cfg.settle_every_s, give_up_s=cfg.give_up_s),
            credentials=credentials)
        load.start()
        # FaultRun's end of a run (drain, final window, recovery reports, audit) over serve's children.
        run = FaultRun(FaultsConfig(recovery_timeout_s=cfg.recovery_timeout_s), cast(Any, cluster),
                       cast(Any, None), cast(Any, None), load=load, pg=None)
        operator = httpx.Client(timeout=30.0, auth=SigningAuth(credentials.principal("operator")))
        kills: list[KillRecord] = []
        probes: list[Probe] = []
        span = 0.95 * cfg.duration_s
        for i in range(cfg.kills):
            at = (i + 0.5) * span / max(cfg.kills, 1)
            while load.now() < at:
                time.sleep(min(0.2, at - load.now()))
            record = _kill(cluster, PARTIES[i % len(PARTIES)], load.now(), operator, cfg)
            kills.append(record)
            if not record.recovered:
                problems.append(f"kill of {record.target} at {record.at_s:.1f} s: not back "
                                f"{record.detail.get('error', '')[:300]}")
            if cfg.probes_every and (i + 1) % cfg.probes_every == 0:
                probes += run_probes(cluster.urls(), credentials, seed, tag=f"k{i}")
            time.sleep(cfg.min_up_s)
        if cfg.probes_every and not probes:
            probes += run_probes(cluster.urls(), credentials, seed, tag="end")
        while load.now() < cfg.duration_s:
            time.sleep(0.2)
        load.stop_arrivals()
        if not load.join(cfg.give_up_s + 120.0):
            problems.append("the load did not finish: requests still retrying after the give-up time")
        drain = run.drain(120.0)
        final = run.final_window()
        drain_after = run.drain(120.0)
        gateway = SigningAuth(credentials.principal("gateway"))
        invariants = collect_invariants(cluster.urls(), timeout_s=120.0, auth=gateway)
        breaks = collect_reconciliation(cluster.urls(), timeout_s=120.0, auth=gateway)
        recovery = run.recovery_reports()
        audit = run.audit(load.payments)
        operator.close()
        violations = {p: v["violations"] for p, v in invariants["parties"].items() if not v["ok"]}
        if violations:
            problems.append(f"invariant violations at the end: {json.dumps(violations)[:2000]}")
        if breaks:
            problems.append(f"{len(breaks)} reconciliation breaks, e.g. {[str(b) for b in breaks[:5]]}")
        left = sum(int(r.get("in_doubt_left") or 0) for r in recovery.values())
        if left or drain_after["left"]:
            problems.append(f"in doubt at the end: {left}; still owed after draining: {drain_after['left']}")
        if final["status"] != 201:
            problems.append(f"the final settlement window answered {final['status']}")
        for kind, n in audit["problems"].items():
            problems.append(f"payments {kind}: {n}, e.g. {audit['examples'][kind][:3]}")
        pays = payment_summary(load.payments, None, load.counters.late_sends)
        if pays["errors"]:
            problems.append(f"{pays['errors']} payments got no answer within {cfg.give_up_s:g} s of retries")
        bad_probes = [p for p in probes if not p.ok]
        problems += [f"probe {p.issue} {p.name}: {p.status}, expected {p.expected} ({p.detail[:200]})"
                     for p in bad_probes]
        backs = [k.back_s for k in kills if k.back_s is not None]
        summary.update({
            "ok": not problems, "problems": problems, "wall_s": round(time.monotonic() - started, 1),
            "kills": len(kills), "kills_recovered": sum(k.recovered for k in kills),
            "back_s_median": _median(backs), "back_s_max": max(backs, default=None),
            "settled_s_median": _median([k.settled_s for k in kills if k.settled_s is not None]),
            "restarts_from_snapshot": sum(k.snapshot_log_seq is not None for k in kills),
            "violations": sum(len(v) for v in violations.values()), "breaks": len(breaks),
            "lost": sum(audit["problems"].get(k, 0) for k in _LOST),
            "doubled": sum(audit["problems"].get(k, 0) for k in _DOUBLED),
            "audit_problems": dict(audit["problems"]),
            "payments": pays, "final_window": final, "drain": {"before": drain, "after": drain_after},
            "probes": [asdict(p) for p in probes], "probes_failed": len(bad_probes),
            "probes_5xx": sum(p.status >= 500 for p in probes),
            "kill_records": [asdict(k) for k in kills], "recovery_reports": recovery,
        })
    except Exception as exc:
        summary["problems"] = [*problems, f"the harness stopped: {exc!r}", traceback.format_exc()[-3000:]]
        if cluster is not None:
            summary["serve_log_tail"] = log_tail(cluster.log_path, 60)
    finally:
        for step in ((load.stop_arrivals if load else None), (cluster.stop if cluster else None),
                     (run.client.close if run else None), (pg.close if pg else None)):
            if step is not None:
                try:
                    step()
                except Exception as exc:  # reported; the next step still runs
                    log(f"supervised faults [{db}]: cleanup step failed: {exc!r}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"supervised_faults_{db}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def format_summary(s: dict[str, Any]) -> str:
    if "payments" not in s:
        return f"supervised faults [{s['database']}]: FAILED\n  " + "\n  ".join(map(str, s.get("problems", [])))
    p = s["payments"]
    lines = [f"supervised faults [{s['database']}]: {'OK' if s['ok'] else 'FAILED'} in {s['wall_s']} s; "
             f"{s['kills']} SIGKILLs of ccsim serve's children, {s['kills_recovered']} restarted by the supervisor "
             f"(SIGKILL->healthy median {s['back_s_median']} s, max {s['back_s_max']} s; "
             f"{s['restarts_from_snapshot']} from a snapshot)",
             f"  payments {p['attempted']}: approved {p['approved']}, errors {p['errors']}; violations "
             f"{s['violations']}, breaks {s['breaks']}, lost {s['lost']}, doubled {s['doubled']}; hostile probes "
             f"{len(s['probes'])} ({s['probes_failed']} failed, {s['probes_5xx']} answered 5xx)"]
    lines += [f"  problem: {x}" for x in s["problems"][:15]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--kills", type=int, default=SupervisedConfig.kills)
    p.add_argument("--duration-s", type=float, default=SupervisedConfig.duration_s)
    p.add_argument("--out", type=Path, default=ARTIFACTS)
    args = p.parse_args(argv)
    cfg = SupervisedConfig(duration_s=args.duration_s, kills=args.kills)
    failed = False
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        if db == "postgresql" and (reason := PgServer.unavailable("private")):
            print(f"supervised faults [postgresql]: SKIPPED: {reason}")
            continue
        with tempfile.TemporaryDirectory(prefix=f"supervised-{db}-") as tmp:
            summary = run_supervised_faults(db, cfg, Path(tmp), out_dir=args.out)
        print(format_summary(summary))
        failed |= not summary["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
