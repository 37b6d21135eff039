"""Recovery in the live party services: the durable outbox, its relay, the start-up recovery
report, restart on the service's own books, and the issuer's circuit breaker to the exchange.

In-process (``httpx.ASGITransport``) on SQLite and PostgreSQL, with the four apps of
``test_live_parties``. A lost delivery is produced by pointing the sender's route at a host that
does not exist, *after* the sender's local commit; a dead exchange the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SQL_BACKENDS
from faults.ports import free_port_block
from signing import RoleAuth
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from test_live_parties import FACTORIES, Live, assert_clean, make_seed, pay_body

from services.api import close_app
from services.api.outbox import Outbox, OutboxEntry, RecoveryReport, Relay
from services.api.parties import create_bank_app, create_issuer_app, write_seed
from services.api.parties.base import StartupError
from services.api.parties.breaker import BreakerState, CircuitBreaker
from services.api.parties.durable import DurabilityError
from services.api.transport_http import HttpTransport
from services.ledger import Account, Transfer, TransferResult
from services.ledger.sql import SqlLedger
from services.messaging import PaymentMessage, Purpose
from services.money import D
from sim.live.serve import ServiceProcess


class CountingRouter(httpx.AsyncBaseTransport):
    """Wraps the test router and counts the requests sent to each host."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.calls[host] = self.calls.get(host, 0) + 1
        return await self.inner.handle_async_request(request)


