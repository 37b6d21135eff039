"""Schema migrations of the party databases, with Alembic, one version table per table prefix.

Every store that keeps tables in a party's database (a ledger's accounts and transfers, the
idempotency keys, the outbox) calls :func:`upgrade` when it opens, where it used to call
``create_all``. Why not ``create_all``: it creates a missing table but never changes an existing
one, so a new column in a release would meet last month's tables at run time. Revisions make every
change of a table an explicit, ordered, tested step.

How the revisions are organised (``services/migrations/versions/``):

- **A kind is an Alembic branch.** Each store's tables are one *kind* (``ledger``, ``idempotency``,
  ``outbox``) with its own line of revisions, ids ``<kind>_0001``, ``<kind>_0002``, …; the first
  carries the branch label ``<kind>``. The stores of one prefix open independently (the issuer's
  ledger, keys and outbox all use ``issuer_``; the bank's ledgers use ``bank_bank_1_``, its keys
  ``bank_``), so each kind upgrades on its own.
- **The prefix is a parameter.** The revisions name their tables ``f"{table_prefix()}accounts"``;
  the version of everything under one prefix is in ``<prefix>alembic_version`` (a row per kind).
  So several parties and ledgers share one PostgreSQL database, each at its own revision.
- **Databases from before migrations are adopted.** Tables that exist without a version row are
  the ones the old ``create_all`` made, which the first revision of each kind reproduces column
  for column (``tests/test_migrations.py`` checks this): they are stamped at that revision, and
  later revisions run from there. Some but not all of them → :class:`SchemaError`, nothing done.
- **One transaction, one lock.** An upgrade runs in one transaction on the store's own engine: on
  SQLite it starts with ``BEGIN IMMEDIATE`` (the database's write lock, held until the commit;
  SQLite's DDL is transactional), on PostgreSQL it takes an advisory lock on the prefix first. So
  processes that open the same tables at once upgrade them once, and a failed upgrade leaves
  nothing behind. Upgrading an up-to-date database only reads the version row.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from alembic import command, context
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    column,
    create_engine,
    delete,
    func,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import Inspector, make_url
from sqlalchemy.pool import NullPool

from services.database import sqlite_engine
from services.errors import CcsimError
from services.logging import get_logger

__all__ = [
    "SCRIPT_LOCATION",
    "KindState",
    "SchemaError",
    "Upgrade",
    "alembic_config",
    "current",
    "drop",
    "engine_for",
    "kinds",
    "new_revision",
    "table_prefix",
    "upgrade",
    "version_table",
]

SCRIPT_LOCATION: Final = Path(__file__).resolve().parent
"""This package's directory: ``env.py``, ``script.py.mako`` and ``versions/`` (package data)."""

_REVISION_ID = re.compile(r"^(?P<kind>[a-z][a-z0-9_]*?)_(?P<number>[0-9]{4})$")
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,20}$")
_log = get_logger(__name__)

State = Literal["current", "behind", "legacy", "unknown", "absent"]


class SchemaError(CcsimError, RuntimeError):
    """The tables of a prefix are not in a state a migration can start from (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What :func:`upgrade` did to one kind under one prefix."""

    kind: str
    table_prefix: str
    before: str | None  # the revision found (None: no version row)
    after: str  # the head it is at now
    adopted: bool  # tables from before migrations were found and stamped at the first revision

    @property
    def changed(self) -> bool:
        return self.adopted or self.before != self.after


@dataclass(frozen=True, slots=True)
class KindState:
    """Where one kind's tables under one prefix stand (:func:`current`)."""

    table_prefix: str
    kind: str
    revision: str | None
    head: str
    state: State  # current | behind (upgrade runs the rest) | legacy (made before migrations:
    # upgrade stamps it) | unknown (a revision this version of ccsim does not have) | absent


def version_table(prefix: str) -> str:
    """The Alembic version table of the tables named ``<prefix>…``."""
    return f"{prefix}alembic_version"


def table_prefix() -> str:
    """The prefix of the tables being migrated; call it inside a revision's ``upgrade()``."""
    return str(context.config.attributes.get("table_prefix", ""))


