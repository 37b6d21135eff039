"""An idempotent request's answer commits in its business transaction (issue 14): the issuer's
authorization answer with the finalize step, an inbox acknowledgement with the booking. So there
is no commit between the business rows and the key's ``done`` row for a crash to fall into: a
retry after a crash is replayed, with one effect.

In-process, with the four apps of ``test_live_parties``, on SQLite and PostgreSQL. The "crash" is
the idempotency store's own ``finish`` failing (the separate commit the request no longer needs),
then the issuer restarted on its books and the same request sent again.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from test_live_parties import FACTORIES, Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported

from services.api import close_app
from services.api.idempotency import IdempotencyStore
from services.api.transport_http import idempotency_key


class Recording(httpx.AsyncBaseTransport):
    """The test router, keeping the requests sent to ``http://<host><path>``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)


def _crash_on_finish(store: IdempotencyStore) -> None:
    def crash(*_args: Any) -> None:
        raise RuntimeError("the process died between the business commit and the key's own commit")

    store.finish = crash  # type: ignore[method-assign]


def _rows(store: IdempotencyStore) -> dict[str, Any]:
    with store._engine.connect() as conn:
        return {r.key: r for r in conn.execute(select(store.table))}


def _restart(live: Live, party: str) -> None:
    """``party``'s process gone (its database stays) and started again on its books."""
    close_app(live.apps[party])
    restarted = FACTORIES[party](live.settings(party, resume=True), http_client=live.outbound)
    live.apps[party] = restarted
    live.router.apps[party] = httpx.ASGITransport(app=restarted)


async def test_a_retry_after_a_crash_is_the_first_answer_with_one_effect(live: Live) -> None:
    issuer = live.apps["issuer"]
    _crash_on_finish(issuer.state.party.keys)
    recording = Recording(live.router)
    live.outbound._transport = recording  # what the network sends the issuer, byte for byte
    first = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    assert first.status_code == 200 and first.json()["approved"], first.text  # a JIT sale, proceeds in the inbox

    rows = _rows(issuer.state.party.keys)
    auth_key, proceeds_key = idempotency_key("auth", "p1"), idempotency_key("msg", "issuer", "p1:sale")
    assert rows[auth_key].state == "done" and rows[auth_key].status == 200
    assert rows[proceeds_key].state == "done" and rows[proceeds_key].status == 200
    sent = next(r for r in recording.sent if r.url.path == "/v1/authorizations")
    sizes = live.journal_sizes()

    _restart(live, "issuer")
    again = await live.client.post("http://issuer/v1/authorizations", content=sent.content,
                                   headers={"Idempotency-Key": auth_key, "Content-Type": "application/json"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == rows[auth_key].body.encode()
    assert again.json()["approved"] and again.json()["auth_id"] == "p1"
    proceeds = next(r for r in recording.sent if r.url.path == "/v1/inbox/issuer")
    ack = await live.client.post("http://issuer/v1/inbox/issuer", content=proceeds.content,
                                 headers={"Idempotency-Key": proceeds_key, "Content-Type": "application/json"})
    assert ack.status_code == 200 and ack.headers["Idempotent-Replayed"] == "true"
    assert live.journal_sizes() == sizes  # no second hold, sale or credit
    await assert_clean(live)


async def test_an_answer_whose_transaction_fails_is_not_remembered(live: Live) -> None:
    """The key's row is written in the business transaction: when that transaction fails, the
    key is free and nothing of the request is remembered, so the retry runs (once)."""
    issuer = live.apps["issuer"]
    keys: IdempotencyStore = issuer.state.party.keys
    real = keys.done_writer

    def broken_writer(key: str, status: int, body: bytes, media_type: str) -> Any:
        write = real(key, status, body, media_type)
        if key != idempotency_key("auth", "p1"):
            return write

        def fail(conn: Any) -> None:
            write(conn)
            raise OperationalError("COMMIT", {}, Exception("the database went away at the commit"))

        return fail

    keys.done_writer = broken_writer  # type: ignore[method-assign]
    lost = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    assert lost.status_code == 200 and lost.json()["stand_in"], lost.text  # the issuer answered 503
    assert idempotency_key("auth", "p1") not in _rows(keys)
    keys.done_writer = real  # type: ignore[method-assign]
    assert (await live.post("http://network/v1/payments", pay_body("p2", card="c2", amount="700.00"),
                            "k2")).json()["approved"]  # the next payment rebuilds the state first and runs
    assert idempotency_key("auth", "p2") in _rows(keys)
    await assert_clean(live)


async def test_a_sales_answer_commits_with_its_proceeds_mark(live: Live) -> None:
    """The exchange's answer to a sale says whether the proceeds were delivered, so it is known
    only after their send: it commits with the outbox row's mark, not in a transaction of its
    own. A retry of the sale after the exchange restarts is the first answer, with no second sale
    and no second payout."""
    exchange = live.apps["exchange"]
    _crash_on_finish(exchange.state.party.keys)  # a separate commit of the key would fail
    recording = Recording(live.router)
    live.outbound._transport = recording
    first = await live.post("http://network/v1/payments", pay_body("p1"), "k1")
    assert first.status_code == 200 and first.json()["approved"], first.text

    sell_key = idempotency_key("sell", "p1:sale")
    row = _rows(exchange.state.party.keys)[sell_key]
    assert row.state == "done" and row.status == 201 and '"proceeds_delivered":true' in row.body
    sent = next(r for r in recording.sent if r.url.path == "/v1/sells")
    sizes = live.journal_sizes()

    _restart(live, "exchange")
    again = await live.client.post("http://exchange/v1/sells", content=sent.content,
                                   headers={"Idempotency-Key": sell_key, "Content-Type": "application/json"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == row.body.encode()
    assert live.journal_sizes() == sizes  # no second sale, payout or credit
    await assert_clean(live)
