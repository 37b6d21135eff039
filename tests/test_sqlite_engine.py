"""The SQLite recipe every store uses (``services.ledger.sql.sqlite_engine``) under a cold start.

Party processes, migrations and the idempotency store open the same new database file at the same
moment when a service starts. Entering WAL mode needs the file to itself, and SQLite refuses at
once ("database is locked", its busy handler is not consulted) while another connection holds it:
opening must wait its turn, never fail."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from services.ledger.sql import sqlite_engine


def test_connections_opening_a_new_file_together_all_get_it_in_wal(tmp_path: Path) -> None:
    rounds, openers = 25, 6
    errors: list[BaseException] = []
    modes: list[str] = []
    for n in range(rounds):
        url = f"sqlite:///{tmp_path / f'cold-{n}.db'}"
        engines = [sqlite_engine(url, pool_size=1, max_overflow=0) for _ in range(openers)]
        barrier = threading.Barrier(openers)

        def open_one(engine: sa.Engine, barrier: threading.Barrier) -> None:
            barrier.wait()
            try:
                with engine.begin() as conn:  # BEGIN IMMEDIATE: the first in holds the file
                    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS opened (n INTEGER)")
                    conn.exec_driver_sql("INSERT INTO opened VALUES (1)")
                    modes.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar_one())
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        threads = [threading.Thread(target=open_one, args=(e, barrier)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for e in engines:
            e.dispose()
    assert errors == []
    assert modes == ["wal"] * rounds * openers
    for n in range(rounds):
        with sa.create_engine(f"sqlite:///{tmp_path / f'cold-{n}.db'}").connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM opened").scalar_one() == openers
