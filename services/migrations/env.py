"""The Alembic environment of the party databases (run by :mod:`services.migrations`, never by hand).

It migrates on the connection it is given, inside the caller's transaction (so the caller's lock
covers the whole upgrade), and keeps the version of the tables of one prefix in
``<prefix>alembic_version``: several parties and ledgers share one PostgreSQL database, each with
its own prefix and its own version table. The revisions read the prefix from the same place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from services.migrations import version_table


def _run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run the migrations through services.migrations (ccsim db upgrade): "
                           "it passes the connection and the table prefix")
    context.configure(
        connection=connection,
        version_table=version_table(str(config.attributes.get("table_prefix", ""))),
        target_metadata=config.attributes.get("target_metadata"),
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
