"""Durable domain state for the party services: a command log, replayed at start-up.

The exchange, issuer and network keep state besides their books — cards and authorizations,
order-book depth and tax lots, open batches and settlement windows. None of it may be lost when
a process is killed, and none of it may drift from the books. So every operation that changes a
party's state is a **command**: a method of a registered object (the domain object or the service
itself) called with plain, picklable arguments. :meth:`Durable.command` runs it

1. under the service's domain lock, with the clock **frozen** for its duration
   (:class:`CommandClock`), inside one database transaction shared by all the party's ledgers
   (:class:`services.ledger.sql.UnitOfWork`), and
2. appends ``(time, target, method, arguments, outcome)`` to the party's command log *in that same
   transaction*, so the log and the books commit together or not at all.

At start-up (:meth:`Durable.recover`) a party with a log rebuilds its state by replaying the log
against fresh domain objects on **in-memory** ledgers, with the clock set to each command's
recorded time; the domain is deterministic, so this reproduces the state and every booking. The
replayed books are then compared, transfer by transfer and account by account, with the books in
the database: any difference stops the start-up with the first difference named (the state is
never silently mixed). Only then are the domain objects pointed at the database ledgers
(:class:`SwitchLedger`) and the service starts taking requests.

A command that raises an ordinary exception (a refusal) is logged with that outcome, because its
partial effects, if any, are real; replay expects the same exception. A *database* failure inside
a command (the database went away) rolls the transaction back; the in-memory state may then hold
effects the database does not, so the party is marked broken and the next command first rebuilds
everything from the log (:meth:`Durable.ensure_sound`) — or answers 503 while the database is
still away.

Messages a party owes another (proceeds, settlement payments) are rows of its durable outbox,
staged in the booking's transaction (:mod:`services.api.outbox`); replay never sends anything.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from services.api.problems import ProblemError
from services.clock import Clock
from services.errors import CcsimError
from services.ledger import (
    Account,
    AccountResult,
    InMemoryLedger,
    PendingState,
    Transfer,
    TransferResult,
    Violation,
)
from services.ledger.sql import SqlLedger, TransactionHook, UnitOfWork, sqlite_engine
from services.logging import get_logger
from services.migrations import drop as drop_schema
from services.migrations import upgrade as upgrade_schema

__all__ = [
    "CommandClock", "DurabilityError", "Durable", "ReplayReport", "SnapshotReads", "StatefulService", "SwitchLedger",
    "seed_digest", "snapshot_copy",
]

T = TypeVar("T")
_log = get_logger(__name__)
_SEED = "__seed__"


class DurabilityError(CcsimError, RuntimeError):
    """The state cannot be rebuilt or kept in step with the books; the message says why."""


class CommandClock:
    """The party's clock: the base clock, except that time stands still during a command (every
    read of ``now()`` inside one command returns its start time, on the thread running it) and
    that during a replay it shows the recorded time of the command being replayed."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._local = threading.local()
        self._replay_at: float | None = None

    def now(self) -> float:
        if self._replay_at is not None:
            return self._replay_at
        frozen: float | None = getattr(self._local, "frozen", None)
        return frozen if frozen is not None else self.base.now()

    @contextmanager
    def frozen(self) -> Iterator[float]:
        """Freeze time on this thread (joins an outer freeze)."""
        outer: float | None = getattr(self._local, "frozen", None)
        at = self.now() if outer is None else outer
        self._local.frozen = at
        try:
            yield at
        finally:
            self._local.frozen = outer

    def replay_at(self, at: float | None) -> None:
        self._replay_at = at


