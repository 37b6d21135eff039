"""``ccsim db``: the schema of the party databases (Alembic revisions in ``services/migrations``).

    ccsim db current  --database-url URL [--prefix P] [--check]
    ccsim db upgrade  --database-url URL [--prefix P] [--kind KIND ...]
    ccsim db revision --kind KIND -m MESSAGE [--new-kind]

The services upgrade their own tables when they start; these commands do it ahead of a start (a
release with a new revision), show where a database stands, and write a new revision file in a
checkout. Without ``--prefix`` they act on every prefix found in the database. ``upgrade`` without
``--kind`` upgrades the kinds that are there; ``--kind`` creates them if they are not.

Exit codes: 0 ok; 1 tables no revision can start from, or (``current --check``) not at the head;
2 bad input (a bad URL, no such database, an unknown kind).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from services.logging import configure_logging
from services.migrations import KindState, SchemaError, current, engine_for, kinds, new_revision, upgrade

__all__ = ["add_db_command", "db_command"]

EXIT_OK: Final = 0
EXIT_SCHEMA: Final = 1
EXIT_BAD_INPUT: Final = 2


def add_db_command(subparsers: Any, commands: dict[str, Callable[[argparse.Namespace], int]] | None = None) -> None:
    """Add ``db`` to ``ccsim``'s sub-commands (and to its dispatch table, when given)."""
    p = subparsers.add_parser("db", help="show or upgrade the schema of the party databases (Alembic)")
    sub = p.add_subparsers(dest="db_command", required=True)
    cur = sub.add_parser("current", help="the revision of each kind of tables, per table prefix")
    up = sub.add_parser("upgrade", help="bring the tables to the newest revision (adopting tables made "
                                        "before migrations)")
    for q in (cur, up):
        q.add_argument("--database-url", required=True,
                       help="sqlite:///data/live/issuer.db, postgresql://user@host/db, …")
        q.add_argument("--prefix", default=None,
                       help="only the tables named <prefix>… (default: every prefix found)")
    cur.add_argument("--check", action="store_true", help="exit 1 unless every kind found is at its head")
    up.add_argument("--kind", dest="kinds", action="append", default=[], metavar="KIND",
                    help=f"create or upgrade this kind ({', '.join(kinds())}; repeatable); "
                         "default: the kinds found")
    rev = sub.add_parser("revision", help="write the next revision file of a kind (in a checkout)")
    rev.add_argument("--kind", required=True)
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--new-kind", action="store_true", help="the first revision of a new kind of tables")
    p.set_defaults(func=db_command)
    if commands is not None:
        commands["db"] = db_command


def _err(message: str) -> None:
    print(f"ccsim db: {message}", file=sys.stderr)


def _shown(prefix: str) -> str:
    return prefix or '""'


def db_command(args: argparse.Namespace) -> int:
    configure_logging(level="warning")  # what happened is printed below; warnings go to stderr
    if args.db_command == "revision":
        try:
            path = new_revision(args.kind, args.message, new_kind=args.new_kind)
        except ValueError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
        print(path)
        return EXIT_OK
    try:
        engine = _engine(args.database_url, creating=args.db_command == "upgrade" and bool(args.kinds))
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    try:
        if args.db_command == "current":
            return _current(engine, args.prefix, check=args.check)
        return _upgrade(engine, args.prefix, list(args.kinds))
    except OperationalError as exc:
        _err(f"cannot use the database: {str(exc.orig).strip().splitlines()[0]}")
        return EXIT_BAD_INPUT
    finally:
        engine.dispose()


def _engine(url: str, *, creating: bool) -> Engine:
    """The engine; a SQLite file must exist unless tables are being created in it."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"--database-url: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and not creating \
            and not Path(parsed.database).is_file():
        raise ValueError(f"--database-url: no database file {parsed.database}")
    try:
        return engine_for(url)
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise ValueError(f"--database-url: {exc}") from None


def _current(engine: Engine, prefix: str | None, *, check: bool) -> int:
    states = current(engine, prefix)
    if not states:
        print("no ccsim tables in this database" + ("" if prefix is None else f" under {_shown(prefix)}"))
        return EXIT_OK
    print(_table(states))
    behind = [s for s in states if s.state not in ("current", "absent")]
    return EXIT_SCHEMA if check and behind else EXIT_OK


def _table(states: list[KindState]) -> str:
    rows = [("prefix", "kind", "revision", "head", "state")]
    rows += [(_shown(s.table_prefix), s.kind, s.revision or "-", s.head, s.state) for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _upgrade(engine: Engine, prefix: str | None, wanted: list[str]) -> int:
    unknown = sorted(set(wanted) - set(kinds()))
    if unknown:
        _err(f"--kind: unknown {', '.join(unknown)}; known: {', '.join(kinds())}")
        return EXIT_BAD_INPUT
    if wanted:
        targets = [(prefix or "", kind) for kind in dict.fromkeys(wanted)]
    else:
        targets = [(s.table_prefix, s.kind) for s in current(engine, prefix) if s.state != "absent"]
    if not targets:
        where = "" if prefix is None else f" under {_shown(prefix)}"
        _err(f"no ccsim tables in this database{where}; pass --kind to create them")
        return EXIT_BAD_INPUT
    for table_prefix, kind in targets:
        try:
            done = upgrade(engine, kind, table_prefix)
        except SchemaError as exc:
            _err(f"{_shown(table_prefix)} {kind}: {exc} (nothing changed for it)")
            return EXIT_SCHEMA
        if done.adopted:
            what = f"adopted the tables made before migrations at {kind}_0001, now at {done.after}"
        elif done.before is None:
            what = f"created at {done.after}"
        elif done.changed:
            what = f"{done.before} -> {done.after}"
        else:
            what = f"up to date at {done.after}"
        print(f"{_shown(table_prefix)} {kind}: {what}")
    return EXIT_OK
