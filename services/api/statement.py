"""Account statements: one account's journal lines, a page at a time, read from the ledger's tables.

``SqlLedger`` answers for whole journals; a statement needs the lines of one account after a cursor.
This read model reflects the ledger's ``<prefix>transfers`` table (it never writes it) and adds two
indexes, (debit account, seq) and (credit account, seq), so a page costs a range scan, not a scan
of the journal. ``seq`` is the journal order, so it is also the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Index, MetaData, Table, create_engine, or_, select
from sqlalchemy.engine import make_url

from services.ledger import TransferFlags

__all__ = ["JournalLine", "StatementReader"]


@dataclass(frozen=True, slots=True)
class JournalLine:
    seq: int
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount_minor: int
    asset: str
    flags: TransferFlags
    pending_id: str
    code: str
    user_data: str
    timestamp: float


def _minor(value: Any) -> int:
    """The ledger stores amounts as exact text (SQLite) or NUMERIC (PostgreSQL); never a float."""
    if isinstance(value, float):
        raise TypeError("the journal returned a float amount; the column type is wrong")
    if isinstance(value, Decimal):
        return int(value)
    return int(str(value))


class StatementReader:
    """Pages of one account's journal lines from a ledger's database (created by ``SqlLedger``)."""

    def __init__(self, url: str, *, table_prefix: str = "") -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
        self._engine: Engine = create_engine(parsed, connect_args=connect_args)
        metadata = MetaData()
        self._t = Table(f"{table_prefix}transfers", metadata, autoload_with=self._engine)
        for side in ("debit", "credit"):
            Index(f"{table_prefix}transfers_{side}_seq", self._t.c[f"{side}_account_id"],
                  self._t.c.seq).create(self._engine, checkfirst=True)

    def close(self) -> None:
        self._engine.dispose()

    def lines(self, account_id: str, after_seq: int, limit: int) -> list[JournalLine]:
        """Up to ``limit`` lines of ``account_id`` with ``seq > after_seq``, in journal order."""
        t = self._t
        stmt = (
            select(t.c.seq, t.c.id, t.c.debit_account_id, t.c.credit_account_id, t.c.amount,
                   t.c.asset, t.c.flags, t.c.pending_id, t.c.code, t.c.user_data, t.c.timestamp)
            .where(or_(t.c.debit_account_id == account_id, t.c.credit_account_id == account_id),
                   t.c.seq > after_seq)
            .order_by(t.c.seq).limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            JournalLine(
                seq=int(r.seq), transfer_id=r.id, debit_account_id=r.debit_account_id,
                credit_account_id=r.credit_account_id, amount_minor=_minor(r.amount), asset=r.asset,
                flags=TransferFlags(int(r.flags)), pending_id=r.pending_id, code=r.code,
                user_data=r.user_data, timestamp=float(r.timestamp),
            )
            for r in rows
        ]
