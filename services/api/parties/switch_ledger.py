"""A ledger that forwards to another: how a party's domain objects move from replayed books to its database."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

from services.ledger import (
    Account,
    AccountResult,
    InMemoryLedger,
    PendingState,
    Transfer,
    TransferResult,
    Violation,
)
from services.ledger.sql import SqlLedger, TransactionHook

__all__ = ["SwitchLedger"]


class SwitchLedger:
    """A ledger that forwards to another: an in-memory ledger while the state is replayed, the
    party's database ledger once it runs. Domain objects hold the switch, never the target."""

    def __init__(self, target: InMemoryLedger | SqlLedger) -> None:
        self.target: InMemoryLedger | SqlLedger = target

    @property
    def name(self) -> str:
        return self.target.name

    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        return self.target.create_accounts(accounts)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        return self.target.create_transfers(transfers)

    def account(self, account_id: str) -> Account | None:
        return self.target.account(account_id)

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self.target.transfer(transfer_id)

    def pending_state(self, transfer_id: str) -> PendingState | None:
        return self.target.pending_state(transfer_id)

    def expire_pending(self) -> list[Transfer]:
        return self.target.expire_pending()

    def accounts(self) -> Iterator[Account]:
        return self.target.accounts()

    def journal(self) -> Iterator[Transfer]:
        return self.target.journal()

    def pending_transfers(self) -> Iterator[Transfer]:
        return self.target.pending_transfers()

    def check_invariants(self) -> list[Violation]:
        return self.target.check_invariants()

    def __len__(self) -> int:
        return len(self.target)

    def also_in_transaction(self, hook: TransactionHook) -> AbstractContextManager[None]:
        """The database ledger's hook (an outbox row in the booking's transaction); nothing during
        a replay, whose bookings are already in the database with their rows."""
        if isinstance(self.target, SqlLedger):
            return self.target.also_in_transaction(hook)
        return nullcontext()
