"""Opening a run directory: summary.json and results.db, validated before anything is drawn.

Every failure a user can cause (a wrong path, a run that crashed before writing its summary, a
truncated or foreign database) becomes a :class:`~sim.report.errors.ReportError` naming the file,
so the CLI can print one line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sim import results
from sim.report.errors import ReportError
from sim.run_dir import RunDirError, check_run_dir

__all__ = ["RESULTS_DB", "SUMMARY_JSON", "RunData", "open_run", "read_summary"]

SUMMARY_JSON: Final = "summary.json"
RESULTS_DB: Final = "results.db"

_REQUIRED_SUMMARY_KEYS: Final = ("scenario_name", "seed", "ccsim_version", "payments",
                                 "auth_latency_ms")
_REQUIRED_TABLES: Final = (results.runs, results.payments, results.legs, results.timeseries,
                           results.settlements, results.integrity)


@dataclass(frozen=True, slots=True)
class RunData:
    """A validated run: its directory, its parsed summary and a read-only connection."""

    run_dir: Path
    summary: dict[str, Any]
    conn: Connection

    @property
    def label(self) -> str:
        """A short name for legends and table headers."""
        return f"{self.summary.get('scenario_name', '?')} (seed {self.summary.get('seed', '?')})"


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Parse and check ``summary.json``; the run directory must hold one complete run
    (:func:`sim.run_dir.check_run_dir`: not cut short, not two runs' files side by side)."""
    run_dir = Path(run_dir)
    try:
        check_run_dir(run_dir)
    except RunDirError as exc:
        raise ReportError(str(exc)) from exc
    path = run_dir / SUMMARY_JSON
    if not path.is_file():
        raise ReportError(f"{path} is missing: the run did not finish, or this is not a run "
                          "directory")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise ReportError(f"{path} must hold a JSON object")
    missing = [key for key in _REQUIRED_SUMMARY_KEYS if key not in summary]
    if missing:
        raise ReportError(f"{path} lacks {', '.join(missing)}")
    return summary


def _read_only_engine(path: Path) -> Engine:
    """An engine that can never create or modify the database it reads.

    A finished run's database is closed and checkpointed (no ``-wal`` file); it is opened
    ``immutable`` so that reading it creates no ``-shm``/``-wal`` side files in the run directory.
    A database whose writer left a ``-wal`` file is opened read-only but not immutable, so the
    write-ahead log's pages are still read.
    """
    wal = path.with_name(path.name + "-wal")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if wal.exists() else "&immutable=1")
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine


def _check_schema(conn: Connection, path: Path) -> None:
    """Every table and column of the results contract is present."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    for table in _REQUIRED_TABLES:
        if table.name not in present:
            raise ReportError(f"{path} has no table {table.name!r}: not a ccsim results database")
        columns = {col["name"] for col in inspector.get_columns(table.name)}
        lacking = [col.name for col in table.columns if col.name not in columns]
        if lacking:
            raise ReportError(f"{path}: table {table.name} lacks columns {', '.join(lacking)}")


@contextmanager
def open_run(run_dir: Path) -> Iterator[RunData]:
    """Validate a run directory and yield it with a read-only database connection.

    Database errors raised while the caller queries (a page of a truncated file) are turned into
    ``ReportError`` too, so a corrupt file is reported whether the header or the body is damaged.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    db_path = run_dir / RESULTS_DB
    if not db_path.is_file():
        raise ReportError(f"{db_path} is missing")
    engine = _read_only_engine(db_path)
    try:
        with engine.connect() as conn:
            try:
                _check_schema(conn, db_path)
            except SQLAlchemyError as exc:
                raise ReportError(f"{db_path} is not a readable SQLite database: "
                                  f"{exc.__cause__ or exc}") from exc
            try:
                yield RunData(run_dir=run_dir, summary=summary, conn=conn)
            except (DBAPIError, sqlite3.DatabaseError) as exc:
                raise ReportError(f"{db_path} is corrupt or unreadable: "
                                  f"{exc.__cause__ or exc}") from exc
    except DBAPIError as exc:
        raise ReportError(f"{db_path} cannot be opened: {exc.__cause__ or exc}") from exc
    finally:
        engine.dispose()
