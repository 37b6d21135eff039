"""In-memory ledger repository: what simulations use, and the reference for the SQL one."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

from services.clock import Clock, FixedClock
from services.ledger.engine import (
    Staging,
    apply_accounts,
    apply_expiry,
    apply_transfers,
    check_balances,
)
from services.ledger.model import (
    Account,
    AccountResult,
    PendingState,
    Transfer,
    TransferResult,
    Violation,
)
from services.money import AssetRegistry

__all__ = ["InMemoryLedger"]


class InMemoryLedger:
    """A party's books in dicts. Not thread-safe: one simulation drives one ledger."""

    def __init__(self, assets: AssetRegistry | None = None, clock: Clock | None = None, name: str = "") -> None:
        self.name = name
        self.assets = assets or AssetRegistry()
        self.clock: Clock = clock or FixedClock()
        self._accounts: dict[str, Account] = {}
        self._transfers: dict[str, Transfer] = {}  # insertion order is commit order: the journal
        self._pending: dict[str, PendingState] = {}
        self._expiry_heap: list[tuple[float, str]] = []

    # -- LedgerView --------------------------------------------------------------------------
    def account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self._transfers.get(transfer_id)

    def pending_state(self, transfer_id: str) -> PendingState | None:
        return self._pending.get(transfer_id)

    # -- commands ----------------------------------------------------------------------------
    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        results, staging = apply_accounts(self, accounts, self.clock.now(), self.assets.__contains__)
        self._accounts.update(staging.new_accounts)
        return results

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        results, staging = apply_transfers(self, transfers, self.clock.now(), self.assets.__contains__)
        self._commit(staging)
        return results

    def expire_pending(self) -> list[Transfer]:
        """Release every hold whose timeout has passed; returns the expiry transfers written."""
        now = self.clock.now()
        written: list[Transfer] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            _, pid = heapq.heappop(heap)
            if self._pending.get(pid) is not PendingState.PENDING:
                continue
            staging = Staging(self)
            written.append(apply_expiry(staging, self._transfers[pid], now))
            self._commit(staging)
        return written

    def _commit(self, staging: Staging) -> None:
        if staging.accounts:
            self._accounts.update(staging.accounts)
        if staging.new_accounts:
            self._accounts.update(staging.new_accounts)
        if staging.transfers:
            self._transfers.update(staging.transfers)
        if not staging.pending:
            return
        for pid, state in staging.pending.items():
            self._pending[pid] = state
            if state is PendingState.PENDING:
                p = staging.transfers[pid]
                if p.timeout_s:
                    heapq.heappush(self._expiry_heap, (p.timestamp + p.timeout_s, pid))

    # -- queries -----------------------------------------------------------------------------
    def accounts(self) -> Iterator[Account]:
        return iter(list(self._accounts.values()))

    def journal(self) -> Iterator[Transfer]:
        return iter(list(self._transfers.values()))

    def pending_transfers(self) -> Iterator[Transfer]:
        for pid, state in self._pending.items():
            if state is PendingState.PENDING:
                yield self._transfers[pid]

    def check_invariants(self) -> list[Violation]:
        return check_balances(self._accounts.values(), self._transfers.values(), self._pending)

    def __len__(self) -> int:
        return len(self._transfers)