class RecoveryLive(Live):
    """:class:`Live` whose outbound calls are counted."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        super().__init__(backend, tmp_path, make_seed())


@pytest.fixture(params=SQL_BACKENDS)
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecoveryLive]:
    parties = RecoveryLive(request.param, tmp_path)
    try:
        yield parties
    finally:
        await parties.close()


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so that a type checker does not narrow the state across steps


def outbox_rows(app: Any) -> dict[str, str]:
    outbox: Outbox = app.state.outbox
    with outbox._engine.connect() as conn:
        return {r.id: r.state for r in conn.execute(select(outbox.table))}


# -- the outbox row commits with the booking, or not at all --------------------------------------


def test_hook_rows_commit_and_roll_back_with_the_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'books.db'}"
    ledger = SqlLedger(url, name="p")
    outbox = Outbox(url, table_prefix="p_")
    try:
        ledger.create_accounts([Account("a", "KZT"), Account("b", "KZT")])
        msg = PaymentMessage("m1", Purpose.PROCEEDS, "exchange", "issuer", "bank-1", "bank-2", 100)

        def boom(conn: Any, staging: Any) -> None:
            outbox.stage_message(conn, "bank-1", msg)
            raise RuntimeError("the process dies inside the transaction")

        with pytest.raises(RuntimeError), ledger.also_in_transaction(boom):
            ledger.create_transfers([Transfer("m1:pay", "a", "b", 100, "KZT")])
        assert ledger.transfer("m1:pay") is None and outbox.undelivered() == []  # neither committed

        def stage(conn: Any, staging: Any) -> None:
            if "m1:pay" in staging.transfers:
                outbox.stage_message(conn, "bank-1", msg)

        with ledger.also_in_transaction(stage):
            assert ledger.create_transfers([Transfer("m1:pay", "a", "b", 100, "KZT")]) == [TransferResult.OK]
            assert ledger.create_transfers([Transfer("m1:pay", "a", "b", 100, "KZT")]) == [TransferResult.EXISTS]
        ledger.create_transfers([Transfer("other", "a", "b", 1, "KZT")])  # outside the context: no hook
        assert ledger.transfer("m1:pay") is not None and outbox.undelivered() == ["m1"]
        assert outbox.pending()[0].message(outbox.assets) == msg
    finally:
        ledger.close()
        outbox.close()


# -- (a) a sale committed, its proceeds not delivered: the relay delivers them exactly once -------


async def test_sale_whose_proceeds_were_lost_is_delivered_once_by_the_relay(live: RecoveryLive) -> None:
    exchange = live.apps["exchange"].state.exchange_service
    routes = exchange.ctx.transport.routes
    bank_url = routes["bank-1"]
    routes["bank-1"] = "http://bank-down"  # every delivery after the sale's commit is lost
    r = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    assert r.status_code == 200, r.text
    assert r.json()["code"] == "91"  # sold, but the proceeds did not arrive in time: declined
    sale = (await live.client.get("http://exchange/v1/sells/p1:sale")).json()
    assert sale["ok"] and sale["proceeds_delivered"] is False
    assert outbox_rows(live.apps["exchange"]) == {"p1:sale": "pending"}
    _, breaks = await live.integrity()
    assert [b.message_id for b in breaks] == ["p1:sale"]  # booked by the exchange only, for now
    assert (await live.post("http://exchange/v1/outbox/retry", {})).json() == {"undelivered": ["p1:sale"]}

    routes["bank-1"] = bank_url  # the bank is back: the relay finishes the step
    assert await exchange.relay.run_once(force=True) == []
    assert outbox_rows(live.apps["exchange"]) == {"p1:sale": "delivered"}
    card = (await live.client.get("http://issuer/v1/cards/c1")).json()
    assert D(card["available"]) == D(sale["net"])  # the orphaned sale's tenge stays on the card
    sizes = live.journal_sizes()
    assert await exchange.relay.run_once(force=True) == []  # nothing left to send
    net_minor = exchange.ctx.assets.parse(sale["net"], "KZT")
    assert await exchange.ctx.transport.asend("bank-1", exchange._proceeds("p1:sale", "p1", net_minor))
    assert live.journal_sizes() == sizes  # a duplicate delivery is acknowledged and books nothing
    recovery = (await live.client.get("http://exchange/v1/recovery")).json()
    assert recovery["outbox_pending"] == 0 and recovery["outbox_delivered"] == 1
    await assert_clean(live)


async def test_network_settlement_payments_are_staged_and_relayed(live: RecoveryLive) -> None:
    await live.post("http://network/v1/payments", pay_body("p1", card="c2"), "k1")
    await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5000.00"}, "k2")
    network = live.apps["network"].state.network_service
    routes = network.ctx.transport.routes
    saved = dict(routes)
    for bank_id in ("bank-1", "bank-2", "bank-3"):
        routes[bank_id] = "http://bank-down"
    issuer_url = network.ctx.settings.issuer_url
    network.ctx.settings.issuer_url = "http://issuer-down"
    r = await live.post("http://network/v1/settlements", {"window_id": "w1"}, "k3")
    assert r.status_code == 201, r.text
    undelivered = r.json()["undelivered"]
    pending = {row for row, state in outbox_rows(live.apps["network"]).items() if state == "pending"}
    assert undelivered and set(undelivered) == pending  # (the presentment's own row was done with it)
    routes.update(saved)
    network.ctx.settings.issuer_url = issuer_url
    assert (await live.post("http://network/v1/outbox/retry", {})).json() == {"undelivered": []}
    assert (await live.client.get("http://network/v1/settlements/w1")).json()["undelivered"] == []
    await assert_clean(live)


# -- the relay and the start-up recovery report ---------------------------------------------------


async def test_relay_backs_off_then_delivers_what_a_previous_run_left(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'party.db'}"
    first = Outbox(url)
    for i in range(3):
        with first._engine.begin() as conn:
            first.stage_message(conn, "bank-1", PaymentMessage(f"m{i}", Purpose.PROCEEDS, "exchange", "issuer",
                                                               "bank-1", "bank-2", 100 + i))
    first.close()  # the process that booked them is gone

    restarted = Outbox(url)
    report = RecoveryReport(service="exchange", outbox_found=restarted.undelivered())
    tries: list[str] = []
    failing = {"m1"}

    async def deliver(entry: OutboxEntry) -> bool:
        tries.append(entry.id)
        return entry.id not in failing

    relay = Relay(restarted, deliver, report=report, interval_s=3600.0)
    try:
        assert await relay.run_once() == ["m1"]
        assert await relay.run_once() == ["m1"] and tries == ["m0", "m1", "m2"]  # m1 waits out its backoff
        failing.clear()
        assert await relay.run_once(force=True) == []
        body = report.as_dict(restarted)
        assert (body["in_doubt_found"], body["in_doubt_resolved"], body["in_doubt_left"]) == (3, 3, 0)
        assert body["outbox_delivered"] == 3 and restarted.pending() == []
    finally:
        restarted.close()


async def test_relay_runs_in_the_lifespan(live: RecoveryLive) -> None:
    app = live.apps["exchange"]
    relay = app.state.relay
    async with app.router.lifespan_context(app):
        assert relay._task is not None and not relay._task.done()
    assert relay._task is None


# -- (b) restart on the service's own books -------------------------------------------------------


async def test_bank_restarts_on_its_books_and_serves_again(live: RecoveryLive) -> None:
    assert (await live.post("http://network/v1/payments", pay_body("p1"), "k1")).json()["approved"]
    before = (await live.client.get("http://bank/v1/banks/bank-1/customers/exchange")).json()
    old = live.apps["bank"]
    sizes = [len(x) for x in old.state.bank_service.ledgers.values()]
    close_app(old)  # the process is gone; its books stay
    with pytest.raises(StartupError, match="--resume"):
        create_bank_app(live.settings("bank"))
    app = create_bank_app(live.settings("bank", resume=True), http_client=live.outbound)
    live.apps["bank"] = app
    live.router.apps["bank"] = httpx.ASGITransport(app=app)
    assert [len(x) for x in app.state.bank_service.ledgers.values()] == sizes  # seeding again booked nothing
    assert (await live.client.get("http://bank/v1/banks/bank-1/customers/exchange")).json() == before
    recovery = (await live.client.get("http://bank/v1/recovery")).json()
    assert recovery["in_doubt_left"] == 0 and "started on" in recovery["notes"][0]
    assert (await live.post("http://network/v1/payments", pay_body("p2"), "k2")).json()["approved"]
    await assert_clean(live)


async def _observe(live: RecoveryLive) -> dict[str, Any]:
    """What a client can see of the exchange's, issuer's and network's state in memory."""
    get = live.client.get
    return {
        "auth_p1": (await get("http://issuer/v1/authorizations/p1")).json(),
        "auth_p2": (await get("http://issuer/v1/authorizations/p2")).json(),
        "card_c1": (await get("http://issuer/v1/cards/c1")).json(),
        "card_c2": (await get("http://issuer/v1/cards/c2")).json(),
        "sale": (await get("http://exchange/v1/sells/p1:sale")).json(),
        "tax_h1": (await get("http://exchange/v1/tax/statements/h1")).json(),
        "wallet_h1": (await get("http://exchange/v1/wallets/h1")).json(),
        "prices": (await get("http://exchange/v1/prices")).json(),
        "network_halves": (await get("http://network/v1/ledger/halves")).json(),
    }


