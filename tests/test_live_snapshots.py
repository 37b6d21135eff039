"""Snapshots of the parties' replayed state (services/api/parties/snapshots.py): a restart loads the
newest snapshot and replays only the log after it, with the same books and answers as a replay
of the whole log; a torn or corrupt snapshot is refused, said so in the log, and the whole log is
replayed instead. In process, on SQLite and PostgreSQL (issue 15, F5/F7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SQL_BACKENDS
from sqlalchemy import func, select, update
from structlog.testing import capture_logs
from test_live_parties import FACTORIES, Live, assert_clean, make_seed, pay_body

from services.api import close_app

STATEFUL = ("exchange", "issuer", "network")


@pytest.fixture(params=SQL_BACKENDS)
async def live(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Live]:
    parties = Live(request.param, tmp_path, make_seed(), snapshot_every_commands=0)  # taken by the tests
    try:
        yield parties
    finally:
        await parties.close()


def _restart(live: Live, party: str, **settings: Any) -> Any:
    close_app(live.apps[party])  # the process is gone; its database stays
    app = FACTORIES[party](live.settings(party, resume=True, snapshot_every_commands=0, **settings),
                           http_client=live.outbound)
    live.apps[party] = app
    live.router.apps[party] = httpx.ASGITransport(app=app)
    return app


def _durable(live: Live, party: str) -> Any:
    return live.apps[party].state.party.durable


async def _state(live: Live, party: str) -> dict[str, Any]:
    return (await live.client.get(f"http://{party}/v1/recovery")).json()["state"]  # type: ignore[no-any-return]


async def _observe(live: Live) -> dict[str, Any]:
    """What a client sees of the exchange's, issuer's and network's state in memory."""
    get = live.client.get
    paths = ["issuer/v1/authorizations/p1", "issuer/v1/authorizations/p2", "issuer/v1/authorizations/p3",
             "issuer/v1/cards/c1", "issuer/v1/cards/c2", "exchange/v1/sells/p1:sale", "exchange/v1/sells/p3:sale",
             "exchange/v1/tax/statements/h1", "exchange/v1/wallets/h1", "exchange/v1/prices",
             "network/v1/ledger/halves", "issuer/v1/ledger/halves", "exchange/v1/ledger/halves"]
    return {p: (await get(f"http://{p}")).json() for p in paths}


async def _day(live: Live) -> None:
    """Payments before the snapshot: a JIT sale, a price change, a capture, an open hold."""
    assert (await live.post("http://network/v1/payments", pay_body("p1"), "k1")).json()["approved"]
    assert (await live.post("http://exchange/v1/prices", {"asset": "BTC", "price_kzt": "47000000"})).status_code == 200
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p1", "amount": "5000.00"},
                        "c1")
    assert r.status_code == 201, r.text
    assert (await live.post("http://network/v1/payments", pay_body("p2", card="c2", amount="700.00"),
                            "k2")).json()["approved"]


async def _tail(live: Live) -> None:
    """Commands after the snapshot: another sale, the open hold captured."""
    assert (await live.post("http://network/v1/payments", pay_body("p3", amount="900.00"), "k3")).json()["approved"]
    r = await live.post("http://network/v1/presentments", {"kind": "capture", "auth_id": "p2", "amount": "700.00"},
                        "c2")
    assert r.status_code == 201, r.text


async def test_a_restart_from_a_snapshot_has_the_books_and_answers_of_a_full_replay(live: Live) -> None:
    await _day(live)
    taken = {p: await asyncio.to_thread(_durable(live, p).take_snapshot) for p in STATEFUL}
    assert all(seq and seq > 1 for seq in taken.values()), taken
    await _tail(live)
    before = await _observe(live)
    logged = {p: len(_durable(live, p)) for p in STATEFUL}
    for party in STATEFUL:
        _restart(live, party)
        state = await _state(live, party)
        tail = logged[party] - taken[party]
        assert state["snapshot_log_seq"] == taken[party] and state["snapshot_refused"] == "", state
        assert state["commands_replayed"] == tail < logged[party], (state, logged)
        assert state["transfers_verified"] > 0  # the books were compared, as after a full replay
    assert await _observe(live) == before
    for party in STATEFUL:  # the same restart without the snapshot: the whole log
        with _durable(live, party).unit.engine.begin() as conn:
            conn.execute(_durable(live, party).snapshots.table.delete())
        _restart(live, party)
        state = await _state(live, party)
        assert state["snapshot_log_seq"] is None and state["commands_replayed"] == logged[party], state
    assert await _observe(live) == before
    # The state restored from the snapshot carries on: a payment, a window, clean books.
    for party in STATEFUL:
        _restart(live, party)
    assert (await live.post("http://network/v1/payments", pay_body("p4"), "k4")).json()["approved"]
    r = await live.post("http://network/v1/settlements", {"window_id": "w1"}, "w1")
    assert r.status_code == 201 and r.json()["undelivered"] == [], r.text
    await assert_clean(live)


