"""SqlLedger under contention: no lost update, no overdraft, one effect per id (SQLite, PG).

Many threads hammer one flagged account at once. Without serialized writers (``BEGIN IMMEDIATE``
on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL) two batches would read the same balance and both
succeed, or one update would overwrite the other; the counts below would then not add up.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from services.clock import FixedClock
from services.ledger import Account, AccountFlags, Transfer, TransferFlags, TransferResult

R = TransferResult
DNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
THREADS = 32
DEBITS_PER_THREAD = 50


def run_threads(n: int, body: Callable[[int], list[TransferResult]]) -> list[TransferResult]:
    """Run ``body(i)`` on ``n`` threads released at the same moment; collect every result."""
    barrier = threading.Barrier(n)
    results: list[list[TransferResult]] = [[] for _ in range(n)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = body(i)
        except BaseException as exc:  # surfaced below: a thread's fault must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for rs in results for r in rs]


def funded(make: Any, balance_minor: int) -> Any:
    ledger = make(FixedClock(1_000.0))
    assert ledger.create_accounts([
        Account("house", "KZT"),
        Account("wallet", "KZT", flags=DNEC),
        Account("merchant", "KZT"),
        Account("merchant2", "KZT"),
        Account("wallet2", "KZT"),
    ]) == [0] * 5
    assert ledger.create_transfers([Transfer("fund", "house", "wallet", balance_minor, "KZT")]) == [
        R.OK
    ]
    return ledger


def test_concurrent_debits_never_overdraw_or_lose_an_update(sql_ledger_factory: Any) -> None:
    amount_minor = 7
    balance_minor = 5_000  # covers 714 of the 1,600 debits
    ledger = funded(sql_ledger_factory, balance_minor)

    def debits(thread: int) -> list[TransferResult]:
        return [
            ledger.create_transfers(
                [Transfer(f"d-{thread}-{i}", "wallet", "merchant", amount_minor, "KZT")]
            )[0]
            for i in range(DEBITS_PER_THREAD)
        ]

    counts = Counter(run_threads(THREADS, debits))
    covered = balance_minor // amount_minor
    assert counts == {R.OK: covered, R.EXCEEDS_CREDITS: THREADS * DEBITS_PER_THREAD - covered}
    wallet = ledger.account("wallet")
    assert wallet.debits_posted == covered * amount_minor  # 0 lost updates
    assert wallet.available_credit_balance == balance_minor % amount_minor >= 0  # 0 negative
    assert ledger.account("merchant").credits_posted == covered * amount_minor
    assert len(ledger) == 1 + covered
    assert ledger.check_invariants() == []


def test_same_id_submitted_concurrently_has_one_effect(sql_ledger_factory: Any) -> None:
    ledger = funded(sql_ledger_factory, 1_000)
    same = Transfer("once", "wallet", "merchant", 5, "KZT")
    counts = Counter(run_threads(50, lambda _i: ledger.create_transfers([same])))
    assert counts == {R.OK: 1, R.EXISTS: 49}
    assert ledger.account("wallet").debits_posted == 5
    assert [t.id for t in ledger.journal()] == ["fund", "once"]


def test_same_id_with_disjoint_accounts_races_to_one_effect(sql_ledger_factory: Any) -> None:
    """Two versions of one id that lock no common row: the loser hits the unique index, retries,
    and then sees the winner (on PostgreSQL this is the unique-violation retry path)."""
    ledger = funded(sql_ledger_factory, 1_000)
    a = Transfer("race", "wallet", "merchant", 5, "KZT")
    b = Transfer("race", "wallet2", "merchant2", 5, "KZT")
    results = run_threads(50, lambda i: ledger.create_transfers([a if i % 2 else b]))
    counts = Counter(results)
    assert counts[R.OK] == 1
    winner = ledger.transfer("race")
    assert counts == {R.OK: 1, R.EXISTS: 24, R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID: 25}
    moved = [ledger.account(i).credits_posted for i in ("merchant", "merchant2")]
    assert sorted(moved) == [0, 5]
    assert winner.credit_account_id == ("merchant" if moved[0] else "merchant2")


def test_concurrent_holds_and_posts_resolve_each_hold_once(sql_ledger_factory: Any) -> None:
    ledger = funded(sql_ledger_factory, 10_000)
    holds = [Transfer(f"h{i}", "wallet", "merchant", 100, "KZT", flags=TransferFlags.PENDING)
             for i in range(20)]
    assert ledger.create_transfers(holds) == [R.OK] * 20

    def resolve(thread: int) -> list[TransferResult]:
        # Every thread tries to resolve every hold (odd threads post, even ones void).
        flags = TransferFlags.POST_PENDING if thread % 2 else TransferFlags.VOID_PENDING
        return ledger.create_transfers(
            [Transfer(f"r-{thread}-{i}", "", "", 0, "", flags=flags, pending_id=f"h{i}")
             for i in range(20)]
        )

    counts = Counter(run_threads(8, resolve))
    assert counts[R.OK] == 20  # exactly one resolution per hold
    assert counts[R.OK] + counts[R.PENDING_TRANSFER_ALREADY_POSTED] + counts[
        R.PENDING_TRANSFER_ALREADY_VOIDED] == 8 * 20
    assert list(ledger.pending_transfers()) == []
    assert ledger.account("wallet").debits_pending == 0


def test_a_second_handle_sees_committed_state(sql_ledger_factory: Any) -> None:
    ledger = funded(sql_ledger_factory, 1_000)
    other = sql_ledger_factory.reopen(ledger)
    assert other.create_transfers([Transfer("t1", "wallet", "merchant", 600, "KZT")]) == [R.OK]
    assert ledger.create_transfers([Transfer("t2", "wallet", "merchant", 600, "KZT")]) == [
        R.EXCEEDS_CREDITS
    ]
    assert ledger.account("wallet").debits_posted == 600
    ledger.close()
    again = sql_ledger_factory.reopen(other)
    assert [t.id for t in again.journal()] == ["fund", "t1"]
    assert again.check_invariants() == []