def _restart(live: RecoveryLive, party: str, **settings: Any) -> Any:
    close_app(live.apps[party])  # the process is gone; its database stays
    app = FACTORIES[party](live.settings(party, **settings), http_client=live.outbound)
    live.apps[party] = app
    live.router.apps[party] = httpx.ASGITransport(app=app)
    return app


async def test_parties_restart_on_their_books_and_carry_on(live: RecoveryLive) -> None:
    """Exchange, issuer and network rebuild their state from the command log: the same answers
    after the restart as before, and the next payments, captures and settlement run on it."""
    assert (await live.post("http://network/v1/payments", pay_body("p1"), "k1")).json()["approved"]  # a JIT sale
    assert (await live.post("http://exchange/v1/prices", {"asset": "BTC", "price_kzt": "47000000"})).status_code == 200
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5000.00"},
                        "c1")
    assert r.status_code == 201, r.text  # in the acquirer's open batch
    assert (await live.post("http://network/v1/payments", pay_body("p2", card="c2", amount="700.00"),
                            "k2")).json()["approved"]  # a hold left open
    before = await _observe(live)
    assert before["network_halves"]["in_transit"] == ["p1"]
    for party in ("exchange", "issuer", "network"):
        with pytest.raises(StartupError, match="--resume"):  # never silently on old books
            FACTORIES[party](live.settings(party))
        _restart(live, party, resume=True)
        state = (await live.client.get(f"http://{party}/v1/recovery")).json()["state"]
        assert state["started"] == "replayed" and state["commands_replayed"] > 1, state
        assert state["transfers_verified"] > 0
    assert await _observe(live) == before
    # The replayed state keeps its promises: the sale is not made twice under another key...
    order = {"id": "p1:sale", "holder_id": "h1", "net": "1.00", "asset_priority": ["BTC"]}
    again = await live.post("http://exchange/v1/sells", order, "another-key")
    assert again.status_code == 200 and again.json()["id"] == "p1:sale"
    # ...the open hold can be captured, and a new payment, a window and the books all work.
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p2", "amount": "700.00"},
                        "c2")
    assert r.status_code == 201, r.text
    assert (await live.post("http://network/v1/payments", pay_body("p3"), "k3")).json()["approved"]
    r = await live.post("http://network/v1/settlements", {"window_id": "w1"}, "w1")
    assert r.status_code == 201 and r.json()["presentments"] == 2 and r.json()["undelivered"] == []
    _restart(live, "network", resume=True)  # a closed window survives a restart too
    assert (await live.client.get("http://network/v1/settlements/w1")).json() == r.json()
    await assert_clean(live)


