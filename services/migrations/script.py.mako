"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.migrations import table_prefix

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
% if not down_revision:

# The tables this first revision of a kind creates (without the prefix). A database whose tables
# were made before the kind had migrations holds exactly these: it is stamped here, not re-created.
creates_tables: tuple[str, ...] = ()
% endif


def upgrade() -> None:
    p = table_prefix()  # every table is named f"{p}<name>"; on SQLite, alter with op.batch_alter_table
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    p = table_prefix()
    ${downgrades if downgrades else "pass"}