class SwitchLedger:
    """A ledger that forwards to another: an in-memory ledger while the state is replayed, the
    party's database ledger once it runs. Domain objects hold the switch, never the target."""

    def __init__(self, target: InMemoryLedger | SqlLedger) -> None:
        self.target: InMemoryLedger | SqlLedger = target

    @property
    def name(self) -> str:
        return self.target.name

    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        return self.target.create_accounts(accounts)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        return self.target.create_transfers(transfers)

    def account(self, account_id: str) -> Account | None:
        return self.target.account(account_id)

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self.target.transfer(transfer_id)

    def pending_state(self, transfer_id: str) -> PendingState | None:
        return self.target.pending_state(transfer_id)

    def expire_pending(self) -> list[Transfer]:
        return self.target.expire_pending()

    def accounts(self) -> Iterator[Account]:
        return self.target.accounts()

    def journal(self) -> Iterator[Transfer]:
        return self.target.journal()

    def pending_transfers(self) -> Iterator[Transfer]:
        return self.target.pending_transfers()

    def check_invariants(self) -> list[Violation]:
        return self.target.check_invariants()

    def __len__(self) -> int:
        return len(self.target)

    def also_in_transaction(self, hook: TransactionHook) -> AbstractContextManager[None]:
        """The database ledger's hook (an outbox row in the booking's transaction); nothing during
        a replay, whose bookings are already in the database with their rows."""
        if isinstance(self.target, SqlLedger):
            return self.target.also_in_transaction(hook)
        return nullcontext()


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


class StatefulService(ABC):
    """A party service whose domain objects are rebuilt from its command log (exchange, issuer,
    network). Subclasses build the objects on their switch ledgers (:meth:`_build`), seed them
    (:meth:`_seed`) and name the (switch, database ledger) pairs; :meth:`_start` does the rest."""

    durable: Durable
    seed_digest: str
    assets: Any

    @abstractmethod
    def _build(self) -> None:
        """Build the domain objects on the switch ledgers and register them as command targets."""

    @abstractmethod
    def _seed(self) -> None:
        """Seed the freshly built domain objects from the party's seed."""

    @abstractmethod
    def _ledger_pairs(self) -> list[tuple[SwitchLedger, SqlLedger]]:
        """Each switch the domain objects hold, with the database ledger it stands for."""

    def _create(self) -> None:
        """Build the domain objects and seed them: the first command of the log."""
        self._build()
        self._seed()

    def _start(self) -> None:
        """Seed new books, or rebuild the state from the command log and check it against them."""
        self.durable.recover(self._create, self.seed_digest, self._ledger_pairs(), assets=self.assets)


@dataclass
class ReplayReport:
    """What the start-up found: served on ``GET /v1/recovery`` under ``state``."""

    commands_replayed: int = 0
    transfers_verified: int = 0
    accounts_verified: int = 0
    replay_s: float = 0.0
    rebuilds: int = 0
    started: str = "fresh"  # fresh | replayed

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "commands_replayed": self.commands_replayed,
                "transfers_verified": self.transfers_verified, "accounts_verified": self.accounts_verified,
                "replay_s": round(self.replay_s, 3), "rebuilds_after_database_failure": self.rebuilds}


def _command_table(metadata: MetaData, prefix: str) -> Table:
    return Table(
        f"{prefix}commands", metadata,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("at_s", Float, nullable=False),
        Column("target", String(64), nullable=False),
        Column("method", String(64), nullable=False),
        Column("args", LargeBinary, nullable=False),
        Column("outcome", String(16), nullable=False),
    )


@dataclass(frozen=True)
class _Row:
    seq: int
    at_s: float
    target: str
    method: str
    args: bytes
    outcome: str


