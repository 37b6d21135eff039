"""Account statements: one account's journal lines, a page at a time, read from the ledger's tables.

``SqlLedger`` answers for whole journals; a statement needs the lines of one account after a cursor.
This read model reads the ledger's ``<prefix>transfers`` table through the ledger's own definition
of it (:func:`services.ledger.sql_schema.ledger_schema`: amounts come back as exact ``int``; it never
writes the table, and reflecting it instead cost a bank a third of its start-up on PostgreSQL) and
adds two indexes, (debit account, seq) and (credit account, seq), so a page costs a range scan, not a scan
of the journal. ``seq`` is the journal order, so it is also the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, or_, select, text
from sqlalchemy.engine import make_url

from services.ledger import TransferFlags
from services.ledger.sql_schema import ledger_schema

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


_COLUMNS = ("seq", "id", "debit_account_id", "credit_account_id", "amount", "asset", "flags", "pending_id", "code",
            "user_data", "timestamp")


class StatementReader:
    """Pages of one account's journal lines from a ledger's database (created by ``SqlLedger``)."""

    def __init__(self, url: str, *, table_prefix: str = "") -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
        self._engine: Engine = create_engine(parsed, connect_args=connect_args)
        self._t = ledger_schema(table_prefix, parsed.get_backend_name() != "sqlite")[1].transfers_table
        name = self._t.name
        quote = self._engine.dialect.identifier_preparer.quote
        with self._engine.begin() as conn:
            for side in ("debit", "credit"):
                conn.execute(text(f"CREATE INDEX IF NOT EXISTS {quote(f'{name}_{side}_seq')} "
                                  f"ON {quote(name)} ({side}_account_id, seq)"))

    def close(self) -> None:
        self._engine.dispose()

    def lines(self, account_id: str, after_seq: int, limit: int) -> list[JournalLine]:
        """Up to ``limit`` lines of ``account_id`` with ``seq > after_seq``, in journal order."""
        t = self._t
        stmt = (
            select(*(t.c[c] for c in _COLUMNS))
            .where(or_(t.c.debit_account_id == account_id, t.c.credit_account_id == account_id),
                   t.c.seq > after_seq)
            .order_by(t.c.seq).limit(limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            JournalLine(
                seq=int(r.seq), transfer_id=r.id, debit_account_id=r.debit_account_id,
                credit_account_id=r.credit_account_id, amount_minor=r.amount, asset=r.asset,
                flags=TransferFlags(int(r.flags)), pending_id=r.pending_id, code=r.code,
                user_data=r.user_data, timestamp=float(r.timestamp),
            )
            for r in rows
        ]
