"""One writer per SQLite file in a process (``services.database``): every engine's write
transaction on a file holds the file's in-process lock from ``BEGIN IMMEDIATE`` until it commits or
rolls back, so a party's stores queue on it instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.database import _writer_lock, sqlite_engine


def test_a_write_transaction_holds_the_files_lock_until_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "party.db"
    writer, other = sqlite_engine(f"sqlite:///{path}"), sqlite_engine(f"sqlite:///{path}")
    reader = sqlite_engine(f"sqlite:///{path}", begin="BEGIN")
    lock = _writer_lock(str(path))
    assert lock is not None and lock is _writer_lock(str(tmp_path / "." / "party.db"))  # one per file
    try:
        with writer.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
            assert lock.locked()
            with reader.connect() as r:  # a reader takes no write lock, and sees the last commit
                r.exec_driver_sql("SELECT 1").scalar_one()
        assert not lock.locked()
        with pytest.raises(RuntimeError), other.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            raise RuntimeError("rolled back")
        assert not lock.locked()
        with reader.connect() as r:
            assert r.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 0
    finally:
        for engine in (writer, other, reader):
            engine.dispose()


def test_writers_on_one_file_queue_and_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'party.db'}"
    engines = [sqlite_engine(url, pool_size=1, max_overflow=0) for _ in range(4)]
    with engines[0].begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    errors: list[BaseException] = []

    def write(engine: sa.Engine) -> None:
        try:
            for _ in range(100):
                with engine.begin() as conn:
                    n = conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
                    conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")  # read-then-write under the lock
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with engines[0].connect() as conn:
            values = [r[0] for r in conn.exec_driver_sql("SELECT n FROM t ORDER BY n")]
        assert values == list(range(400))  # every read-then-write saw the one before it
    finally:
        for engine in engines:
            engine.dispose()
