"""``UnitOfWork``: several ledgers of one party commit together or not at all (SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SQL_BACKENDS, require_postgres
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from services.clock import FixedClock
from services.ledger import Account, AccountFlags, Transfer, TransferResult
from services.ledger.sql import SqlLedger, UnitOfWork


class Party:
    """Two ledgers of one party on one database, joined to one unit, and a side table."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        if backend == "postgres":
            url, prefix = require_postgres(), f"t_{uuid.uuid4().hex[:10]}_"
        else:
            url, prefix = f"sqlite:///{tmp_path / 'party.db'}", ""
        self.unit = UnitOfWork(url)
        clock = FixedClock(10.0)
        self.a = SqlLedger(url, clock=clock, name="a", table_prefix=f"{prefix}a_", unit=self.unit)
        self.b = SqlLedger(url, clock=clock, name="b", table_prefix=f"{prefix}b_", unit=self.unit)
        self.metadata = MetaData()
        self.log = Table(f"{prefix}log", self.metadata, Column("seq", Integer, primary_key=True),
                         Column("what", String(32)))
        self.metadata.create_all(self.unit.engine)
        for ledger in (self.a, self.b):
            ledger.create_accounts([Account("house", "KZT"),
                                    Account("w", "KZT", flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)])

    def rows(self) -> list[str]:
        with self.unit.engine.connect() as conn:
            return [r.what for r in conn.execute(select(self.log.c.what).order_by(self.log.c.seq))]

    def note(self, what: str) -> None:
        self.unit.before_commit(lambda conn: conn.execute(insert(self.log), [{"what": what}]))

    def close(self, backend: str) -> None:
        for ledger in (self.a, self.b):
            assert ledger.check_invariants() == []
            if backend == "postgres":
                ledger.drop_tables()
            ledger.close()
        if backend == "postgres":
            self.metadata.drop_all(self.unit.engine)
        self.unit.close()


@pytest.fixture(params=SQL_BACKENDS)
def party(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Party]:
    p = Party(request.param, tmp_path)
    yield p
    p.close(request.param)


def fund(tid: str, amount: int) -> Transfer:
    return Transfer(tid, "house", "w", amount, "KZT")


def spend(tid: str, amount: int) -> Transfer:
    return Transfer(tid, "w", "house", amount, "KZT")


def test_batches_in_two_ledgers_and_a_side_row_commit_together(party: Party) -> None:
    with party.unit.scope():
        assert party.a.create_transfers([fund("f1", 500)]) == [TransferResult.OK]
        assert party.a.account("w").credits_posted == 500  # reads inside see the unit's own writes
        assert party.b.create_transfers([fund("f2", 300)]) == [TransferResult.OK]
        party.note("funded")
        assert len(party.a) + len(party.b) == 2
    assert party.a.transfer("f1") is not None and party.b.transfer("f2") is not None
    assert party.rows() == ["funded"]


def test_an_exception_rolls_every_ledger_back(party: Party) -> None:
    party.a.create_transfers([fund("f0", 100)])  # outside a scope: its own transaction, as before
    with pytest.raises(RuntimeError, match="boom"), party.unit.scope():
        party.a.create_transfers([fund("f1", 500)])
        party.b.create_transfers([fund("f2", 300)])
        party.note("never")
        raise RuntimeError("boom")
    assert party.a.transfer("f1") is None and party.b.transfer("f2") is None and party.rows() == []
    assert party.a.account("w").credits_posted == 100 and len(party.a) == 1


def test_nested_scopes_commit_once_at_the_outermost(party: Party) -> None:
    with party.unit.scope():
        with party.unit.scope():
            party.a.create_transfers([fund("f1", 50)])
            party.note("inner")
        seen_from_another_thread: list[Any] = []
        t = threading.Thread(target=lambda: seen_from_another_thread.append(party.a.transfer("f1")))
        t.start()
        t.join()
        assert seen_from_another_thread == [None]  # not committed yet: the outer scope is open
        party.note("outer")
    assert party.a.transfer("f1") is not None and party.rows() == ["inner", "outer"]


def test_the_rules_hold_inside_a_unit(party: Party) -> None:
    with party.unit.scope():
        party.a.create_transfers([fund("f1", 100)])
        assert party.a.create_transfers([spend("s1", 150)]) == [TransferResult.EXCEEDS_CREDITS]
        assert party.a.create_transfers([spend("s2", 100)]) == [TransferResult.OK]
        assert party.a.create_transfers([spend("s2", 100)]) == [TransferResult.EXISTS]
    assert party.a.account("w").credits_posted == party.a.account("w").debits_posted == 100


def test_before_commit_outside_a_scope_is_an_error(party: Party) -> None:
    with pytest.raises(RuntimeError, match="outside"):
        party.note("nowhere")
    assert not party.unit.active() and party.unit.connection() is None
