"""The database layer every party store shares: the SQLite engine recipe (WAL, a busy timeout,
``BEGIN IMMEDIATE``, one writer per file in a process) and the unit of work that lets several
stores of one party commit together.

The ledger (:mod:`services.ledger.sql`), the migrations (:mod:`services.migrations`), the
idempotency store and the outbox all build on it; it imports none of them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "UnitOfWork", "sqlite_engine"]

SQLITE_BUSY_TIMEOUT_MS = 30_000

def _enter_wal(cur: Any) -> None:
    """Switch the database file to WAL (a no-op once any connection has). Entering WAL needs the
    file to itself, and SQLite answers "database is locked" at once, without its busy handler, when
    other connections are opening the same new file: so wait and retry, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _writer_lock(database: str | None) -> threading.Lock | None:
    """The one write lock of a SQLite file in this process (``None`` for a memory database).

    Why: a party opens several connections to its file (unit of work, idempotency keys, outbox,
    ledger writer). When two of them race for SQLite's write lock, the loser does not queue: its
    busy handler sleeps 1, 2, 5, 10 … ms and tries again, so a busy service spends tens of
    milliseconds per payment asleep while it holds its domain lock. Taking this lock before
    ``BEGIN IMMEDIATE`` makes the writers of one process queue on it instead, and wake the moment
    the writer before them commits. Other processes on the same file still meet the busy handler.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = os.path.realpath(database)
    with _file_locks_guard:
        return _file_locks.setdefault(path, threading.Lock())


class _WriterConnection(sqlite3.Connection):
    """A pysqlite connection that gives its file's writer lock back when its transaction ends."""

    writer_lock: threading.Lock | None = None
    holds_writer_lock = False

    def take_writer_lock(self, statement: str) -> None:
        lock = self.writer_lock
        if lock is None or self.holds_writer_lock:
            return
        if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise OperationalError(statement, None, sqlite3.OperationalError(
                "database is locked (this process's writer held it longer than the busy timeout)"))
        self.holds_writer_lock = True

    def give_writer_lock(self) -> None:
        if self.holds_writer_lock:
            self.holds_writer_lock = False
            assert self.writer_lock is not None
            self.writer_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_writer_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_writer_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_writer_lock()


def sqlite_engine(
    url: Any, *, begin: str = "BEGIN IMMEDIATE", pool_size: int = 5, max_overflow: int = 10,
    pool_timeout: float = 30.0,
) -> Engine:
    """A SQLite engine in WAL mode whose transactions start with ``begin`` (pysqlite's BEGIN is
    disabled; an empty ``begin``: none, every statement is its own transaction). ``BEGIN
    IMMEDIATE`` takes the write lock before the first read, so a read-then-update never fails on a
    lock upgrade. The ledger, the idempotency store and the outbox all use it.

    Write transactions (``BEGIN IMMEDIATE``) of every engine on one file in this process queue on
    one in-process lock (:func:`_writer_lock`) until they commit or roll back."""
    parsed = make_url(url) if isinstance(url, str) else url
    writes = begin.upper().startswith("BEGIN IMMEDIATE") or begin.upper().startswith("BEGIN EXCLUSIVE")
    lock = _writer_lock(parsed.database) if writes else None
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                      "factory": _WriterConnection},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
        dbapi_conn.writer_lock = lock
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enter_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    if not begin:  # each statement its own transaction (one-statement reads)
        return engine

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        if isinstance(dbapi_conn, _WriterConnection):
            dbapi_conn.take_writer_lock(begin)
        try:
            # On the DBAPI connection SQLAlchemy manages (its execution context costs more than
            # the BEGIN itself); a failure is raised as SQLAlchemy's, as exec_driver_sql would.
            assert dbapi_conn is not None
            dbapi_conn.execute(begin)
        except sqlite3.Error as exc:
            if isinstance(dbapi_conn, _WriterConnection):
                dbapi_conn.give_writer_lock()
            raise DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc
        except BaseException:
            if isinstance(dbapi_conn, _WriterConnection):
                dbapi_conn.give_writer_lock()
            raise

    return engine


class UnitOfWork:
    """One write transaction shared by several ledgers of a party (and any rows of its own).

    A party whose one operation books in several places — a hold, then a sale's credit; a batch
    into the network's ledger and an acquirer's — and keeps state besides its books needs all of
    that to commit together or not at all. Ledgers built with ``unit=`` join the unit's
    transaction while :meth:`scope` is open on the calling thread: their writes run on its
    connection (opened at the first write), their reads see those writes, and nothing commits
    until the scope closes. Outside a scope they behave as if no unit existed.

    Scopes nest (an inner scope joins the outer one). On leaving the outermost scope, the
    ``before_commit`` callbacks registered during it run on the connection, then it commits; an
    exception rolls everything back and propagates. ``url`` must be the ledgers' database.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed.render_as_string(hide_password=False)
        if parsed.get_backend_name() == "sqlite":
            self.engine = sqlite_engine(parsed, pool_size=1, max_overflow=0, pool_timeout=120)
        else:
            self.engine = create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_timeout=120)
        self._local = threading.local()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def scope(self) -> Iterator[UnitOfWork]:
        """Open (or join) this thread's unit; commit when the outermost scope closes."""
        depth: int = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            self._local.conn = None
            self._local.before_commit = []
            self._local.written = False
        try:
            yield self
            if depth == 0:
                callbacks: list[Callable[[Connection], None]] = self._local.before_commit
                if callbacks:
                    conn = self.connection()
                    assert conn is not None  # inside the scope
                    for callback in callbacks:
                        callback(conn)
                opened: Connection | None = self._local.conn
                if opened is not None:
                    opened.commit()
        finally:
            self._local.depth = depth
            if depth == 0:
                opened = self._local.conn
                self._local.conn = None
                self._local.before_commit = []
                if opened is not None:
                    opened.close()  # rolls back whatever was not committed

    def active(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def mark_written(self) -> None:
        """A ledger wrote rows in this thread's unit (a refused batch opens it but writes nothing)."""
        self._local.written = True

    def written(self) -> bool:
        """Whether anything was written in this thread's open unit so far."""
        return self.active() and bool(getattr(self._local, "written", False))

    def current(self) -> Connection | None:
        """The connection of this thread's open unit, if it has written yet (reads use it then)."""
        return getattr(self._local, "conn", None) if self.active() else None

    def connection(self) -> Connection | None:
        """This thread's unit connection, opened (and its transaction begun) on first use; ``None``
        outside a scope."""
        if not self.active():
            return None
        conn: Connection | None = self._local.conn
        if conn is None:
            conn = self.engine.connect()
            conn.begin()
            self._local.conn = conn
        return conn

    @contextmanager
    def reading(self, conn: Connection) -> Iterator[None]:
        """Until the block ends, reads of this unit's ledgers on this thread run on ``conn``: a
        read transaction the caller opened, so every read sees one snapshot (the party services'
        integrity checks, which must not hold the domain lock while they read). Not for writes."""
        if self.active():
            raise RuntimeError("reading() inside an open unit of work")
        self._local.depth, self._local.conn, self._local.before_commit, self._local.written = 1, conn, [], False
        try:
            yield
        finally:
            self._local.depth, self._local.conn = 0, None

    def before_commit(self, callback: Callable[[Connection], None]) -> None:
        """Run ``callback`` on the unit's connection just before it commits (inside a scope)."""
        if not self.active():
            raise RuntimeError("before_commit outside a unit of work scope")
        self._local.before_commit.append(callback)
        self._local.written = True