class Durable:
    """One party's command log and replay (see the module docstring).

    ``unit`` is the party's unit of work (its ledgers are built with it); ``clock`` the
    :class:`CommandClock` its domain objects and ledgers read; ``lock`` the domain lock.
    """

    def __init__(self, unit: UnitOfWork, clock: CommandClock, table_prefix: str, lock: threading.RLock) -> None:
        self.unit = unit
        self.clock = clock
        self.lock = lock
        self._metadata = MetaData()
        self._prefix = table_prefix
        self._table = _command_table(self._metadata, table_prefix)
        upgrade_schema(unit.engine, "commands", table_prefix)  # Alembic revisions (services/migrations)
        self._targets: dict[str, object] = {}
        self._names: dict[int, str] = {}
        self._running = threading.local()
        self.broken = False
        self.report = ReplayReport()
        self._rebuild: Callable[[], None] | None = None

    # -- registration ------------------------------------------------------------------------
    def register(self, name: str, obj: object) -> None:
        """``obj``'s methods may be commands, logged under ``name`` (replaces an earlier object)."""
        old = self._targets.get(name)
        if old is not None:
            self._names.pop(id(old), None)
        self._targets[name] = obj
        self._names[id(obj)] = name

    def on_rebuild(self, rebuild: Callable[[], None]) -> None:
        """How the service rebuilds its domain objects and replays (after a database failure)."""
        self._rebuild = rebuild

    def drop_table(self) -> None:
        """Drop the command log and its version row (throwaway databases: tests)."""
        drop_schema(self.unit.engine, "commands", self._prefix, self._metadata)

    def reset(self) -> None:
        """An empty command log (``--reset``)."""
        self.drop_table()
        upgrade_schema(self.unit.engine, "commands", self._prefix)

    def __len__(self) -> int:
        with self.unit.engine.connect() as conn:
            return len(conn.execute(select(self._table.c.seq)).all())

    # -- commands ----------------------------------------------------------------------------
    def command(self, fn: Callable[..., T], *args: Any, refused: Callable[[T], bool] | None = None) -> T:
        """Run ``fn(*args)`` as a logged command (see the module docstring). ``fn`` is a bound
        method of a registered object. Inside a command, a nested command is a plain call (the
        outer one is what replay repeats).

        A *refusal* changes nothing, so it is not logged: a command that raises
        :class:`~services.api.problems.ProblemError`, or whose result ``refused(result)`` says is a
        refusal or a no-op (expiring no hold), and that wrote nothing to the books. (The domain checks before it changes
        anything; bad input leaves every table as it was, the log included.)"""
        with self.lock:
            if getattr(self._running, "depth", 0):
                return fn(*args)
            self.ensure_sound()
            owner = getattr(fn, "__self__", None)
            target = self._names.get(id(owner)) if owner is not None else None
            method = getattr(fn, "__name__", "")
            if target is None or getattr(owner, method, None) is None:
                raise TypeError(f"{fn!r} is not a method of a registered object; only those are commands")
            blob = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
            return self._run(target, method, blob, lambda: fn(*args), refused)

    def _run(self, target: str, method: str, blob: bytes, call: Callable[[], T],
             refused: Callable[[T], bool] | None = None) -> T:
        self._running.depth = 1
        failure: Exception | None = None
        result: Any = None
        try:
            with self.unit.scope(), self.clock.frozen() as at:
                try:
                    result = call()
                    outcome = "ok"
                except SQLAlchemyError:
                    raise
                except Exception as exc:  # its partial effects, if any, are real: replay repeats it
                    failure, outcome = exc, "raised"
                wrote = self.unit.written()
                if not wrote and (isinstance(failure, ProblemError)
                                  or (failure is None and refused is not None and refused(result))):
                    if failure is not None:
                        raise failure
                    return cast(T, result)
                row = {"at_s": at, "target": target, "method": method, "args": blob, "outcome": outcome}

                def append(conn: Any) -> None:
                    conn.execute(insert(self._table), [row])

                self.unit.before_commit(append)
        except SQLAlchemyError as exc:
            self.broken = True
            _log.error("command_not_committed", target=target, method=method, error=str(exc).splitlines()[0])
            raise
        finally:
            self._running.depth = 0
        if failure is not None:
            raise failure
        return cast(T, result)

    def seed(self, fn: Callable[[], None], digest: str) -> None:
        """Run the party's seeding as the log's first command (replay checks the seed is the same)."""
        with self.lock:
            self._run("", _SEED, pickle.dumps((digest,)), fn)

    def ensure_sound(self) -> None:
        """After a database failure, rebuild the state from the log before anything else runs."""
        if not self.broken:
            return
        if self._rebuild is None:
            raise DurabilityError("the state is out of step with the database and cannot be rebuilt")
        self._rebuild()
        self.broken = False
        self.report.rebuilds += 1
        _log.warning("state_rebuilt_after_database_failure", commands=self.report.commands_replayed)

    # -- start-up ----------------------------------------------------------------------------
    def rows(self) -> list[_Row]:
        with self.unit.engine.connect() as conn:
            t = self._table
            return [_Row(r.seq, r.at_s, r.target, r.method, r.args, r.outcome)
                    for r in conn.execute(select(t).order_by(t.c.seq))]

    def recover(self, seed: Callable[[], None], digest: str, ledgers: Sequence[tuple[SwitchLedger, SqlLedger]],
                *, assets: Any) -> ReplayReport:
        """Start on the books: seed them if new, else replay the log and check it against them.

        ``seed`` builds the domain objects on the switches of ``ledgers`` (each paired with the
        party's database ledger), registers them, and seeds them; it is the log's first command.
        """
        import time  # noqa: PLC0415 — wall time of the replay, for the report only

        started = time.perf_counter()
        rows = self.rows()
        report = ReplayReport(rebuilds=self.report.rebuilds)
        with self.lock:
            if not rows:
                for switch, sql in ledgers:
                    if len(sql) > 0:
                        raise DurabilityError(
                            f"{sql.name}: the database holds books but no command log to rebuild the state from; "
                            "start with --reset (CCSIM_RESET=1) or use another data directory")
                    switch.target = sql
                self.seed(seed, digest)
                self.report = report
                return report
            memory = [InMemoryLedger(assets, clock=self.clock, name=sql.name) for _, sql in ledgers]
            for (switch, _), mem in zip(ledgers, memory, strict=True):
                switch.target = mem
            try:
                for row in rows:
                    self.clock.replay_at(row.at_s)
                    self._replay(row, seed, digest)
            finally:
                self.clock.replay_at(None)
            for (switch, sql), mem in zip(ledgers, memory, strict=True):
                transfers, accounts = _compare(mem, sql)
                report.transfers_verified += transfers
                report.accounts_verified += accounts
                switch.target = sql
        report.commands_replayed = len(rows)
        report.started = "replayed"
        report.replay_s = time.perf_counter() - started
        self.report = report
        _log.info("state_replayed", commands=len(rows), transfers=report.transfers_verified,
                  seconds=round(report.replay_s, 3))
        return report

    def _replay(self, row: _Row, seed: Callable[[], None], digest: str) -> None:
        args = pickle.loads(row.args)  # this party's own log, written by this code
        if row.method == _SEED:
            if args != (digest,):
                raise DurabilityError("the seed differs from the one these books were written with; start with "
                                      "the same --scenario/--seed, or --reset")
            seed()
            return
        obj = self._targets.get(row.target)
        fn = getattr(obj, row.method, None) if obj is not None else None
        if fn is None:
            raise DurabilityError(f"command {row.seq} ({row.target}.{row.method}) is unknown to this version")
        self._running.depth = 1
        try:
            fn(*args)
        except Exception as exc:
            if row.outcome != "raised":
                raise DurabilityError(f"command {row.seq} ({row.target}.{row.method}) raised on replay: {exc!r}") \
                    from exc
        else:
            if row.outcome == "raised":
                raise DurabilityError(f"command {row.seq} ({row.target}.{row.method}) raised when it ran "
                                      "but not on replay")
        finally:
            self._running.depth = 0


def _compare(mem: InMemoryLedger, sql: SqlLedger) -> tuple[int, int]:
    """The replayed books equal the database's, or :class:`DurabilityError` names the difference."""
    transfers = _same(sql.name, "transfer", {t.id: t for t in sql.journal()}, {t.id: t for t in mem.journal()})
    accounts = _same(sql.name, "account", {a.id: a for a in sql.accounts()}, {a.id: a for a in mem.accounts()})
    return transfers, accounts


def _same(ledger: str, kind: str, want: dict[str, object], got: dict[str, object]) -> int:
    for key in sorted(want.keys() | got.keys()):
        if want.get(key) != got.get(key):
            raise DurabilityError(f"{ledger}: {kind} {key} differs after replay: in the database "
                                  f"{want.get(key)!r}, replayed {got.get(key)!r}")
    return len(want)


def seed_digest(*parts: bytes | str) -> str:
    """A digest of what the seeding depends on (the seed file's content, the party's settings)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()