@pytest.mark.parametrize("damage", ["flipped byte", "torn write"])
async def test_a_corrupt_snapshot_is_refused_and_the_whole_log_replayed(live: Live, damage: str) -> None:
    await _day(live)
    durable = _durable(live, "issuer")
    assert await asyncio.to_thread(durable.take_snapshot)
    await _tail(live)
    before = await _observe(live)
    table = durable.snapshots.table
    with durable.unit.engine.begin() as conn:
        blob = bytes(conn.execute(select(table.c.state)).scalar_one())
        bad = blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:] if damage == "flipped byte" else blob[:len(blob) // 2]
        conn.execute(update(table).values(state=bad))
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 1
    logged = len(durable)
    with capture_logs() as logs:
        _restart(live, "issuer")
    refused = [e for e in logs if e["event"] == "snapshot_refused"]
    assert len(refused) == 1 and "torn or corrupt" in refused[0]["reason"], logs
    assert refused[0]["then"] == "replaying the whole command log"
    state = await _state(live, "issuer")
    assert state["snapshot_log_seq"] is None and state["commands_replayed"] == logged, state
    assert "torn or corrupt" in state["snapshot_refused"]
    assert await _observe(live) == before
    await assert_clean(live)


async def test_snapshots_are_written_every_so_many_commands_and_replace_the_older(live: Live) -> None:
    durable = _durable(live, "issuer")
    durable.snapshot_every_commands = 3
    await _day(live)
    await _tail(live)
    await asyncio.to_thread(durable.close)  # waits for a snapshot being written
    table = durable.snapshots.table
    with durable.unit.engine.connect() as conn:
        rows = conn.execute(select(table.c.log_seq)).all()
    assert len(rows) == 1 and rows[0].log_seq >= 3, rows  # the newest only
    _restart(live, "issuer")
    state = await _state(live, "issuer")
    assert state["snapshot_log_seq"] == rows[0].log_seq
    assert state["commands_replayed"] == len(durable) - rows[0].log_seq
    await assert_clean(live)


async def test_a_snapshot_holds_no_journal_and_one_that_differs_from_the_books_is_refused(live: Live) -> None:
    """The snapshot keeps the accounts and the open holds, not the journal (the replay reads what
    was booked before it from the database); a snapshot whose books differ from what the log after
    it booked (here one account, with a valid digest) is refused and the whole log replayed."""
    await _day(live)
    durable = _durable(live, "issuer")
    taken = await asyncio.to_thread(durable.take_snapshot)
    await _tail(live)
    before = await _observe(live)
    snapshot = durable.snapshots.newest(durable._digest)
    (image,) = snapshot.ledgers
    assert not hasattr(image, "journal") and image.last_seq > 0 and image.transfers > len(image.held) > 0
    sql = durable._pairs[0][1]
    assert {t.id for t in image.held} < {t.id for t in sql.journal()}  # p2's open hold among them
    touched = sql.journal_after(image.last_seq)[0][0].debit_account_id  # an account the tail changed
    accounts = [replace(a, credits_posted=a.credits_posted + 1) if a.id == touched else a for a in image.accounts]
    durable.snapshots.write(replace(snapshot, ledgers=[replace(image, accounts=accounts)]), durable._digest, 0.0)
    logged = len(durable)
    with capture_logs() as logs:
        _restart(live, "issuer")
    refused = [e for e in logs if e["event"] == "snapshot_refused"]
    assert len(refused) == 1 and f"account {touched} differs after replay" in refused[0]["reason"], logs
    state = await _state(live, "issuer")
    assert state["snapshot_log_seq"] is None and state["commands_replayed"] == logged > logged - taken, state
    assert await _observe(live) == before
    await assert_clean(live)
