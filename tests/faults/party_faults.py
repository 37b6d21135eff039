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
import random
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from services.api.auth import SigningAuth
from services.api.parties import collect_invariants, collect_reconciliation, write_seed

from .bank_check import PG_URL_DEFAULT, postgres_unreachable
from .party_cluster import PARTIES, Parties, PgServer, fault_seed, free_ports
from .party_load import LoadConfig, OpenLoopLoad, Payment
from .party_report import write_html
from .service import drop_prefix
from .tcp_proxy import Faults, ProxyThread, TcpProxy

__all__ = ["ARTIFACTS", "FaultRecord", "FaultsConfig", "Planned", "main", "plan_faults", "run_party_faults"]

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "artifacts"
CHAOS: Final = Faults(latency_s=0.01, jitter_s=0.04, drop_p=0.08, duplicate_p=0.4)
REFUSE: Final = Faults(drop_p=1.0, drop_points=("request_lost",))
_RECOVERY_POLL_S: Final = 0.05


@dataclass(frozen=True)
class FaultsConfig:
    duration_s: float = 180.0  # of load, at least; the load goes on until the last fault has recovered
    kills: int = 32
    rate_per_s: float = 4.0
    cards: int = 40
    merchants: int = 9
    deadline_ms: int = 3_000  # the network's wait for the issuer before it stands in
    partition_s: float = 12.0
    pg_crashes: int = 2
    pg_down_s: float = 2.0
    clock_jump_s: float = 600.0  # 0: no clock jumps
    chaos: bool = True
    settle_every_s: float = 20.0
    seed: int = 8
    start_timeout_s: float = 120.0
    recovery_timeout_s: float = 90.0  # a fault not recovered within this is a failure
    min_up_s: float = 1.0  # load flows at least this long between two faults
    idempotency_lease_s: float = 15.0  # a key held by a killed process is free again after this
    outbound_timeout_s: float = 2.0
    breaker_cooldown_s: float = 3.0
    check_after_fault: bool = True  # every party's invariants after each fault
    give_up_s: float = 120.0  # a POS retries an unanswered payment this long
    pg_mode: str = "private"  # or "shared": the machine's cluster (pg_ctlcluster)
    restart_behind_s: float = 0.0  # > 0: one network kill restarts it with its clock this far behind (a bad RTC)
    restart_behind_hold_s: float = 40.0  # how long the restarted network keeps the clock behind


@dataclass(frozen=True, slots=True)
class Planned:
    at_s: float
    kind: str  # kill | pg_crash | chaos_on | chaos_off | partition | clock_jump
    target: str = ""
    offset_s: float = 0.0


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float  # seconds since the load started
    recovery_s: float | None = None  # to healthy (kill: the restarted process answers /healthz)
    settled_s: float | None = None  # to nothing left in doubt (kill), breaker closed (partition)
    recovered: bool = False
    in_doubt_found: int = 0
    in_doubt_resolved: int = 0
    in_doubt_left: int = 0
    commands_replayed: int | None = None
    replay_s: float | None = None
    violations_after: int | None = None
    first_approval_s: float | None = None  # to the first payment sent after the fault and approved by the issuer
    detail: dict[str, Any] = field(default_factory=dict)


def plan_faults(cfg: FaultsConfig, postgres: bool) -> list[Planned]:
    """The run's faults in time order. Kills are spread evenly, round robin over the four
    services, outside the partition (which has the exchange link to itself)."""
    d = cfg.duration_s
    warm = min(5.0, 0.05 * d)
    plan: list[Planned] = []
    part_at = 0.62 * d
    quiet = (part_at, part_at + cfg.partition_s + 6.0)
    if cfg.partition_s > 0:
        plan.append(Planned(part_at, "partition", "exchange"))
    if cfg.chaos:
        plan += [Planned(0.25 * d, "chaos_on", "issuer->exchange"), Planned(0.5 * d, "chaos_off", "issuer->exchange")]
    if cfg.clock_jump_s:
        j = cfg.clock_jump_s
        plan += [Planned(0.33 * d, "clock_jump", "issuer", j), Planned(0.42 * d, "clock_jump", "issuer", 0.0),
                 Planned(0.78 * d, "clock_jump", "exchange", -j), Planned(0.86 * d, "clock_jump", "exchange", 0.0)]
    if postgres:
        plan += [Planned((i + 0.45) * d / cfg.pg_crashes, "pg_crash", "postgresql") for i in range(cfg.pg_crashes)]
    span = 0.97 * d - warm - (quiet[1] - quiet[0])
    behind = cfg.restart_behind_s
    for i in range(cfg.kills):
        t = warm + (i + 0.5) * span / max(cfg.kills, 1)
        if t >= quiet[0]:
            t += quiet[1] - quiet[0]
        target = PARTIES[i % len(PARTIES)]
        if behind and target == "network":
            plan += [Planned(t, "kill", target, -behind), Planned(t + cfg.restart_behind_hold_s, "clock_jump", target)]
            behind = 0.0
        else:
            plan.append(Planned(t, "kill", target))
    order = {"chaos_on": 0, "partition": 1, "pg_crash": 2, "clock_jump": 3, "kill": 4, "chaos_off": 5}
    return sorted(plan, key=lambda p: (p.at_s, order[p.kind]))


