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

import hashlib
import pickle
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from services.api.parties.resumed_ledger import ReplayMismatchError, ResumedLedger, compare_resumed, same
from services.api.parties.snapshot_reads import SnapshotReads, snapshot_copy
from services.api.parties.snapshots import (
    FORK_ABOVE_BYTES,
    LedgerImage,
    Snapshot,
    SnapshotRefusedError,
    SnapshotStore,
    StateOwner,
    dump_state_forked,
    load_state,
    snapshot_table,
)
from services.api.parties.switch_ledger import SwitchLedger
from services.api.problems import ProblemError
from services.clock import Clock
from services.errors import CcsimError
from services.ledger import (
    InMemoryLedger,
)
from services.ledger.sql import SqlLedger, UnitOfWork
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


class StatefulService(ABC):
    """A party service whose domain objects are rebuilt from its command log (exchange, issuer,
    network). Subclasses build the objects on their switch ledgers (:meth:`_build`), seed them
    (:meth:`_seed`) and name the (switch, database ledger) pairs; :meth:`_start` does the rest."""

    durable: Durable
    seed_digest: str
    assets: Any
    # Attributes a command changes that _build/_seed may set to an equal value (a float): they are
    # part of the snapshot even when :meth:`_create` cannot tell they were set.
    snapshot_state_extra: tuple[str, ...] = ()
    _state_names: frozenset[str] = frozenset()

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
        """Build the domain objects and seed them: the first command of the log. What they set
        (new or rebound attributes) is the domain state a snapshot holds."""
        before = dict(vars(self))
        self._build()
        self._seed()
        changed = {k for k, v in vars(self).items() if k not in before or before[k] is not v}
        self._state_names = frozenset((changed | set(self.snapshot_state_extra)) - {"_state_names"})

    def capture_state(self) -> dict[str, object]:
        """The domain state (under the domain lock): what a snapshot pickles."""
        return {name: getattr(self, name) for name in sorted(self._state_names)}

    def restore_state(self, state: dict[str, object]) -> None:
        """The domain state from a snapshot."""
        for name, value in state.items():
            setattr(self, name, value)
        self._state_names = frozenset(state)

    def _start(self) -> None:
        """Seed new books, or rebuild the state from the newest snapshot and the command log after
        it (or the whole log), and check it against them."""
        self.durable.recover(self._create, self.seed_digest, self._ledger_pairs(), assets=self.assets, state=self)


