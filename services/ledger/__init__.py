"""A double-entry ledger in TigerBeetle's model: accounts, transfers, two-phase holds, linked batches.

Results are values (:class:`TransferResult`), not exceptions. Two repositories share one engine:
:class:`InMemoryLedger` (simulations) and ``services.ledger.sql.SqlLedger`` (live; SQLite or
PostgreSQL). The SQL one is imported from its own module so that the domain never pulls in
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence

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


_LINKED = int(TransferFlags.LINKED)
_FLAGS: dict[int, TransferFlags] = {}  # int -> member: IntFlag arithmetic is slow on the hot path


def _flags(value: int) -> TransferFlags:
    member = _FLAGS.get(value)
    if member is None:
        member = _FLAGS[value] = TransferFlags(value)
    return member


def _with_flags(t: Transfer, value: int) -> Transfer:
    """``t`` with its flags set to ``value`` (``dataclasses.replace`` in effect, positionally)."""
    return Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
                    _flags(value), t.pending_id, t.timeout_s, t.user_data, t.timestamp)


def linked(transfers: Sequence[Transfer]) -> list[Transfer]:
    """Mark a batch as one chain: every transfer but the last gets ``LINKED``."""
    last = len(transfers) - 1
    return [_with_flags(t, int(t.flags) | _LINKED if i < last else int(t.flags) & ~_LINKED)
            for i, t in enumerate(transfers)]
