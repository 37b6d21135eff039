"""HTTP adapters of the party services (FastAPI): the shared app, error model and idempotency.

With the SQL repositories, the only package that imports FastAPI and SQLAlchemy. See docs/api.md.
"""

from __future__ import annotations

from services.api.common import close_app, create_base_app, on_shutdown
from services.api.idempotency import IdempotencyKey, IdempotencyStore, run_idempotent
from services.api.ledger_service import LedgerService, create_ledger_app
from services.api.metrics import ApiMetrics
from services.api.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemError
from services.api.routing import StrictJsonRoute
from services.api.settings import ApiSettings

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ApiMetrics",
    "ApiSettings",
    "FieldError",
    "IdempotencyKey",
    "IdempotencyStore",
    "LedgerService",
    "Problem",
    "ProblemError",
    "StrictJsonRoute",
    "close_app",
    "create_base_app",
    "create_ledger_app",
    "on_shutdown",
    "run_idempotent",
]
