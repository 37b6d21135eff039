"""Whether ``ccsim serve`` may start on a data directory, checked before any service starts.

Two ways a data directory is already used, each answered with one line and exit 2 by the CLI:

- another ``ccsim serve`` is running on it: :func:`lock_data_dir` takes an exclusive lock on
  ``<data dir>/serve.lock`` (``flock``, released by the kernel when the process ends, so a killed
  ``serve`` leaves no stale lock) and names the holder's pid when it cannot;
- an earlier run left its books there (or in the ``--database-url`` tables of the same prefix):
  :func:`earlier_books` finds the parties whose journals hold transfers, without creating or
  changing a table, so ``serve`` can ask for ``--resume`` or ``--reset`` instead of letting a
  party refuse to start half-way through the others' seeding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Final

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from services.errors import CcsimError

__all__ = ["DataDirInUseError", "DataDirLock", "earlier_books", "lock_data_dir"]

LOCK_NAME: Final = "serve.lock"


class DataDirInUseError(CcsimError, RuntimeError):
    """Another ``ccsim serve`` holds the data directory's lock."""


class DataDirLock:
    """The held lock; :meth:`release` (or the end of the process) frees it."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Lock ``data_dir`` for this process, or raise :class:`DataDirInUseError` naming the holder."""
    import fcntl  # noqa: PLC0415 — POSIX only, like ccsim serve's process supervision

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()[:32] or "unknown"
        handle.close()
        raise DataDirInUseError(f"{data_dir} is in use by another ccsim serve (pid {holder}); stop it first, "
                                "or give another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return DataDirLock(path, handle)


def _tables_with_rows(url: str, prefixes: Iterable[str]) -> set[str]:
    """The prefixes among ``prefixes`` that own a non-empty ``…transfers`` table at ``url``."""
    found: set[str] = set()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            for prefix in prefixes:
                for name in names:
                    if name.startswith(prefix) and name.endswith("transfers") and conn.execute(
                            text(f'SELECT 1 FROM "{name}" LIMIT 1')).first() is not None:
                        found.add(prefix)
                        break
    finally:
        engine.dispose()
    return found


def earlier_books(data_dir: Path, parties: Iterable[str], database_url: str = "", table_prefix: str = "") -> list[str]:
    """The parties that have books from an earlier run (journals with transfers), sorted.

    With ``database_url`` the parties share one database, a table prefix each
    (``<table_prefix><party>_``); otherwise each has its SQLite file ``<data_dir>/<party>.db``,
    read only when it exists. A database that cannot be read counts as no books here: the
    party itself then reports the problem when it starts.
    """
    found: list[str] = []
    with contextlib.suppress(SQLAlchemyError):
        if database_url:
            by_prefix = {f"{table_prefix}{party}_": party for party in parties}
            found = [by_prefix[p] for p in _tables_with_rows(database_url, by_prefix)]
        else:
            for party in parties:
                path = data_dir / f"{party}.db"
                if path.is_file() and _tables_with_rows(f"sqlite:///{path}", [""]):
                    found.append(party)
    return sorted(found)