@dataclass
class ReplayReport:
    """What the start-up found: served on ``GET /v1/recovery`` under ``state``."""

    commands_replayed: int = 0
    transfers_verified: int = 0
    accounts_verified: int = 0
    replay_s: float = 0.0
    rebuilds: int = 0
    started: str = "fresh"  # fresh | replayed
    snapshot_log_seq: int | None = None  # the snapshot the replay started from; None: the whole log
    snapshot_refused: str = ""  # why a snapshot was not used (the whole log was replayed)

    def as_dict(self) -> dict[str, Any]:
        return {"started": self.started, "commands_replayed": self.commands_replayed,
                "transfers_verified": self.transfers_verified, "accounts_verified": self.accounts_verified,
                "replay_s": round(self.replay_s, 3), "rebuilds_after_database_failure": self.rebuilds,
                "snapshot_log_seq": self.snapshot_log_seq, "snapshot_refused": self.snapshot_refused}


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
        self.snapshots = SnapshotStore(unit.engine, snapshot_table(self._metadata, table_prefix))
        upgrade_schema(unit.engine, "commands", table_prefix)  # Alembic revisions (services/migrations)
        # A snapshot every this many logged commands (0: never); set from the party's settings.
        self.snapshot_every_commands = 0
        self._since_snapshot = 0
        self._snapshotting = threading.Lock()
        self._snapshot_thread: threading.Thread | None = None
        self._reads: SnapshotReads | None = None
        self._state_bytes: int | None = None  # the size of the last snapshot's domain objects, pickled
        self._owner: StateOwner | None = None
        self._pairs: list[tuple[SwitchLedger, SqlLedger]] = []
        self._assets: Any = None
        self._digest = ""
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
        """Drop the command log, its snapshots and its version row (throwaway databases: tests)."""
        self._wait_for_snapshot()
        drop_schema(self.unit.engine, "commands", self._prefix, self._metadata)

    def reset(self) -> None:
        """An empty command log (``--reset``)."""
        self.drop_table()
        upgrade_schema(self.unit.engine, "commands", self._prefix)

    def __len__(self) -> int:
        with self.unit.engine.connect() as conn:
            return len(conn.execute(select(self._table.c.seq)).all())

    def close(self) -> None:
        """Wait for a snapshot being written, and let go of its connections."""
        self._wait_for_snapshot()
        if self._reads is not None:
            self._reads.close()

    def _wait_for_snapshot(self) -> None:
        thread = self._snapshot_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- commands ----------------------------------------------------------------------------
    def command(self, fn: Callable[..., T], *args: Any, refused: Callable[[T], bool] | None = None,
                also: Callable[[T], Callable[[Any], None] | None] | None = None) -> T:
        """Run ``fn(*args)`` as a logged command (see the module docstring). ``fn`` is a bound
        method of a registered object. Inside a command, a nested command is a plain call (the
        outer one is what replay repeats).

        A *refusal* changes nothing, so it is not logged: a command that raises
        :class:`~services.api.problems.ProblemError`, or whose result ``refused(result)`` says is a
        refusal or a no-op (expiring no hold), and that wrote nothing to the books. (The domain checks before it changes
        anything; bad input leaves every table as it was, the log included.) ``also(result)`` of a logged
        success may add a write to its transaction (the request's answer: ``idempotency.answer_hook``)."""
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
            return self._run(target, method, blob, lambda: fn(*args), refused, also=also)

    def _run(self, target: str, method: str, blob: bytes, call: Callable[[], T],
             refused: Callable[[T], bool] | None = None, *,
             also: Callable[[T], Callable[[Any], None] | None] | None = None) -> T:
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
                if (extra := also(result) if also is not None and failure is None else None) is not None:
                    self.unit.before_commit(extra)
        except SQLAlchemyError as exc:
            self.broken = True
            _log.error("command_not_committed", target=target, method=method, error=str(exc).splitlines()[0])
            raise
        finally:
            self._running.depth = 0
        self._since_snapshot += 1
        if self.snapshot_every_commands and self._since_snapshot >= self.snapshot_every_commands:
            self._snapshot_soon()
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
    def rows(self, after_seq: int = 0) -> list[_Row]:
        """The log after position ``after_seq`` (0: all of it), in order."""
        with self.unit.engine.connect() as conn:
            t = self._table
            return [_Row(r.seq, r.at_s, r.target, r.method, r.args, r.outcome)
                    for r in conn.execute(select(t).where(t.c.seq > after_seq).order_by(t.c.seq))]

    def _logged(self) -> bool:
        with self.unit.engine.connect() as conn:
            return conn.execute(select(self._table.c.seq).limit(1)).first() is not None

    def recover(self, seed: Callable[[], None], digest: str, ledgers: Sequence[tuple[SwitchLedger, SqlLedger]],
                *, assets: Any, state: StateOwner | None = None) -> ReplayReport:
        """Start on the books: seed them if new, else rebuild the state and check it against them.

        ``seed`` builds the domain objects on the switches of ``ledgers`` (each paired with the
        party's database ledger), registers them, and seeds them; it is the log's first command.
        With ``state`` (the service holding the domain objects) the rebuild starts from the newest
        snapshot (:mod:`.snapshots`) and replays only the log after it; a snapshot that cannot be
        used, or whose replay does not match the books, is refused with a log line and the whole
        log is replayed instead.
        """
        import time  # noqa: PLC0415 — wall time of the replay, for the report only

        started = time.perf_counter()
        self._owner, self._pairs, self._assets, self._digest = state, list(ledgers), assets, digest
        report = ReplayReport(rebuilds=self.report.rebuilds)
        with self.lock:
            if not self._logged():
                for switch, sql in ledgers:
                    if len(sql) > 0:
                        raise DurabilityError(
                            f"{sql.name}: the database holds books but no command log to rebuild the state from; "
                            "start with --reset (CCSIM_RESET=1) or use another data directory")
                    switch.target = sql
                self.seed(seed, digest)
                self.report = report
                return report
            replayed = None
            if state is not None:
                try:
                    replayed = self._replay_from_snapshot(seed, digest, ledgers, report)
                except (SnapshotRefusedError, DurabilityError) as exc:
                    report.snapshot_refused = str(exc)
                    report.snapshot_log_seq = None
                    _log.warning("snapshot_refused", reason=str(exc), then="replaying the whole command log")
            if replayed is None:
                replayed = self._replay_all(seed, digest, ledgers, report)
            for switch, sql in ledgers:
                switch.target = sql
        report.commands_replayed = replayed
        report.started = "replayed"
        report.replay_s = time.perf_counter() - started
        self.report = report
        self._since_snapshot = replayed
        _log.info("state_replayed", commands=replayed, transfers=report.transfers_verified,
                  snapshot_log_seq=report.snapshot_log_seq, seconds=round(report.replay_s, 3))
        if state is not None and self.snapshot_every_commands and replayed >= self.snapshot_every_commands:
            self._snapshot_soon()  # the next restart starts from here
        return report

    def _replay_from_snapshot(self, seed: Callable[[], None], digest: str,
                              ledgers: Sequence[tuple[SwitchLedger, SqlLedger]], report: ReplayReport) -> int | None:
        """The newest snapshot, then the log after it, checked against the books; ``None`` when
        there is no snapshot. Raises :class:`SnapshotRefusedError` (or :class:`DurabilityError`
        for a replay that does not match the books) when it cannot be used."""
        snapshot = self.snapshots.newest(digest)
        if snapshot is None:
            return None
        if [image.name for image in snapshot.ledgers] != [sql.name for _, sql in ledgers]:
            raise SnapshotRefusedError("the snapshot's ledgers are not this service's")
        afters = []
        for (switch, sql), image in zip(ledgers, snapshot.ledgers, strict=True):
            after, _ = sql.journal_after(image.last_seq)  # what the replay must book again
            switch.target = image.restore(sql, (t.id for t in after), self._assets, self.clock)
            afters.append(after)
        targets, domain = load_state(snapshot.state, self._externals())
        self._state_bytes = len(snapshot.state)
        assert self._owner is not None  # set by recover before this is called
        self._owner.restore_state(domain)
        self._targets.clear()
        self._names.clear()
        for name, obj in targets.items():
            self.register(name, obj)
        report.snapshot_log_seq = snapshot.log_seq
        rows = self.rows(after_seq=snapshot.log_seq)
        self._replay_rows(rows, seed, digest)
        for (switch, sql), after in zip(ledgers, afters, strict=True):
            mem = switch.target
            assert isinstance(mem, ResumedLedger)  # the replay's books
            try:
                transfers, accounts = compare_resumed(mem, sql, after)
            except ReplayMismatchError as exc:
                raise DurabilityError(str(exc)) from None
            report.transfers_verified += transfers
            report.accounts_verified += accounts
        return len(rows)

    def _replay_all(self, seed: Callable[[], None], digest: str, ledgers: Sequence[tuple[SwitchLedger, SqlLedger]],
                    report: ReplayReport) -> int:
        report.transfers_verified = report.accounts_verified = 0
        for switch, sql in ledgers:
            switch.target = InMemoryLedger(self._assets, clock=self.clock, name=sql.name)
        rows = self.rows()
        self._replay_rows(rows, seed, digest)
        for switch, sql in ledgers:
            mem = switch.target
            assert isinstance(mem, InMemoryLedger)  # the replay's books
            transfers, accounts = _compare(mem, sql)
            report.transfers_verified += transfers
            report.accounts_verified += accounts
        return len(rows)

    def _replay_rows(self, rows: Sequence[_Row], seed: Callable[[], None], digest: str) -> None:
        """Replay ``rows`` on the in-memory ledgers the switches hold."""
        try:
            for row in rows:
                self.clock.replay_at(row.at_s)
                self._replay(row, seed, digest)
        finally:
            self.clock.replay_at(None)

    # -- snapshots ---------------------------------------------------------------------------
    def _externals(self) -> dict[str, object]:
        """What a snapshot names instead of pickling: this process's service, clock and switches."""
        found: dict[str, object] = {"service": self._owner, "clock": self.clock, "assets": self._assets}
        found.update({f"switch:{i}": switch for i, (switch, _) in enumerate(self._pairs)})
        return found

    def _snapshot_soon(self) -> None:
        """Take a snapshot on a thread of its own (it waits for the lock its caller may hold)."""
        if self._snapshotting.locked() or (self._snapshot_thread is not None and self._snapshot_thread.is_alive()):
            return
        self._since_snapshot = 0
        self._snapshot_thread = threading.Thread(target=self._snapshot_logged, name="snapshot", daemon=True)
        self._snapshot_thread.start()

    def _snapshot_logged(self) -> None:
        try:
            self.take_snapshot()
        except Exception as exc:  # a snapshot is an optimisation: never let it stop the service
            _log.error("snapshot_failed", error=repr(exc)[:300])

    def take_snapshot(self) -> int | None:
        """Write a snapshot of the state now (see :mod:`.snapshots`); returns the log position it
        stands for, or ``None`` when there is nothing to snapshot (no state, or a state being
        rebuilt after a database failure)."""
        if self._owner is None:
            return None
        import time  # noqa: PLC0415 — wall time, for the log line only

        with self._snapshotting:
            started = time.perf_counter()
            reads = self._reads = self._reads or SnapshotReads(self.unit)
            with self.lock:
                locked = time.perf_counter()
                if self.broken:
                    return None
                conn = reads.pin()
                try:
                    pickled = dump_state_forked((self._targets, self._owner.capture_state()), self._externals(),
                                                fork=self._state_bytes is None
                                                or self._state_bytes >= FORK_ABOVE_BYTES)
                except BaseException:
                    conn.close()
                    raise
                self._since_snapshot = 0
            held_s = time.perf_counter() - locked
            try:
                state = pickled()
            except BaseException:
                conn.close()
                raise
            self._state_bytes = len(state)
            t = self._table
            with reads.reading(conn):
                log_seq = int(conn.execute(select(func.coalesce(func.max(t.c.seq), 0))).scalar_one())
                images = [LedgerImage.of(sql) for _, sql in self._pairs]
            size = self.snapshots.write(Snapshot(log_seq, state, images), self._digest, self.clock.base.now())
        _log.info("snapshot_written", log_seq=log_seq, bytes=size, lock_held_s=round(held_s, 3),
                  seconds=round(time.perf_counter() - started, 3))
        return log_seq

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
    try:
        transfers = same(sql.name, "transfer", {t.id: t for t in sql.journal()}, {t.id: t for t in mem.journal()})
        accounts = same(sql.name, "account", {a.id: a for a in sql.accounts()}, {a.id: a for a in mem.accounts()})
    except ReplayMismatchError as exc:
        raise DurabilityError(str(exc)) from None
    return transfers, accounts


def seed_digest(*parts: bytes | str) -> str:
    """A digest of what the seeding depends on (the seed file's content, the party's settings)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()
