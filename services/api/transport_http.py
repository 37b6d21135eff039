"""Calls between party services over HTTP, and :class:`HttpTransport`, the live ``Transport``.

:class:`services.messaging.Transport` is the seam between the in-process chain and live mode: here
``send(receiver, message)`` posts the message to the receiver's service (``POST
{base}/v1/inbox/{receiver}``). Receivers hosted by the calling service itself (the banks inside the
bank service, merchants and cardholders, who keep no books) are called in-process.

Every call goes through :meth:`HttpTransport.apost`, which puts a limit on everything:

- one pooled ``httpx.AsyncClient`` per service (keep-alive connections, a bounded pool);
- a timeout per attempt (connect and total), and optionally a deadline for the whole call;
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
import random
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio
import anyio.from_thread
import httpx
from httpx._client import UseClientDefault

from services.api.timing import SERVER_TIMING, record_response
from services.logging import get_logger
from services.messaging import Handler, PaymentMessage, Purpose
from services.money import AssetRegistry

__all__ = ["HttpTransport", "idempotency_key", "message_from_json", "message_to_json"]

_log = get_logger(__name__)
_KEY_LENGTH_MAX: Final = 128
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_IN_FLIGHT_TYPE: Final = "urn:ccsim:problem:idempotency-key-in-flight"


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
        self._client = client
        self._owns_client = client is None
        self._sync_client: httpx.Client | None = None
        self._rng = random.Random()  # backoff jitter only

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None
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
    ) -> httpx.Response | None:
        """POST with retries; the last response (success, or a 4xx that will not change), or
        ``None`` when every attempt failed or the deadline passed."""
        headers = {"Idempotency-Key": key} if key else {}
        started = time.monotonic()
        last: httpx.Response | None = None
        for attempt in range(self.retries_max + 1):
            timeout = self._timeout
            if deadline_s is not None:
                left_s = deadline_s - (time.monotonic() - started)
                if left_s <= 0:
                    return None
                timeout = httpx.Timeout(min(self.timeout_s, left_s), connect=min(self._timeout.connect or left_s,
                                                                                left_s))
            try:
                last = await self.client.post(base_url + path, json=body, headers=headers, timeout=timeout,
                                              auth=self._auth())
            except httpx.TransportError as exc:
                _log.warning("outbound_failed", url=base_url + path, attempt=attempt, error=type(exc).__name__)
                last = None
            else:
                record_response(last.headers.get_list(SERVER_TIMING))
                if not _retryable(last):
                    return last
            if attempt < self.retries_max:
                pause_s = self._pause_s(attempt)
                if deadline_s is not None and time.monotonic() - started + pause_s >= deadline_s:
                    return None
                await asyncio.sleep(pause_s)
        return last if last is not None and not _retryable(last) else None

    def post(self, base_url: str, path: str, body: Any, *, key: str | None = None) -> httpx.Response | None:
        """The synchronous twin of :meth:`apost`: on the service's loop from a worker thread, else
        with a synchronous client."""
        if _in_worker_thread():
            return anyio.from_thread.run(functools.partial(self.apost, base_url, path, body, key=key))
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=self._timeout, limits=self._limits)
        headers = {"Idempotency-Key": key} if key else {}
        last: httpx.Response | None = None
        for attempt in range(self.retries_max + 1):
            try:
                last = self._sync_client.post(base_url + path, json=body, headers=headers, auth=self._auth())
            except httpx.TransportError:
                last = None
            else:
                record_response(last.headers.get_list(SERVER_TIMING))
                if not _retryable(last):
                    return last
            if attempt < self.retries_max:
                time.sleep(self._pause_s(attempt))
        return last if last is not None and not _retryable(last) else None

    async def aget(self, base_url: str, path: str) -> httpx.Response | None:
        for attempt in range(self.retries_max + 1):
            try:
                response = await self.client.get(base_url + path, auth=self._auth())
            except httpx.TransportError:
                response = None
            if response is not None:
                record_response(response.headers.get_list(SERVER_TIMING))
                if response.status_code < 500:
                    return response
            if attempt < self.retries_max:
                await asyncio.sleep(self._pause_s(attempt))
        return None

    def _auth(self) -> httpx.Auth | UseClientDefault:
        """This service's signature, or the client's own default when it signs nothing itself."""
        return self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT

    def _pause_s(self, attempt: int) -> float:
        return float(self.backoff_s * (2 ** min(attempt, 6)) * (0.5 + self._rng.random()))


def _retryable(response: httpx.Response) -> bool:
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
    """True in a thread started by anyio (FastAPI's sync endpoints): the loop can run our call."""
    try:
        anyio.from_thread.run_sync(_noop)
    except RuntimeError:
        return False
    return True


def _noop() -> None:
    return None