def alembic_config(prefix: str = "", connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for this package's scripts (no ``alembic.ini``): ``script_location``
    is the package directory, so it works from an installed package as from a checkout."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["table_prefix"] = prefix
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _script() -> ScriptDirectory:
    """The revisions, read once per process (read-only afterwards: safe to share across threads)."""
    script = ScriptDirectory.from_config(alembic_config())
    _ = script.revision_map.heads  # load the whole map now, before any thread shares it
    return script


@dataclass(frozen=True, slots=True)
class _Catalog:
    """What the upgrade of every store reads from the revisions, worked out once per script directory."""

    kinds: tuple[str, ...]
    heads: dict[str, str]
    known: frozenset[str]


@functools.lru_cache(maxsize=4)
def _catalog(script: ScriptDirectory) -> _Catalog:
    """Keyed by the script directory itself: a fresh one (``_script.cache_clear()``) is read anew."""
    kinds = tuple(sorted(_kind_of(base) for base in script.get_bases()))
    heads: dict[str, str] = {}
    for kind in kinds:
        rev = script.get_revision(f"{kind}@head")
        assert rev is not None  # every kind is a branch with a head
        heads[kind] = rev.revision
    return _Catalog(kinds, heads, frozenset(r.revision for r in script.walk_revisions()))


def kinds() -> tuple[str, ...]:
    """The kinds with revisions, sorted: the first revision of each names it (``<kind>_0001``)."""
    return _catalog(_script()).kinds


def _kind_of(revision: str) -> str:
    m = _REVISION_ID.match(revision)
    if m is None:
        raise SchemaError(f"revision id {revision!r} is not <kind>_<NNNN> (services/migrations/versions)")
    return m["kind"]


def _check_kind(kind: str) -> None:
    if kind not in kinds():
        raise ValueError(f"unknown schema kind {kind!r}; known: {', '.join(kinds())}")


def _head(kind: str) -> str:
    return _catalog(_script()).heads[kind]  # _check_kind: the branch exists


def _first_tables(kind: str) -> tuple[str, ...]:
    base: Script | None = _script().get_revision(f"{kind}_0001")
    tables = getattr(base.module, "creates_tables", None) if base is not None else None
    if not tables:
        raise SchemaError(f"revision {kind}_0001 must name the tables it creates in `creates_tables`")
    return tuple(tables)


def engine_for(url: str) -> Engine:
    """An engine for a database URL, as the stores make them: on SQLite, the ledger's recipe
    (WAL, busy timeout, ``BEGIN IMMEDIATE``), so an upgrade holds the write lock throughout."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("migrations need a SQLite file, not an in-memory database")

        return sqlite_engine(parsed, pool_size=1, max_overflow=0, pool_timeout=120)
    return create_engine(parsed, poolclass=NullPool)


def _lock(conn: Connection, prefix: str) -> None:
    """Serialise migrations of one prefix across processes (SQLite: BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"ccsim-migrations:{version_table(prefix)}".encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})


def _versions(conn: Connection, prefix: str, inspector: Inspector | None = None) -> tuple[str, ...]:
    """The revisions in the version table of ``prefix`` (none without the table): what Alembic's
    ``MigrationContext.get_current_heads`` reads, without configuring a migration context for it
    (most stores open on tables at the head already, and that read is all their upgrade does)."""
    name = version_table(prefix)
    if not (inspector or inspect(conn)).has_table(name):
        return ()
    return tuple(conn.execute(select(column("version_num")).select_from(table(name))).scalars())


def _revision_of(versions: Iterable[str], kind: str) -> str | None:
    mine = [v for v in versions if _REVISION_ID.match(v) and _kind_of(v) == kind]
    if len(mine) > 1:
        raise SchemaError(f"the version table holds {len(mine)} revisions of {kind}: {sorted(mine)}")
    return mine[0] if mine else None


def _known(revision: str) -> bool:
    return revision in _catalog(_script()).known


def upgrade(bind: Engine | str, kind: str, table_prefix: str = "") -> Upgrade:
    """Bring the ``kind`` tables named ``<table_prefix>…`` to the newest revision.

    ``bind`` is the store's own engine (on SQLite one made by ``sqlite_engine``) or a URL. A no-op
    when they are at the head already; tables from before migrations are stamped first (module
    doc). Raises :class:`SchemaError` for tables no revision can start from."""
    _check_kind(kind)
    engine, own = (bind, False) if isinstance(bind, Engine) else (engine_for(bind), True)
    try:
        with engine.begin() as conn:
            _lock(conn, table_prefix)
            return _upgrade(conn, kind, table_prefix)
    finally:
        if own:
            engine.dispose()


def _upgrade(conn: Connection, kind: str, prefix: str) -> Upgrade:
    head = _head(kind)
    inspector = inspect(conn)
    before = _revision_of(_versions(conn, prefix, inspector), kind)
    if before is not None and not _known(before):
        raise SchemaError(f"the {kind} tables {prefix}* are at revision {before}, which this version of "
                          f"ccsim does not have (its newest is {head}): the database is newer than the code")
    names = [prefix + t for t in _first_tables(kind)]
    present = [n for n in names if inspector.has_table(n)]
    if before is not None and not present:
        # The tables were dropped (drop_all) and the version row kept: the row no longer describes
        # anything, so the kind starts again from its first revision, as create_all did.
        _log.info("schema_version_without_tables", kind=kind, table_prefix=prefix, revision=before)
        _forget(conn, prefix, before)
        before = None
    missing = sorted(set(names) - set(present))
    if present and missing:
        raise SchemaError(f"the {kind} tables under prefix {prefix!r} are incomplete: {', '.join(present)} "
                          f"exist, {', '.join(missing)} do not; restore them or drop them all")
    if before == head:
        return Upgrade(kind, prefix, before, head, adopted=False)
    adopted = before is None and bool(present)
    cfg = alembic_config(prefix, conn)
    if adopted:
        command.stamp(cfg, f"{kind}_0001")  # the tables the old create_all made (module doc)
    command.upgrade(cfg, f"{kind}@head")
    after = _revision_of(_versions(conn, prefix), kind)
    if after != head:
        raise SchemaError(f"upgrading {kind} under {prefix!r} ended at {after}, not {head}")
    _log.info("schema_upgraded", kind=kind, table_prefix=prefix, before=before, after=after, adopted=adopted)
    return Upgrade(kind, prefix, before, head, adopted=adopted)


