"""Schema migrations (services/migrations): on SQLite and PostgreSQL.

What must hold:
- a fresh database gets every kind of tables at its head, and the stores work on them;
- upgrading an up-to-date database changes nothing;
- a database made by the old ``create_all`` (tables, no version table) is adopted (stamped) and
  keeps working with its data;
- the migrated schema is the one the code uses: DDL equal to what ``create_all`` makes, and
  Alembic's autogenerate comparison against the stores' own metadata finds no difference (so a
  column change without a revision fails here);
- a next revision of a kind, and the first revision of a new kind, run after the existing ones;
- tables no revision can start from are refused with nothing changed; ``ccsim db`` reports and
  upgrades.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import SQL_BACKENDS, require_postgres

import services.api.idempotency as idempotency_module
import services.api.outbox as outbox_module
import services.ledger.sql as sql_module
import services.ledger.sql_schema as sql_schema_module
from services import migrations
from services.api.idempotency import ClaimState, IdempotencyStore
from services.api.outbox import Outbox
from services.api.parties.durable import CommandClock, Durable, _command_table
from services.clock import FixedClock
from services.ledger import Account, AccountFlags, Transfer, TransferFlags, TransferResult
from services.ledger.sql import SqlLedger, UnitOfWork
from services.migrations import SchemaError, current, drop, engine_for, kinds, upgrade, version_table
from sim.db_cli import add_db_command

WEI_BIG = 3 * 2**64 + 12_345  # above 2**63 - 1: a NUMERIC-on-SQLite column would turn it into a float


@dataclass
class Db:
    url: str
    root: str  # every table this test makes starts with it

    def prefix(self, name: str) -> str:
        return f"{self.root}{name}_"


@pytest.fixture(params=SQL_BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        yield Db(f"sqlite:///{tmp_path / 'party.db'}", "m_")
        return
    found = Db(require_postgres(), f"mig_{uuid.uuid4().hex[:10]}_")  # the test database is shared
    yield found
    engine = sa.create_engine(found.url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        for name in sa.inspect(conn).get_table_names():
            if name.startswith(found.root):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def _stores(url: str, prefix: str) -> tuple[SqlLedger, IdempotencyStore, Outbox]:
    clock = FixedClock(1_000.0)
    return (SqlLedger(url, clock=clock, table_prefix=prefix), IdempotencyStore(url, table_prefix=prefix, clock=clock),
            Outbox(url, table_prefix=prefix, clock=clock))


def _old_stores(monkeypatch: pytest.MonkeyPatch, url: str, prefix: str) -> tuple[SqlLedger, IdempotencyStore, Outbox]:
    """The stores as they opened before migrations: the constructor, then ``create_all`` of the
    store's own metadata on its own engine (the line that ``upgrade_schema`` replaced)."""
    with monkeypatch.context() as m:
        for module in (sql_module, idempotency_module, outbox_module):
            m.setattr(module, "upgrade_schema", lambda *_args: None)
        ledger, keys, outbox = _stores(url, prefix)
    ledger._metadata.create_all(ledger._writer)
    keys._metadata.create_all(keys._engine)
    outbox._metadata.create_all(outbox._engine)
    return ledger, keys, outbox


def _close(*stores: Any) -> None:
    for store in stores:
        store.close()


def _versions(url: str, prefix: str) -> set[str]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(version_table(prefix)):
                return set()
            return set(conn.execute(sa.text(f'SELECT version_num FROM "{version_table(prefix)}"')).scalars())
    finally:
        engine.dispose()


def _heads() -> dict[str, str]:
    return {kind: migrations._head(kind) for kind in kinds()}


