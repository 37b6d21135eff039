"""outbox: the messages and POSTs a service owes its peers (``services.api.outbox``).

The schema Outbox made with ``create_all`` before there were migrations, column for column: a
database made then is stamped at this revision instead of being created again.

Revision ID: outbox_0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = "outbox_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("outbox",)
depends_on: str | Sequence[str] | None = None

# The tables this first revision of a kind creates (without the prefix). A database whose tables
# were made before the kind had migrations holds exactly these: it is stamped here, not re-created.
creates_tables: tuple[str, ...] = ("outbox",)


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}outbox",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table(f"{table_prefix()}outbox")
