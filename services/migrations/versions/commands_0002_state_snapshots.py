"""commands: snapshots of a party's replayed state (``services.api.parties.snapshots``).

The newest snapshot of the domain objects and books with the log position it stands for: a
restart loads it and replays only the commands after that position (issue 15, F5/F7).

Revision ID: commands_0002
Revises: commands_0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = "commands_0002"
down_revision: str | Sequence[str] | None = "commands_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

creates_tables: tuple[str, ...] = ()


def upgrade() -> None:
    p = table_prefix()
    op.create_table(
        f"{p}snapshots",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("log_seq", sa.Integer(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("seed_digest", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_s", sa.Float(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table(f"{table_prefix()}snapshots")
