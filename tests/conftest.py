"""Shared fixtures: ledgers on every backend (in-memory, SQLite file, PostgreSQL when reachable).

``ledger_factory`` yields ``make(clock=None, assets=None) -> ledger``; every ledger it made must
pass ``check_invariants()`` when the test ends, and its tables are dropped afterwards (PostgreSQL
tests share one database per pytest process, so each ledger gets its own table prefix).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from faults.bank_check import postgres_unreachable
from live_schema import close_pg_copies
from scheduling import LongestFirstScheduling, UnitTimes
from signing import CREDENTIALS_ENV, write_session_credentials
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from services.clock import Clock, FixedClock
from services.ledger import InMemoryLedger
from services.ledger.sql import SqlLedger
from services.logging import configure_logging
from services.money import AssetRegistry

configure_logging(json=True)  # the suite's baseline: JSON lines on stderr at info, as a service logs


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Each test starts from the baseline logging configuration, whatever the test before it did.
    A command run in process (``ccsim db``, the API reference) configures structlog for its own
    output, for example at level warning, and ``capture_logs`` swaps only the processors, not the
    level filter: without this, a later test would capture no info line."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True, scope="session")
def _party_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One credentials file for the session, named where every party service looks for it
    (``tests/signing.py``); a test's clients sign with ``signing.RoleAuth``."""
    saved = os.environ.get(CREDENTIALS_ENV)
    os.environ[CREDENTIALS_ENV] = str(write_session_credentials(tmp_path_factory.mktemp("credentials")))
    yield
    if saved is None:
        os.environ.pop(CREDENTIALS_ENV, None)
    else:
        os.environ[CREDENTIALS_ENV] = saved


UNIT_TIMES = "ccsim_unit_times"

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

Ledger = InMemoryLedger | SqlLedger


def pg_url() -> str:
    """The test database; under pytest-xdist each worker has a database of its own next to it
    (``<name>_gw0``, made on first use and kept for the next run), so no worker reads the catalog
    while another drops its tables."""
    url = os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return _worker_database(url, worker) if worker else url


@functools.cache
def _worker_database(url: str, worker: str) -> str:
    """``url`` with the database ``<name>_<worker>``, created if missing. When the server cannot be
    reached, ``url`` itself: the tests that need it skip with the reason."""
    base = make_url(url)
    name = f"{base.database or 'test'}_{worker}"
    if _pg_unreachable(url) is not None:
        return url
    engine = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT",
                           poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


# Why PostgreSQL cannot be used (None when it can), asked once per session; the probe is the fault
# harness's, which also runs outside pytest (python -m tests.faults.bank_check).
_pg_unreachable = functools.cache(postgres_unreachable)


def require_postgres() -> str:
    """The PostgreSQL URL, or skip the test with the reason printed in the summary."""
    url = pg_url()
    error = _pg_unreachable(url)
    if error is not None:
        pytest.skip(f"PostgreSQL not reachable at {url}: {error}")
    return url