def _pct(values: Iterable[float], q: float) -> float | None:
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return None
    k = (len(data) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def latency_stats(values_s: Iterable[float]) -> dict[str, Any]:
    data = [v for v in values_s if not math.isnan(v)]
    out: dict[str, Any] = {"n": len(data)}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0)):
        v = _pct(data, q)
        out[name] = None if v is None else round(v * 1000.0, 1)
    return out


class _Run:
    """One run on one database: the services, the proxy, the load, and the faults applied."""

    def __init__(self, cfg: FaultsConfig, parties: Parties, proxy: TcpProxy, proxy_thread: ProxyThread, *,
                 load: OpenLoopLoad, pg: PgServer | None) -> None:
        self.cfg = cfg
        self.parties = parties
        self.proxy = proxy
        self.proxy_thread = proxy_thread
        self.load = load
        self.pg = pg
        self.records: list[FaultRecord] = []
        self.problems: list[str] = []
        self.partition: tuple[float, float] | None = None
        self.chaos: list[float] = []
        self.chaos_stats: dict[str, Any] = {}
        self.client = httpx.Client(timeout=30.0, auth=SigningAuth(parties.credentials.principal("operator")))
        self.gateway = SigningAuth(parties.credentials.principal("gateway"))
        self._kills: dict[str, int] = {}
        self._windows = 0
        self._rng = random.Random(cfg.seed)

    def now(self) -> float:
        return self.load.now()

    def url(self, name: str) -> str:
        return self.parties.procs[name].url

    # -- faults --------------------------------------------------------------------------------
    def execute(self, plan: list[Planned]) -> None:
        ready_at = 0.0
        for step in plan:
            at = max(step.at_s, ready_at + (self.cfg.min_up_s if step.kind not in ("chaos_off",) else 0.0))
            while self.now() < at:
                self.watchdog()
                time.sleep(min(0.2, max(0.0, at - self.now())))
            self.watchdog()
            record = self.apply(step)
            if record is not None:
                if self.cfg.check_after_fault and step.kind != "chaos_on":
                    record.violations_after = self.violations_now(record)
                self.records.append(record)
                if not record.recovered:
                    self.problems.append(f"{record.kind} {record.target} at {record.at_s:.1f} s did not recover: "
                                         f"{record.detail.get('error', '')}")
            ready_at = self.now()

    def apply(self, step: Planned) -> FaultRecord | None:
        if step.kind == "kill":
            return self.kill(step.target, step.offset_s)
        if step.kind == "pg_crash":
            return self.pg_crash()
        if step.kind == "partition":
            return self.partition_exchange()
        if step.kind == "clock_jump":
            return self.clock_jump(step.target, step.offset_s)
        if step.kind == "chaos_on":
            self.proxy.faults = CHAOS
            self.chaos = [self.now()]
            self._proxy_mark = self._proxy_snapshot()
            return FaultRecord("chaos", "issuer->exchange", self.now(), 0.0, recovered=True,
                               detail={"phase": "on", "faults": asdict(CHAOS)})
        if step.kind == "chaos_off":
            self.proxy.faults = Faults()
            self.chaos.append(self.now())
            with contextlib.suppress(TimeoutError):
                self.proxy_thread.settle(15.0)
            self.chaos_stats = self._proxy_delta(self._proxy_mark)
            return FaultRecord("chaos", "issuer->exchange", self.now(), 0.0, recovered=True,
                               detail={"phase": "off", **self.chaos_stats})
        raise ValueError(step.kind)

    def watchdog(self) -> None:
        """A service that died on its own is a finding: record it and start it again."""
        for name in self.parties.dead():
            proc = self.parties.procs[name]
            record = FaultRecord("unexpected_exit", name, self.now(),
                                 detail={"exit_code": proc.exit_code(), "log_tail": proc.log_tail(60)})
            self.problems.append(f"{name} exited on its own with code {proc.exit_code()} at {self.now():.1f} s")
            try:
                proc.start(resume=True)
                record.recovery_s = round(proc.wait_healthy(self.cfg.recovery_timeout_s), 3)
                record.recovered = True
            except RuntimeError as exc:
                record.detail["error"] = str(exc)[-2000:]
            self.records.append(record)

    def kill(self, name: str, clock_offset_s: float = 0.0) -> FaultRecord:
        """SIGKILL ``name`` and start it again on its books. Half the kills of the issuer, network
        and bank are aimed at a settlement window in progress, and every kill of the exchange at a
        sale on the wire, so that they cut cross-party steps in half. With ``clock_offset_s`` the
        service comes back with its wall clock that far off (a machine whose clock is wrong after
        a reboot)."""
        proc = self.parties.procs[name]
        self._kills[name] = self._kills.get(name, 0) + 1
        aim = self._aim(name)
        record = FaultRecord("kill", name, self.now(), detail={"aimed_at": aim} if aim else {})
        t0 = time.monotonic()
        proc.kill()
        if clock_offset_s:
            proc.step_clock(clock_offset_s)  # read by the new process when it starts
            record.detail["restart_clock_offset_s"] = clock_offset_s
        try:
            proc.start(resume=True)
            proc.wait_healthy(self.cfg.recovery_timeout_s)
            record.recovery_s = round(time.monotonic() - t0, 3)
        except RuntimeError as exc:  # a restart that fails (a replay that does not match!) is the finding
            record.detail["error"] = str(exc)[-4000:]
            return record
        self._settle_in_doubt(name, record, t0)
        return record

    def _aim(self, name: str) -> str:
        """Wait (briefly) for a moment worth killing in; what the kill was aimed at."""
        if name == "exchange":
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if self.proxy.in_flight:
                    time.sleep(self._rng.uniform(0.0, 0.03))
                    return "a sale on the wire" if self.proxy.in_flight else "a sale just answered"
                time.sleep(0.002)
            return ""
        if self._kills[name] % 2 == 0:
            return ""
        self._windows += 1
        w = self.load.request_window(f"k{self._windows}")
        deadline = time.monotonic() + 3.0
        while w.attempts == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(self._rng.uniform(0.02, 0.15))
        return f"settlement window {w.window_id} in progress" if w.status == -1 else f"window {w.window_id} closed"

    def _settle_in_doubt(self, name: str, record: FaultRecord, t0: float) -> None:
        deadline = t0 + self.cfg.recovery_timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                r = self.client.get(f"{self.url(name)}/v1/recovery", timeout=5.0)
                body = r.json() if r.status_code == 200 else body
            except httpx.TransportError:
                pass
            if body and body.get("in_doubt_left", 1) == 0:
                break
            time.sleep(_RECOVERY_POLL_S)
        state = body.get("state", {}) if body else {}
        record.in_doubt_found = int(body.get("in_doubt_found", 0))
        record.in_doubt_resolved = int(body.get("in_doubt_resolved", 0))
        record.in_doubt_left = int(body.get("in_doubt_left", -1)) if body else -1
        record.commands_replayed = state.get("commands_replayed")
        record.replay_s = state.get("replay_s")
        record.detail["found"] = body.get("found", [])[:20] if body else []
        record.settled_s = round(time.monotonic() - t0, 3)
        record.recovered = record.in_doubt_left == 0
        if not record.recovered:
            record.detail["error"] = f"in doubt after {self.cfg.recovery_timeout_s} s: {body}"

    def pg_crash(self) -> FaultRecord:
        assert self.pg is not None
        record = FaultRecord("pg_crash", "postgresql", self.now())
        t0 = time.monotonic()
        try:
            self.pg.crash()
            time.sleep(self.cfg.pg_down_s)
            self.pg.restart()
        except Exception as exc:  # the server did not come back: nothing else can be checked
            record.detail["error"] = f"{exc!r}\n{self.pg.log_tail()}"
            return record
        record.detail["down_s"] = round(time.monotonic() - t0, 3)
        waiting = set(PARTIES)
        refusals: Counter[str] = Counter()
        deadline = t0 + self.cfg.recovery_timeout_s
        while waiting and time.monotonic() < deadline:
            for name in sorted(waiting):  # reads every ledger of the service: each of its engines
                try:
                    status = self.client.get(f"{self.url(name)}/v1/ledger/invariants", timeout=30.0).status_code
                except httpx.TransportError:
                    status = 0
                if status == 200:
                    waiting.discard(name)
                else:
                    refusals[f"{name} {status}"] += 1
            time.sleep(_RECOVERY_POLL_S)
        record.recovery_s = round(time.monotonic() - t0, 3)
        record.recovered = not waiting
        record.detail["answers_before_recovered"] = dict(refusals)
        if waiting:
            record.detail["error"] = f"no answer from {sorted(waiting)} after {self.cfg.recovery_timeout_s} s"
        record.detail["rebuilds"] = self._rebuilds()
        return record

    def _rebuilds(self) -> dict[str, int]:
        out = {}
        for name in PARTIES:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                state = self.client.get(f"{self.url(name)}/v1/recovery", timeout=5.0).json().get("state", {})
                out[name] = int(state.get("rebuilds_after_database_failure", 0))
        return out

    def partition_exchange(self) -> FaultRecord:
        """Blackhole (each request held until after the heal, then delivered: late), then refuse,
        then heal; wait for the issuer's breaker to the exchange to close."""
        half = self.cfg.partition_s / 2
        record = FaultRecord("partition", "exchange", self.now())
        mark = self._proxy_snapshot()
        start = self.now()
        self.proxy.faults = Faults(latency_s=self.cfg.partition_s + 1.0)
        time.sleep(half)
        held = self.proxy.stats.requests - mark["requests"]  # every one of them is delivered late
        self.proxy.faults = REFUSE
        time.sleep(half)
        self.proxy.faults = Faults()
        healed = self.now()
        self.partition = (start, healed)
        t0 = time.monotonic()
        record.detail.update({"start_s": round(start, 3), "end_s": round(healed, 3), "held_in_blackhole": held,
                              "held_at_heal": self.proxy.in_flight})
        closed = False
        while time.monotonic() - t0 < self.cfg.recovery_timeout_s:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                body = self.client.get(f"{self.url('issuer')}/v1/recovery", timeout=5.0).json()
                if body["breakers"]["exchange"]["state"] == "closed":
                    closed = True
                    break
            time.sleep(_RECOVERY_POLL_S)
        record.recovery_s = round(time.monotonic() - t0, 3)
        with contextlib.suppress(TimeoutError):
            self.proxy_thread.settle(self.cfg.partition_s + 10.0)  # the late deliveries are done
        record.settled_s = round(time.monotonic() - t0, 3)
        record.detail.update(self._proxy_delta(mark))
        record.recovered = closed
        if not closed:
            record.detail["error"] = "the issuer's breaker to the exchange did not close"
        return record

    def clock_jump(self, name: str, offset_s: float) -> FaultRecord:
        proc = self.parties.procs[name]
        record = FaultRecord("clock_jump", name, self.now(), detail={
            "from_offset_s": proc.clock_offset_s, "to_offset_s": offset_s, "step_s": offset_s - proc.clock_offset_s})
        t0 = time.monotonic()
        try:
            proc.step_clock(offset_s)
            proc.wait_healthy(self.cfg.recovery_timeout_s)
            r = self.client.get(f"{proc.url}/v1/recovery", timeout=10.0)
            record.recovered = r.status_code == 200
        except (RuntimeError, httpx.HTTPError) as exc:
            record.detail["error"] = str(exc)[-2000:]
        record.recovery_s = round(time.monotonic() - t0, 3)
        return record

    def violations_now(self, record: FaultRecord) -> int:
        """Every party's invariants. A service that answers 503 (its database is not back yet) is
        asked again for a while: unavailability is not a violation, but it must end."""
        unreachable: Counter[str] = Counter()
        deadline = time.monotonic() + self.cfg.recovery_timeout_s
        while True:
            try:
                found = collect_invariants(self.parties.urls(), timeout_s=60.0, auth=self.gateway)
            except httpx.HTTPError as exc:
                record.detail["invariants_error"] = repr(exc)
                return -1
            bad = {p: v["violations"] for p, v in found["parties"].items() if not v["ok"]}
            down = {p for p, vs in bad.items() if all(v.get("invariant") in ("unreachable", "slow") for v in vs)}
            unreachable.update(down)
            if not down or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if unreachable:
            record.detail["invariants_unanswered"] = dict(unreachable)
        if bad:
            record.detail["violations"] = bad
            self.problems.append(f"invariants violated after {record.kind} {record.target} at "
                                 f"{record.at_s:.1f} s: {json.dumps(bad)[:600]}")
        return sum(len(v) for v in bad.values())

    def _proxy_snapshot(self) -> dict[str, Any]:
        s = self.proxy.stats
        return {"requests": s.requests, "dropped": dict(s.dropped), "duplicates": len(s.duplicates)}

    def _proxy_delta(self, mark: dict[str, Any]) -> dict[str, Any]:
        s = self.proxy.stats
        dups = s.duplicates[mark["duplicates"]:]
        dropped = {k: v - mark["dropped"].get(k, 0) for k, v in s.dropped.items() if v - mark["dropped"].get(k, 0)}
        return {
            "requests": s.requests - mark["requests"],
            "dropped": dropped,
            "duplicates": len(dups),
            "duplicates_replayed": sum(1 for d in dups if d.replayed),
            "duplicates_not_replayed": dict(Counter(f"{d.method} {d.path.split('?')[0]} -> {d.status}"
                                                    for d in dups if not d.replayed)),
        }

    # -- the end -------------------------------------------------------------------------------
    def drain(self, timeout_s: float) -> dict[str, Any]:
        """Relay every outbox and advice until nothing is owed (or the time is up)."""
        t0 = time.monotonic()
        left: dict[str, Any] = {}
        rounds = 0
        while time.monotonic() - t0 < timeout_s:
            rounds += 1
            left = {}
            for name in ("exchange", "issuer", "network"):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = self.client.post(f"{self.url(name)}/v1/outbox/retry", json={}, timeout=60.0)
                    if r.status_code != 200:
                        left[name] = r.status_code
                    elif r.json()["undelivered"]:
                        left[name] = r.json()["undelivered"]
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = self.client.post(f"{self.url('network')}/v1/advices/retry", json={}, timeout=60.0)
                if r.status_code != 200 or r.json()["pending"]:
                    left["network_advices"] = r.json().get("pending") if r.status_code == 200 else r.status_code
            if not left:
                break
            time.sleep(1.0)
        return {"rounds": rounds, "seconds": round(time.monotonic() - t0, 3), "left": left}

    def final_window(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        status = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180.0:
            try:
                r = self.client.post(f"{self.url('network')}/v1/settlements", json={"window_id": "w-final"},
                                     headers={"Idempotency-Key": "settle-w-final"}, timeout=120.0)
                status, body = r.status_code, r.json()
            except (httpx.HTTPError, ValueError):
                status = 0
            if status == 201:
                break
            time.sleep(1.0)
        return {"status": status, "presentments": body.get("presentments"),
                "undelivered": body.get("undelivered"), "seconds": round(time.monotonic() - t0, 3)}

    def recovery_reports(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in PARTIES:
            try:
                body = self.client.get(f"{self.url(name)}/v1/recovery", timeout=30.0).json()
            except (httpx.HTTPError, ValueError) as exc:
                out[name] = {"error": repr(exc)}
                continue
            out[name] = {k: body.get(k) for k in ("in_doubt_found", "in_doubt_resolved", "in_doubt_left",
                                                  "outbox_pending", "outbox_delivered")}
            out[name]["state"] = body.get("state")
            if "breakers" in body:
                out[name]["breakers"] = body["breakers"]
        return out

    def audit(self, payments: list[Payment]) -> dict[str, Any]:
        """Each payment as the POS saw it, against the issuer's record of its authorization."""
        issuer, exchange = self.url("issuer"), self.url("exchange")
        counts: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}

        def bad(kind: str, p: Payment, state: object) -> None:
            counts[kind] += 1
            examples.setdefault(kind, [])
            if len(examples[kind]) < 10:
                examples[kind].append(f"{p.pid}: POS {p.outcome}/{p.code} clearing={p.clearing!r}; issuer {state}")

        issuer_states: Counter[str] = Counter()
        orphans = 0
        halves = self.client.get(f"{issuer}/v1/ledger/halves", timeout=120.0).json()["halves"]
        proceeds_booked = {h["message_id"] for h in halves if h["purpose"] == "proceeds"}
        sales: Counter[str] = Counter()
        lo, hi = self.partition or (math.inf, -math.inf)
        for p in payments:
            r = self.client.get(f"{issuer}/v1/authorizations/{p.pid}")
            auth = r.json() if r.status_code == 200 else None
            state = auth["state"] if auth else "unknown"
            issuer_states[f"{p.outcome or 'unsent'}->{state}"] += 1
            if p.approved:
                want = {"captured": "captured", "reversed": "reversed"}.get(p.clearing)
                if want is None:
                    bad("approved_not_cleared", p, auth)
                elif auth is None or auth["state"] != want:
                    bad("approved_not_honoured", p, auth)
                elif want == "captured" and auth["captured"] != _fmt(p.amount_minor):
                    bad("captured_amount_differs", p, auth)
            elif p.outcome in ("declined", "stand_in_declined") and auth is not None \
                    and auth["state"] in ("held", "captured"):
                bad("declined_but_held", p, auth)
            if not p.needs_sale or p.first_status < 0:
                continue
            sale = self.client.get(f"{exchange}/v1/sells/{p.pid}:sale")
            if sale.status_code != 200 or not sale.json().get("ok"):
                continue
            during = "partition" if lo <= p.t_s <= hi else "rest"
            sales[f"sold_{during}"] += 1
            orphans += not p.approved
            if f"{p.pid}:sale" in proceeds_booked:  # the issuer booked the sale's proceeds
                sales[f"proceeds_booked_{during}"] += 1
            else:
                bad("sold_without_proceeds", p, sale.json())
        return {"problems": dict(counts), "examples": examples, "pos_outcome_to_issuer_state": dict(issuer_states),
                "orphaned_sales": orphans, "sales": dict(sales)}


def _fmt(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def payment_summary(payments: list[Payment], partition: tuple[float, float] | None, late_sends: int) -> dict[str, Any]:
    outcomes = Counter(p.outcome or "unsent" for p in payments)
    codes = Counter(f"{p.outcome}:{p.code}" for p in payments if p.outcome not in ("approved", ""))
    clearing = Counter((p.clearing.split(":")[0] if p.clearing else "none") for p in payments if p.approved)
    out: dict[str, Any] = {
        "attempted": len(payments),
        "approved": outcomes["approved"],
        "declined": outcomes["declined"],
        "stand_in_approved": outcomes["stand_in_approved"],
        "stand_in_declined": outcomes["stand_in_declined"],
        "refused_4xx": outcomes["refused"],
        "errors": outcomes["error"],
        "retried": sum(1 for p in payments if p.attempts > 1),
        "answered_from_idempotency_store": sum(1 for p in payments if p.replayed),
        "codes": dict(sorted(codes.items())),
        "captured": clearing["captured"],
        "reversed": clearing["reversed"],
        "clearing_failed": clearing["refused"] + clearing["gave_up"] + clearing["none"],
        "captures_waiting_for_advice": sum(1 for p in payments if p.clearing_unknown_auth),
        "late_sends": late_sends,
    }
    lat: dict[str, Any] = {
        "final_answer": latency_stats(p.latency_s for p in payments if p.answered),
        "first_attempt": latency_stats(p.first_latency_s for p in payments if p.first_status == 200),
    }
    if partition is not None:
        lo, hi = partition
        during = [p for p in payments if lo <= p.t_s <= hi]
        lat["partition_all"] = latency_stats(p.first_latency_s for p in during if p.first_status > 0)
        lat["partition_needs_sale"] = latency_stats(p.first_latency_s for p in during
                                                    if p.needs_sale and p.first_status > 0)
        out["partition_payments"] = dict(Counter(p.outcome or "unsent" for p in during))
        out["partition_needs_sale_payments"] = dict(Counter(p.outcome or "unsent" for p in during if p.needs_sale))
        out["partition_unanswered_first_attempt"] = sum(1 for p in during if p.first_status == 0)
    out["latency"] = lat
    return out


def by_kind(records: list[FaultRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r.kind for r in records}):
        rs = [r for r in records if r.kind == kind]
        rec = [r.recovery_s for r in rs if r.recovery_s is not None]
        settled = [r.settled_s for r in rs if r.settled_s is not None]
        out[kind] = {
            "count": len(rs), "recovered": sum(r.recovered for r in rs),
            "by_target": dict(Counter(r.target for r in rs)),
            "recovery_s_median": round(statistics.median(rec), 3) if rec else None,
            "recovery_s_max": max(rec) if rec else None,
            "settled_s_median": round(statistics.median(settled), 3) if settled else None,
            "settled_s_max": max(settled) if settled else None,
            "in_doubt_found": sum(r.in_doubt_found for r in rs),
            "in_doubt_resolved": sum(r.in_doubt_resolved for r in rs),
            "in_doubt_left": sum(max(r.in_doubt_left, 0) for r in rs),
            "first_approval_s_max": max((r.first_approval_s for r in rs if r.first_approval_s is not None),
                                        default=None),
        }
    return out


def run_party_faults(db: str, cfg: FaultsConfig, work_dir: Path, *, pg_shared_url: str = "",
                     out_dir: Path | None = ARTIFACTS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run on ``db`` ("sqlite" or "postgresql"); the summary (also written to ``out_dir``)."""
    started = time.monotonic()
    pg: PgServer | None = None
    database_url, prefix = "", ""
    proxy_thread: ProxyThread | None = None
    parties: Parties | None = None
    load: OpenLoopLoad | None = None
    run: _Run | None = None
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
        run = _Run(cfg, parties, proxy, proxy_thread, load=load, pg=pg)
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


def _partition_summary(cfg: FaultsConfig, run: _Run, pays: dict[str, Any], audit: dict[str, Any]) -> dict[str, Any]:
    if run.partition is None:
        return {}
    rec = next((r for r in run.records if r.kind == "partition"), None)
    lat = pays["latency"]["partition_all"]
    bound_ms = cfg.deadline_ms + 1_000.0  # the deadline, plus the stand-in decision and its advice's staging
    return {"start_s": round(run.partition[0], 3), "end_s": round(run.partition[1], 3),
            "deadline_ms": cfg.deadline_ms, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "max_ms": lat["max_ms"],
            "p99_within_deadline": lat["p99_ms"] is not None and lat["p99_ms"] <= bound_ms,
            "bound_ms": bound_ms, "outcomes": pays.get("partition_payments", {}),
            "needs_sale_outcomes": pays.get("partition_needs_sale_payments", {}),
            "breaker_closed_after_s": rec.recovery_s if rec else None,
            "held_in_blackhole": rec.detail.get("held_in_blackhole") if rec else None,
            "delivered_late_after_heal": rec.detail.get("held_at_heal") if rec else None,
            "sales_for_partition_payments": audit["sales"].get("sold_partition", 0),
            "their_proceeds_booked_at_issuer": audit["sales"].get("proceeds_booked_partition", 0)}


def format_summary(s: dict[str, Any]) -> str:
    if "payments" not in s:
        return f"party faults [{s['database']}]: FAILED\n  " + "\n  ".join(map(str, s.get("problems", [])))
    p = s["payments"]
    k = s["faults_by_kind"].get("kill", {})
    part = s.get("partition") or {}
    lines = [
        f"party faults [{s['database']}]: {'OK' if s['ok'] else 'FAILED'} in {s['wall_s']} s; "
        f"{s['kills']} kills {s['kills_by_service']} ({s['kills_recovered']} recovered; SIGKILL->healthy median "
        f"{k.get('recovery_s_median')} s, max {k.get('recovery_s_max')} s)",
        "  faults: " + ", ".join(f"{kind} x{v['count']}" for kind, v in s["faults_by_kind"].items()),
        f"  payments {p['attempted']}: approved {p['approved']}, declined {p['declined']}, stand-in approved "
        f"{p['stand_in_approved']}, stand-in declined {p['stand_in_declined']}, errors {p['errors']}, retried "
        f"{p['retried']}; captured {p['captured']}, reversed {p['reversed']}",
        f"  latency p50/p99 {p['latency']['final_answer']['p50_ms']}/{p['latency']['final_answer']['p99_ms']} ms; "
        f"partition p50/p99/max {part.get('p50_ms')}/{part.get('p99_ms')}/{part.get('max_ms')} ms "
        f"(deadline {part.get('deadline_ms')} ms)",
        f"  in doubt found {s['in_doubt']['found']}, resolved {s['in_doubt']['resolved']}, left {s['in_doubt']['left']}"
        f" (at end {s['in_doubt']['left_at_end']}); violations {s['violations']}; breaks {s['breaks']}",
    ]
    lines += [f"  problem: {x}" for x in s["problems"][:15]]
    return "\n".join(lines)


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
