"""``create_base_app(settings)``: what every party service shares.

- errors as problem+json (:mod:`services.api.problems`), for validation errors, HTTP errors and
  bugs (a 500 is logged with its traceback);
- strict JSON bodies and 415 for other media types (:class:`StrictJsonRoute`, the default route
  class of the app's router);
- a body size limit, a request id echoed as ``X-Request-ID``, one ``http_request`` log line and a
  latency observation per request (:class:`RequestMiddleware`);
- ``GET /healthz`` and Prometheus ``GET /metrics``;
- an OpenAPI document in which every operation lists the problems it can answer, so schema-driven
  tests (schemathesis) check the error bodies too.

A party service adds its routes with :class:`services.api.routing.Routes` (on the app's own
router, so each is built once) and registers what it must close on shutdown with :func:`on_shutdown`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from services.api.metrics import CONTENT_TYPE_LATEST, ApiMetrics
from services.api.middleware import RequestMiddleware
from services.api.problems import (
    FieldError,
    Problem,
    http_exception_handler,
    problem_responses,
    validation_exception_handler,
)
from services.api.rate_limit import RateLimitMiddleware, limit_of
from services.api.routing import StrictJsonRoute
from services.api.settings import ApiSettings

__all__ = ["Health", "close_app", "create_base_app", "on_shutdown"]


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str
    party: str


def on_shutdown(app: FastAPI, close: Callable[[], None]) -> None:
    """Run ``close`` when the app shuts down (or when a test calls :func:`close_app`)."""
    cast(list[Callable[[], None]], app.state.closers).append(close)


def close_app(app: FastAPI) -> None:
    """Close what the app opened, newest first (engines, pools). Safe to call twice."""
    closers = cast(list[Callable[[], None]], app.state.closers)
    while closers:
        closers.pop()()


def create_base_app(settings: ApiSettings, *, title: str = "", version: str = "1",
                    guard: Middleware | None = None) -> FastAPI:
    """A FastAPI app with the shared error model, limits, logging, health and metrics; ``guard``
    is a middleware run on every request after the limits' early checks and before the app (the
    party services' credentials check, :mod:`services.api.auth_middleware`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Only a real server runs the lifespan; in-process tests close with close_app(). Logging
        # is the serving process's to configure (services.logging), not each app's.
        try:
            yield
        finally:
            close_app(app)

    app = FastAPI(title=title or f"ccsim {settings.party}", version=version, lifespan=lifespan)
    app.router.route_class = StrictJsonRoute
    app.state.settings = settings
    app.state.closers = []
    metrics = ApiMetrics(settings.party)
    app.state.metrics = metrics
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    # Inside the guard (a signed caller is known by its verified principal) and inside RequestMiddleware
    # (a 429 is logged and counted like any answer): services.api.rate_limit.
    app.add_middleware(RateLimitMiddleware, limits=settings.rate_limits, callers_max=settings.rate_callers_max)
    if guard is not None:  # inside RequestMiddleware: its refusals are logged, timed and counted like any answer
        app.add_middleware(guard.cls, *guard.args, **guard.kwargs)
    app.add_middleware(RequestMiddleware, metrics=metrics, body_limit_bytes=settings.body_limit_bytes,
                       body_timeout_s=settings.body_timeout_s)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> Health:
        """The process is up and serving."""
        return Health(status="ok", party=settings.party)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)
            app.openapi_schema = _with_problems(schema, guarded=guard is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app


def _with_problems(schema: dict[str, Any], *, guarded: bool = False) -> dict[str, Any]:
    """Register the problem schemas and list the shared problems on every operation (with a
    guard, the credentials' 401 and 403 on every operation but ``/healthz``)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    components["FieldError"] = FieldError.model_json_schema(ref_template=ref)
    components["Problem"] = Problem.model_json_schema(ref_template=ref)
    components["Problem"].pop("$defs", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = [400, 422, 500]
            if "requestBody" in operation:
                statuses += [408, 413, 415]
            if guarded and path != "/healthz":
                statuses += [401, 403, 429]
            elif limit_of(method.upper(), path) is not None:
                statuses.append(429)
            responses = operation["responses"]
            for status, entry in problem_responses(*statuses).items():
                key = str(status)
                if key == "422" or key not in responses:
                    responses[key] = entry
    return schema
