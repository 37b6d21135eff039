"""A route class that checks a body's media type and strictness before FastAPI parses it.

FastAPI reads any body with ``json.loads``, which accepts ``NaN``, duplicate keys and unbounded
nesting, and treats a body of another media type as raw bytes (a confusing 422). Routes built with
:class:`StrictJsonRoute` answer those with 415 or 400 problems first. It runs after routing, so an
unknown path still gets 404 and an undeclared method 405 with ``Allow``.

A party service declares its routes with :class:`Routes`: straight on the app's own router (whose
route class :func:`services.api.common.create_base_app` sets to :class:`StrictJsonRoute`), under
one OpenAPI tag. An ``APIRouter`` passed to ``app.include_router`` would have every route built
twice (FastAPI 0.165), once when declared and again for the app when a request first reaches
it; the second build was about 15 % of the CPU of starting a party set and serving its first
requests.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.types import DecoratedCallable

from services.api.problems import FieldError, ProblemError
from services.api.strict_json import JSON_DEPTH_MAX_DEFAULT, JsonRejectedError, parse_json_strict

__all__ = ["Routes", "StrictJsonRoute", "check_json_body"]


def _is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    charset = message.get_param("charset")
    charset_ok = charset is None or (isinstance(charset, str) and charset.lower() in ("utf-8", "utf8"))
    return (subtype == "json" or subtype.endswith("+json")) and charset_ok


async def check_json_body(request: Request) -> None:
    """415 for a body that is not ``application/json`` (UTF-8), 400 for one that is not strict JSON."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if not body and not content_type:
        return  # no body at all: the model's own "field required" answers that
    if not _is_json(content_type):
        raise ProblemError(415, "send the body as application/json (UTF-8)",
                           [FieldError(field="Content-Type", reason=f"got {content_type[:80]!r}")])
    settings = getattr(request.app.state, "settings", None)
    depth_max = getattr(settings, "json_depth_max", JSON_DEPTH_MAX_DEFAULT)
    try:
        parse_json_strict(body, depth_max=depth_max)
    except JsonRejectedError as exc:
        raise ProblemError(400, "the body is not strict JSON",
                           [FieldError(field="body", reason=exc.reason)], slug="invalid-json") from None


class StrictJsonRoute(APIRoute):
    """``APIRoute`` whose handler first runs :func:`check_json_body` when the route takes a body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_handler(request: Request) -> Response:
            await check_json_body(request)
            return await handler(request)

        return strict_handler


class Routes:
    """Path operations declared on ``app``'s own router, each tagged ``tag`` in the OpenAPI
    document (see the module docstring); ``get``/``post`` take FastAPI's path-operation options."""

    def __init__(self, app: FastAPI, tag: str) -> None:
        if not issubclass(app.router.route_class, StrictJsonRoute):
            raise TypeError("Routes needs an app whose router builds StrictJsonRoute routes (create_base_app)")
        self._router = app.router
        self._tags: list[Any] = [tag]

    def get(self, path: str, **options: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self._router.get(path, tags=self._tags, **options)

    def post(self, path: str, **options: Any) -> Callable[[DecoratedCallable], DecoratedCallable]:
        return self._router.post(path, tags=self._tags, **options)
