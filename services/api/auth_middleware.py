"""Where a party service checks who is calling: one ASGI middleware, in front of every route.

Per request, in this order (docs/threat-model.md says what each check stops):

1. the ``Host`` header names this service (400 otherwise: a page on another site that resolves
   its name to this machine cannot drive it from a browser);
2. a public route (``/healthz``, ``/metrics``, the OpenAPI document) passes;
3. before any byte of the body is read: a well-formed ``Authorization`` header (401), from a
   known principal (401), with a timestamp inside the window (401), whose role may call this
   route (403, :mod:`services.api.auth_routes`);
4. the body is read (bounded in size and time by :class:`~services.api.middleware.RequestMiddleware`)
   and the signature checked over it, the method, Host, path, query and ``Idempotency-Key`` (401);
5. the nonce has not been seen inside the window (401: a replayed request), while there is room
   to remember it (429 otherwise).

The app then gets the body as it was read, and ``request.state.principal`` / ``.role`` name the
caller (the inbox checks the sender of a message against the message itself).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.auth import AUTH_SCHEME, Credentials, NonceCache, parse_authorization
from services.api.auth_routes import ANY_PRINCIPAL, PUBLIC, roles_for
from services.api.problems import FieldError, ProblemError

__all__ = ["AuthMiddleware", "host_name", "read_body", "replay_body"]

_CHALLENGE: Final = {"WWW-Authenticate": AUTH_SCHEME}
_AUTH_FIELD: Final = "Authorization"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8001`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _unauthorized(detail: str, reason: str, slug: str = "unauthorized") -> ProblemError:
    return ProblemError(401, detail, [FieldError(field=_AUTH_FIELD, reason=reason)], slug=slug, headers=_CHALLENGE)


class AuthMiddleware:
    """Host check, credentials and role before the body, signature and nonce after it."""

    def __init__(
        self, app: ASGIApp, *, credentials: Credentials, allowed_hosts: Iterable[str], window_s: float,
        nonces: NonceCache | None = None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.window_s = window_s
        self.nonces = nonces or NonceCache(window_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if "*" not in self.allowed_hosts and host_name(host) not in self.allowed_hosts:
            raise ProblemError(400, "this service does not answer for that host name",
                               [FieldError(field="Host", reason=f"{host[:80]!r} is not one of this service's names")],
                               slug="host-not-allowed")
        method, path = str(scope["method"]), str(scope["path"])
        rule = roles_for(method, path)
        if rule is not None and rule.roles is PUBLIC:
            await self.app(scope, receive, send)
            return
        signed = parse_authorization(_header(scope, b"authorization"))
        if signed is None:
            raise _unauthorized("this route needs a signed request", f"expected {AUTH_SCHEME} Credential=…, "
                                "Timestamp=…, Nonce=…, Signature=…")
        principal = self.credentials.get(signed.credential)
        if principal is None:
            raise _unauthorized("unknown credential", f"no principal {signed.credential!r}")
        now_s = time.time()
        if abs(now_s - signed.timestamp) > self.window_s:
            raise _unauthorized(f"the signature's timestamp is more than {self.window_s:g} s from this service's "
                                "clock", f"Timestamp={signed.timestamp}", slug="stale-signature")
        if rule is not None and rule.roles is not ANY_PRINCIPAL and principal.role not in rule.roles:
            raise ProblemError(403, f"the {principal.role} role may not call {method} {rule.template}",
                               [FieldError(field=_AUTH_FIELD, reason=f"allowed: {', '.join(sorted(rule.roles))}")],
                               slug="forbidden")
        body = await read_body(receive)
        raw_path = scope.get("raw_path") or path.encode("utf-8")
        target = bytes(raw_path).partition(b"?")[0].decode("latin-1")
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        if query:
            target += "?" + query
        if not signed.verify(principal, method=method, host=host, target=target,
                             idempotency_key=_header(scope, b"idempotency-key"), body=body):
            raise _unauthorized("the signature does not match the request", "signature mismatch (changed body, "
                                "key, path or host, or another key)", slug="bad-signature")
        fresh = self.nonces.add(principal.name, signed.nonce, signed.timestamp, now_s)
        if fresh is False:
            raise _unauthorized("this signed request was already received", f"Nonce={signed.nonce}",
                                slug="replayed-signature")
        if fresh is None:
            raise ProblemError(429, "too many signed requests inside the window; retry later",
                               [FieldError(field=_AUTH_FIELD, reason="nonce store full")], slug="too-many-requests",
                               headers={"Retry-After": "1"})
        state = scope.setdefault("state", {})
        state["principal"], state["role"] = principal.name, principal.role
        await self.app(scope, replay_body(body, receive), send)


async def read_body(receive: Receive) -> bytes:
    """The whole body (the receive given is bounded in size and time by the outer middleware)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # a disconnect is raised by the outer middleware's receive
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then waits on the connection."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
