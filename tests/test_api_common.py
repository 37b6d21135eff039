"""The shared layer of every party service (services/api): strict JSON, problems, limits, request
ids and the canonical log line, metrics, settings, and Idempotency-Key on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import SQL_BACKENDS, require_postgres
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from structlog.testing import capture_logs

from services.api import (
    PROBLEM_MEDIA_TYPE,
    ApiSettings,
    FieldError,
    IdempotencyKey,
    IdempotencyStore,
    ProblemError,
    create_base_app,
    run_idempotent,
)
from services.api.fields import API_MODEL_CONFIG, AmountText
from services.api.idempotency import ClaimState, request_fingerprint
from services.api.strict_json import JsonRejectedError, json_depth, parse_json_strict
from services.clock import FixedClock

# -- strict JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"x": {"a": 1, "a": 1}}', "duplicate key 'a'"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": -Infinity}', "-Infinity"),
    (b'{"a": 1e309}', "out of range"),
    (b'{"a": -1e309}', "out of range"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    (b'\xef\xbb\xbf{"a": 1}', "invalid JSON"),  # a BOM is not JSON
    (b'{"a": "x\x00y"}', "invalid JSON"),  # a raw control character inside a string
    (b'{"a": 1}\x00', "invalid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", "invalid JSON"),  # Python refuses > 4300 digits
    (b"[" * 33 + b"]" * 33, "nested 33 deep"),
    (b"[" * 100_000 + b"]" * 100_000, "nested 100000 deep"),
    (b"", "invalid JSON"),
])
def test_strict_json_rejects_what_json_loads_lets_through(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonRejectedError) as caught:
        parse_json_strict(raw)
    assert reason in caught.value.reason


def test_strict_json_accepts_plain_json_and_counts_depth_outside_strings() -> None:
    assert parse_json_strict(b'{"a": ["[[[[", {"b": 1.5}], "c": null}') == {
        "a": ["[[[[", {"b": 1.5}], "c": None}
    assert json_depth(b'{"a": "[[[[\\"[[[", "b": [[1]]}') == 3
    assert parse_json_strict(b"[" * 32 + b"]" * 32) is not None


# -- a small app built on create_base_app ----------------------------------------------------------


class Pay(BaseModel):
    model_config = API_MODEL_CONFIG
    amount: AmountText
    note: str = ""


class PayApp:
    """A base app with one money-moving route (idempotent) and one route with a bug."""

    def __init__(self, settings: ApiSettings, store: IdempotencyStore) -> None:
        self.app: FastAPI = create_base_app(settings)
        self.store = store
        self.effects: list[str] = []
        self.fault_next: Callable[[], None] | None = None  # called, then the next payment fails
        paid = self.app.state.metrics.counter("payments", "Payments by outcome", ("outcome",))

        @self.app.post("/pay", status_code=201)
        def pay(body: Pay, key: IdempotencyKey, request: Request) -> Response:
            def work() -> Response:
                if body.amount == "13":
                    raise ProblemError(422, "unlucky amount", [FieldError(field="amount", reason="13")])
                if body.amount == "500":
                    raise RuntimeError("a fault while paying")
                fault, self.fault_next = self.fault_next, None
                if fault is not None:
                    fault()
                    raise RuntimeError("a fault while paying")
                self.effects.append(body.amount)
                paid.labels(settings.party, "approved").inc()
                return JSONResponse({"payment": len(self.effects)}, status_code=201)

            return run_idempotent(store, key, request, body.model_dump(mode="json"), work)

        @self.app.get("/boom")
        def boom() -> dict[str, str]:
            raise RuntimeError("a bug")


@pytest.fixture(params=SQL_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "postgres":
        return require_postgres(), f"t_{uuid.uuid4().hex[:12]}_"
    return f"sqlite:///{tmp_path / 'keys.db'}", ""


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000.0)


@pytest.fixture
def pay_app(store_url: tuple[str, str], clock: FixedClock, tmp_path: Path) -> Iterator[PayApp]:
    url, prefix = store_url
    settings = ApiSettings(party="shop", database_url=url, table_prefix=prefix, data_dir=tmp_path)
    store = IdempotencyStore(url, table_prefix=prefix, clock=clock, lease_s=30.0)
    try:
        yield PayApp(settings, store)
    finally:
        store.drop_table()
        store.close()


@pytest.fixture
async def client(pay_app: PayApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=pay_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield c


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:ccsim:problem:")
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


# -- problems --------------------------------------------------------------------------------------


async def test_unknown_route_and_method_answer_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)
    response = await client.put("/pay", json={})
    assert_problem(response, 405)
    assert response.headers["allow"] == "POST"


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/pay", json={"amount": 10}, headers={"Idempotency-Key": "k"}),
                          422, "amount")
    assert body["type"] == "urn:ccsim:problem:validation"
    assert_problem(await client.post("/pay", json={"amount": "1", "extra": 1},
                                     headers={"Idempotency-Key": "k"}), 422, "extra")


async def test_a_bug_is_a_logged_500_problem(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        response = await client.get("/boom")
    assert_problem(response, 500)
    assert "a bug" not in response.text  # internals stay in the log
    errors = [e for e in logs if e["event"] == "unhandled_error"]
    assert len(errors) == 1 and errors[0]["log_level"] == "error" and errors[0]["exc_info"]
    line = [e for e in logs if e["event"] == "http_request"]
    assert line[0]["status"] == 500 and line[0]["route"] == "/boom"


# -- limits and media types ------------------------------------------------------------------------


async def test_body_over_the_limit_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    big = json.dumps({"amount": "1", "note": "x" * 70_000}).encode()
    assert_problem(await client.post("/pay", content=big, headers={
        "Idempotency-Key": "k", "content-type": "application/json"}), 413, "body")


async def test_body_over_the_limit_while_streaming_is_413(client: httpx.AsyncClient, pay_app: PayApp) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"amount": "1", "note": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    response = await client.post("/pay", content=chunks(), headers={
        "Idempotency-Key": "k", "content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "body")
    assert pay_app.effects == [] and pay_app.store.count() == 0


async def test_malformed_content_length_is_400(pay_app: PayApp) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/pay", "raw_path": b"/pay", "query_string": b"",
             "headers": [(b"content-length", b"12abc"), (b"content-type", b"application/json")],
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "root_path": ""}
    await pay_app.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["errors"][0]["field"] == "Content-Length"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml",
    "application/json; charset=latin-1", "",
])
async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient, content_type: str,
                                              pay_app: PayApp) -> None:
    headers = {"Idempotency-Key": "k"}
    if content_type:
        headers["content-type"] = content_type
    assert_problem(await client.post("/pay", content=b'{"amount": "1"}', headers=headers), 415,
                   "Content-Type")
    assert pay_app.effects == []


async def test_json_with_a_suffix_and_utf8_charset_is_accepted(client: httpx.AsyncClient) -> None:
    for i, content_type in enumerate(["application/json; charset=utf-8", "application/merge-patch+json"]):
        response = await client.post("/pay", content=b'{"amount": "1"}', headers={
            "Idempotency-Key": f"k{i}", "content-type": content_type})
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("raw", [
    b'{"amount": "1", "amount": "2"}', b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": 1e309}',
    b'{"amount": "\xc3\x28"}', b'{"amount": "1\x00"}', b"[" * 1000 + b"]" * 1000, b"{",
])
async def test_bodies_that_are_not_strict_json_are_400(client: httpx.AsyncClient, raw: bytes,
                                                       pay_app: PayApp) -> None:
    assert_problem(await client.post("/pay", content=raw, headers={
        "Idempotency-Key": "k", "content-type": "application/json"}), 400, "body")
    assert pay_app.effects == [] and pay_app.store.count() == 0


# -- request id, log line, health, metrics ---------------------------------------------------------


async def test_request_id_is_echoed_and_logged_once(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert given.headers["x-request-id"] == "abc-123"
    assert made.headers["x-request-id"] != "bad id with spaces" and len(made.headers["x-request-id"]) == 32
    lines = [e for e in logs if e["event"] == "http_request"]
    assert [line["request_id"] for line in lines] == ["abc-123", made.headers["x-request-id"]]
    assert lines[0]["route"] == "/healthz" and lines[0]["status"] == 200 and lines[0]["party"] == "shop"
    assert lines[0]["duration_ms"] >= 0 and lines[0]["method"] == "GET"


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "party": "shop"}
    await client.post("/pay", json={"amount": "1"}, headers={"Idempotency-Key": "m1"})
    await client.get("/nowhere/123")
    text = (await client.get("/metrics")).text
    assert 'ccsim_http_request_duration_seconds_count{method="POST",party="shop",route="/pay",status="201"} 1.0' \
        in text
    assert 'route="unmatched",status="404"' in text and "/nowhere/123" not in text
    assert 'ccsim_payments_total{outcome="approved",party="shop"} 1.0' in text


def test_settings_defaults_environment_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = ApiSettings(party="issuer", data_dir=tmp_path / "d")
    assert s.database_url == f"sqlite:///{tmp_path / 'd' / 'issuer.db'}"
    assert s.body_limit_bytes == 64 * 1024
    s.ensure_data_dir()
    assert (tmp_path / "d").is_dir()
    monkeypatch.setenv("CCSIM_BODY_LIMIT_BYTES", "2048")
    monkeypatch.setenv("CCSIM_DATABASE_URL", "postgresql://u@h/db")
    s = ApiSettings()
    assert s.body_limit_bytes == 2048 and s.database_url == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="extra"):
        ApiSettings(nonsense=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="greater than or equal"):
        ApiSettings(body_limit_bytes=10)


# -- Idempotency-Key --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "k" * 129, b"cl\xc3\xa9", "two words", "tab\tkey"])
async def test_a_missing_or_malformed_key_is_400(client: httpx.AsyncClient, key: str | bytes | None,
                                                 pay_app: PayApp) -> None:
    headers: dict[str, str | bytes] = {} if key is None else {"Idempotency-Key": key}
    assert_problem(await client.post("/pay", json={"amount": "1"}, headers=headers), 400, "Idempotency-Key")
    assert pay_app.effects == [] and pay_app.store.count() == 0


async def test_a_128_character_key_is_fine(client: httpx.AsyncClient) -> None:
    response = await client.post("/pay", json={"amount": "1"}, headers={"Idempotency-Key": "k" * 128})
    assert response.status_code == 201


async def test_same_key_same_body_replays_the_stored_answer(client: httpx.AsyncClient, pay_app: PayApp) -> None:
    first = await client.post("/pay", json={"amount": "10.00", "note": "a"}, headers={"Idempotency-Key": "k1"})
    # The same request with other spacing and key order is the same request.
    again = await client.post("/pay", content=b'{ "note":"a",  "amount":"10.00" }', headers={
        "Idempotency-Key": "k1", "content-type": "application/json"})
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert pay_app.effects == ["10.00"]


async def test_same_key_other_body_is_422(client: httpx.AsyncClient, pay_app: PayApp) -> None:
    await client.post("/pay", json={"amount": "10.00"}, headers={"Idempotency-Key": "k1"})
    body = assert_problem(await client.post("/pay", json={"amount": "11.00"}, headers={"Idempotency-Key": "k1"}),
                          422, "Idempotency-Key")
    assert body["type"] == "urn:ccsim:problem:idempotency-key-reused"
    assert pay_app.effects == ["10.00"] and pay_app.store.count() == 1


async def test_same_key_in_flight_is_409_until_the_lease_runs_out(client: httpx.AsyncClient, pay_app: PayApp,
                                                                  clock: FixedClock) -> None:
    fingerprint = request_fingerprint("POST", "/pay", {"amount": "5", "note": ""})
    assert pay_app.store.claim("k1", fingerprint).state is ClaimState.STARTED  # another request runs
    body = assert_problem(await client.post("/pay", json={"amount": "5"}, headers={"Idempotency-Key": "k1"}),
                          409, "Idempotency-Key")
    assert body["type"] == "urn:ccsim:problem:idempotency-key-in-flight"
    assert pay_app.effects == []
    clock.advance(31.0)  # the claimer died: its lease ran out, the retry takes over
    response = await client.post("/pay", json={"amount": "5"}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 201 and pay_app.effects == ["5"]


async def test_a_rejection_or_a_fault_releases_the_key(client: httpx.AsyncClient, pay_app: PayApp) -> None:
    assert_problem(await client.post("/pay", json={"amount": "13"}, headers={"Idempotency-Key": "k1"}),
                   422, "amount")
    assert pay_app.store.count() == 0  # a rejected request writes no row, not even its key
    with capture_logs():
        assert_problem(await client.post("/pay", json={"amount": "500"}, headers={"Idempotency-Key": "k2"}),
                       500)
    assert pay_app.store.count() == 0
    # A corrected request under the same key now runs.
    assert (await client.post("/pay", json={"amount": "14"}, headers={"Idempotency-Key": "k1"})).status_code == 201
    assert pay_app.effects == ["14"] and pay_app.store.count() == 1


class Outage:
    """The key store's database failing: every statement it sends raises, as when the server is
    down (a real engine hook, so the store's own error handling runs)."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.down = False
        sa.event.listen(store._engine, "before_cursor_execute", self._check)

    def _check(self, *_: Any) -> None:
        if self.down:
            raise sa.exc.OperationalError("statement", {}, Exception("server closed the connection"))


async def test_a_key_left_claimed_by_a_database_failure_is_taken_over_at_once(
        client: httpx.AsyncClient, pay_app: PayApp) -> None:
    """The work fails while the database is down, so releasing its key fails too and the row stays
    in flight. Once the database is back, the retry runs at once (not 409 until the lease ends)."""
    outage = Outage(pay_app.store)
    pay_app.fault_next = lambda: setattr(outage, "down", True)
    with capture_logs() as logs:
        failed = await client.post("/pay", json={"amount": "5"}, headers={"Idempotency-Key": "k1"})
    assert failed.status_code >= 500 and pay_app.effects == []
    assert pay_app.store.abandoned == 1 and any(e["event"] == "idempotency_key_abandoned" for e in logs)
    outage.down = False
    assert pay_app.store.count() == 1  # the row is still in flight: nothing could delete it
    other = await client.post("/pay", json={"amount": "6"}, headers={"Idempotency-Key": "k1"})
    assert_problem(other, 422, "Idempotency-Key")  # another body is still refused, and takes nothing over
    retry = await client.post("/pay", json={"amount": "5"}, headers={"Idempotency-Key": "k1"})
    assert retry.status_code == 201 and pay_app.effects == ["5"] and pay_app.store.abandoned == 0
    again = await client.post("/pay", json={"amount": "5"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"


def test_a_key_whose_success_could_not_be_stored_is_taken_over_once(
        store_url: tuple[str, str], clock: FixedClock) -> None:
    url, prefix = store_url
    store = IdempotencyStore(url, table_prefix=prefix, clock=clock, lease_s=30.0)
    outage = Outage(store)
    try:
        assert store.claim("k", "h").state is ClaimState.STARTED
        outage.down = True
        with pytest.raises(sa.exc.OperationalError):
            store.finish("k", 201, b"{}", "application/json")
        outage.down = False
        assert store.claim("k", "h").state is ClaimState.STARTED  # taken over, not in flight
        assert store.claim("k", "h").state is ClaimState.IN_FLIGHT  # by one retry only
    finally:
        store.drop_table()
        store.close()


def test_the_key_store_is_shared_by_two_handles(store_url: tuple[str, str], clock: FixedClock) -> None:
    """Two processes (two stores) on one database see one claim: the second is in flight or replays."""
    url, prefix = store_url
    a = IdempotencyStore(url, table_prefix=prefix, clock=clock)
    b = IdempotencyStore(url, table_prefix=prefix, clock=clock)
    try:
        assert a.claim("k", "h1").state is ClaimState.STARTED
        assert b.claim("k", "h1").state is ClaimState.IN_FLIGHT
        assert b.claim("k", "h2").state is ClaimState.MISMATCH
        a.finish("k", 201, b'{"ok": true}', "application/json")
        replay = b.claim("k", "h1")
        assert (replay.state, replay.status, replay.body) == (ClaimState.REPLAY, 201, b'{"ok": true}')
    finally:
        a.drop_table()
        a.close()
        b.close()
