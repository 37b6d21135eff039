"""Driving a flow: each flow is an ``async`` function over its ports, written once.

The live services await it on their event loop, where a port may wait on the network. The
in-process chain drives it with :func:`run_now`: its ports answer at once (they call the party
objects in this process), so the coroutine finishes in one step, with no event loop and no
scheduling — the same code, run synchronously.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from services.errors import FlowError

__all__ = ["run_now"]

T = TypeVar("T")


def run_now(flow: Coroutine[Any, Any, T]) -> T:
    """Run ``flow`` to its end now; its ports must never suspend (in-process ports do not)."""
    try:
        flow.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    flow.close()
    raise FlowError("an in-process flow waited on something: its ports must answer at once")