def _book(ledger: SqlLedger, tag: str) -> None:
    """Accounts and transfers that use every column kind: a big ETH amount, a hold, its post."""
    assert ledger.create_accounts([
        Account(f"{tag}-house", "ETH", owner="house", kind="custody",
                flags=AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
        Account(f"{tag}-wallet", "ETH", owner="holder:1", kind="wallet",
                flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
        Account(f"{tag}-merchant", "ETH", owner="merchant:1", kind="wallet"),
    ]) == [0, 0, 0]
    results = ledger.create_transfers([
        Transfer(f"{tag}-fund", f"{tag}-house", f"{tag}-wallet", WEI_BIG, "ETH", code="deposit"),
        Transfer(f"{tag}-hold", f"{tag}-wallet", f"{tag}-merchant", WEI_BIG - 5, "ETH", code="auth",
                 flags=TransferFlags.PENDING, timeout_s=60.0, user_data="card 1"),
        Transfer(f"{tag}-capture", f"{tag}-wallet", f"{tag}-merchant", 0, "ETH", code="capture",
                 flags=TransferFlags.POST_PENDING, pending_id=f"{tag}-hold"),
    ])
    assert [TransferResult(r) for r in results] == [TransferResult.OK] * 3


def _check_booked(ledger: SqlLedger, tag: str) -> None:
    wallet = ledger.account(f"{tag}-wallet")
    merchant = ledger.account(f"{tag}-merchant")
    assert wallet is not None and merchant is not None
    assert (wallet.credits_posted, wallet.debits_posted, wallet.debits_pending) == (WEI_BIG, WEI_BIG - 5, 0)
    assert merchant.credits_posted == WEI_BIG - 5
    assert type(merchant.credits_posted) is int
    hold = ledger.transfer(f"{tag}-hold")
    assert hold is not None and hold.timeout_s == 60.0 and hold.user_data == "card 1"
    assert ledger.check_invariants() == []


# -- fresh databases -------------------------------------------------------------------------------


def test_a_fresh_database_gets_every_kind_at_its_head_and_the_stores_work(db: Db) -> None:
    prefix = db.prefix("issuer")
    ledger, keys, outbox = _stores(db.url, prefix)
    try:
        assert _versions(db.url, prefix) == {_heads()["ledger"], _heads()["idempotency"], _heads()["outbox"]}
        _book(ledger, "a")
        _check_booked(ledger, "a")
        assert keys.claim("k1", "h" * 64).state is ClaimState.STARTED
        keys.finish("k1", 201, b'{"ok": true}', "application/json")
        replay = keys.claim("k1", "h" * 64)
        assert (replay.state, replay.status, replay.body) == (ClaimState.REPLAY, 201, b'{"ok": true}')
        assert outbox.stage_post(None, "row-1", "issuer", "/v1/x", "key-1", {"amount": "1.5"})
        assert [(e.id, e.body) for e in outbox.pending()] == [("row-1", {"amount": "1.5"})]
    finally:
        _close(ledger, keys, outbox)
    again = SqlLedger(db.url, clock=FixedClock(2_000.0), table_prefix=prefix)  # a restart
    try:
        _check_booked(again, "a")
    finally:
        again.close()


def test_prefixes_are_versioned_apart(db: Db) -> None:
    """Two ledgers of one database (two parties, or one party's two ledgers) each have their own
    version table; the second never sees the first one's tables or rows."""
    first, second = db.prefix("bank"), db.prefix("bank_bank_1")
    one = SqlLedger(db.url, table_prefix=first)
    two = SqlLedger(db.url, table_prefix=second)
    try:
        _book(one, "x")
        assert len(two) == 0
        assert _versions(db.url, first) == _versions(db.url, second) == {_heads()["ledger"]}
    finally:
        _close(one, two)


def test_upgrading_an_up_to_date_database_changes_nothing(db: Db) -> None:
    prefix = db.prefix("p")
    ledger, keys, outbox = _stores(db.url, prefix)
    _book(ledger, "b")
    before = _schema(db.url, prefix)
    engine = engine_for(db.url)
    try:
        for kind in ("ledger", "idempotency", "outbox"):
            done = upgrade(engine, kind, prefix)
            head = _heads()[kind]
            assert (done.before, done.after, done.adopted, done.changed) == (head, head, False, False)
        assert _schema(db.url, prefix) == before
        _check_booked(ledger, "b")
    finally:
        engine.dispose()
        _close(ledger, keys, outbox)


def test_many_openers_at_once_upgrade_once(db: Db) -> None:
    """Processes starting together on fresh tables: the lock (BEGIN IMMEDIATE on SQLite, an
    advisory lock on PostgreSQL) makes one of them create the tables and the others find them."""
    prefix = db.prefix("race")
    engines = [engine_for(db.url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[migrations.Upgrade] = []
    errors: list[BaseException] = []

    def open_one(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(engine, "ledger", prefix))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # a lost lock could leave two creators waiting on each other
    assert not any(t.is_alive() for t in threads)
    for e in engines:
        e.dispose()
    assert errors == []
    assert sorted(r.changed for r in results) == [False, False, False, True]
    assert _versions(db.url, prefix) == {_heads()["ledger"]}


# -- databases from before migrations ----------------------------------------------------------------


def test_a_database_made_by_create_all_is_adopted_and_keeps_its_data(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = db.prefix("old")
    old_ledger, old_keys, old_outbox = _old_stores(monkeypatch, db.url, prefix)
    _book(old_ledger, "c")
    assert old_keys.claim("k-old", "a" * 64).state is ClaimState.STARTED
    assert old_outbox.stage_post(None, "owed-1", "bank", "/v1/y", "key-y", {"n": 1})
    _close(old_ledger, old_keys, old_outbox)
    assert _versions(db.url, prefix) == set()
    assert [(s.kind, s.state) for s in current(db.url, prefix) if s.kind != "commands"] == [
        ("idempotency", "legacy"), ("ledger", "legacy"), ("outbox", "legacy")]

    ledger, keys, outbox = _stores(db.url, prefix)  # the new code opens the old tables
    try:
        assert _versions(db.url, prefix) == {_heads()["ledger"], _heads()["idempotency"], _heads()["outbox"]}
        _check_booked(ledger, "c")
        assert keys.claim("k-old", "a" * 64).state is ClaimState.IN_FLIGHT  # the old claim is there
        assert [e.id for e in outbox.pending()] == ["owed-1"]
        _book(ledger, "d")  # and new books go on top
        _check_booked(ledger, "d")
        assert [(s.kind, s.state) for s in current(db.url, prefix) if s.kind != "commands"] == [
            ("idempotency", "current"), ("ledger", "current"), ("outbox", "current")]
    finally:
        _close(ledger, keys, outbox)


def test_upgrade_says_it_adopted_old_tables(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = db.prefix("old2")
    _close(*_old_stores(monkeypatch, db.url, prefix))
    done = upgrade(db.url, "ledger", prefix)
    assert (done.before, done.after, done.adopted, done.changed) == (None, "ledger_0001", True, True)
    assert upgrade(db.url, "ledger", prefix).changed is False


def test_incomplete_tables_are_refused_and_nothing_is_changed(db: Db) -> None:
    prefix = db.prefix("half")
    engine = engine_for(db.url)
    try:
        metadata = sa.MetaData()
        sql_schema_module._define_tables(metadata, prefix)
        metadata.tables[f"{prefix}accounts"].create(engine)
        with pytest.raises(SchemaError, match=rf"{prefix}accounts exist, {prefix}transfers do not"):
            SqlLedger(db.url, table_prefix=prefix)
        names = set(sa.inspect(engine).get_table_names())
        assert f"{prefix}accounts" in names
        assert f"{prefix}transfers" not in names
        assert version_table(prefix) not in names
    finally:
        engine.dispose()


def test_a_database_newer_than_the_code_is_refused(db: Db) -> None:
    prefix = db.prefix("new")
    SqlLedger(db.url, table_prefix=prefix).close()
    engine = engine_for(db.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'UPDATE "{version_table(prefix)}" SET version_num = :v'), {"v": "ledger_0099"})
        with pytest.raises(SchemaError, match="ledger_0099, which this version of ccsim does not have"):
            SqlLedger(db.url, table_prefix=prefix)
        assert [(s.kind, s.revision, s.state) for s in current(engine, prefix) if s.kind == "ledger"] == [
            ("ledger", "ledger_0099", "unknown")]
    finally:
        engine.dispose()


def test_dropped_tables_are_made_again_and_drop_forgets_the_version(db: Db) -> None:
    prefix = db.prefix("reset")
    ledger, keys, outbox = _stores(db.url, prefix)
    _book(ledger, "e")
    ledger.drop_tables()  # drop_all of the tables only: the version row stays (--reset, tests)
    ledger.close()
    ledger = SqlLedger(db.url, table_prefix=prefix)
    try:
        assert len(ledger) == 0
        _book(ledger, "e")  # the same ids again: the tables are new and empty
        assert ledger.check_invariants() == []
        drop(ledger._writer, "ledger", prefix, ledger._metadata)
        assert _versions(db.url, prefix) == {_heads()["idempotency"], _heads()["outbox"]}
        drop(keys._engine, "idempotency", prefix, keys._metadata)
        drop(outbox._engine, "outbox", prefix, outbox._metadata)
        engine = engine_for(db.url)
        left = [n for n in sa.inspect(engine).get_table_names() if n.startswith(prefix)]
        engine.dispose()
        assert left == []  # the version table went with the last kind
    finally:
        _close(ledger, keys, outbox)


# -- the migrated schema is the code's -----------------------------------------------------------------


def _schema(url: str, prefix: str) -> dict[str, Any]:
    """The tables ``<prefix>…`` (without the version table) as the database describes them, with
    the prefix written ``<p>``: SQLite's stored DDL; PostgreSQL's columns, constraints, indexes."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)

    def norm(value: Any) -> Any:
        return value.replace(prefix, "<p>") if isinstance(value, str) else value

    def mine(name: str) -> bool:
        return name.startswith(prefix) and name != version_table(prefix)

    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                rows = conn.execute(sa.text("SELECT type, name, tbl_name, sql FROM sqlite_master")).all()
                return {"sqlite_master": sorted(tuple(map(norm, r)) for r in rows if mine(r.tbl_name))}
            columns = conn.execute(sa.text(
                "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length, "
                "numeric_precision, numeric_scale, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = current_schema()")).all()
            constraints = conn.execute(sa.text(
                "SELECT tc.table_name, tc.constraint_name, tc.constraint_type, k.column_name "
                "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k "
                "ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema "
                "WHERE tc.table_schema = current_schema()")).all()
            indexes = conn.execute(sa.text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")).all()
            return {key: sorted(tuple(map(norm, r)) for r in rows if mine(r[0]))
                    for key, rows in (("columns", columns), ("constraints", constraints), ("indexes", indexes))}
    finally:
        engine.dispose()


def test_the_revisions_make_exactly_the_tables_create_all_made(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    migrated, legacy = db.prefix("new"), db.prefix("old")
    _close(*_stores(db.url, migrated))
    _close(*_old_stores(monkeypatch, db.url, legacy))
    got, expected = _schema(db.url, migrated), _schema(db.url, legacy)
    assert got == expected
    tables = {row[0] if "columns" in got else row[2] for rows in got.values() for row in rows}
    assert tables == {"<p>accounts", "<p>transfers", "<p>idempotency_keys", "<p>outbox"}


def _code_metadata(url: str, prefix: str) -> tuple[sa.MetaData, list[Any]]:
    """The tables the code reads and writes, from the stores themselves (opening them migrates)."""
    stores = _stores(url, prefix)
    union = sa.MetaData()
    for store in stores:
        for t in store._metadata.tables.values():
            t.to_metadata(union)
    return union, list(stores)


def _differences(url: str, prefix: str, metadata: sa.MetaData) -> list[Any]:
    """``alembic check``: what autogenerate would put in a new revision for ``metadata``."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "version_table": version_table(prefix), "compare_type": True,
                "include_name": lambda name, type_, _parents: type_ != "table" or str(name).startswith(prefix),
            })
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_the_migrated_schema_matches_the_code_and_the_check_can_fail(db: Db) -> None:
    prefix = db.prefix("chk")
    metadata, stores = _code_metadata(db.url, prefix)
    try:
        assert _differences(db.url, prefix, metadata) == []
        # The check sees a column the code has and no revision made, and a changed amount type.
        metadata.tables[f"{prefix}outbox"].append_column(sa.Column("note", sa.Text(), nullable=True))
        metadata.tables[f"{prefix}accounts"].c.credits_posted.type = sa.Numeric(20, 0)
        found = {d[0] if isinstance(d, tuple) else d[0][0] for d in _differences(db.url, prefix, metadata)}
        assert found == {"add_column", "modify_type"}
    finally:
        _close(*stores)


def test_the_command_log_is_a_kind_of_its_own(db: Db) -> None:
    """The party's command log (services/api/parties/durable.py) is migrated like the stores: its
    table equals the code's, an old create_all table is adopted with its rows, drop forgets it."""
    migrated, legacy = db.prefix("cmd"), db.prefix("cmdold")
    unit = UnitOfWork(db.url)
    try:
        log = Durable(unit, CommandClock(FixedClock(1.0)), migrated, threading.RLock())
        assert _differences(db.url, migrated, log._metadata) == []
        assert _versions(db.url, migrated) == {_heads()["commands"]}
        old = sa.MetaData()
        _command_table(old, legacy)
        old.create_all(unit.engine)  # as Durable made it before the revision existed
        with unit.engine.begin() as conn:
            conn.execute(sa.insert(old.tables[f"{legacy}commands"]), [
                {"at_s": 1.0, "target": "service", "method": "_screen", "args": b"x", "outcome": "ok"}])
        adopted = Durable(unit, CommandClock(FixedClock(1.0)), legacy, threading.RLock())
        assert len(adopted) == 1 and _versions(db.url, legacy) == {_heads()["commands"]}
        for store in (log, adopted):
            store.drop_table()
        assert _versions(db.url, migrated) == set() and _versions(db.url, legacy) == set()
    finally:
        unit.close()


# -- the next revisions ----------------------------------------------------------------------------------


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the migration scripts to add revisions to (the package's own stay untouched)."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.SCRIPT_LOCATION, copy, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    monkeypatch.setattr(migrations, "SCRIPT_LOCATION", copy)
    migrations._script.cache_clear()
    yield copy
    migrations._script.cache_clear()


def _write_body(path: Path, upgrade_body: str, downgrade_body: str, creates: str | None = None) -> None:
    """Fill in a revision written from the template (what its author does by hand)."""
    text = path.read_text()
    head = text.split("\ndef upgrade() -> None:")[0]
    if creates is not None:
        assert "creates_tables: tuple[str, ...] = ()" in head
        head = head.replace("creates_tables: tuple[str, ...] = ()", f"creates_tables: tuple[str, ...] = {creates}")
    path.write_text(f"{head}\ndef upgrade() -> None:\n    p = table_prefix()\n{upgrade_body}\n\n"
                    f"def downgrade() -> None:\n    p = table_prefix()\n{downgrade_body}\n")


def test_a_next_revision_and_a_new_kind_run_after_the_first(db: Db, scripts: Path) -> None:
    prefix = db.prefix("next")
    ledger = SqlLedger(db.url, table_prefix=prefix)
    _book(ledger, "f")
    ledger.close()

    second = migrations.new_revision("ledger", "accounts get a note")
    assert second.name == "ledger_0002_accounts_get_a_note.py" and second.parent == scripts / "versions"
    assert 'down_revision: str | Sequence[str] | None = \'ledger_0001\'' in second.read_text()
    _write_body(second,
                '    with op.batch_alter_table(f"{p}accounts") as batch:\n'
                '        batch.add_column(sa.Column("note", sa.Text(), nullable=True))',
                '    with op.batch_alter_table(f"{p}accounts") as batch:\n        batch.drop_column("note")')
    log = migrations.new_revision("snapshots", "state snapshots", new_kind=True)
    assert log.name == "snapshots_0001_state_snapshots.py"
    assert "branch_labels: str | Sequence[str] | None = ('snapshots',)" in log.read_text()
    _write_body(log,
                '    op.create_table(f"{p}snapshots", sa.Column("seq", sa.Integer(), primary_key=True),\n'
                '                    sa.Column("method", sa.String(64), nullable=False))',
                '    op.drop_table(f"{p}snapshots")', creates='("snapshots",)')
    assert set(kinds()) >= {"ledger", "idempotency", "outbox", "commands", "snapshots"}
    assert [(s.kind, s.state) for s in current(db.url, prefix) if s.kind in ("ledger", "snapshots")] == [
        ("ledger", "behind"), ("snapshots", "absent")]

    done = upgrade(db.url, "ledger", prefix)
    assert (done.before, done.after, done.changed) == ("ledger_0001", "ledger_0002", True)
    assert upgrade(db.url, "snapshots", prefix).after == "snapshots_0001"
    assert upgrade(db.url, "ledger", prefix).changed is False
    assert _versions(db.url, prefix) == {"ledger_0002", "snapshots_0001"}
    engine = sa.create_engine(db.url, poolclass=sa.NullPool)
    try:
        inspector = sa.inspect(engine)
        assert "note" in {c["name"] for c in inspector.get_columns(f"{prefix}accounts")}
        assert inspector.has_table(f"{prefix}snapshots")
    finally:
        engine.dispose()
    reopened = SqlLedger(db.url, table_prefix=prefix)  # the books survived the change of table
    try:
        _check_booked(reopened, "f")
    finally:
        reopened.close()


def test_the_revisions_follow_the_naming_the_upgrade_relies_on() -> None:
    """Ids ``<kind>_<NNNN>`` counting from 0001 in one line per kind; the first names its tables
    and carries the kind as branch label. (Adoption of old tables and the kind of an unknown
    revision are read from these.)"""
    script = migrations._script()
    by_kind: dict[str, list[str]] = {}
    for rev in script.walk_revisions():
        kind = migrations._kind_of(rev.revision)
        by_kind.setdefault(kind, []).append(rev.revision)
        number = int(rev.revision.rsplit("_", 1)[1])
        if number == 1:
            assert rev.down_revision is None
            assert rev.module.branch_labels == (kind,)
            assert rev.module.creates_tables
        else:
            assert rev.down_revision == f"{kind}_{number - 1:04d}"
    assert {"ledger", "idempotency", "outbox"} <= set(by_kind) == set(kinds())
    for kind, revisions in by_kind.items():
        assert sorted(revisions) == [f"{kind}_{n:04d}" for n in range(1, len(revisions) + 1)]
        assert migrations._head(kind) == max(revisions)


# -- ccsim db --------------------------------------------------------------------------------------------


def _ccsim_db(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ccsim")
    commands: dict[str, Any] = {}
    add_db_command(parser.add_subparsers(dest="command", required=True), commands)
    args = parser.parse_args(["db", *argv])
    return int(commands[args.command](args))


def test_ccsim_db_reports_adopts_and_upgrades(db: Db, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    prefix = db.prefix("cli")
    _close(*_old_stores(monkeypatch, db.url, prefix))
    capsys.readouterr()  # the set-up's own log lines: the command's output starts here
    assert _ccsim_db("current", "--database-url", db.url, "--prefix", prefix, "--check") == 1
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["prefix", "kind", "revision", "head", "state"]
    assert [prefix, "ledger", "-", "ledger_0001", "legacy"] in rows
    assert _ccsim_db("upgrade", "--database-url", db.url, "--prefix", prefix) == 0
    out = capsys.readouterr().out
    assert f"{prefix} ledger: adopted the tables made before migrations at ledger_0001, now at ledger_0001" in out
    assert _versions(db.url, prefix) == {_heads()["ledger"], _heads()["idempotency"], _heads()["outbox"]}
    assert _ccsim_db("current", "--database-url", db.url, "--prefix", prefix, "--check") == 0
    assert _ccsim_db("upgrade", "--database-url", db.url, "--prefix", prefix) == 0
    assert f"{prefix} outbox: up to date at outbox_0001" in capsys.readouterr().out

    fresh = db.prefix("cli2")
    assert _ccsim_db("upgrade", "--database-url", db.url, "--prefix", fresh) == 2  # nothing there to upgrade
    assert "pass --kind to create them" in capsys.readouterr().err
    assert _ccsim_db("upgrade", "--database-url", db.url, "--prefix", fresh, "--kind", "outbox") == 0
    assert f"{fresh} outbox: created at outbox_0001" in capsys.readouterr().out
    assert _versions(db.url, fresh) == {_heads()["outbox"]}


def test_ccsim_db_refuses_bad_input_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    assert _ccsim_db("current", "--database-url", f"sqlite:///{missing}") == 2
    assert _ccsim_db("upgrade", "--database-url", f"sqlite:///{missing}") == 2
    assert not missing.exists()
    assert _ccsim_db("current", "--database-url", "not a url") == 2
    assert "--database-url" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert _ccsim_db("upgrade", "--database-url", url, "--kind", "ledgers") == 2
    assert "--kind: unknown ledgers" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()  # the refused upgrade did not even create the file


def test_ccsim_db_current_finds_every_prefix_of_a_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    SqlLedger(url, table_prefix="bank_1_").close()
    IdempotencyStore(url).close()
    _close(*_old_stores(monkeypatch, url, "old_"))
    capsys.readouterr()  # the set-up's own log lines: the command's output starts here
    assert _ccsim_db("current", "--database-url", url) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[:2] + r[-1:] for r in rows] == [
        ['""', "idempotency", "current"], ["bank_1_", "ledger", "current"],
        ["old_", "idempotency", "legacy"], ["old_", "ledger", "legacy"], ["old_", "outbox", "legacy"]]
