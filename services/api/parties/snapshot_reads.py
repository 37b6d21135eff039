"""Reads of a party's books and memory as of one instant, for checks that must not stall payments.

:class:`SnapshotReads` pins a read transaction of the books; :func:`snapshot_copy` copies the
containers of a domain object's memory at the same instant (both under the domain lock, read after
it is released). The integrity routes read this way (issue 15, F3), and so does a snapshot of the
state (:mod:`.snapshots`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, make_url

from services.ledger.sql import UnitOfWork, sqlite_engine

__all__ = ["SnapshotReads", "snapshot_copy"]

T = TypeVar("T")


class SnapshotReads:
    """Reads of a party's books on one consistent snapshot, begun in an instant and read at leisure.

    :meth:`reading` pins a read transaction (SQLite WAL: a deferred ``BEGIN`` and a first read;
    PostgreSQL: ``REPEATABLE READ`` and a first statement) on a connection of its own, so it never
    waits for the unit of work's pool, then routes every read of the party's ledgers on this
    thread to it (:meth:`UnitOfWork.reading`). The caller pins while holding the domain lock
    (nothing is half-booked then) and reads after releasing it: payments go on meanwhile, and the
    reads still see the books as they were at the pin.
    """

    def __init__(self, unit: UnitOfWork) -> None:
        self.unit = unit
        url = make_url(unit.url)
        self._sqlite = url.get_backend_name() == "sqlite"
        if self._sqlite:
            self.engine = sqlite_engine(url, begin="BEGIN", pool_size=2, max_overflow=0, pool_timeout=120)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=0, pool_timeout=120)

    def close(self) -> None:
        self.engine.dispose()

    def pin(self) -> Connection:
        """A connection whose transaction has fixed its snapshot (close it to let go)."""
        conn = self.engine.connect()
        if not self._sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master" if self._sqlite else "SELECT 1").all()
        return conn

    @contextmanager
    def reading(self, conn: Connection) -> Iterator[None]:
        """The party's ledger reads on this thread go to the pinned ``conn``; closed at the end."""
        try:
            with self.unit.reading(conn):
                yield
        finally:
            conn.close()  # rolls the read transaction back: nothing was written


def snapshot_copy(obj: T) -> T:
    """A copy of ``obj`` whose containers (and the containers in them) are its own: what a check
    reads of the party's memory, as it was when the copy was made (under the domain lock). The
    objects inside are shared; the ledger, in particular, stays the party's (its reads go to the
    pinned snapshot)."""
    frozen = copy.copy(obj)
    for name, value in vars(obj).items():
        if isinstance(value, dict):
            setattr(frozen, name, {k: _copied(v) for k, v in value.items()})
        elif isinstance(value, list | set):
            setattr(frozen, name, _copied(value))
    return frozen


def _copied(value: Any) -> Any:
    return copy.copy(value) if isinstance(value, dict | list | set) else value
