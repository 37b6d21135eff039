"""Credentials for the tests: one file per session, and callers that sign as the right role.

The party services refuse unsigned requests (``services.api.auth``), so every test that talks to
them signs. ``conftest`` writes one credentials file for the session and names it in
``CCSIM_CREDENTIALS_FILE``, so every ``PartySettings`` a test builds (and every party process a test
starts, which inherits the environment) uses it. A test's client then signs with:

- :class:`RoleAuth` (an ``httpx.Auth``): each request as a principal whose role may call its route
  (the POS for payments, the market feed for prices, the payer's service for an inbox message, …),
  the same table the services check (:mod:`services.api.auth_routes`);
- :class:`SignedApp`: the same in front of an ASGI app, for callers that are not httpx (schemathesis);
- :func:`signed_headers`: the headers for one request, for aiohttp.

A request that already carries an ``Authorization`` header (a forged one, in a hostile case) is
sent as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, Final

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.auth import Credentials, Principal, create_credentials, load_credentials, sign_headers, sign_request
from services.api.auth_middleware import read_body, replay_body
from services.api.auth_routes import ANY_PRINCIPAL, PUBLIC, roles_for

__all__ = ["CREDENTIALS_ENV", "RoleAuth", "SignedApp", "principal_for", "session_credentials", "signed_headers"]

CREDENTIALS_ENV: Final = "CCSIM_CREDENTIALS_FILE"
# Which principal a test plays when a route admits several: the outside callers first.
_PREFERENCE: Final = ("pos", "operator", "market", "gateway", "network", "issuer", "exchange", "bank")


def write_session_credentials(directory: Path) -> Path:
    path = directory / "credentials.json"
    create_credentials(path)
    return path


def session_credentials() -> Credentials:
    """The credentials the session's party services use (``CCSIM_CREDENTIALS_FILE``)."""
    return load_credentials(Path(os.environ[CREDENTIALS_ENV]))


def _service_of(party: str) -> str:
    """The default chain's ids (``services.chain.ChainConfig``): which service speaks for a party."""
    if party in ("exchange", "issuer", "network"):
        return party
    if party.startswith("acq"):
        return "network"
    return "bank"


def principal_for(credentials: Credentials, method: str, path: str, body: bytes = b"") -> Principal:
    """A principal that may call ``method path`` (for an inbox: the service of the message's payer
    on its first hop, the bank service after it)."""
    if method == "POST" and path.startswith("/v1/inbox/"):
        receiver = path.removeprefix("/v1/inbox/")
        try:
            msg: Any = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # a hostile body: any party role will do, the service refuses it
            msg = {}
        if not isinstance(msg, dict):
            msg = {}
        first_hop = receiver == msg.get("payer_bank")
        return credentials.principal(_service_of(str(msg.get("payer" if first_hop else "payer_bank", ""))))
    rule = roles_for(method, path)
    if rule is None or rule.roles in (PUBLIC, ANY_PRINCIPAL):
        return credentials.principal("operator")
    role = next(r for r in _PREFERENCE if r in rule.roles)
    return credentials.principal(role)


class RoleAuth(httpx.Auth):
    """Sign each request as a principal allowed on its route (see the module docstring)."""

    requires_request_body = True

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials or session_credentials()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            sign_request(request, principal_for(self.credentials, request.method, request.url.path,
                                                request.content))
        yield request


def signed_headers(credentials: Credentials, method: str, url: str, body: bytes, key: str = "") -> dict[str, str]:
    """The ``Authorization`` header of one request to ``url`` (for clients other than httpx)."""
    parsed = httpx.URL(url)
    host = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
    principal = principal_for(credentials, method, parsed.path, body)
    return sign_headers(principal, method, host, parsed.raw_path.decode("ascii"), body, idempotency_key=key)


class SignedApp:
    """An ASGI app in front of ``app`` that signs every unsigned request as :class:`RoleAuth` does."""

    def __init__(self, app: ASGIApp, credentials: Credentials | None = None, *, host: str = "") -> None:
        self.app = app
        self.credentials = credentials or session_credentials()
        self.host = host  # set: every request is addressed to this name (a test client's own is not the party's)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(k.lower() == b"authorization" for k, _ in scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        if self.host:
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"host"]
                     + [(b"host", self.host.encode())]}
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        target = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + bytes(scope["query_string"]).decode("latin-1")
        principal = principal_for(self.credentials, scope["method"], scope["path"], body)
        signed = sign_headers(principal, scope["method"], headers.get("host", ""), target, body,
                              idempotency_key=headers.get("idempotency-key", ""))
        scope = {**scope, "headers": [*scope.get("headers", ()),
                                      *((k.lower().encode(), v.encode()) for k, v in signed.items())]}
        await self.app(scope, replay_body(body, receive), send)
