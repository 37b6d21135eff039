"""Calls between party services over HTTP, and :class:`HttpTransport`, the live ``Transport``.

:class:`services.messaging.Transport` is the seam between the in-process chain and live mode: here
``send(receiver, message)`` posts the message to the receiver's service (``POST
{base}/v1/inbox/{receiver}``). Receivers hosted by the calling service itself (the banks inside the
bank service, merchants and cardholders, who keep no books) are called in-process.

Every call goes through :meth:`HttpTransport.apost`, which puts a limit on everything:

- one pooled client per service with keep-alive connections and a bounded pool: an
  ``aiohttp.ClientSession`` (chosen on measurement, docs/adr/0007-service-to-service-http.md: an
  httpx call cost 1.1–2.3 ms of CPU against aiohttp's 0.14–0.32 ms), or the ``httpx.AsyncClient``
  a caller passes (the tests' in-process ASGI router);
- a timeout per attempt (connect, and total — which includes the wait for a free pooled
  connection), and optionally a deadline for the whole call;
- bounded retries with exponential backoff and jitter, on connection errors, timeouts, 5xx and 409
  (the receiver is still running the same key) — never on another 4xx, which will not change;
- the SAME ``Idempotency-Key`` on every attempt, so a retry of a request whose answer was lost
  replays the first answer instead of moving the money twice;
- every answer's ``Server-Timing`` entries are forwarded into the answer of the request being
  served (:func:`services.api.timing.record_response`);
- every attempt signed as this service (``auth``, :class:`services.api.auth.SigningAuth`): a fresh
  timestamp and nonce each time, over the same body and ``Idempotency-Key``.

``send`` is synchronous (the domain is): called from a FastAPI worker thread it runs the async call
on the service's event loop (``anyio.from_thread``), so one connection pool serves the service;
anywhere else it uses a synchronous client with the same policy.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import anyio
import anyio.from_thread
import httpx
from httpx._client import UseClientDefault

from services.api.auth import SigningAuth, sign_headers
from services.api.timing import SERVER_TIMING, record_response
from services.logging import get_logger
from services.messaging import Handler, PaymentMessage, Purpose
from services.money import AssetRegistry

__all__ = ["Answer", "HttpTransport", "idempotency_key", "message_from_json", "message_to_json"]

_log = get_logger(__name__)
_KEY_LENGTH_MAX: Final = 128
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_IN_FLIGHT_TYPE: Final = "urn:ccsim:problem:idempotency-key-in-flight"
# How long an idle pooled connection to a peer is kept; shorter than the servers' keep-alive
# (sim.live.serve.SERVER_KEEP_ALIVE_S), so this side always closes an idle connection first.
POOL_KEEP_ALIVE_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A peer's answer, whichever client carried it: its status, body and headers."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def idempotency_key(*parts: str) -> str:
    """A key made of ``parts``; hashed when it would be longer than the header allows."""
    key = "|".join(parts)
    if len(key) <= _KEY_LENGTH_MAX and key.isascii() and key.isprintable() and " " not in key:
        return key
    return "h:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def message_to_json(msg: PaymentMessage, assets: AssetRegistry) -> dict[str, Any]:
    """A message as the inbox endpoints take it: the amount as a KZT decimal string."""
    return {"id": msg.id, "purpose": msg.purpose.value, "payer": msg.payer, "payee": msg.payee,
            "payer_bank": msg.payer_bank, "payee_bank": msg.payee_bank,
            "amount": assets.format(msg.amount_kzt, "KZT"), "ref": msg.ref}


def message_from_json(body: Mapping[str, Any], assets: AssetRegistry) -> PaymentMessage:
    return PaymentMessage(
        id=str(body["id"]), purpose=Purpose(body["purpose"]), payer=str(body["payer"]),
        payee=str(body["payee"]), payer_bank=str(body["payer_bank"]), payee_bank=str(body["payee_bank"]),
        amount_kzt=assets.parse(str(body["amount"]), "KZT"), ref=str(body.get("ref", "")),
    )


class HttpTransport:
    """Posts to other parties' services; a :class:`~services.messaging.Transport` for messages.

    ``routes`` maps a receiver (``"issuer"``, ``"bank-2"``) or a receiver prefix ending in ``:``
    (``"merchant:"``) to the base URL of the service that hosts it; ``local`` maps receivers
    hosted by this service to their handlers.
    """

    def __init__(
        self,
        routes: Mapping[str, str],
        *,
        assets: AssetRegistry | None = None,
        local: Mapping[str, Handler] | None = None,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 1.0,
        retries_max: int = 3,
        backoff_s: float = 0.05,
        pool_connections_max: int = 100,
        client: httpx.AsyncClient | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.auth: httpx.Auth | None = auth
        self.local: dict[str, Handler] = dict(local or {})
        self.assets = assets or AssetRegistry()
        self.timeout_s = timeout_s
        self.retries_max = retries_max
        self.backoff_s = backoff_s
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._limits = httpx.Limits(max_connections=pool_connections_max,
                                    max_keepalive_connections=pool_connections_max)
        self.pool_connections_max = pool_connections_max
        self._client = client
        self._session: aiohttp.ClientSession | None = None
        self._sync_client: httpx.Client | None = None
        self._rng = random.Random()  # backoff jitter only

    # -- lifecycle ---------------------------------------------------------------------------
    def _aiohttp(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use on the service's loop."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool_connections_max, limit_per_host=0,
                                             keepalive_timeout=POOL_KEEP_ALIVE_S, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.close_sync()

    def close_sync(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    # -- routing -----------------------------------------------------------------------------
    def base_url(self, receiver: str) -> str:
        url = self.routes.get(receiver)
        if url is None:
            prefix = receiver.partition(":")[0] + ":"
            url = self.routes.get(prefix)
        if url is None:
            raise KeyError(f"no route to receiver {receiver!r}")
        return url

    # -- messages (the Transport protocol) ---------------------------------------------------
    def send(self, receiver: str, message: PaymentMessage) -> bool:
        handler = self.local.get(receiver) or self.local.get(receiver.partition(":")[0] + ":")
        if handler is not None:
            return handler(message)
        if _in_worker_thread():
            return bool(anyio.from_thread.run(self.asend, receiver, message))
        return self._send_sync(receiver, message)

    async def asend(self, receiver: str, message: PaymentMessage) -> bool:
        handler = self.local.get(receiver) or self.local.get(receiver.partition(":")[0] + ":")
        if handler is not None:
            return await anyio.to_thread.run_sync(handler, message)
        response = await self.apost(self.base_url(receiver), f"/v1/inbox/{receiver}",
                                    message_to_json(message, self.assets),
                                    key=idempotency_key("msg", receiver, message.id))
        return response is not None and response.status_code == 200

    def _send_sync(self, receiver: str, message: PaymentMessage) -> bool:
        response = self.post(self.base_url(receiver), f"/v1/inbox/{receiver}",
                             message_to_json(message, self.assets),
                             key=idempotency_key("msg", receiver, message.id))
        return response is not None and response.status_code == 200

    # -- requests ----------------------------------------------------------------------------
    async def apost(
        self, base_url: str, path: str, body: Any, *, key: str | None = None, deadline_s: float | None = None,
    ) -> Answer | None:
        """POST with retries; the last response (success, or a 4xx that will not change), or
        ``None`` when every attempt failed or the deadline passed."""
        content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        started = time.monotonic()
        last: Answer | None = None
        for attempt in range(self.retries_max + 1):
            total_s, connect_s = self.timeout_s, float(self._timeout.connect or self.timeout_s)
            if deadline_s is not None:
                left_s = deadline_s - (time.monotonic() - started)
                if left_s <= 0:
                    return None
                total_s, connect_s = min(total_s, left_s), min(connect_s, left_s)
            try:
                last = await self._request("POST", base_url, path, content, key, total_s, connect_s)
            except _TRANSPORT_ERRORS as exc:
                _log.warning("outbound_failed", url=base_url + path, attempt=attempt, error=type(exc).__name__)
                last = None
            else:
                if not _retryable(last):
                    return last
            if attempt < self.retries_max:
                pause_s = self._pause_s(attempt)
                if deadline_s is not None and time.monotonic() - started + pause_s >= deadline_s:
                    return None
                await asyncio.sleep(pause_s)
        return last if last is not None and not _retryable(last) else None

    async def _request(self, method: str, base_url: str, path: str, content: bytes | None,  # noqa: PLR0917
                       key: str | None, total_s: float, connect_s: float) -> Answer:
        """One attempt, signed as this service, its ``Server-Timing`` recorded."""
        headers = {"Idempotency-Key": key} if key else {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if self._client is not None:  # the caller's httpx client (in-process tests)
            r = await self._client.request(method, base_url + path, content=content, headers=headers,
                                           timeout=httpx.Timeout(total_s, connect=connect_s),
                                           auth=self._auth())
            record_response(r.headers.get_list(SERVER_TIMING))
            return Answer(r.status_code, r.content, r.headers)
        host = urlsplit(base_url).netloc
        headers["Host"] = host
        if isinstance(self.auth, SigningAuth):
            headers.update(sign_headers(self.auth.principal, method, host, path, content or b"",
                                        idempotency_key=key or ""))
        # The wait for a pooled connection counts in the attempt's total (as httpx's pool timeout
        # did), the TCP connect in its connect timeout: a full pool queues, it does not fail fast.
        timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)
        async with self._aiohttp().request(method, base_url + path, data=content, headers=headers,
                                           timeout=timeout, allow_redirects=False) as response:
            body = await response.read()
            record_response(response.headers.getall(SERVER_TIMING, []))
            return Answer(response.status, body, response.headers)

    def post(self, base_url: str, path: str, body: Any, *, key: str | None = None) -> Answer | None:
        """The synchronous twin of :meth:`apost`: on the service's loop from a worker thread, else
        with a synchronous client."""
        if _in_worker_thread():
            return anyio.from_thread.run(functools.partial(self.apost, base_url, path, body, key=key))
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=self._timeout, limits=self._limits)
        headers = {"Idempotency-Key": key} if key else {}
        last: Answer | None = None
        for attempt in range(self.retries_max + 1):
            try:
                r = self._sync_client.post(base_url + path, json=body, headers=headers, auth=self._auth())
            except httpx.TransportError:
                last = None
            else:
                record_response(r.headers.get_list(SERVER_TIMING))
                last = Answer(r.status_code, r.content, r.headers)
                if not _retryable(last):
                    return last
            if attempt < self.retries_max:
                time.sleep(self._pause_s(attempt))
        return last if last is not None and not _retryable(last) else None

    async def aget(self, base_url: str, path: str) -> Answer | None:
        connect_s = float(self._timeout.connect or self.timeout_s)
        for attempt in range(self.retries_max + 1):
            response: Answer | None
            try:
                response = await self._request("GET", base_url, path, None, None, self.timeout_s, connect_s)
            except _TRANSPORT_ERRORS:
                response = None
            if response is not None and response.status_code < 500:
                return response
            if attempt < self.retries_max:
                await asyncio.sleep(self._pause_s(attempt))
        return None

    def _auth(self) -> httpx.Auth | UseClientDefault:
        """This service's signature, or the client's own default when it signs nothing itself."""
        return self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT

    def _pause_s(self, attempt: int) -> float:
        return float(self.backoff_s * (2 ** min(attempt, 6)) * (0.5 + self._rng.random()))


_TRANSPORT_ERRORS: Final = (httpx.TransportError, aiohttp.ClientError, asyncio.TimeoutError)


def _retryable(response: Answer) -> bool:
    """A 5xx or 429 may pass; so may a 409 that says the same key is still running. Any other 4xx
    (including a business conflict such as a second capture) will not change on a retry."""
    if response.status_code in _RETRY_STATUSES:
        return True
    if response.status_code != 409:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") == _IN_FLIGHT_TYPE


def _in_worker_thread() -> bool:
    """True in a thread started by anyio (FastAPI's sync endpoints): the loop can run our call.
    (``check_cancelled`` answers from the thread's own state, without a round trip to the loop.)"""
    try:
        anyio.from_thread.check_cancelled()
    except anyio.NoEventLoopError:
        return False
    return True
