"""commands: a party's command log (``services.api.parties.durable``).

Every change to a party's state outside its books, written in the transaction of its bookings and
replayed at a restart (ADR 5). The schema ``Durable`` made with ``create_all`` before the log had
migrations, column for column.

Revision ID: commands_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = "commands_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("commands",)
depends_on: str | Sequence[str] | None = None

# The tables this first revision of a kind creates (without the prefix). A database whose tables
# were made before the kind had migrations holds exactly these: it is stamped here, not re-created.
creates_tables: tuple[str, ...] = ("commands",)


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}commands",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at_s", sa.Float(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("args", sa.LargeBinary(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table(f"{table_prefix()}commands")
