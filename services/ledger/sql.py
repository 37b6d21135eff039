"""SQLAlchemy ledger repository: a SQLite file by default, PostgreSQL by URL.

The rules live in :mod:`services.ledger.engine`, as for :class:`InMemoryLedger`. Inside one database
transaction this module loads what a batch touches (its accounts, the transfers with its ids, the
holds it resolves) into a small view, runs the engine on it, and writes the engine's ``Staging``
overlay back. So both repositories give the same result for the same batch by construction.

Why the transactions look the way they do (a read-modify-write of balances must never interleave):

- **SQLite** allows one writer at a time. Write transactions start with ``BEGIN IMMEDIATE``, which
  takes the database's write lock *before* the first read (a plain ``BEGIN`` would read under a
  shared lock and fail or lose an update on the upgrade; ``SELECT … FOR UPDATE`` does not exist
  there). Inside one process the writers also queue on a lock for the single writer connection, so
  threads wait in order instead of spinning in SQLite's busy handler. WAL lets readers run beside
  the writer; ``synchronous=NORMAL`` in WAL keeps every commit atomic and durable against a process
  crash (a power loss may drop the last commits, never corrupt).
- **PostgreSQL** runs writers in parallel under READ COMMITTED. A batch locks the account rows it
  touches with ``SELECT … FOR UPDATE`` in id order (one global order, so two batches cannot
  deadlock on each other), and reads the transfers only after holding the locks, so a hold's state
  and an id's existence are current. Deadlocks, serialization failures and the unique-violation
  race of one transfer id submitted twice at once roll the batch back and retry it whole.

Amounts are ``NUMERIC(38, 0)`` on PostgreSQL. On SQLite a NUMERIC column silently turns an integer
above 2**63 - 1 into a REAL (a float: 18-decimal ETH amounts would lose digits), so there the amount
columns hold exact decimal text. Either way Python sees ``int`` and never a float.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    create_engine,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.clock import Clock, SystemClock
from services.database import UnitOfWork, sqlite_engine
from services.ledger.engine import (
    Staging,
    apply_accounts,
    apply_expiry,
    apply_transfers,
    check_balances,
)
from services.ledger.model import (
    Account,
    AccountFlags,
    AccountResult,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    Violation,
)
from services.ledger.sql_schema import LedgerStatements, ledger_schema
from services.migrations import drop as drop_schema
from services.migrations import upgrade as upgrade_schema
from services.money import AssetRegistry

__all__ = ["SqlLedger", "TransactionHook", "UnitOfWork", "sqlite_engine"]

T = TypeVar("T")

_Found = tuple[Transfer, PendingState | None]
TransactionHook = Callable[[Connection, Staging], None]
"""Extra rows for a batch's own transaction: called with the connection and the batch's overlay
after the batch is written and before it commits (see :meth:`SqlLedger.also_in_transaction`)."""

_IN_CHUNK = 500  # ids per IN (...) list: well below SQLite's bound-parameter limit
_EXPIRE_CHUNK = 1000  # holds released per expiry transaction
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "23505"})  # serialization, deadlock, unique race


def _account_from_row(r: Row[Any]) -> Account:
    return Account(
        id=r.id, asset=r.asset, owner=r.owner, kind=r.kind, flags=AccountFlags(r.flags),
        debits_pending=r.debits_pending, debits_posted=r.debits_posted,
        credits_pending=r.credits_pending, credits_posted=r.credits_posted, timestamp=r.timestamp,
    )


def _transfer_from_row(r: Row[Any]) -> Transfer:
    return Transfer(
        id=r.id, debit_account_id=r.debit_account_id, credit_account_id=r.credit_account_id,
        amount=r.amount, asset=r.asset, code=r.code, flags=TransferFlags(r.flags),
        pending_id=r.pending_id, timeout_s=r.timeout_s, user_data=r.user_data,
        timestamp=r.timestamp,
    )


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(ids)  # sorted: row locks are always taken in one global order
    for i in range(0, len(ordered), _IN_CHUNK):
        yield ordered[i:i + _IN_CHUNK]


class _BatchView:
    """What one batch may read, loaded inside its transaction (the engine's ``LedgerView``).

    Preloading is the fast path; a miss falls back to a query (locking the row on PostgreSQL), so
    a view never answers "not found" for a row that exists.
    """

    def __init__(self, conn: Connection, statements: LedgerStatements) -> None:
        self._conn = conn
        self._q = statements
        self._accounts: dict[str, Account | None] = {}
        self._transfers: dict[str, Transfer | None] = {}
        self._pending: dict[str, PendingState] = {}

    def load_accounts(self, ids: Iterable[str]) -> None:
        missing = {i for i in ids if i not in self._accounts}
        for chunk in _chunks(missing):
            for r in self._conn.execute(self._q.accounts_in, {"q_ids": chunk}):
                self._accounts[r.id] = _account_from_row(r)
        for i in missing:
            self._accounts.setdefault(i, None)

    def load_transfers(self, ids: Iterable[str]) -> None:
        missing = {i for i in ids if i not in self._transfers}
        for chunk in _chunks(missing):
            for r in self._conn.execute(self._q.transfers_in, {"q_ids": chunk}):
                self._transfers[r.id] = _transfer_from_row(r)
                if r.pending_state is not None:
                    self._pending[r.id] = PendingState(r.pending_state)
        for i in missing:
            self._transfers.setdefault(i, None)

    def account(self, account_id: str) -> Account | None:
        if account_id not in self._accounts:
            self.load_accounts([account_id])
        return self._accounts[account_id]

    def transfer(self, transfer_id: str) -> Transfer | None:
        if transfer_id not in self._transfers:
            self.load_transfers([transfer_id])
        return self._transfers[transfer_id]

    def pending_state(self, transfer_id: str) -> PendingState | None:
        if transfer_id not in self._transfers:
            self.load_transfers([transfer_id])
        return self._pending.get(transfer_id)


class SqlLedger:
    """A party's books in a SQL database; the same interface and results as ``InMemoryLedger``.

    Thread-safe: threads (and, on SQLite, processes) may share the database. ``table_prefix`` lets
    several ledgers (parties, tests) share one database. Its tables are created or brought up to date
    by the Alembic revisions of ``services/migrations`` when it opens.
    """

    def __init__(
        self,
        url: str,
        assets: AssetRegistry | None = None,
        clock: Clock | None = None,
        name: str = "",
        *,
        table_prefix: str = "",
        pool_size: int = 5,
        max_overflow: int = 15,
        retries_max: int = 20,
        unit: UnitOfWork | None = None,
    ) -> None:
        self.name = name
        self.unit = unit
        self.assets = assets or AssetRegistry()
        # Live books: wall-clock time by default (tests and simulations pass their own clock).
        self.clock: Clock = clock or SystemClock()
        self._retries_max = retries_max
        self._rng = random.Random()  # retry jitter only; never part of a result
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed.render_as_string(hide_password=False)
        self.table_prefix = table_prefix
        self._metadata, self._q = ledger_schema(table_prefix, parsed.get_backend_name() != "sqlite")
        self._a, self._t = self._q.accounts_table, self._q.transfers_table
        self._write_lock: AbstractContextManager[Any]
        if parsed.get_backend_name() == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("SqlLedger needs a SQLite file; use InMemoryLedger for memory")
            self._writer = sqlite_engine(parsed, pool_size=1, max_overflow=0, pool_timeout=120)
            self._reader = sqlite_engine(parsed, begin="BEGIN", pool_size=pool_size, max_overflow=0,
                                         pool_timeout=120)
            self._write_lock = threading.Lock()
            self._lock_rows = False
            self._read_options: dict[str, Any] = {}
        else:
            self._writer = self._reader = create_engine(  # pre-ping: a restarted server drops pooled connections
                parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=120,
            )
            self._write_lock = nullcontext()
            self._lock_rows = True
            self._read_options = {"isolation_level": "REPEATABLE READ"}
        upgrade_schema(self._writer, "ledger", table_prefix)  # Alembic revisions (services/migrations)
        self._hooks = threading.local()  # per thread: the hook of also_in_transaction, if any

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close every pooled connection; the ledger must not be used afterwards."""
        self._writer.dispose()
        self._reader.dispose()

    dispose = close

    def drop_tables(self) -> None:
        """Drop this ledger's tables and their version row (throwaway ledgers: tests, benchmarks)."""
        drop_schema(self._writer, "ledger", self.table_prefix, self._metadata)

    def __enter__(self) -> SqlLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------
    @contextmanager
    def also_in_transaction(self, hook: TransactionHook) -> Iterator[None]:
        """While open, every batch this thread writes here also runs ``hook`` in its transaction.

        Why: a party that books its half of a cross-party step must record the message it owes
        (an outbox row) atomically with the booking, or a crash between two commits loses it.
        The engine rules stay here; the hook only adds rows (it sees the batch's ``Staging`` to
        decide, e.g. "the sale's payout transfer is new"). A retried transaction runs it again.
        """
        previous = getattr(self._hooks, "hook", None)
        self._hooks.hook = hook
        try:
            yield
        finally:
            self._hooks.hook = previous

    def create_accounts(self, accounts: Sequence[Account]) -> list[AccountResult]:
        def work(conn: Connection, now: float) -> list[AccountResult]:
            view = self._view(conn)
            view.load_accounts(a.id for a in accounts if a.id)
            results, staging = apply_accounts(view, accounts, now, self.assets.__contains__)
            self._persist(conn, staging)
            return results

        return self._write(work)

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[TransferResult]:
        def work(conn: Connection, now: float) -> list[TransferResult]:
            view = self._view(conn)
            pending_ids = {t.pending_id for t in transfers if t.pending_id}
            account_ids = {
                i for t in transfers for i in (t.debit_account_id, t.credit_account_id) if i
            }
            account_ids |= self._accounts_of(conn, pending_ids)
            view.load_accounts(account_ids)  # locks first: what is read next is current
            view.load_transfers({t.id for t in transfers if t.id} | pending_ids)
            results, staging = apply_transfers(view, transfers, now, self.assets.__contains__)
            self._persist(conn, staging)
            return results

        return self._write(work)

    def expire_pending(self) -> list[Transfer]:
        """Release every hold whose timeout has passed; returns the expiry transfers written."""
        written: list[Transfer] = []
        while True:
            due_count, chunk = self._write(self._expire_some)
            written.extend(chunk)
            if due_count < _EXPIRE_CHUNK:
                return written

    def _expire_some(self, conn: Connection, now: float) -> tuple[int, list[Transfer]]:
        """Expire up to one chunk of due holds; returns how many were due and what was written."""
        t = self._t
        due_stmt = (
            select(t.c.id, t.c.debit_account_id, t.c.credit_account_id)
            .where(t.c.pending_state == PendingState.PENDING.value, t.c.expires_at <= now)
            .order_by(t.c.expires_at, t.c.seq).limit(_EXPIRE_CHUNK)
        )
        due = conn.execute(due_stmt).all()
        if not due:
            return 0, []
        view = self._view(conn)
        view.load_accounts({r.debit_account_id for r in due} | {r.credit_account_id for r in due})
        view.load_transfers(r.id for r in due)  # after the locks: a post may have won the race
        staging = Staging(view)
        written: list[Transfer] = []
        for r in due:
            hold = view.transfer(r.id)
            if hold is not None and staging.pending_state(r.id) is PendingState.PENDING:
                written.append(apply_expiry(staging, hold, now))
        self._persist(conn, staging)
        return len(due), written

    # -- queries -----------------------------------------------------------------------------
    def account(self, account_id: str) -> Account | None:
        r = self._read_one(lambda conn: conn.execute(self._q.account, {"q_id": account_id}).first())
        return None if r is None else _account_from_row(r)

    def transfer(self, transfer_id: str) -> Transfer | None:
        r = self._read_one(lambda conn: conn.execute(self._q.transfer, {"q_id": transfer_id}).first())
        return None if r is None else _transfer_from_row(r)

    def pending_state(self, transfer_id: str) -> PendingState | None:
        state = self._read_one(lambda conn: conn.execute(self._q.pending_state, {"q_id": transfer_id}).scalar())
        return None if state is None else PendingState(state)

    def accounts(self) -> Iterator[Account]:
        return iter(self._read(lambda conn: [
            _account_from_row(r) for r in conn.execute(select(self._a).order_by(self._a.c.id))
        ]))

    def journal(self) -> Iterator[Transfer]:
        return iter(self._read(self._journal))

    def pending_transfers(self) -> Iterator[Transfer]:
        stmt = (select(self._t).where(self._t.c.pending_state == PendingState.PENDING.value)
                .order_by(self._t.c.seq))
        return iter(self._read(lambda conn: [_transfer_from_row(r) for r in conn.execute(stmt)]))

    def journal_after(self, seq: int) -> tuple[list[Transfer], int]:
        """The transfers committed after journal position ``seq`` (0: all), in commit order, and
        the position of the last of them (``seq`` when there is none)."""
        stmt = select(self._t).where(self._t.c.seq > seq).order_by(self._t.c.seq)

        def work(conn: Connection) -> tuple[list[Transfer], int]:
            rows = conn.execute(stmt).all()
            return [_transfer_from_row(r) for r in rows], (int(rows[-1].seq) if rows else seq)

        return self._read(work)

    def transfers_by_id(self, ids: Iterable[str], through_seq: int | None = None) -> dict[str, _Found]:
        """The transfers with these ids and their hold states (``through_seq``: only those booked at
        or before that journal position)."""
        t = self._t
        at_most = t.c.seq <= through_seq if through_seq is not None else t.c.seq > 0
        return self._read(lambda conn: {r.id: (_transfer_from_row(r), None if r.pending_state is None else
                                               PendingState(r.pending_state)) for chunk in _chunks(ids)
                                        for r in conn.execute(select(t).where(t.c.id.in_(chunk), at_most))})

    def accounts_by_id(self, ids: Iterable[str]) -> dict[str, Account]:
        """The accounts with these ids."""
        a = self._a
        return self._read(lambda conn: {r.id: _account_from_row(r) for chunk in _chunks(ids)
                                        for r in conn.execute(select(a).where(a.c.id.in_(chunk)))})

    def extent(self) -> tuple[int, int, int]:
        """How many accounts and transfers the books hold, and the journal position of the last one."""
        a, t = self._a, self._t

        def work(conn: Connection) -> tuple[int, int, int]:
            stmt = select(func.count(), func.coalesce(func.max(t.c.seq), 0)).select_from(t)
            transfers, last = conn.execute(stmt).one()
            return int(conn.execute(select(func.count()).select_from(a)).scalar_one()), int(transfers), int(last)

        return self._read(work)

    def pending_states(self) -> dict[str, PendingState]:
        """The state of every pending transfer (pending, posted, voided, expired), by id."""
        stmt = select(self._t.c.id, self._t.c.pending_state).where(self._t.c.pending_state.is_not(None))
        return self._read(lambda conn: {r.id: PendingState(r.pending_state) for r in conn.execute(stmt)})

    def check_invariants(self) -> list[Violation]:
        """Every ledger invariant over one consistent snapshot of the database."""

        def work(conn: Connection) -> list[Violation]:
            accounts = [_account_from_row(r) for r in conn.execute(select(self._a))]
            journal = self._journal(conn)
            states = {r.id: PendingState(r.pending_state) for r in conn.execute(
                select(self._t.c.id, self._t.c.pending_state)
                .where(self._t.c.pending_state.is_not(None))
            )}
            return check_balances(accounts, journal, states)

        return self._read(work)

    def __len__(self) -> int:
        return int(self._read(lambda conn: conn.execute(
            select(func.count()).select_from(self._t)).scalar_one()))

    # -- transactions ------------------------------------------------------------------------
    def _view(self, conn: Connection) -> _BatchView:
        return _BatchView(conn, self._q)

    def _journal(self, conn: Connection) -> list[Transfer]:
        stmt = select(self._t).order_by(self._t.c.seq)
        return [_transfer_from_row(r) for r in conn.execute(stmt)]

    def _accounts_of(self, conn: Connection, transfer_ids: set[str]) -> set[str]:
        """Account ids of existing transfers; a transfer's accounts never change, so no lock."""
        found: set[str] = set()
        for chunk in _chunks(transfer_ids):
            for r in conn.execute(self._q.ends_in, {"q_ids": chunk}):
                found.update((r.debit_account_id, r.credit_account_id))
        return found

    def _read_one(self, work: Callable[[Connection], T]) -> T:
        """One statement: on the open unit of work of this thread (it sees that unit's own
        uncommitted writes), else on a pooled reader."""
        conn = self.unit.current() if self.unit is not None else None
        if conn is not None:
            return work(conn)
        with self._reader.connect() as raw:
            return work(raw)

    def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one read transaction: a snapshot (SQLite WAL, PG REPEATABLE READ); in
        an open unit of work, on its connection."""
        conn = self.unit.current() if self.unit is not None else None
        if conn is not None:
            return work(conn)
        with self._reader.connect() as raw:
            conn = raw.execution_options(**self._read_options)
            with conn.begin():
                return work(conn)

    def _write(self, work: Callable[[Connection, float], T]) -> T:
        """Run ``work`` in one write transaction, retrying the whole of it on a lost race. Inside
        a unit of work (:class:`UnitOfWork`) it joins the unit's transaction instead: no commit
        here, and no retry (the unit's owner decides what a failure means)."""
        conn = self.unit.connection() if self.unit is not None else None
        if conn is not None:
            return work(conn, self.clock.now())
        for attempt in range(self._retries_max + 1):
            try:
                with self._write_lock, self._writer.begin() as conn:
                    return work(conn, self.clock.now())
            except DBAPIError as exc:
                if attempt == self._retries_max or not _retryable(exc):
                    raise
            time.sleep(self._rng.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _persist(self, conn: Connection, st: Staging) -> None:
        """Write one batch's overlay: new accounts, balances, new transfers, hold states."""
        q = self._q
        if st.new_accounts:
            conn.execute(q.insert_accounts, [_account_row(x) for x in st.new_accounts.values()])
        if st.accounts:
            conn.execute(
                q.update_balances,
                [{"b_id": x.id, "b_dp": x.debits_pending, "b_dpo": x.debits_posted,
                  "b_cp": x.credits_pending, "b_cpo": x.credits_posted}
                 for x in st.accounts.values()],
            )
        if st.transfers:
            # Dict order is the engine's commit order, so seq follows it within the batch.
            conn.execute(q.insert_transfers, [_transfer_row(x, st.pending.get(x.id))
                                              for x in st.transfers.values()])
        changed = [{"b_id": pid, "b_state": s.value} for pid, s in st.pending.items()
                   if pid not in st.transfers]
        if changed:
            conn.execute(q.update_pending, changed)
        if self.unit is not None and (st.new_accounts or st.accounts or st.transfers or changed):
            self.unit.mark_written()
        hook: TransactionHook | None = getattr(self._hooks, "hook", None)
        if hook is not None:
            hook(conn, st)


def _account_row(x: Account) -> dict[str, Any]:
    return {
        "id": x.id, "asset": x.asset, "owner": x.owner, "kind": x.kind, "flags": int(x.flags),
        "debits_pending": x.debits_pending, "debits_posted": x.debits_posted,
        "credits_pending": x.credits_pending, "credits_posted": x.credits_posted,
        "timestamp": x.timestamp,
    }


def _transfer_row(x: Transfer, state: PendingState | None) -> dict[str, Any]:
    is_hold = bool(x.flags & TransferFlags.PENDING)
    return {
        "id": x.id, "debit_account_id": x.debit_account_id,
        "credit_account_id": x.credit_account_id, "amount": x.amount, "asset": x.asset,
        "code": x.code, "flags": int(x.flags), "pending_id": x.pending_id,
        "timeout_s": x.timeout_s, "user_data": x.user_data, "timestamp": x.timestamp,
        "expires_at": x.timestamp + x.timeout_s if is_hold and x.timeout_s else None,
        "pending_state": state.value if is_hold and state is not None else None,
    }


def _retryable(exc: DBAPIError) -> bool:
    """A lost race, not a fault: PostgreSQL serialization/deadlock/unique race, SQLite busy."""
    if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text
