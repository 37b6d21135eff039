"""The history of a bank-check run and the checker that judges it (Jepsen's model, much reduced).

Each worker records every operation it tried: a transfer (its id, accounts, amount) or a snapshot
read (the balances it saw), with its start and end times and its outcome:

- ``ok``: the service acknowledged it (a transfer answered 2xx, a read answered 200);
- ``fail``: it certainly did not happen (a transfer refused with 422 ``exceeds-credits``, a read
  that got no answer: reads change nothing, so a failed read is simply not checked);
- ``unknown``: no answer before the run gave up on it; the transfer may or may not have happened.

:func:`check_history` then compares the history with the journal and balances read from the
database after the run. Every check is one a lost, repeated, torn or stale write would break.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CheckReport", "History", "JournalEntry", "Op", "Outcome", "check_history"]

Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True, slots=True)
class Op:
    worker: int
    kind: Literal["transfer", "read"]
    start_s: float
    end_s: float
    outcome: Outcome
    attempts: int = 1
    status: int | None = None  # the last HTTP status heard, None if there was none
    transfer_id: str = ""
    debit: str = ""
    credit: str = ""
    amount_minor: int = 0
    balances_minor: tuple[int, ...] = ()  # a read: one balance per account, in account order
    replayed: bool = False  # answered from the idempotency store (Idempotent-Replayed: true)
    detail: str = ""


class History:
    """Operations appended by several worker threads. ``acknowledged`` counts the transfers the
    service acknowledged; :meth:`wait_acknowledged` lets a fault schedule wait for them (events,
    not wall time)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.ops: list[Op] = []
        self.acknowledged = 0

    def add(self, op: Op) -> None:
        with self._changed:
            self.ops.append(op)
            if op.kind == "transfer" and op.outcome == "ok":
                self.acknowledged += 1
            self._changed.notify_all()

    def wait_acknowledged(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` transfers in all have been acknowledged; False after ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.acknowledged >= count, timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    transfer_id: str
    debit: str
    credit: str
    amount_minor: int


@dataclass
class CheckReport:
    operations: int = 0
    transfers_ok: int = 0
    transfers_rejected: int = 0
    transfers_unknown: int = 0
    transfers_retried: int = 0  # acknowledged after more than one attempt (same key)
    transfers_replayed: int = 0  # acknowledged from the idempotency store
    transfers_found_done: int = 0  # 200 without a replay: the ledger already had it (kill between commits)
    reads_ok: int = 0
    reads_failed: int = 0
    reads_checked: int = 0
    wrong_totals: int = 0
    negatives: int = 0
    stale_or_impossible_reads: int = 0  # a balance outside what real-time order allows
    journal_transfers: int = 0
    missing_acknowledged: int = 0
    rejected_but_applied: int = 0
    unknown_applied: int = 0
    duplicate_effects: int = 0
    foreign_transfers: int = 0
    unexpected_answers: int = 0
    final_balance_mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("… (more problems not listed)")


def _prefix_sums(moves: list[tuple[float, str, str, int]], index: dict[str, int]) -> tuple[
        list[float], list[list[int]], list[list[int]]]:
    """Times sorted, and per account the running sums of increases and of decreases."""
    moves = sorted(moves, key=lambda m: m[0])
    times = [m[0] for m in moves]
    ups = [[0] * (len(moves) + 1) for _ in index]
    downs = [[0] * (len(moves) + 1) for _ in index]
    for i, (_, debit, credit, amount) in enumerate(moves):
        for a in range(len(index)):
            ups[a][i + 1] = ups[a][i]
            downs[a][i + 1] = downs[a][i]
        ups[index[credit]][i + 1] += amount
        downs[index[debit]][i + 1] += amount
    return times, ups, downs


def check_history(ops: list[Op], accounts: list[str], funding_minor: int, journal: list[JournalEntry],
                  final_minor: dict[str, int]) -> CheckReport:
    """Judge a run: ``journal`` holds the transfers between ``accounts`` found in the database
    after the run (funding excluded), ``final_minor`` their balances then."""
    r = CheckReport(operations=len(ops))
    total = funding_minor * len(accounts)
    transfers = {o.transfer_id: o for o in ops if o.kind == "transfer"}
    counts = Counter(e.transfer_id for e in journal)
    r.journal_transfers = len(journal)
    for tid, n in counts.items():
        if n > 1:
            r.duplicate_effects += n - 1
            r.fail(f"transfer {tid} is in the journal {n} times")
    in_journal = {e.transfer_id: e for e in journal}
    for e in journal:
        o = transfers.get(e.transfer_id)
        if o is None:
            r.foreign_transfers += 1
            r.fail(f"journal entry {e.transfer_id} was never requested")
        elif (o.debit, o.credit, o.amount_minor) != (e.debit, e.credit, e.amount_minor):
            r.foreign_transfers += 1
            r.fail(f"journal entry {e.transfer_id} differs from the request: {e} vs {o}")
    for o in transfers.values():
        if o.outcome == "ok":
            r.transfers_ok += 1
            r.transfers_retried += o.attempts > 1
            r.transfers_replayed += o.replayed
            r.transfers_found_done += o.status == 200 and not o.replayed
            if o.transfer_id not in in_journal:
                r.missing_acknowledged += 1
                r.fail(f"acknowledged transfer {o.transfer_id} is not in the journal")
        elif o.outcome == "fail":
            r.transfers_rejected += 1
            if o.status != 422:
                r.unexpected_answers += 1
                r.fail(f"transfer {o.transfer_id}: unexpected answer {o.status} {o.detail}")
            if o.transfer_id in in_journal:
                r.rejected_but_applied += 1
                r.fail(f"rejected transfer {o.transfer_id} is in the journal")
        else:
            r.transfers_unknown += 1
            r.unknown_applied += o.transfer_id in in_journal
    # Final balances: the funding plus every journal entry, each once; no account below zero.
    expected = dict.fromkeys(accounts, funding_minor)
    for e in in_journal.values():
        expected[e.debit] -= e.amount_minor
        expected[e.credit] += e.amount_minor
    for a in accounts:
        if final_minor.get(a) != expected[a]:
            r.final_balance_mismatches += 1
            r.fail(f"final balance of {a} is {final_minor.get(a)}, the journal says {expected[a]}")
        if final_minor.get(a, 0) < 0:
            r.negatives += 1
            r.fail(f"final balance of {a} is negative: {final_minor[a]}")
    if sum(final_minor.get(a, 0) for a in accounts) != total:
        r.wrong_totals += 1
        r.fail(f"final balances sum to {sum(final_minor.values())}, not {total}")
    _check_reads(ops, accounts, funding_minor, in_journal=in_journal, transfers=transfers, r=r)
    return r


def _check_reads(ops: list[Op], accounts: list[str], funding_minor: int, *, in_journal: dict[str, JournalEntry],
                 transfers: dict[str, Op], r: CheckReport) -> None:
    """Each read sums to the total, has no negative balance, and respects real time: it reflects
    every transfer acknowledged before it started, and none that started after it ended."""
    total = funding_minor * len(accounts)
    index = {a: i for i, a in enumerate(accounts)}
    applied = [transfers[t] for t in in_journal if t in transfers]
    must_t, must_up, must_down = _prefix_sums(
        [(o.end_s, o.debit, o.credit, o.amount_minor) for o in applied if o.outcome == "ok"], index)
    may_t, may_up, may_down = _prefix_sums(
        [(o.start_s, o.debit, o.credit, o.amount_minor) for o in applied], index)
    for o in ops:
        if o.kind != "read":
            continue
        if o.outcome != "ok":
            r.reads_failed += 1
            continue
        r.reads_ok += 1
        r.reads_checked += 1
        if len(o.balances_minor) != len(accounts):
            r.fail(f"read at {o.start_s:.3f}s returned {len(o.balances_minor)} balances")
            continue
        if sum(o.balances_minor) != total:
            r.wrong_totals += 1
            r.fail(f"read at {o.start_s:.3f}s sums to {sum(o.balances_minor)}, not {total}")
        if min(o.balances_minor) < 0:
            r.negatives += 1
            r.fail(f"read at {o.start_s:.3f}s has a negative balance: {o.balances_minor}")
        must = bisect.bisect_left(must_t, o.start_s)  # acknowledged strictly before the read began
        may = bisect.bisect_right(may_t, o.end_s)  # begun no later than the read ended
        for a, seen in enumerate(o.balances_minor):
            # Lowest: everything that must be in, plus every possible debit; highest: plus credits.
            low = funding_minor + must_up[a][must] - must_down[a][must] - (may_down[a][may] - must_down[a][must])
            high = funding_minor + must_up[a][must] - must_down[a][must] + (may_up[a][may] - must_up[a][must])
            if not low <= seen <= high:
                r.stale_or_impossible_reads += 1
                r.fail(f"read at {o.start_s:.3f}-{o.end_s:.3f}s: {accounts[a]} = {seen}, "
                       f"real-time order allows {low}..{high}")
                break
