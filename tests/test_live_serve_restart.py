"""``ccsim serve``'s supervisor restarts a child that dies, on its books, and gives up on a crash loop.

The four party services run under uvicorn on 127.0.0.1 (the supervisor of ``ccsim serve``), on
SQLite files and on PostgreSQL table prefixes. A child is SIGKILLed; the test waits for the
supervisor's ``restarted`` event (no sleeps), then checks that the restarted service replayed its
books (``GET /v1/recovery``), serves a payment whose approval needs it, and that every party's
invariants and the reconciliation are clean. A service that keeps dying is given up on with a
message naming it and its log, and every service is stopped.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import SQL_BACKENDS, require_postgres
from faults.service import drop_prefix
from signing import RoleAuth
from test_live_concurrency import free_port_block
from test_live_parties import make_seed, pay_body

from services.api.auth import SigningAuth, load_credentials
from services.api.parties import collect_invariants, collect_reconciliation
from sim.live.restarts import RestartPolicy
from sim.live.serve import ServeConfig, Supervisor, SupervisorEvent, describe_exit

pytestmark = pytest.mark.slow

EVENT_WAIT_S = 120.0  # a failure detector only: each wait ends at the supervisor's event


@dataclass
class Watched:
    """A running supervisor whose :meth:`Supervisor.watch` loop runs in a thread, its events queued."""

    supervisor: Supervisor
    events: queue.Queue[SupervisorEvent] = field(default_factory=queue.Queue)
    seen: list[SupervisorEvent] = field(default_factory=list)
    stop: list[bool] = field(default_factory=list)
    exit_code: list[int] = field(default_factory=list)
    thread: threading.Thread | None = None

    def urls(self) -> dict[str, str]:
        return {n: u for n, u in self.supervisor.config.urls().items() if n != "gateway"}

    def pid(self, name: str) -> int:
        child = next(c for c in self.supervisor.children if c.name == name)
        assert child.process is not None
        return child.process.pid

    def forget_start(self) -> None:
        """Drop the start-up events (``up``, ``waiting``) so that :attr:`seen` holds what follows."""
        while not self.events.empty():
            self.events.get_nowait()
        self.seen.clear()

    def wait_for(self, kind: str, name: str) -> SupervisorEvent:
        while True:
            event = self.events.get(timeout=EVENT_WAIT_S)
            self.seen.append(event)
            if event.kind == kind and event.name == name:
                return event
            assert event.kind != "gave_up", f"the supervisor gave up: {event.detail}"


def _start(config: ServeConfig) -> Iterator[Watched]:
    watched = Watched(supervisor=Supervisor(config, make_seed()))
    watched.supervisor.on_event = watched.events.put
    try:
        watched.supervisor.start()
        watched.thread = threading.Thread(
            target=lambda: watched.exit_code.append(watched.supervisor.watch(watched.stop)), daemon=True)
        watched.thread.start()
        yield watched
    finally:
        watched.stop.append(True)
        if watched.thread is not None:
            watched.thread.join(timeout=EVENT_WAIT_S)
        watched.supervisor.stop()


@pytest.fixture(params=SQL_BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    database_url = require_postgres() if request.param == "postgres" else ""
    prefix = f"t_{uuid.uuid4().hex[:10]}_" if database_url else ""
    config = ServeConfig(data_dir=tmp_path / "live", port=free_port_block(), database_url=database_url,
                         table_prefix=prefix, gateway=False, start_timeout_s=120.0, restarts_max=2)
    try:
        yield from _start(config)
    finally:
        if database_url:
            drop_prefix(database_url, prefix)


def test_a_killed_issuer_is_restarted_on_its_books_and_the_chain_serves_again(served: Watched) -> None:
    urls = served.urls()
    credentials = load_credentials(served.supervisor.config.data_dir / "credentials.json")  # the keys serve wrote
    with httpx.Client(timeout=60.0, auth=RoleAuth(credentials)) as client:
        first = client.post(f"{urls['network']}/v1/payments", json=pay_body("p1"), headers={"Idempotency-Key": "k1"})
        assert first.status_code == 200 and first.json()["approved"], first.text
        old_pid = served.pid("issuer")
        served.forget_start()

        os.kill(old_pid, signal.SIGKILL)
        died = served.wait_for("died", "issuer")
        assert died.detail == "killed by SIGKILL"
        restarting = served.wait_for("restarting", "issuer")
        assert "restart 1 of at most 2" in restarting.detail
        served.wait_for("restarted", "issuer")
        assert served.pid("issuer") != old_pid
        assert [e.kind for e in served.seen if e.name != "issuer"] == []  # the others kept serving untouched

        recovery = client.get(f"{urls['issuer']}/v1/recovery").json()
        assert recovery["state"]["started"] == "replayed"  # its books and command log, as --resume starts it
        assert recovery["state"]["commands_replayed"] > 0
        held = client.get(f"{urls['issuer']}/v1/authorizations/p1").json()
        assert held["state"] == "held"  # the approval before the kill is still there

        second = client.post(f"{urls['network']}/v1/payments", json=pay_body("p2", card="c2", amount="1000.00"),
                             headers={"Idempotency-Key": "k2"})
        assert second.status_code == 200 and second.json()["approved"] and not second.json()["stand_in"]
        ports = (served.supervisor.ports_path).read_text()
        assert str(served.pid("issuer")) in ports  # the ports file names the new process

    gateway = SigningAuth(credentials.principal("gateway"))
    invariants = collect_invariants(urls, auth=gateway)
    assert invariants["ok"] is True, invariants
    assert collect_reconciliation(urls, auth=gateway) == []
    assert served.exit_code == []  # still watching


def test_a_crash_loop_is_given_up_on_naming_the_service_and_its_log(tmp_path: Path) -> None:
    config = ServeConfig(data_dir=tmp_path / "live", port=free_port_block(), gateway=False, start_timeout_s=120.0,
                         restarts_max=1)
    for watched in _start(config):
        # From now on the bank cannot start: its seed file is unreadable, so every restart dies at once.
        watched.supervisor.seed_path.write_text("{not json", encoding="utf-8")
        os.kill(watched.pid("bank"), signal.SIGKILL)
        watched.wait_for("died", "bank")
        watched.wait_for("restarting", "bank")
        watched.wait_for("died", "bank")  # the restart died while starting
        gave_up = watched.wait_for("gave_up", "bank")
        assert "bank died 2 times within 600 s (at most 1 restarts" in gave_up.detail
        assert "crash loop" in gave_up.detail and str(config.data_dir / "logs" / "bank.log") in gave_up.detail
        assert watched.thread is not None
        watched.thread.join(timeout=EVENT_WAIT_S)
        assert watched.exit_code == [1]


def test_the_restart_policy_backs_off_and_bounds_restarts_per_window() -> None:
    policy = RestartPolicy(restarts_max=3, window_s=100.0, backoff_max_s=1.5)
    decisions = [policy.died("issuer", t) for t in (0.0, 1.0, 2.0)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.delay_s for d in decisions] == [0.5, 1.0, 1.5]  # doubling, capped
    assert not policy.died("issuer", 3.0).allowed  # a 4th death within 100 s: a crash loop
    assert policy.died("bank", 3.0).allowed  # counted per service
    assert policy.died("issuer", 200.0).allowed  # the window has passed: restarting is allowed again
    with pytest.raises(ValueError, match="restarts_max"):
        RestartPolicy(restarts_max=-1)


def test_exits_are_described_by_signal_name() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
