"""The SQL ledger's tables and the statements :class:`services.ledger.sql.SqlLedger` runs on them.

Amounts are ``NUMERIC(38, 0)`` on PostgreSQL and exact decimal text on SQLite (the reason is in
:mod:`services.ledger.sql`); Python sees ``int`` either way. The tables of one prefix and their
statements are built once per process (:func:`ledger_schema`).
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from services.ledger.engine import ID_LENGTH_MAX

__all__ = ["LedgerStatements", "ledger_schema"]

_ID_COLUMN_LENGTH = ID_LENGTH_MAX + 32  # room for the ledger's own "<hold id>#expired[#n]" ids


class _Amount(TypeDecorator[int]):
    """An ``int`` of minor units: NUMERIC(38, 0), or exact decimal text on SQLite (module doc)."""

    impl = Numeric(38, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(38, 0, asdecimal=True))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"amounts are int minor units, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("the database returned a float amount; the column type is wrong")
        if isinstance(value, Decimal) and value != value.to_integral_value():
            raise TypeError(f"the database returned a fractional amount {value}")
        return int(value)


def _define_tables(metadata: MetaData, prefix: str) -> tuple[Table, Table]:
    accounts = Table(
        f"{prefix}accounts", metadata,
        Column("id", String(_ID_COLUMN_LENGTH), primary_key=True),
        Column("asset", String(16), nullable=False),
        Column("owner", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("flags", Integer, nullable=False),
        Column("debits_pending", _Amount, nullable=False),
        Column("debits_posted", _Amount, nullable=False),
        Column("credits_pending", _Amount, nullable=False),
        Column("credits_posted", _Amount, nullable=False),
        Column("timestamp", Float, nullable=False),
    )
    transfers = Table(
        f"{prefix}transfers", metadata,
        # seq orders the journal: a resolution always commits after the hold it resolves.
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("id", String(_ID_COLUMN_LENGTH), nullable=False, unique=True),
        Column("debit_account_id", String(_ID_COLUMN_LENGTH), nullable=False),
        Column("credit_account_id", String(_ID_COLUMN_LENGTH), nullable=False),
        Column("amount", _Amount, nullable=False),
        Column("asset", String(16), nullable=False),
        Column("code", Text, nullable=False),
        Column("flags", Integer, nullable=False),
        Column("pending_id", String(_ID_COLUMN_LENGTH), nullable=False),
        Column("timeout_s", Float, nullable=False),
        Column("user_data", Text, nullable=False),
        Column("timestamp", Float, nullable=False),
        Column("expires_at", Float, nullable=True),  # holds with a timeout only
        Column("pending_state", String(8), nullable=True),  # holds only
        Index(f"{prefix}transfers_due", "pending_state", "expires_at"),
    )
    return accounts, transfers


class LedgerStatements:
    """A ledger's statements, built once with bound parameters: SQLAlchemy then reuses each one's
    cache key and compiled form instead of building and keying a new statement per call."""

    def __init__(self, a: Table, t: Table, lock_rows: bool) -> None:
        self.accounts_table, self.transfers_table = a, t
        ids: Any = bindparam("q_ids", expanding=True)
        accounts = select(a).where(a.c.id.in_(ids)).order_by(a.c.id)
        self.accounts_in = accounts.with_for_update() if lock_rows else accounts
        self.transfers_in = select(t).where(t.c.id.in_(ids))
        self.ends_in = select(t.c.debit_account_id, t.c.credit_account_id).where(t.c.id.in_(ids))
        self.account = select(a).where(a.c.id == bindparam("q_id"))
        self.transfer = select(t).where(t.c.id == bindparam("q_id"))
        self.pending_state = select(t.c.pending_state).where(t.c.id == bindparam("q_id"))
        self.insert_accounts, self.insert_transfers = insert(a), insert(t)
        self.update_balances = update(a).where(a.c.id == bindparam("b_id")).values(
            debits_pending=bindparam("b_dp"), debits_posted=bindparam("b_dpo"),
            credits_pending=bindparam("b_cp"), credits_posted=bindparam("b_cpo"))
        self.update_pending = update(t).where(t.c.id == bindparam("b_id")).values(pending_state=bindparam("b_state"))


@functools.lru_cache(maxsize=256)
def ledger_schema(prefix: str, lock_rows: bool) -> tuple[MetaData, LedgerStatements]:
    """The tables of ``prefix`` and their statements, shared by every ledger on that prefix in this
    process: they only describe the tables, are never changed after they are built, and building
    them cost a party about a tenth of its start-up CPU. Bounded: many throwaway prefixes (tests)
    do not pile up."""
    metadata = MetaData()
    return metadata, LedgerStatements(*_define_tables(metadata, prefix), lock_rows)