def _forget(conn: Connection, prefix: str, revision: str) -> None:
    vt = table(version_table(prefix), column("version_num"))
    conn.execute(delete(vt).where(vt.c.version_num == revision))


def drop(bind: Engine, kind: str, table_prefix: str, metadata: MetaData) -> None:
    """Drop a store's tables (``metadata``) and its kind's version row, in one transaction; the
    version table goes too once no kind is left in it. For throwaway databases: tests, ``--reset``."""
    _check_kind(kind)
    with bind.begin() as conn:
        _lock(conn, table_prefix)
        metadata.drop_all(conn)
        revision = _revision_of(_versions(conn, table_prefix), kind)
        if revision is not None:
            _forget(conn, table_prefix, revision)
        name = version_table(table_prefix)
        if inspect(conn).has_table(name):
            left = conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            if left == 0:
                Table(name, MetaData()).drop(conn)


def current(bind: Engine | str, table_prefix: str | None = None) -> list[KindState]:
    """Where each kind stands: under ``table_prefix`` (every kind, absent ones included), or under
    every prefix found in the database (``None``: version tables, and tables from before
    migrations)."""
    engine, own = (bind, False) if isinstance(bind, Engine) else (engine_for(bind), True)
    try:
        with engine.connect() as conn:
            found = _found(conn) if table_prefix is None else {table_prefix: set(kinds())}
            return [_state(conn, prefix, kind) for prefix in sorted(found) for kind in sorted(found[prefix])]
    finally:
        if own:
            engine.dispose()


def _state(conn: Connection, prefix: str, kind: str) -> KindState:
    head = _head(kind)
    revision = _revision_of(_versions(conn, prefix), kind)
    inspector = inspect(conn)
    present = [t for t in _first_tables(kind) if inspector.has_table(prefix + t)]
    state: State
    if revision is None:
        state = "legacy" if present else "absent"
    elif not _known(revision):
        state = "unknown"
    else:
        state = "current" if revision == head else "behind"
    return KindState(prefix, kind, revision, head, state)


def _found(conn: Connection) -> dict[str, set[str]]:
    """Prefix → kinds present in the database: from the version tables, and from complete sets of
    a kind's first tables without a version row (made before migrations)."""
    names = set(inspect(conn).get_table_names())
    out: dict[str, set[str]] = defaultdict(set)
    suffix = version_table("")
    for name in names:
        if name.endswith(suffix):
            prefix = name.removesuffix(suffix)
            for revision in _versions(conn, prefix):
                if _REVISION_ID.match(revision):
                    out[prefix].add(_kind_of(revision))
    for kind in kinds():
        first, *rest = _first_tables(kind)
        for name in names:
            prefix = name.removesuffix(first)
            if name.endswith(first) and all(prefix + t in names for t in rest):
                out[prefix].add(kind)
    return dict(out)


def new_revision(kind: str, message: str, *, new_kind: bool = False) -> Path:
    """Write the next revision file of ``kind`` (``new_kind``: the first one of a new kind) from
    the template, in this package's ``versions/``; the path of the file. For a checkout."""
    if not _KIND_NAME.match(kind):
        raise ValueError(f"a kind is lower-case letters, digits and _ (at most 21), got {kind!r}")
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)  # fresh: a revision written in this process counts
    existing = {_kind_of(base) for base in script.get_bases()}
    if new_kind:
        if kind in existing:
            raise ValueError(f"the kind {kind!r} exists; add a revision to it without new_kind")
        made: Any = command.revision(cfg, message, head="base", branch_label=kind, rev_id=f"{kind}_0001")
    else:
        if kind not in existing:
            raise ValueError(f"unknown schema kind {kind!r}; known: {', '.join(sorted(existing))}")
        head = script.get_revision(f"{kind}@head")
        assert head is not None
        number = int(_REVISION_ID.match(head.revision)["number"]) + 1  # type: ignore[index]
        made = command.revision(cfg, message, head=f"{kind}@head", rev_id=f"{kind}_{number:04d}")
    _script.cache_clear()
    return Path(made.path)
