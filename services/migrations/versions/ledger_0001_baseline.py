"""ledger: the accounts and the transfer journal of one ledger (``services.ledger.sql.SqlLedger``).

The schema SqlLedger made with ``create_all`` before there were migrations, column for column:
a database made then is stamped at this revision instead of being created again.

Revision ID: ledger_0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = "ledger_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("ledger",)
depends_on: str | Sequence[str] | None = None

# The tables this first revision of a kind creates (without the prefix). A database whose tables
# were made before the kind had migrations holds exactly these: it is stamped here, not re-created.
creates_tables: tuple[str, ...] = ("accounts", "transfers")

# Frozen copies of what the code used when this revision was written (a revision never follows
# later changes of the code): ids are ID_LENGTH_MAX (128) + 32 characters, room for the ledger's
# own "<hold id>#expired[#n]" ids.
_ID = 160


def _amount() -> sa.types.TypeEngine[Any]:
    """Minor units: NUMERIC(38, 0); exact decimal text on SQLite, whose NUMERIC would turn an
    integer above 2**63 - 1 into a float (``_Amount`` in services/ledger/sql.py)."""
    return sa.Numeric(38, 0).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}accounts",
        sa.Column("id", sa.String(_ID), primary_key=True),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("debits_pending", _amount(), nullable=False),
        sa.Column("debits_posted", _amount(), nullable=False),
        sa.Column("credits_pending", _amount(), nullable=False),
        sa.Column("credits_posted", _amount(), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
    )
    op.create_table(
        f"{p}transfers",
        # BIGSERIAL on PostgreSQL; on SQLite an INTEGER PRIMARY KEY (the rowid) counts by itself.
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("id", sa.String(_ID), nullable=False, unique=True),
        sa.Column("debit_account_id", sa.String(_ID), nullable=False),
        sa.Column("credit_account_id", sa.String(_ID), nullable=False),
        sa.Column("amount", _amount(), nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("pending_id", sa.String(_ID), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("user_data", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("pending_state", sa.String(8), nullable=True),
    )
    op.create_index(f"{p}transfers_due", f"{p}transfers", ["pending_state", "expires_at"])


def downgrade() -> None:
    p = table_prefix()
    op.drop_index(f"{p}transfers_due", table_name=f"{p}transfers")
    op.drop_table(f"{p}transfers")
    op.drop_table(f"{p}accounts")
