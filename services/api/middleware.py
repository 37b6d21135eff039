"""The outermost layer of every party service: request id, body limits, canonical log line, metrics,
and the ``Server-Timing`` header (:mod:`services.api.timing`).

A pure ASGI middleware (not ``BaseHTTPMiddleware``) because it must see the body as it streams:
a ``Content-Length`` over the limit is refused at once, and a body that turns out longer than it
said, or a chunked one, is cut off at the limit while it is read. The body is also bounded in time:
one not received whole within ``body_timeout_s`` of the request's start is answered 408 (a client
trickling bytes cannot hold a worker). A client that goes away before its body is complete is
logged as its one ``http_request`` line with status 499 (nginx's "client closed request"): no
traceback, not a 500 in the metrics. Anything else the app let escape is a bug: a logged 500
problem instead of a dropped connection.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Final

import anyio
import structlog
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.metrics import ApiMetrics
from services.api.problems import FieldError, ProblemError, problem_response
from services.api.timing import end_request, start_request
from services.logging import get_logger

__all__ = ["CLIENT_CLOSED_REQUEST", "REQUEST_ID_HEADER", "RequestMiddleware"]

REQUEST_ID_HEADER: Final = "X-Request-ID"
CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for a client that went away before its answer
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_log = get_logger(__name__)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _body_error(limit: int) -> list[FieldError]:
    return [FieldError(field="body", reason=f"at most {limit} bytes are accepted")]


def _route_desc(scope: Scope) -> str:
    """``"POST /v1/inbox/{receiver}"``: the route's template, never the raw path (ids stay out)."""
    route = str(getattr(scope.get("route"), "path", "")) or "unmatched"
    return f"{scope.get('method', '')} {route}"[:120]


def _request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a fresh one."""
    given = _header(scope, b"x-request-id")
    if given is not None:
        text = given.decode("latin-1")
        if _REQUEST_ID_RE.fullmatch(text):
            return text
    return uuid.uuid4().hex


class _BoundedBody:
    """The request's ``receive``, bounded: at most ``limit`` bytes (413), whole within
    ``timeout_s`` of the request's start (408); a disconnect before the end is
    :class:`ClientDisconnect`. Once the body is in, ``receive`` is passed through unbounded (what
    follows is the wait for a disconnect)."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self._receive = receive
        self.limit = limit
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.bytes_in = 0
        self.done = False

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        with anyio.move_on_after(max(self.deadline - time.monotonic(), 0.0)) as scope:
            message = await self._receive()
        if scope.cancelled_caught:
            raise ProblemError(408, f"the body was not received within {self.timeout_s:g} s",
                               [FieldError(field="body", reason="sent too slowly or not at all")], slug="body-timeout")
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] == "http.request":
            self.bytes_in += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.bytes_in > self.limit:
                raise ProblemError(413, f"the body is longer than {self.limit} bytes", _body_error(self.limit))
        return message


class RequestMiddleware:
    """Per request: id, limits, one ``http_request`` log line, a latency observation, and a
    ``Server-Timing`` header with this service's time and the entries its callees sent back."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, body_limit_bytes: int,
                 body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.metrics = metrics
        self.body_limit_bytes = body_limit_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        status = 500
        response_started = False
        body = _BoundedBody(receive, self.body_limit_bytes, self.body_timeout_s)
        timing, timing_token = start_request(self.metrics.party)

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                dur_ms = (time.perf_counter() - started_at) * 1000.0
                timing.close()  # later calls of this request's background tasks are not in this answer
                headers.append((b"server-timing", timing.header(dur_ms, _route_desc(scope)).encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                early = self._refuse_early(scope, request_id)
                if early is not None:
                    await early(scope, receive, send_with_id)
                else:
                    await self.app(scope, body.receive, send_with_id)
            except ClientDisconnect:
                status = CLIENT_CLOSED_REQUEST  # nobody to answer; the next line says so, once
            except ProblemError as exc:  # refused by a layer in front of the app (limits, credentials)
                if not response_started:
                    await problem_response(None, exc.status_code, str(exc.detail), exc.errors, slug=exc.slug,
                                           headers=exc.headers, request_id=request_id)(
                        scope, receive, send_with_id)
            except Exception:
                # A bug, by definition: every expected failure is answered as a problem earlier.
                _log.exception("unhandled_error", request_id=request_id, method=scope.get("method"),
                               path=scope.get("path"))
                if not response_started:
                    await problem_response(None, 500, "internal error; it has been logged",
                                           request_id=request_id)(
                        scope, receive, send_with_id)
            finally:
                end_request(timing_token)
                self._finish(scope, request_id, status, body.bytes_in, time.perf_counter() - started_at)

    def _refuse_early(self, scope: Scope, request_id: str) -> JSONResponse | None:
        """A declared length that is malformed or over the limit is refused before any read."""
        declared = _header(scope, b"content-length")
        if declared is None:
            return None
        text = declared.decode("latin-1").strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            return problem_response(None, 400, "Content-Length is not a number", request_id=request_id,
                                    errors=[FieldError(field="Content-Length", reason=f"got {text[:40]!r}")])
        if int(text) > self.body_limit_bytes:
            return problem_response(None, 413, f"the body is longer than {self.body_limit_bytes} bytes",
                                    _body_error(self.body_limit_bytes), request_id=request_id)
        return None

    def _finish(self, scope: Scope, request_id: str, status: int, bytes_in: int, duration_s: float) -> None:
        route_obj = scope.get("route")
        route = str(getattr(route_obj, "path", "")) or "unmatched"  # never the raw path: no label explosion
        method = str(scope.get("method", ""))
        self.metrics.observe_request(method, route, status, duration_s)
        log = _log.error if status >= 500 else _log.info
        log("http_request", request_id=request_id, party=self.metrics.party, method=method, path=scope.get("path", ""),
            route=route, status=status, duration_ms=round(duration_s * 1000, 3), bytes_in=bytes_in)

