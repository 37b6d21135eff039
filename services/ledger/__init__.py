"""A double-entry ledger in TigerBeetle's model: accounts, transfers, two-phase holds, linked batches.

Results are values (:class:`TransferResult`), not exceptions. Two repositories share one engine:
:class:`InMemoryLedger` (simulations) and ``services.ledger.sql.SqlLedger`` (live; SQLite or
PostgreSQL). The SQL one is imported from its own module so that the domain never pulls in
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.ledger.memory import InMemoryLedger
from services.ledger.model import (
    Account,
    AccountFlags,
    AccountResult,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    Violation,
)
from services.ledger.repository import LedgerRepository

__all__ = [
    "Account",
    "AccountFlags",
    "AccountResult",
    "InMemoryLedger",
    "LedgerRepository",
    "PendingState",
    "Transfer",
    "TransferFlags",
    "TransferResult",
    "Violation",
    "linked",
]


def linked(transfers: Sequence[Transfer]) -> list[Transfer]:
    """Mark a batch as one chain: every transfer but the last gets ``LINKED``."""
    out = [replace(t, flags=TransferFlags(t.flags) | TransferFlags.LINKED) for t in transfers[:-1]]
    if transfers:
        last = transfers[-1]
        out.append(replace(last, flags=TransferFlags(last.flags) & ~TransferFlags.LINKED))
    return out
