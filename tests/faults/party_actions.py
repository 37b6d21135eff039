"""The fault actions of the party-fault harness (:mod:`.party_faults`): kills, PostgreSQL crashes,
the partition, clock jumps and chaos, the watchdog, and the end of a run (drain, final window,
recovery reports)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import asdict
from typing import Any, Final

import httpx

from services.api.auth import SigningAuth
from services.api.parties import collect_invariants

from .party_audit import audit_payments
from .party_cluster import PARTIES, Parties, PgServer
from .party_load import OpenLoopLoad, Payment
from .party_plan import FaultRecord, FaultsConfig, Planned
from .tcp_proxy import Faults, ProxyThread, TcpProxy

__all__ = ["CHAOS", "REFUSE", "FaultRun"]

CHAOS: Final = Faults(latency_s=0.01, jitter_s=0.04, drop_p=0.08, duplicate_p=0.4)
REFUSE: Final = Faults(drop_p=1.0, drop_points=("request_lost",))
_RECOVERY_POLL_S: Final = 0.05


class FaultRun:
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
        """Wait until the restarted service owes nothing it found in doubt. The wait is judged by
        progress, not by the machine's speed: it goes on while rows keep being resolved, and the
        fault is unrecovered once ``recovery_timeout_s`` pass with none resolved (a stall), or at
        ``in_doubt_cap_s``. (A run beside two busy loops found 145 rows in doubt after a kill of
        the network and had resolved 15 of them when a flat 90 s ran out.)"""
        timeout = self.cfg.recovery_timeout_s
        stall_at, cap_at = t0 + timeout, t0 + max(timeout, self.cfg.in_doubt_cap_s)
        fewest: int | None = None
        body: dict[str, Any] = {}
        while time.monotonic() < min(stall_at, cap_at):
            try:
                r = self.client.get(f"{self.url(name)}/v1/recovery", timeout=5.0)
                body = r.json() if r.status_code == 200 else body
            except httpx.TransportError:
                pass
            left = body.get("in_doubt_left") if body else None
            if left == 0:
                break
            if isinstance(left, int) and (fewest is None or left < fewest):
                fewest, stall_at = left, time.monotonic() + timeout  # progress: the stall clock restarts
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
            why = "at the cap" if time.monotonic() >= cap_at else f"none resolved for {timeout} s"
            record.detail["error"] = f"in doubt after {record.settled_s} s ({why}): {body}"

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
        return audit_payments(self, payments)
