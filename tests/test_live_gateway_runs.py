"""The gateway's runs API puts a limit on everything: run size, run time, runs kept and their disk.

In-process (httpx ``ASGITransport``). A run beyond the limits is refused before it starts with a 422
naming the scenario field; a running run is cancelled by ``DELETE /v1/runs/{id}`` (its slot freed,
its partial directory removed) or by the wall-time limit; the oldest finished runs are removed
beyond the count and byte caps. Waits end on the run's own ``finished`` event, not on a clock.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_live_gateway import SHORT

from services.api import close_app
from sim.components.arrivals import ArrivalSchedule
from sim.live.gateway import GatewaySettings, create_gateway_app
from sim.live.run_limits import MARKER, RunLimits, expected_payments, prune_runs
from sim.live.run_manager import RunManager
from sim.scenario import ArrivalsSpec, Burst

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0  # a failure detector only: each wait ends at the run's event
LONG: dict[str, Any] = {**SHORT, "duration_s": 6 * 86_400, "arrivals.rate_per_s": 2,
                        "services.exchange.outages": []}  # about a million payments: minutes of work


def _settings(tmp_path: Path, **extra: Any) -> GatewaySettings:
    return GatewaySettings(scenarios_dir=ROOT / "scenarios", runs_dir=tmp_path / "runs", data_dir=tmp_path / "data",
                           **extra)


class Gateway:
    def __init__(self, tmp_path: Path, **extra: Any) -> None:
        self.app = create_gateway_app(_settings(tmp_path, **extra))
        self.manager: RunManager = self.app.state.runs
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway")
        self.runs_dir = tmp_path / "runs"

    async def start(self, overrides: dict[str, Any], scenario: str = "jit") -> dict[str, Any]:
        response = await self.client.post("/v1/runs", json={"scenario": scenario, "overrides": overrides})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def finished(self, run_id: str) -> dict[str, Any]:
        state = self.manager.get(run_id)
        assert state is not None
        assert await asyncio.to_thread(state.finished.wait, WAIT_S), f"run {run_id} never finished"
        view = (await self.client.get(f"/v1/runs/{run_id}")).json()
        assert isinstance(view, dict)
        return view

    def run_dirs(self) -> list[str]:
        return sorted(d.name for d in self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []

    async def close(self) -> None:
        for state in list(self.manager._runs.values()):
            if state.active:
                self.manager.cancel(state.run_id)
                await asyncio.to_thread(state.finished.wait, WAIT_S)
        await self.client.aclose()
        close_app(self.app)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp_path, max_running_runs=1)
    yield gw
    await gw.close()


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field", "reason"), [
    ({"duration_s": 1e308}, "overrides.duration_s", "longer than this gateway runs"),
    ({"duration_s": 8 * 86_400}, "overrides.duration_s", "at most 604800 s"),
    ({"arrivals.rate_scale": 1e6}, "overrides.arrivals.rate_scale", "payments expected"),
    ({"duration_s": 6 * 86_400, "arrivals.rate_per_s": 50}, "overrides.arrivals.rate_per_s", "at most 2,000,000"),
    ({"population.cardholders.count": 10_000_000}, "overrides.population.cardholders.count", "at most 200000"),
])
async def test_runs_beyond_the_limits_are_refused_naming_the_field(
    gateway: Gateway, overrides: dict[str, Any], field: str, reason: str,
) -> None:
    response = await gateway.client.post("/v1/runs", json={"scenario": "jit", "overrides": overrides})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert reason in errors[0]["reason"]
    assert (await gateway.client.get("/v1/runs")).json() == []  # nothing started
    assert gateway.run_dirs() == []  # and nothing written


def test_the_payment_bound_is_the_arrival_rate_integrated_over_the_run() -> None:
    spec = ArrivalsSpec(rate_per_s=0.5, rate_scale=3.0, start_hour=22,
                        hourly_profile=tuple(float(h % 5) for h in range(24)),
                        bursts=(Burst(start_s=1_000.0, duration_s=2_500.0, multiplier=4.0),))
    duration_s = 2 * 86_400 + 1_234.5
    schedule = ArrivalSchedule(spec, np.random.default_rng(0))  # the simulator's own rate, piece by piece
    t, integral = 0.0, 0.0
    while t < duration_s:
        brk = min(schedule.next_break(t), duration_s)
        integral += schedule.rate_at(t) * (brk - t)
        t = brk
    assert expected_payments(spec, duration_s) == pytest.approx(integral, rel=1e-12)
    assert expected_payments(spec, duration_s) > 0


# -- cancel -----------------------------------------------------------------------------------------


async def test_a_running_run_is_cancelled_its_slot_freed_and_its_directory_removed(gateway: Gateway) -> None:
    run = await gateway.start(LONG)
    assert (await gateway.client.post("/v1/runs", json={"scenario": "jit", "overrides": SHORT})).status_code == 429

    cancelled = await gateway.client.delete(f"/v1/runs/{run['id']}")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelling"
    done = await gateway.finished(run["id"])
    assert done["status"] == "cancelled" and done["error"] == "cancelled on request"
    assert done["progress"]["fraction"] < 1.0 and done["report_url"] is None
    assert gateway.run_dirs() == []  # the partial results are gone: no half run to read

    again = await gateway.start(SHORT)  # the slot is free again
    assert (await gateway.finished(again["id"]))["status"] == "done"


async def test_a_finished_run_is_removed_with_its_directory(gateway: Gateway) -> None:
    run = await gateway.start(SHORT)
    assert (await gateway.finished(run["id"]))["status"] == "done"
    assert gateway.run_dirs() == [run["id"]]
    assert (await gateway.client.delete(f"/v1/runs/{run['id']}")).status_code == 204
    assert gateway.run_dirs() == []
    assert (await gateway.client.get(f"/v1/runs/{run['id']}")).status_code == 404
    gone = await gateway.client.delete(f"/v1/runs/{run['id']}")
    assert gone.status_code == 404 and gone.json()["errors"][0]["field"] == "run_id"


async def test_a_run_past_its_wall_time_limit_is_cancelled(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, max_running_runs=1, max_run_wall_s=0.001)
    try:
        run = await gw.start(LONG)
        done = await gw.finished(run["id"])
        assert done["status"] == "cancelled"
        assert done["error"] == "ran longer than 0.001 s of wall time (the gateway's limit)"
        assert gw.manager.running_count() == 0
    finally:
        await gw.close()


# -- runs kept ------------------------------------------------------------------------------------


async def test_the_oldest_runs_beyond_the_count_are_removed_with_their_directories(tmp_path: Path) -> None:
    earlier = tmp_path / "runs" / "19990101T000000-1"  # a run an earlier gateway left
    earlier.mkdir(parents=True)
    (earlier / MARKER).write_text("{}")
    (tmp_path / "runs" / "not-a-run").mkdir()  # a directory the gateway did not make: never touched
    gw = Gateway(tmp_path, max_running_runs=1, max_kept_runs=2)
    try:
        ids = []
        for _ in range(3):
            run = await gw.start(SHORT)
            assert (await gw.finished(run["id"]))["status"] == "done"
            ids.append(run["id"])
        assert gw.run_dirs() == sorted([*ids[1:], "not-a-run"])
        assert [r["id"] for r in (await gw.client.get("/v1/runs")).json()] == [ids[2], ids[1]]
        assert (await gw.client.get(f"/v1/runs/{ids[0]}")).status_code == 404
    finally:
        await gw.close()


def test_the_oldest_run_directories_beyond_the_byte_cap_are_removed(tmp_path: Path) -> None:
    for i, size in enumerate((400, 300, 200, 100)):
        run = tmp_path / f"r{i}"
        run.mkdir()
        (run / "results.db").write_bytes(b"x" * size)
        (run / MARKER).write_text("{}")
        stamp = 1_000_000 + i
        os.utime(run / MARKER, (stamp, stamp))
    removed = prune_runs(tmp_path, busy={"r0"}, limits=RunLimits(kept_max=10, disk_bytes_max=350))
    assert removed == ["r1"]  # r0 is running (busy); r1 is the oldest finished; 300 bytes are left
    assert sorted(d.name for d in tmp_path.iterdir()) == ["r0", "r2", "r3"]
    assert prune_runs(tmp_path, busy=set(), limits=RunLimits(kept_max=1, disk_bytes_max=1)) == ["r0", "r2"]
    assert [d.name for d in tmp_path.iterdir()] == ["r3"]  # the newest is kept even above the cap


# -- scenario sources -----------------------------------------------------------------------------


async def test_the_dashboard_lists_the_serve_file_the_directory_and_the_library_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    library = {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text((ROOT / "scenarios" / "jit.yaml").read_text().replace("description:", "description: MINE"))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "jit.yaml").write_text("description: the directory's jit\n")
    (extra / "broken.yaml").write_text("duration_s: -1\n")
    monkeypatch.chdir(tmp_path)  # no ./scenarios here: the library is found beside the package
    app = create_gateway_app(GatewaySettings(scenario_file=mine, scenarios_dir=extra, runs_dir=tmp_path / "runs",
                                             data_dir=tmp_path / "data"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        listed = {s["name"]: s for s in (await client.get("/v1/scenarios")).json()}
        assert set(listed) == library | {"mine", "broken"}
        assert listed["mine"]["source"] == "serve" and listed["mine"]["description"].startswith("MINE")
        assert listed["jit"]["source"] == "dir" and listed["jit"]["description"] == "the directory's jit"
        assert listed["broken"]["valid"] is False and "duration_s" in listed["broken"]["error"]
        assert listed["exchange_outage"]["source"] == "library"
        run = await client.post("/v1/runs", json={"scenario": "mine", "overrides": SHORT})
        assert run.status_code == 202, run.text
        state = app.state.runs.get(run.json()["id"])
        assert await asyncio.to_thread(state.finished.wait, WAIT_S) and state.status == "done"
    close_app(app)


# -- readiness and slow parties -------------------------------------------------------------------


async def _silent_server() -> tuple[asyncio.Server, str]:
    """Accepts connections and reads, never answers: a party busy with a long check."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _healthy_server() -> tuple[asyncio.Server, str]:
    """Answers every request 200 with an empty-invariants body, like a party that is up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"service": "bank", "parties": [{"party": "bank-1", "ok": True, "violations": []}],
                           "halves": [], "in_transit": []}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _closed_port_url() -> str:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: nobody listens


async def test_readyz_is_ready_only_when_every_party_answers(tmp_path: Path) -> None:
    up, up_url = await _healthy_server()
    urls = {"network": up_url, "bank": _closed_port_url()}
    ready_app = create_gateway_app(_settings(tmp_path, party_urls={"network": up_url}))
    down_app = create_gateway_app(_settings(tmp_path, party_urls=urls))
    none_app = create_gateway_app(_settings(tmp_path))
    try:
        for app, status in ((ready_app, 200), (down_app, 503), (none_app, 503)):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
                assert (await client.get("/healthz")).status_code == 200  # alive, whatever the parties
                response = await client.get("/readyz")
                assert response.status_code == status, response.text
                if app is ready_app:
                    assert response.json() == {"status": "ready", "parties": {"network": "up"}}
                if app is down_app:
                    problem = response.json()
                    assert [e["field"] for e in problem["errors"]] == ["parties.bank"]
                    assert response.headers["retry-after"] == "5"
    finally:
        up.close()
        for app in (ready_app, down_app, none_app):
            close_app(app)


async def test_a_party_that_answers_late_is_slow_not_a_violation(tmp_path: Path) -> None:
    silent, silent_url = await _silent_server()
    up, up_url = await _healthy_server()
    urls = {"exchange": silent_url, "bank": up_url}
    app = create_gateway_app(_settings(tmp_path, party_urls=urls, check_timeout_s=0.2))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
            invariants = await client.get("/v1/ledger/invariants")
            assert invariants.status_code == 200
            body = invariants.json()
            assert body["ok"] is None  # not known yet: no party failed, one has not answered
            assert body["parties"]["exchange"]["state"] == "slow"
            assert body["parties"]["exchange"]["ok"] is None and body["parties"]["exchange"]["violations"] == []
            assert "0.2 s" in body["parties"]["exchange"]["detail"]
            assert body["parties"]["bank-1"] == {"ok": True, "service": "bank", "state": "checked", "violations": []}

            reconciliation = await client.get("/v1/reconciliation")
            assert reconciliation.status_code == 503
            problem = reconciliation.json()
            assert problem["type"] == "urn:ccsim:problem:slow" and "slow" in problem["detail"]
            assert reconciliation.headers["retry-after"] == "30"
        down_app = create_gateway_app(_settings(tmp_path, party_urls={"exchange": _closed_port_url()}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=down_app), base_url="http://g") as client:
            body = (await client.get("/v1/ledger/invariants")).json()
            assert body["ok"] is False and body["parties"]["exchange"]["state"] == "unreachable"
            assert [v["invariant"] for v in body["parties"]["exchange"]["violations"]] == ["unreachable"]
        close_app(down_app)
    finally:
        silent.close()
        up.close()
        close_app(app)