class LedgerFactory:
    """Makes fresh, empty ledgers of one backend and checks and removes them at the end."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._url = require_postgres() if backend == "postgres" else ""
        self.made: list[Ledger] = []

    def __call__(
        self, clock: Clock | None = None, assets: AssetRegistry | None = None, **sql_options: Any
    ) -> Ledger:
        clock = clock if clock is not None else FixedClock(1_000.0)
        ledger: Ledger
        if self.backend == "memory":
            ledger = InMemoryLedger(assets=assets, clock=clock)
        elif self.backend == "sqlite":
            path = self._tmp_path / f"ledger-{len(self.made)}.db"
            ledger = SqlLedger(f"sqlite:///{path}", assets=assets, clock=clock, **sql_options)
        else:
            prefix = f"t_{uuid.uuid4().hex[:12]}_"
            ledger = SqlLedger(self._url, assets=assets, clock=clock, table_prefix=prefix,
                               **sql_options)
        self.made.append(ledger)
        return ledger

    def reopen(self, ledger: SqlLedger, clock: Clock | None = None) -> SqlLedger:
        """A second handle on the same database and tables (a restart, or another process)."""
        again = SqlLedger(ledger.url, assets=ledger.assets, clock=clock or ledger.clock,
                          table_prefix=ledger.table_prefix)
        self.made.append(again)
        return again

    def finish(self) -> list[str]:
        """Check every ledger made, then drop its tables; returns the violations found."""
        problems: list[str] = []
        try:
            for ledger in self.made:
                problems.extend(f"{self.backend}: {v}" for v in ledger.check_invariants())
        finally:
            dropped: set[str] = set()  # a reopened handle shares its original's tables
            for ledger in self.made:
                if isinstance(ledger, SqlLedger):
                    if self.backend == "postgres" and ledger.table_prefix not in dropped:
                        ledger.drop_tables()
                        dropped.add(ledger.table_prefix)
                    ledger.close()
        return problems


ALL_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SQL_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    factory = LedgerFactory(request.param, tmp_path)
    yield factory
    problems = factory.finish()
    assert not problems, "invariants violated at the end of the test:\n" + "\n".join(problems)


@pytest.fixture(params=ALL_BACKENDS)
def ledger_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """``make(clock) -> ledger`` on in-memory, SQLite and PostgreSQL."""
    yield from _factory(request, tmp_path)


@pytest.fixture(params=SQL_BACKENDS)
def sql_ledger_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """``make(clock) -> SqlLedger`` on SQLite and PostgreSQL (for thread-safety tests)."""
    yield from _factory(request, tmp_path)


# -- party services over HTTP (services/api) -------------------------------------------------------


class LedgerAppFactory:
    """Makes ledger-service apps on one backend; checks invariants and drops their tables at the end."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._url = require_postgres() if backend == "postgres" else ""
        self.made: list[Any] = []

    def __call__(self, clock: Clock | None = None, **settings: Any) -> Any:
        from services.api import ApiSettings, create_ledger_app  # noqa: PLC0415 — only API tests need it

        clock = clock if clock is not None else FixedClock(1_000.0)
        if self.backend == "postgres":
            settings.setdefault("database_url", self._url)
            settings.setdefault("table_prefix", f"t_{uuid.uuid4().hex[:12]}_")
        else:
            settings.setdefault("data_dir", self._tmp_path / f"api-{len(self.made)}")
        settings.setdefault("party", "bank")
        app = create_ledger_app(ApiSettings(**settings), clock=clock)
        self.made.append(app)
        return app

    def finish(self) -> list[str]:
        from services.api import close_app  # noqa: PLC0415

        problems: list[str] = []
        for app in self.made:
            try:
                problems.extend(f"{self.backend}: {v}" for v in app.state.ledger.check_invariants())
            finally:
                if self.backend == "postgres":
                    app.state.ledger.drop_tables()
                    app.state.ledger_service.keys.drop_table()
                close_app(app)
        return problems


@pytest.fixture(params=SQL_BACKENDS)
def ledger_app_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerAppFactory]:
    """``make(clock=None, **settings) -> FastAPI`` ledger service on SQLite and PostgreSQL."""
    factory = LedgerAppFactory(request.param, tmp_path)
    yield factory
    problems = factory.finish()
    assert not problems, "invariants violated at the end of the test:\n" + "\n".join(problems)


# -- the order of the work under pytest-xdist (tests/scheduling.py) ----------------------------------


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` hands out the longest work units first; other modes are xdist's own."""
    if config.getvalue("dist") != "loadscope":
        return None
    return LongestFirstScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) sees every report
        config.pluginmanager.register(UnitTimes(), UNIT_TIMES)


def pytest_sessionfinish(session: pytest.Session) -> None:
    close_pg_copies()
    times = session.config.pluginmanager.get_plugin(UNIT_TIMES)
    if isinstance(times, UnitTimes):
        times.save(session.config)
