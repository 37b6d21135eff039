"""The interface every ledger repository offers (in-memory, SQLAlchemy)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from services.ledger.model import (
    Account,
    AccountResult,
    PendingState,
    Transfer,
    TransferResult,
    Violation,
)

__all__ = ["LedgerRepository"]


class LedgerRepository(Protocol):
    """One party's books. Each ``create_transfers`` call is one atomic unit."""

    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]: ...

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[TransferResult]: ...

    def account(self, account_id: str) -> Account | None: ...

    def transfer(self, transfer_id: str) -> Transfer | None: ...

    def pending_state(self, transfer_id: str) -> PendingState | None: ...

    def expire_pending(self) -> list[Transfer]: ...

    def accounts(self) -> Iterator[Account]: ...

    def journal(self) -> Iterator[Transfer]: ...

    def check_invariants(self) -> list[Violation]: ...
