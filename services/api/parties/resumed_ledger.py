"""Books restored from a snapshot without their journal, and the check of a replay on them.

A snapshot (:mod:`.snapshots`) holds a ledger's accounts and the holds still pending when it was
taken, not its journal: the journal is in the database already, and a transfer booked there never
changes but for the state of a hold, which is final once the hold is posted, voided or expired.
So :class:`ResumedLedger` answers a replay's lookup of a transfer booked *before* the snapshot
from the database (only rows at or before the snapshot's journal position count, and the ids
booked after it are known not to exist yet), and keeps in memory only what the replay books.

:func:`compare_resumed` then checks the replay against the books as a full replay would, but on
what can differ: the transfers booked after the snapshot (the database's against the replay's),
the state of every hold the replay knows and the set of holds pending, every account the replay
or those transfers changed, and the number of accounts. An account nothing touched since the
snapshot is as the snapshot read it, in the read transaction that fixed its position.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from services.clock import Clock
from services.errors import CcsimError
from services.ledger import Account, AccountResult, InMemoryLedger, PendingState, Transfer, Violation
from services.ledger.engine import Staging
from services.ledger.sql import SqlLedger
from services.money import AssetRegistry

__all__ = ["ReplayMismatchError", "ResumedLedger", "compare_resumed", "same"]

_Found = tuple[Transfer, PendingState | None]


class ReplayMismatchError(CcsimError, RuntimeError):
    """The replayed books differ from the database's; the message names the first difference."""


class ResumedLedger(InMemoryLedger):
    """An in-memory ledger that starts at a snapshot: ``accounts`` and the holds ``held`` pending
    then, with ``transfers`` transfers up to journal position ``through_seq`` of ``sql``, which it
    reads when the replay asks for one (``after``: the ids ``sql`` booked after that position)."""

    def __init__(self, name: str, accounts: Iterable[Account], held: Sequence[Transfer], *, transfers: int,
                 through_seq: int, sql: SqlLedger, after: Iterable[str], assets: AssetRegistry, clock: Clock) -> None:
        super().__init__(assets, clock, name)
        self._accounts = {a.id: a for a in accounts}
        self._transfers = {t.id: t for t in held}
        self._pending = dict.fromkeys(self._transfers, PendingState.PENDING)
        heap = [(t.timestamp + t.timeout_s, t.id) for t in held if t.timeout_s]
        heapq.heapify(heap)
        self._expiry_heap = heap
        self._held_at_start = len(held)
        self._before_count = transfers
        self._through_seq = through_seq
        self._sql = sql
        self._after = set(after)
        self._earlier: dict[str, _Found | None] = {}
        self.touched: set[str] = set()  # accounts the replay changed or created

    # -- what the journal before the snapshot answers -----------------------------------------
    def _before(self, transfer_id: str) -> _Found | None:
        if transfer_id in self._earlier:
            return self._earlier[transfer_id]
        found = None
        if transfer_id not in self._after:  # booked after the snapshot: the replay books it again
            found = self._sql.transfers_by_id([transfer_id], self._through_seq).get(transfer_id)
        self._earlier[transfer_id] = found
        return found

    def transfer(self, transfer_id: str) -> Transfer | None:
        t = self._transfers.get(transfer_id)
        if t is not None:
            return t
        found = self._before(transfer_id)
        return None if found is None else found[0]

    def pending_state(self, transfer_id: str) -> PendingState | None:
        state = self._pending.get(transfer_id)
        if state is not None or transfer_id in self._transfers:
            return state
        # Not pending at the snapshot (it would be in memory): final then, and so now.
        found = self._before(transfer_id)
        return None if found is None else found[1]

    # -- what the replay books ----------------------------------------------------------------
    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        results = super().create_accounts(accounts)
        self.touched.update(a.id for a, r in zip(accounts, results, strict=True) if r is AccountResult.OK)
        return results

    def _commit(self, staging: Staging) -> None:
        self.touched.update(staging.accounts)
        self.touched.update(staging.new_accounts)
        super()._commit(staging)

    def booked(self) -> list[Transfer]:
        """The transfers the replay booked, in commit order."""
        return list(self._transfers.values())[self._held_at_start:]

    def journal(self) -> Any:
        raise RuntimeError(f"ledger {self.name!r} was restored from a snapshot without its journal; "
                           "read the journal from the database")

    def check_invariants(self) -> list[Violation]:
        raise RuntimeError(f"ledger {self.name!r} was restored from a snapshot without its journal; "
                           "check the database's books")

    def __len__(self) -> int:
        return self._before_count + len(self._transfers) - self._held_at_start


def compare_resumed(mem: ResumedLedger, sql: SqlLedger, after: Sequence[Transfer]) -> tuple[int, int]:
    """The replay on ``mem`` booked what ``sql`` holds (``after``: its transfers after the snapshot),
    or :class:`ReplayMismatchError` names the first difference. Returns how many transfers and
    accounts were compared."""
    name = sql.name
    booked = mem.booked()
    if len(booked) != len(after):
        raise ReplayMismatchError(f"{name}: the replay booked {len(booked)} transfers after the snapshot, "
                                  f"the database holds {len(after)}")
    same(name, "transfer", {t.id: t for t in after}, {t.id: t for t in booked})
    states = mem.pending_states()  # the holds pending at the snapshot and those booked since
    in_db = sql.transfers_by_id(states)
    same(name, "pending state of", {i: s for i, (_, s) in in_db.items()}, dict(states))
    pending = PendingState.PENDING
    same(name, "pending hold", {t.id: pending for t in sql.pending_transfers()},
         {i: pending for i, s in states.items() if s is pending})
    ids = mem.touched | {i for t in after for i in (t.debit_account_id, t.credit_account_id)}
    accounts_n, _, _ = sql.extent()
    mine = {a.id: a for a in mem.accounts()}
    if accounts_n != len(mine):
        raise ReplayMismatchError(f"{name}: {len(mine)} accounts after replay, {accounts_n} in the database")
    same(name, "account", dict(sql.accounts_by_id(ids)), {i: mine.get(i) for i in ids})
    return len(after), len(ids)


def same(ledger: str, kind: str, want: dict[str, object], got: dict[str, object]) -> int:
    """``want`` (the database's) equals ``got`` (the replay's), or :class:`ReplayMismatchError`."""
    for key in sorted(want.keys() | got.keys()):
        if want.get(key) != got.get(key):
            raise ReplayMismatchError(f"{ledger}: {kind} {key} differs after replay: in the database "
                                      f"{want.get(key)!r}, replayed {got.get(key)!r}")
    return len(want)
