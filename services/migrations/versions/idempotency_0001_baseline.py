"""idempotency: the ``Idempotency-Key`` store of a service (``services.api.idempotency``).

The schema IdempotencyStore made with ``create_all`` before there were migrations, column for
column: a database made then is stamped at this revision instead of being created again.

Revision ID: idempotency_0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = "idempotency_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("idempotency",)
depends_on: str | Sequence[str] | None = None

# The tables this first revision of a kind creates (without the prefix). A database whose tables
# were made before the kind had migrations holds exactly these: it is stamped here, not re-created.
creates_tables: tuple[str, ...] = ("idempotency_keys",)


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}idempotency_keys",
        sa.Column("key", sa.String(128), primary_key=True),  # IDEMPOTENCY_KEY_LENGTH_MAX then
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("media_type", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table(f"{table_prefix()}idempotency_keys")
