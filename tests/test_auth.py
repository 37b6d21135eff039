"""Who may call a party service (issue 15, F2): credentials, roles, signatures, replays, hosts.

In process (``test_live_parties.Live``: the four apps calling each other, on SQLite and
PostgreSQL). Every refusal is a problem naming ``Authorization`` (or ``Host``), and changes no
journal. The catalogue (``tests/test_live_catalogue.py``) sends the same refusals to every route.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from signing import principal_for, session_credentials
from test_live_parties import FACTORIES, PARTIES, Live, assert_clean, pay_body
from test_live_parties import live as live  # noqa: PLC0414 — the fixture (SQLite and PostgreSQL), re-exported
from test_live_parties import unchanged_live as unchanged_live  # noqa: PLC0414 — one set per database for a class

from services.api.auth import (
    AuthError,
    NonceCache,
    create_credentials,
    load_credentials,
    parse_authorization,
    sign_headers,
)
from services.api.auth_routes import ROUTE_ROLES, roles_for
from services.api.parties.base import StartupError
from sim.live.load import pos_signer

PRICE = {"asset": "BTC", "price_kzt": "450000000000000"}
ADVICE = {"request": {"auth_id": "a-forged", "card_id": "c2", "merchant_id": "m1", "acquirer_id": "acq-1",
                      "amount": "9000000.00", "category": "grocery"}, "response": {"code": "00"}}
PAYOUT = {"id": "forged-payout", "purpose": "merchant_payout", "payer": "acq-1", "payee": "merchant:m1",
          "payer_bank": "bank-1", "payee_bank": "bank-1", "amount": "1000000.00", "ref": ""}


def signed_as(name: str, method: str, url: str, body: Any = None, key: str = "",
              **overrides: Any) -> tuple[bytes, dict[str, str]]:
    """The bytes and headers of a request signed by principal ``name`` (``overrides``: sign_headers's)."""
    raw = b"" if body is None else json.dumps(body).encode()
    parsed = httpx.URL(url)
    headers = sign_headers(session_credentials().principal(name), method, parsed.host, parsed.raw_path.decode(), raw,
                           idempotency_key=key, **overrides)
    headers["content-type"] = "application/json"
    if key:
        headers["Idempotency-Key"] = key
    return raw, headers


def refused(r: httpx.Response, status: int, field: str = "Authorization", slug: str = "") -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == field
    if slug:
        assert r.json()["type"] == f"urn:ccsim:problem:{slug}"


# -- the credentials file ------------------------------------------------------------------------


def test_the_credentials_file_is_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    creds = create_credentials(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert {p.role for p in creds.principals.values()} == {"exchange", "issuer", "network", "bank", "pos",
                                                           "gateway", "operator", "market"}
    assert create_credentials(path).principal("pos").secret == creds.principal("pos").secret  # kept, not rotated
    assert "secret" not in repr(creds.principal("pos"))
    path.chmod(0o644)
    with pytest.raises(AuthError, match="chmod 600"):
        load_credentials(path)


@pytest.mark.parametrize(("body", "message"), [
    ("not json", "cannot be read"), ('{"version": 2}', "version"), ('{"version": 1, "principals": {}}', "non-empty"),
    ('{"version": 1, "principals": {"x": {"role": "admin", "secret": "' + "a" * 64 + '"}}}', "role"),
    ('{"version": 1, "principals": {"x": {"role": "pos", "secret": "short"}}}', "hex"),
])
def test_a_malformed_credentials_file_is_refused_naming_what(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(body)
    path.chmod(0o600)
    with pytest.raises(AuthError, match=message):
        load_credentials(path)


def test_a_party_without_credentials_does_not_start(tmp_path: Path) -> None:
    from services.api.parties import PartySettings  # noqa: PLC0415

    with pytest.raises(StartupError, match="no credentials file"):
        FACTORIES["bank"](PartySettings(party="bank", data_dir=tmp_path, credentials_file=tmp_path / "none.json"))


def test_every_party_route_has_a_rule(live: Live) -> None:
    """A route left out of the table would be open to any signed caller: none is."""
    missing = []
    for party, app in live.apps.items():
        for route in app.routes:
            for method in getattr(route, "methods", None) or ():
                if method != "HEAD" and roles_for(method, str(getattr(route, "path", ""))) is None:
                    missing.append(f"{party} {method} {route.path}")  # type: ignore[attr-defined]
    assert missing == []
    assert len({(r.method, r.template) for r in ROUTE_ROLES}) == len(ROUTE_ROLES)


def test_a_nonce_is_remembered_for_the_window_and_the_store_is_bounded() -> None:
    nonces = NonceCache(window_s=10, size_max=2)
    assert nonces.add("pos", "a" * 32, 100, 100.0) is True
    assert nonces.add("pos", "a" * 32, 100, 105.0) is False  # a replay inside the window
    assert nonces.add("gateway", "a" * 32, 100, 105.0) is True  # another principal's nonce
    assert nonces.add("pos", "c" * 32, 104, 106.0) is None  # full of live nonces: refused, none forgotten early
    assert nonces.add("pos", "c" * 32, 104, 111.0) is True  # the first two have aged out (100 + 10 < 111)
    assert len(nonces) == 1


def test_the_load_generator_signs_as_the_pos() -> None:
    sign = pos_signer(Path(os.environ["CCSIM_CREDENTIALS_FILE"]))
    assert sign is not None
    body = json.dumps(pay_body("p1")).encode()
    signed = parse_authorization(sign("http://127.0.0.1:8001/v1/payments", body, "p1")["Authorization"])
    assert signed is not None and signed.credential == "pos"
    pos = session_credentials().principal("pos")
    assert signed.verify(pos, method="POST", host="127.0.0.1:8001", target="/v1/payments", idempotency_key="p1",
                         body=body)
    assert not signed.verify(pos, method="POST", host="127.0.0.1:8001", target="/v1/payments",
                             idempotency_key="p1", body=body.replace(b"5000", b"9000"))


# -- in front of the routes ------------------------------------------------------------------------


async def test_an_unsigned_call_is_refused_before_its_body_is_read(live: Live) -> None:
    app = live.apps["exchange"]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/prices", "raw_path": b"/v1/prices", "query_string": b"",
             "headers": [(b"host", b"exchange"), (b"content-type", b"application/json"), (b"content-length", b"50")],
             "http_version": "1.1", "scheme": "http", "server": ("exchange", 80), "client": ("127.0.0.1", 1),
             "root_path": ""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert dict(sent[0]["headers"])[b"www-authenticate"] == b"CCSIM-HMAC-SHA256"
    r = await live.client.post("http://exchange/v1/prices", json=PRICE, auth=None)
    refused(r, 401, slug="unauthorized")
    assert (await live.client.get("http://exchange/healthz", auth=None)).status_code == 200  # public


@pytest.mark.asyncio(loop_scope="class")
class TestRefusedRoles:
    """A role that may not call a route: 403, and no journal grows (one set per database)."""

    @pytest.mark.parametrize(("who", "url", "body", "key"), [
        ("pos", "http://exchange/v1/prices", PRICE, ""),  # F2: only the market feed sets prices
        ("operator", "http://exchange/v1/halts", {"asset": "BTC", "halted": True}, ""),
        ("pos", "http://issuer/v1/advices", ADVICE, "k-adv"),  # F2: only the network advises
        ("exchange", "http://issuer/v1/authorizations/p1/capture", {"amount": "1.00"}, "k-cap"),
        ("pos", "http://issuer/v1/cards/c1/status", {"status": "blocked"}, ""),  # F2: blocks are the operator's
        ("pos", "http://bank/v1/inbox/bank-1", PAYOUT, "k-payout"),  # F2: only a party service posts messages
        ("market", "http://network/v1/payments", pay_body("p-market"), "k-pm"),
        ("pos", "http://issuer/v1/ledger/invariants", None, ""),  # the books are the gateway's and operator's
        ("issuer", "http://exchange/v1/direct/payments", {"invoice_id": "d1"}, "k-dp"),  # the POS accepts a quote
        ("market", "http://exchange/v1/direct/conversions", {"merchant_id": "m1", "asset": "BTC", "quantity": "1"},
         "k-dc"),  # a merchant's conversion is its POS's or the operator's
        ("pos", "http://exchange/v1/direct/merchants/m1", None, ""),  # the merchants' books: gateway and operator
    ])
    async def test_a_role_that_may_not_call_a_route_is_refused_403(self, unchanged_live: Live, who: str, url: str,
                                                                   body: Any, key: str) -> None:
        live = unchanged_live
        sizes = live.journal_sizes()
        method = "GET" if body is None else "POST"
        raw, headers = signed_as(who, method, url, body, key)
        r = await live.client.request(method, url, content=raw or None, headers=headers)
        refused(r, 403, slug="forbidden")
        assert live.journal_sizes() == sizes


async def test_a_payment_message_enters_an_inbox_only_from_its_payers_service(live: Live) -> None:
    """F2's forged merchant payout: signed, but by a service that does not speak for the payer."""
    sizes = live.journal_sizes()
    for who in ("exchange", "issuer", "bank"):
        raw, headers = signed_as(who, "POST", "http://bank/v1/inbox/bank-1", PAYOUT, f"k-{who}")
        r = await live.client.post("http://bank/v1/inbox/bank-1", content=raw, headers=headers)
        refused(r, 403, field="payer", slug="forbidden")
    raw, headers = signed_as("network", "POST", "http://issuer/v1/inbox/issuer", {**PAYOUT, "payee": "issuer"}, "k-n")
    r = await live.client.post("http://issuer/v1/inbox/issuer", content=raw, headers=headers)
    refused(r, 403, field="payer_bank", slug="forbidden")  # a later hop comes only from the bank service
    assert live.journal_sizes() == sizes


async def test_a_changed_body_key_path_or_host_breaks_the_signature(live: Live) -> None:
    sizes = live.journal_sizes()
    url = "http://network/v1/payments"
    raw, headers = signed_as("pos", "POST", url, pay_body("p1", card="c2"), "k1")
    forged = raw.replace(b"5000.00", b"90000.00")
    refused(await live.client.post(url, content=forged, headers=headers), 401, slug="bad-signature")
    refused(await live.client.post(url, content=raw, headers={**headers, "Idempotency-Key": "k2"}), 401,
            slug="bad-signature")
    refused(await live.client.post("http://network/v1/presentments", content=raw, headers=headers), 401,
            slug="bad-signature")
    other = {**headers, "Authorization": headers["Authorization"].replace("Credential=pos", "Credential=operator")}
    refused(await live.client.post(url, content=raw, headers=other), 403)  # the operator does not pay
    refused(await live.client.post(url, content=raw, headers={**headers, "Authorization": "Bearer x"}), 401)
    ghost = {**headers, "Authorization": headers["Authorization"].replace("Credential=pos", "Credential=ghost")}
    refused(await live.client.post(url, content=raw, headers=ghost), 401)
    assert live.journal_sizes() == sizes
    ok = await live.client.post(url, content=raw, headers=headers)  # the untouched request still passes
    assert ok.status_code == 200 and ok.json()["approved"], ok.text
    await assert_clean(live)


async def test_a_replayed_or_stale_signature_is_refused(live: Live) -> None:
    url = "http://network/v1/payments"
    raw, headers = signed_as("pos", "POST", url, pay_body("p1", card="c2"), "k1")
    first = await live.client.post(url, content=raw, headers=headers)
    assert first.status_code == 200, first.text
    sizes = live.journal_sizes()
    refused(await live.client.post(url, content=raw, headers=headers), 401, slug="replayed-signature")
    raw2, old = signed_as("pos", "POST", url, pay_body("p2", card="c2"), "k2", now_s=time.time() - 3600)
    refused(await live.client.post(url, content=raw2, headers=old), 401, slug="stale-signature")
    assert live.journal_sizes() == sizes


async def test_another_host_name_is_refused(live: Live) -> None:
    r = await live.client.get("http://exchange/v1/prices", headers={"Host": "evil.example"})
    refused(r, 400, field="Host", slug="host-not-allowed")
    assert (await live.client.get("http://exchange/v1/prices")).status_code == 200


async def test_every_party_signs_its_own_calls(live: Live) -> None:
    """The whole chain under credentials: a JIT payment crosses network → issuer → exchange → banks."""
    r = await live.post("http://network/v1/payments", pay_body("p1"), "k-p1")
    assert r.status_code == 200 and r.json()["approved"] and not r.json()["stand_in"], r.text
    assert principal_for(session_credentials(), "POST", "/v1/inbox/bank-1", json.dumps(PAYOUT).encode()).role \
        == "network"
    await assert_clean(live)


def test_every_route_rule_names_known_roles() -> None:
    known = {"exchange", "issuer", "network", "bank", "pos", "gateway", "operator", "market", "*public*", "*any*"}
    assert all(r.roles <= known for r in ROUTE_ROLES)
    assert roles_for("POST", "/v1/prices").roles == {"market"}  # type: ignore[union-attr]
    assert roles_for("POST", "/v1/advices").roles == {"network"}  # type: ignore[union-attr]
    assert roles_for("POST", "/v1/cards/c1/status").roles == {"operator", "issuer"}  # type: ignore[union-attr]
    assert PARTIES == ("exchange", "issuer", "network", "bank")


# -- the checks across the parties, as the gateway reads them ----------------------------------------


@pytest.mark.parametrize(("answer", "invariant"), [
    (lambda r: httpx.Response(401, json={}), "unauthorized"),
    (lambda r: httpx.Response(403, json={}), "unauthorized"),
    (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)), "unreachable"),
])
def test_a_party_that_refuses_the_gateway_is_named_so(answer: Any, invariant: str) -> None:
    """One that refuses the gateway's key says so; one that cannot be reached is unreachable."""
    from services.api.parties.integrity import collect_invariants  # noqa: PLC0415

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        found = collect_invariants({"issuer": "http://issuer"}, client=client)
    assert found["ok"] is False
    assert found["parties"]["issuer"]["state"] == invariant
    assert [v["invariant"] for v in found["parties"]["issuer"]["violations"]] == [invariant]


def test_a_party_that_answers_late_is_slow_not_a_violation() -> None:
    """F3: a late party is "slow" (not checked), never "unreachable" and never a violation."""
    from services.api.parties.integrity import collect_invariants  # noqa: PLC0415

    def late(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("late", request=request)

    with httpx.Client(transport=httpx.MockTransport(late)) as client:
        found = collect_invariants({"issuer": "http://issuer"}, client=client)
    assert found["ok"] is None
    assert found["parties"]["issuer"]["state"] == "slow" and found["parties"]["issuer"]["violations"] == []


def test_the_gateway_signs_its_checks_as_the_gateway(tmp_path: Path) -> None:
    from services.api import ProblemError  # noqa: PLC0415
    from sim.live import gateway  # noqa: PLC0415

    settings = gateway.GatewaySettings(data_dir=tmp_path, runs_dir=tmp_path / "runs", credentials_file=None)
    assert gateway._gateway_auth(settings) is None  # no file: the parties will say "unauthorized"
    create_credentials(tmp_path / "credentials.json")
    auth = gateway._gateway_auth(settings)
    assert auth is not None and auth.principal.name == "gateway" and auth.principal.role == "gateway"
    (tmp_path / "credentials.json").chmod(0o644)
    with pytest.raises(ProblemError) as refused_503:
        gateway._gateway_auth(settings)
    assert refused_503.value.status_code == 503 and refused_503.value.errors[0].field == "credentials_file"


def test_serve_writes_the_keys_once_and_hands_each_child_the_file(tmp_path: Path) -> None:
    from services.api.parties.seed import PartySeed  # noqa: PLC0415
    from sim.live.serve import ServeConfig, Supervisor  # noqa: PLC0415

    supervisor = Supervisor(ServeConfig(data_dir=tmp_path / "live", gateway=False), PartySeed())
    path = tmp_path / "live" / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert {c.env["CCSIM_CREDENTIALS_FILE"] for c in supervisor.children} == {str(path.resolve())}
    keys = load_credentials(path).principal("network").secret
    Supervisor(ServeConfig(data_dir=tmp_path / "live", gateway=False), PartySeed())  # a restart (--resume)
    assert load_credentials(path).principal("network").secret == keys  # the same keys