async def test_a_replay_that_disagrees_with_the_books_stops_the_start(live: RecoveryLive) -> None:
    assert (await live.post("http://network/v1/payments", pay_body("p1"), "k1")).json()["approved"]
    issuer = live.apps["issuer"].state.issuer_service
    hold = issuer.sql_ledger.transfer("p1:hold")
    assert hold is not None
    close_app(live.apps["issuer"])
    table = issuer.sql_ledger._t
    with issuer.sql_ledger._writer.begin() as conn:  # someone edits the books behind the service's back
        conn.execute(table.update().where(table.c.id == "p1:hold").values(amount=hold.amount + 1))
    with pytest.raises(DurabilityError, match="p1:hold differs after replay"):
        create_issuer_app(live.settings("issuer", resume=True))
    _restart(live, "issuer", reset=True)  # with --reset it starts over


async def test_a_lost_database_write_rebuilds_the_state_before_the_next_command(live: RecoveryLive) -> None:
    """The database fails while a command runs: it answers 503, and the next access to the state
    first rebuilds it from the log, so nothing of the lost command stays in memory."""
    issuer = live.apps["issuer"].state.issuer_service
    durable = issuer.ctx.durable
    real = durable.unit.before_commit

    def failing(callback: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    durable.unit.before_commit = failing  # type: ignore[method-assign]
    r = await live.post("http://issuer/v1/cards", {"card_id": "c9", "holder_id": "h2", "residency": "resident",
                                                   "kyc_tier": "standard", "funding_mode": "prefunded"})
    assert r.status_code == 503 and r.json()["errors"][0]["field"] == "database"
    assert durable.broken and "c9" in issuer.issuer.cards  # memory ran ahead of the books
    durable.unit.before_commit = real  # type: ignore[method-assign]
    assert (await live.client.get("http://issuer/v1/cards/c9")).status_code == 404  # rebuilt before the read
    assert not durable.broken and durable.report.rebuilds == 1
    assert "c9" not in issuer.issuer.cards  # the lost command is gone from memory too
    assert (await live.post("http://network/v1/payments", pay_body("p1"), "k1")).json()["approved"]
    await assert_clean(live)


# -- (c) the circuit breaker to the exchange ------------------------------------------------------


async def test_breaker_opens_declines_fast_without_calls_and_closes_after_cooldown(live: RecoveryLive) -> None:
    counting = CountingRouter(live.router)
    live.outbound._transport = counting  # count what the services send each other
    issuer = live.apps["issuer"].state.issuer_service
    now = [0.0]
    breaker = issuer.exchange_breaker  # the service's own (its metrics are registered); a test clock
    breaker.failures_max, breaker.cooldown_s, breaker._now_s = 2, 30.0, lambda: now[0]
    issuer.ctx.settings.exchange_url = "http://exchange-down"
    for i in range(2):  # JIT card: each needs a sale; the exchange does not answer
        r = await live.post("http://network/v1/payments", pay_body(f"f{i}", amount="100.00"), f"kf{i}")
        assert r.json()["code"] == "91"
    assert state_of(breaker) is BreakerState.OPEN and breaker.opened == 1
    calls_before = counting.calls.get("exchange-down", 0)
    assert calls_before > 0
    for i in range(3):
        r = await live.post("http://network/v1/payments", pay_body(f"o{i}", amount="100.00"), f"ko{i}")
        assert r.json()["code"] == "91" and not r.json()["stand_in"]
    assert counting.calls.get("exchange-down", 0) == calls_before  # 0 calls while open
    assert breaker.rejected == 3
    metrics = (await live.client.get("http://issuer/metrics")).text
    assert 'ccsim_breaker_state{party="issuer",peer="exchange"} 2.0' in metrics
    issuer.ctx.settings.exchange_url = "http://exchange"
    now[0] = 31.0  # the cool-down has passed: one probe goes out, succeeds, and closes the breaker
    assert state_of(breaker) is BreakerState.HALF_OPEN
    r = await live.post("http://network/v1/payments", pay_body("ok1", amount="100.00"), "kok1")
    assert r.json()["approved"], r.json()
    assert state_of(breaker) is BreakerState.CLOSED
    recovery = (await live.client.get("http://issuer/v1/recovery")).json()
    assert recovery["breakers"]["exchange"]["state"] == "closed"
    await assert_clean(live)


def test_half_open_lets_one_probe_and_a_failed_probe_reopens() -> None:
    now = [0.0]
    breaker = CircuitBreaker("issuer", "exchange", failures_max=1, cooldown_s=5.0, now_s=lambda: now[0])
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert state_of(breaker) is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.success()
    assert state_of(breaker) is BreakerState.CLOSED and breaker.allow() and breaker.allow()


async def test_outbound_calls_time_out_on_a_peer_that_never_answers(live: RecoveryLive) -> None:
    for app in live.apps.values():  # every party's transport has a connect and a total timeout
        transport = app.state.party.transport
        assert transport.timeout_s > 0 and transport._timeout.connect is not None
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the connection, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport({}, timeout_s=0.2, connect_timeout_s=0.2, retries_max=1, backoff_s=0.01)
    try:
        assert await transport.apost(f"http://127.0.0.1:{port}", "/v1/sells", {}, key="t") is None
        assert len(accepted) == 2  # the first attempt timed out, the one retry too
    finally:
        await transport.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


# -- a real SIGKILL: the bank service under uvicorn, killed and restarted on its books --------------


def _wait_healthy(url: str, process: ServiceProcess) -> None:
    for _ in range(1800):  # a failure detector: a restart on a busy machine can take a minute
        if process.exit_code() is not None:
            raise AssertionError(f"the service exited: {process.log_tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the service did not become healthy: {process.log_tail()}")


def test_bank_killed_with_sigkill_restarts_on_its_books(tmp_path: Path) -> None:
    seed_path = tmp_path / "seed.json"
    write_seed(make_seed(), seed_path)
    port = free_port_block(1)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CCSIM_PARTY": "bank", "CCSIM_DATA_DIR": str(tmp_path / "data"),
           "CCSIM_SEED_FILE": str(seed_path), "CCSIM_RESET": "0"}
    env.pop("CCSIM_DATABASE_URL", None)
    env.pop("CCSIM_TABLE_PREFIX", None)
    argv = [sys.executable, "-m", "uvicorn", "--factory", "services.api.parties.bank:create_bank_app_from_env",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    payout = {"id": "w1:acq-1:m1", "purpose": "merchant_payout", "payer": "acq-1", "payee": "merchant:m1",
              "payer_bank": "bank-1", "payee_bank": "bank-1", "amount": "1234.56", "ref": "m1"}
    signed = httpx.Client(auth=RoleAuth(), timeout=60.0)  # a busy machine answers late, not wrongly
    first = ServiceProcess("bank", port, argv, env, tmp_path / "bank-1.log")
    second = ServiceProcess("bank", port, argv, {**env, "CCSIM_RESUME": "1"}, tmp_path / "bank-2.log")
    try:
        first.start()
        _wait_healthy(url, first)
        r = signed.post(f"{url}/v1/inbox/bank-1", json=payout, headers={"Idempotency-Key": "pay-1"})
        assert r.status_code == 200, r.text
        merchant = signed.get(f"{url}/v1/banks/bank-1/customers/merchant:m1").json()
        assert merchant["balance"] == "1234.56"
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)  # no shutdown, no lifespan exit: a crash
        first.process.wait(30)
        second.start()
        _wait_healthy(url, second)
        assert signed.get(f"{url}/v1/banks/bank-1/customers/merchant:m1").json() == merchant
        again = signed.post(f"{url}/v1/inbox/bank-1", json=payout, headers={"Idempotency-Key": "pay-1"})
        assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
        other_key = signed.post(f"{url}/v1/inbox/bank-1", json=payout, headers={"Idempotency-Key": "pay-1b"})
        assert other_key.status_code == 200  # the retry of a sender that lost the answer: books nothing
        assert signed.get(f"{url}/v1/banks/bank-1/customers/merchant:m1").json() == merchant
        invariants = signed.get(f"{url}/v1/ledger/invariants").json()
        assert invariants["ok"], invariants
        assert signed.get(f"{url}/v1/recovery").json()["notes"][0].startswith("started on")
    finally:
        signed.close()
        first.stop()
        second.stop()
