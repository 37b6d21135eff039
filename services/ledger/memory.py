"""In-memory ledger repository: what simulations use, and the reference for the SQL one.

By default it keeps every transfer it commits (its journal), so every id stays idempotent forever
and :meth:`InMemoryLedger.journal` returns the whole history. A long simulation opts in to a
bounded journal instead (:meth:`InMemoryLedger.stream_journal`, :mod:`services.ledger.stream`):
committed transfers leave in batches to a sink and are dropped once their owner says nothing can
refer to them any more; balances and pending holds always stay.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

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
from services.ledger.stream import JournalSink, JournalStream, RetentionKey
from services.money import AssetRegistry

__all__ = ["InMemoryLedger"]

_HEAP_SLACK = 4_096  # a streaming ledger rebuilds its expiry heap past twice its live size plus this


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
        self._stream: JournalStream | None = None  # set by stream_journal(): a bounded journal
        self._heap_compact_at = _HEAP_SLACK

    @classmethod
    def restored(cls, accounts: Iterable[Account], journal: Iterable[Transfer], pending: dict[str, PendingState],
                 *, assets: AssetRegistry | None = None, clock: Clock | None = None, name: str = "") -> InMemoryLedger:
        """Books as another ledger holds them (its accounts, its journal in commit order, the state
        of every pending transfer): what a snapshot of a party's state restores. The holds still
        pending expire as they would have in the ledger they were read from."""
        ledger = cls(assets, clock, name)
        ledger._accounts = {a.id: a for a in accounts}
        ledger._transfers = {t.id: t for t in journal}
        ledger._pending = dict(pending)
        heap = [(t.timestamp + t.timeout_s, pid) for pid, state in ledger._pending.items()
                if state is PendingState.PENDING and (t := ledger._transfers[pid]).timeout_s]
        heapq.heapify(heap)
        ledger._expiry_heap = heap
        return ledger

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
        stream = self._stream
        if staging.accounts:
            if stream is not None:
                stream.note_changes(staging.accounts)
            self._accounts.update(staging.accounts)
        if staging.new_accounts:
            self._accounts.update(staging.new_accounts)
        if staging.transfers:
            self._transfers.update(staging.transfers)
            if stream is not None:
                stream.outbox.extend(staging.transfers.values())
        if not staging.pending:
            return
        for pid, state in staging.pending.items():
            self._pending[pid] = state
            if state is PendingState.PENDING:
                p = staging.transfers[pid]
                if p.timeout_s:
                    heapq.heappush(self._expiry_heap, (p.timestamp + p.timeout_s, pid))

    # -- a bounded journal (opt-in) -----------------------------------------------------------
    def stream_journal(self, sink: JournalSink, retention_key: RetentionKey) -> None:
        """From now on, hand the journal to ``sink`` in batches (:meth:`flush_journal`) and keep
        only what may still be referred to (:mod:`services.ledger.stream`); what was committed
        before is the first batch. Irreversible. Once a transfer is dropped, :meth:`transfer`
        returns ``None`` for it and a new transfer with its id is booked as new: ``retention_key``
        must keep every id its owner may still replay (``None``: the transfer may go once streamed).
        """
        if self._stream is not None:
            raise RuntimeError(f"ledger {self.name!r} already streams its journal")
        self._stream = JournalStream(self._transfers, self._pending, self._accounts, sink, retention_key)

    def flush_journal(self, released: Iterable[str] = ()) -> int:
        """Check and stream the transfers committed since the last call, then drop what is no longer
        retained (``released``: retention keys no longer live). Returns how many were streamed.
        Call it between commands, never inside one: a command may read back what it just wrote."""
        stream = self._stream
        if stream is None:
            raise RuntimeError(f"ledger {self.name!r} does not stream its journal")
        streamed = stream.flush(released)
        heap = self._expiry_heap
        if len(heap) > self._heap_compact_at:
            # Resolved and dropped holds leave their entries behind; rebuilding the heap from the
            # holds still pending keeps the order in which they expire.
            pending = self._pending
            heap[:] = [entry for entry in heap if pending.get(entry[1]) is PendingState.PENDING]
            heapq.heapify(heap)
            self._heap_compact_at = 2 * len(heap) + _HEAP_SLACK
        return streamed

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    @property
    def resident(self) -> int:
        """Transfers held in memory: the whole journal, unless it is streamed."""
        return len(self._transfers)

    # -- queries -----------------------------------------------------------------------------
    def accounts(self) -> Iterator[Account]:
        return iter(list(self._accounts.values()))

    def journal(self) -> Iterator[Transfer]:
        """Every transfer in commit order. A streamed journal is not kept: read it from the sink."""
        if self._stream is not None:
            raise RuntimeError(f"ledger {self.name!r} streams its journal; it is not kept in memory")
        return iter(list(self._transfers.values()))

    def pending_states(self) -> dict[str, PendingState]:
        """The state of every pending transfer (pending, posted, voided, expired), by id."""
        return dict(self._pending)

    def pending_transfers(self) -> Iterator[Transfer]:
        for pid, state in self._pending.items():
            if state is PendingState.PENDING:
                yield self._transfers[pid]

    def check_invariants(self) -> list[Violation]:
        """Every invariant over the whole journal (a streamed one is checked batch by batch, and
        what is not streamed yet is streamed first)."""
        if self._stream is not None:
            self.flush_journal()
            return self._stream.check()
        return check_balances(self._accounts.values(), self._transfers.values(), self._pending)

    def __len__(self) -> int:
        """The journal's length: every transfer ever committed."""
        stream = self._stream
        if stream is not None:
            return stream.exported + len(stream.outbox)
        return len(self._transfers)
