"""Books restored from a snapshot without their journal (services/api/parties/resumed_ledger.py).

The same commands after the snapshot give the same results on the restored books as on the
database's, looking up what was booked before the snapshot in the database (a posted hold stays
posted, a booked id stays booked) and never what was booked after it; and a difference between
the replay and the books (an account, a transfer or a hold's state after the snapshot) is caught
and named. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from services.api.parties.resumed_ledger import ReplayMismatchError, ResumedLedger, compare_resumed
from services.api.parties.snapshots import LedgerImage
from services.clock import FixedClock
from services.ledger import Account, AccountFlags, PendingState, Transfer, TransferFlags
from services.ledger.sql import SqlLedger

PEND, POST = TransferFlags.PENDING, TransferFlags.POST_PENDING


def _before(ledger: Any) -> None:
    """The day up to the snapshot: a funded wallet, an open hold, a posted hold, a transfer."""
    ledger.create_accounts([Account("house", "KZT"), Account("shop", "KZT"),
                            Account("wallet", "KZT", flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)])
    ledger.create_transfers([Transfer("fund", "house", "wallet", 100_000, "KZT")])
    ledger.create_transfers([Transfer("A", "wallet", "shop", 1_000, "KZT", flags=PEND, timeout_s=3_600)])
    ledger.create_transfers([Transfer("B", "wallet", "shop", 500, "KZT", flags=PEND, timeout_s=3_600)])
    ledger.create_transfers([Transfer("B-post", "", "", 0, "", flags=POST, pending_id="B")])
    ledger.create_transfers([Transfer("C", "wallet", "shop", 200, "KZT")])


def _after(ledger: Any) -> list[Any]:
    """The commands after it, as a replay repeats them: what each answered."""
    return [
        ledger.create_transfers([Transfer("A-post", "", "", 600, "", flags=POST, pending_id="A")]),
        ledger.create_transfers([Transfer("B-post-2", "", "", 0, "", flags=POST, pending_id="B")]),  # posted before
        ledger.create_transfers([Transfer("C", "wallet", "shop", 200, "KZT")]),  # booked before: exists
        ledger.create_transfers([Transfer("D", "wallet", "shop", 300, "KZT")]),
        ledger.create_accounts([Account("late", "KZT")]),
        ledger.create_transfers([Transfer("E", "house", "late", 50, "KZT")]),
        ledger.create_transfers([Transfer("F", "wallet", "shop", 70, "KZT", flags=PEND, timeout_s=3_600)]),
        ledger.transfer("B"), ledger.pending_state("B"), ledger.transfer("D"), ledger.pending_state("F"),
    ]


def _resumed(sql: SqlLedger) -> tuple[ResumedLedger, int, list[Any]]:
    """Snapshot after :func:`_before`, run :func:`_after` on the database, then replay it on the
    books restored from the snapshot; returns those books, the snapshot's journal position, and
    what the database answered."""
    _before(sql)
    image = LedgerImage.of(sql)
    assert [t.id for t in image.held] == ["A"] and image.transfers == 5
    answers = _after(sql)
    after, _ = sql.journal_after(image.last_seq)
    mem = image.restore(sql, (t.id for t in after), sql.assets, FixedClock(1_000.0))
    assert _after(mem) == answers
    return mem, image.last_seq, answers


def test_a_replay_on_books_without_their_journal_answers_as_the_database_did(sql_ledger_factory: Any) -> None:
    sql = sql_ledger_factory(FixedClock(1_000.0))
    mem, last_seq, answers = _resumed(sql)
    after, _ = sql.journal_after(last_seq)
    assert answers[7] is not None and answers[8] is PendingState.POSTED  # read from the database
    assert [t.id for t in after] == [t.id for t in mem.booked()] == ["A-post", "D", "E", "F"]
    assert compare_resumed(mem, sql, after) == (4, 4)  # wallet, shop, house, late
    assert len(mem) == len(sql) == 9
    assert {a.id: a for a in mem.accounts()} == {a.id: a for a in sql.accounts()}
    with pytest.raises(RuntimeError, match="without its journal"):
        mem.journal()


@contextmanager
def _tampered(sql: SqlLedger, statement: str, undo: str) -> Iterator[None]:
    """The database changed behind the ledger's back, and put back afterwards (the test's end
    checks the books' invariants)."""
    engine = create_engine(sql.url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement.format(p=sql.table_prefix)))
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(undo.format(p=sql.table_prefix)))
        engine.dispose()


@pytest.mark.parametrize(("what", "statement", "undo", "named"), [
    ("an account the replay touched", "UPDATE {p}accounts SET credits_posted = '1' WHERE id = 'late'",
     "UPDATE {p}accounts SET credits_posted = '50' WHERE id = 'late'", "account late"),
    ("a transfer after the snapshot", "UPDATE {p}transfers SET user_data = 'x' WHERE id = 'D'",
     "UPDATE {p}transfers SET user_data = '' WHERE id = 'D'", "transfer D"),
    ("a hold's state", "UPDATE {p}transfers SET pending_state = 'voided' WHERE id = 'F'",
     "UPDATE {p}transfers SET pending_state = 'pending' WHERE id = 'F'", "pending state of F"),
])
def test_a_difference_after_the_snapshot_is_caught_and_named(sql_ledger_factory: Any, what: str, statement: str,
                                                             undo: str, named: str) -> None:
    sql = sql_ledger_factory(FixedClock(1_000.0))
    mem, last_seq, _ = _resumed(sql)
    with _tampered(sql, statement, undo):
        after, _ = sql.journal_after(last_seq)  # as the database holds them now
        with pytest.raises(ReplayMismatchError, match=named):
            compare_resumed(mem, sql, after)
    assert compare_resumed(mem, sql, sql.journal_after(last_seq)[0]) == (4, 4)
