"""Errors as RFC 9457 problem details (``application/problem+json``), naming the field at fault.

Every error any party service sends has the same shape::

    {"type": "urn:ccsim:problem:validation", "title": "Unprocessable Content", "status": 422,
     "detail": "1 field is invalid", "errors": [{"field": "amount", "reason": "..."}],
     "request_id": "..."}

Handlers raise :class:`ProblemError`; FastAPI's own validation errors and HTTP errors are turned
into the same shape here. The validation handler reads only each error's location and message, so
no odd input (NaN, lone surrogates, bytes) can make the error path itself fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "FieldError",
    "Problem",
    "ProblemError",
    "field_name",
    "http_exception_handler",
    "problem_response",
    "problem_responses",
    "validation_exception_handler",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_TYPE_PREFIX: Final = "urn:ccsim:problem:"
_REASON_CHARS_MAX: Final = 300
_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_ERRORS_MAX: Final = 50  # a limit on everything: a 10,000-item body does not get 10,000 errors back

_SLUG_BY_STATUS: Final = {
    400: "bad-request", 404: "not-found", 405: "method-not-allowed", 409: "conflict",
    413: "body-too-large", 415: "unsupported-media-type", 422: "validation", 500: "internal",
}


class FieldError(BaseModel):
    """One field at fault: ``transfers[0].amount``, ``Idempotency-Key``, ``account_id``."""

    model_config = ConfigDict(extra="forbid")
    field: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document, with the fields at fault in ``errors``."""

    model_config = ConfigDict(extra="forbid")
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []
    request_id: str = ""


class ProblemError(StarletteHTTPException):
    """Raise to answer with a problem. An ``HTTPException``, so FastAPI's body reader passes it on."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[FieldError] = (),
        *,
        slug: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=dict(headers or {}))
        self.slug = slug or _SLUG_BY_STATUS.get(status, "error")
        self.errors = list(errors)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    errors: Iterable[FieldError] = (),
    *,
    slug: str = "",
    headers: Mapping[str, str] | None = None,
    request_id: str = "",
) -> JSONResponse:
    """The one way a problem is sent (middleware passes ``request=None`` and the ``request_id``)."""
    if request is not None:
        request_id = str(getattr(request.state, "request_id", ""))
    body = Problem(
        type=_TYPE_PREFIX + (slug or _SLUG_BY_STATUS.get(status, "error")),
        title=_title(status), status=status, detail=detail,
        errors=list(errors)[:_ERRORS_MAX], request_id=request_id,
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}),
                        media_type=PROBLEM_MEDIA_TYPE)


def field_name(loc: Iterable[Any]) -> str:
    """``("body", "transfers", 0, "amount")`` → ``transfers[0].amount``; headers keep their name."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _reason(message: object) -> str:
    text = str(message)
    return text if len(text) <= _REASON_CHARS_MAX else text[:_REASON_CHARS_MAX] + "…"


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """``ProblemError`` and Starlette's own HTTP errors (404 route, 405 with ``Allow`` listing every
    method the path serves)."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ProblemError):
        return problem_response(request, exc.status_code, str(exc.detail), exc.errors,
                                slug=exc.slug, headers=exc.headers)
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names only the first route of the path; a path may have several
        headers = {**(headers or {}), "Allow": _allowed_methods(request) or (headers or {}).get("Allow", "")}
    return problem_response(request, exc.status_code, _reason(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the app's OpenAPI document declares at this request's path (``GET, POST``)."""
    openapi = getattr(request.app, "openapi", None)
    if openapi is None:
        return ""
    methods: set[str] = set()
    for template, item in openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^/}]+\})", template))
        if re.fullmatch(pattern, request.url.path):
            methods.update(m.upper() for m in item if m in _METHODS)
    return ", ".join(sorted(methods))


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """A request that does not fit the schema: 400 for a bad header or bad JSON, else 422."""
    assert isinstance(exc, RequestValidationError)
    errors: list[FieldError] = []
    status = 422
    for raw in exc.errors():
        if not isinstance(raw, Mapping):
            continue
        loc = raw.get("loc", ())
        loc = tuple(loc) if isinstance(loc, list | tuple) else (str(loc),)
        if (loc and loc[0] == "header") or raw.get("type") == "json_invalid":
            status = 400  # the request itself is malformed, not its business content
        errors.append(FieldError(field=field_name(loc), reason=_reason(raw.get("msg", "invalid"))))
    count = len(errors)
    detail = f"{count} field{'s are' if count != 1 else ' is'} invalid"
    return problem_response(request, status, detail, errors)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for problem statuses (the schema is registered by the app)."""
    return {
        status: {
            "description": _title(status),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
