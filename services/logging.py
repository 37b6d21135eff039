"""Structured logging for services and simulations, configured once.

One canonical event per payment or request, as JSON when nobody is watching (a file, a pipe, CI) and
as aligned ``key=value`` lines on a terminal. Context such as ``run_id``, ``transfer_id`` or
``request_id`` is bound with :func:`structlog.contextvars.bind_contextvars` and lands on every
event of that task. In a simulation, :func:`sim_time_processor` stamps each event with the virtual
time of the run's clock, because wall-clock timestamps say nothing about simulated causality.

Usage::

    configure_logging()                      # JSON unless stderr is a terminal
    configure_logging(json=True, clock=env_clock)
    structlog.contextvars.bind_contextvars(run_id="r1")
    get_logger(__name__).info("transfer_posted", transfer_id="t1", amount_minor=1234)
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from services.clock import Clock

__all__ = ["LEVELS", "configure_logging", "get_logger", "sim_time_processor"]

LEVELS: Final = ("debug", "info", "warning", "error", "critical")

# The arguments of the last configuration and the processor list it installed. A repeated call
# with the same arguments is a no-op while that list is still structlog's (nobody reconfigured).
_active: tuple[tuple[bool, str, int | None], list[Processor]] | None = None


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, so cached loggers follow a redirected stderr."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def sim_time_processor(clock: Clock) -> Processor:
    """A processor that adds ``sim_time`` (the clock's seconds) to every event.

    An explicit ``sim_time=`` on the call wins, so a component logging a past event keeps its time.
    """

    def add_sim_time(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("sim_time", clock.now())
        return event_dict

    return add_sim_time


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def configure_logging(
    json: bool | None = None, level: str = "info", *, clock: Clock | None = None
) -> None:
    """Configure structlog for this process; repeating a call with the same arguments does nothing.

    ``json=None`` picks JSON when stderr is not a terminal and key-value lines when it is.
    ``clock`` adds ``sim_time`` to every event (a simulation's virtual clock). A call with other
    arguments replaces the configuration: a process holds one logging setup, not a stack of them.
    """
    global _active  # noqa: PLW0603 — structlog's configuration is itself process-global
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    use_json = (not _stderr_is_terminal()) if json is None else json
    key = (use_json, level.lower(), id(clock) if clock is not None else None)
    in_force = structlog.get_config()["processors"]
    if _active is not None and _active[0] == key and in_force is _active[1]:
        return
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if clock is not None:
        processors.append(sim_time_processor(clock))
    processors.append(structlog.processors.StackInfoRenderer())
    if use_json:
        # Tracebacks as data, without local variables: they could carry card or wallet details.
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors += [
            structlog.processors.ExceptionRenderer(tracebacks),
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_stderr_is_terminal()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            _stdlib_logging.getLevelNamesMapping()[level.upper()]
        ),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=cast(Any, _CurrentStderr())),
        # Not cached: a cached logger would ignore a later configure() or a test's capture_logs().
        cache_logger_on_first_use=False,
    )
    _active = (key, processors)


def get_logger(name: str, **initial_values: Any) -> FilteringBoundLogger:
    """A lazy logger whose events carry ``logger_name=name`` plus any initial values.

    (``logger`` itself is a parameter name of :func:`structlog.get_logger`, hence ``logger_name``.)
    Lazy means it follows the configuration in force when it logs, not when it was created.
    """
    values: MutableMapping[str, Any] = {"logger_name": name, **initial_values}
    return cast(FilteringBoundLogger, structlog.get_logger(**values))
