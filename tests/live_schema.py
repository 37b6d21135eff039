"""Where an in-process party set (``tests/test_live_parties.py``'s ``Live``) keeps its tables, made
without running the migrations at every start.

A start of the four parties on a fresh database runs every migration of every store: about half of
a start's CPU on SQLite, and on PostgreSQL several seconds of DDL per start (a test module starts
dozens). The migrations themselves are tested in ``tests/test_migrations.py``; what a party test
needs is the schema they leave, empty. So each process makes it once per seed file and copies it:

- **SQLite** (:func:`empty_schema`): a data directory whose databases hold every table at its
  newest revision with every row deleted but the schema versions; a set starts on a copy of it.
- **PostgreSQL** (:class:`PgCopies`): a template database the four parties migrated, emptied the
  same way; a set gets a database of its own made from it (``CREATE DATABASE … TEMPLATE``, a
  file-level copy of about a tenth of a second) and dropped at its end, tables and all.

Either way the parties still open every store, find it empty at the newest revision and seed it,
as they do at a first start after ``ccsim serve --reset``.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["PgCopies", "close_pg_copies", "empty_schema", "pg_copies"]

# A party set: builds the four apps on the given settings' database and closes them.
StartParties = Callable[[dict[str, Any]], None]

_SCHEMAS: dict[str, Path] = {}
_COPIES: dict[str, PgCopies] = {}  # database url -> this process's PgCopies for it


def _is_version_table(name: str) -> bool:
    return name.endswith("alembic_version")


def empty_schema(seed_path: Path, start: StartParties) -> Path:
    """The SQLite data directory the four parties of ``seed_path`` make at their first start, with
    every row deleted but the schema versions (``start`` makes them in the ``data_dir`` it is given)."""
    seed = seed_path.read_text(encoding="utf-8")
    if seed in _SCHEMAS:
        return _SCHEMAS[seed]
    root = Path(tempfile.mkdtemp(prefix="ccsim-live-schema-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "seed.json").write_text(seed, encoding="utf-8")
    start({"seed_file": root / "seed.json", "data_dir": root / "data"})
    for db in sorted((root / "data").glob("*.db")):
        with closing(sqlite3.connect(db)) as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                                "name NOT LIKE 'sqlite_%'") if not _is_version_table(n)]
            for name in names:
                conn.execute(f'DELETE FROM "{name}"')
            conn.commit()
    _SCHEMAS[seed] = root / "data"
    return _SCHEMAS[seed]


class PgCopies:
    """Databases for in-process party sets on the PostgreSQL server of ``url``, each a copy of a
    template made once per seed file (named after ``url``'s database, so each pytest-xdist worker,
    which has a database of its own, has templates and copies of its own)."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._base = self._url.database or "test"
        self._admin = create_engine(self._url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._templates: dict[str, tuple[str, str]] = {}  # seed text -> (template name, table prefix)
        self._copies: set[str] = set()
        self._drop_leftovers()

    def url_of(self, database: str) -> str:
        return self._url.set(database=database).render_as_string(hide_password=False)

    def _execute(self, sql: str, **params: Any) -> list[Any]:
        with self._admin.connect() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []

    def _drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _drop_leftovers(self) -> None:
        """Copies and templates a process of this worker left when it was killed before its end."""
        for (name,) in self._execute("SELECT datname FROM pg_database WHERE starts_with(datname, :c) "
                                     "OR starts_with(datname, :t)", c=f"{self._base}_c_", t=f"{self._base}_tpl_"):
            self._drop(name)

    def template(self, seed_path: Path, start: StartParties) -> tuple[str, str]:
        """The template database of ``seed_path``'s party set and its tables' prefix, made at first use."""
        seed = seed_path.read_text(encoding="utf-8")
        if seed not in self._templates:
            name = f"{self._base}_tpl_{hashlib.sha256(seed.encode()).hexdigest()[:10]}"
            prefix = f"t_{uuid.uuid4().hex[:10]}_"
            self._drop(name)
            self._execute(f'CREATE DATABASE "{name}"')
            start({"database_url": self.url_of(name), "table_prefix": prefix})
            engine = create_engine(self.url_of(name), poolclass=NullPool)
            try:
                with engine.begin() as conn:
                    tables = [t for (t,) in conn.execute(text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")) if not _is_version_table(t)]
                    if tables:
                        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"))
            finally:
                engine.dispose()
            self._templates[seed] = (name, prefix)
        return self._templates[seed]

    def copy(self, template: str | None = None) -> str:
        """A new database: a copy of ``template``, or empty (the parties then run the migrations)."""
        name = f"{self._base}_c_{uuid.uuid4().hex[:10]}"
        self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self._copies.add(name)
        return name

    def drop(self, name: str) -> None:
        self._copies.discard(name)
        self._drop(name)

    def close(self) -> None:
        try:
            for name in [*self._copies, *(n for n, _ in self._templates.values())]:
                self._drop(name)
        except Exception:
            pass
        self._copies.clear()
        self._templates.clear()
        self._admin.dispose()


def pg_copies(url: str) -> PgCopies:
    """The one :class:`PgCopies` of this process for the server and database of ``url``."""
    if url not in _COPIES:
        _COPIES[url] = PgCopies(url)
    return _COPIES[url]


def close_pg_copies() -> None:
    """Drop this process's copies and templates, at the end of its pytest session (``tests/conftest.py``;
    a pytest-xdist worker may end without running ``atexit`` handlers). What a killed process
    leaves is dropped by the next one (:meth:`PgCopies._drop_leftovers`)."""
    for copies in _COPIES.values():
        copies.close()
    _COPIES.clear()
