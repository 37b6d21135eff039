"""``Idempotency-Key`` for POSTs that move money, remembered in the party's own database.

A client that did not hear the answer sends the same request again with the same key. Semantics:

- missing, empty, longer than 128 characters or not visible ASCII → 400;
- the first request with a key claims it (a row in ``<prefix>idempotency_keys``, state ``in_flight``),
  runs, and stores its status and body if it succeeded (2xx);
- the same key with the same request (method, path and canonical JSON body) → the stored answer,
  replayed byte for byte with ``Idempotent-Replayed: true``;
- the same key with another request → 422; the same key while the first is still running → 409;
- a rejection (4xx) or a fault (an exception, a 5xx) releases the key: a rejected request wrote
  nothing, not even its key, so a corrected retry with the same key simply runs. A claim whose
  process died is taken over after ``lease_s``. A claim this process could not release or finish
  because the database failed (the key stays ``in_flight`` although nothing runs under it) is
  remembered in memory, and the first retry once the database answers takes it over at once.

A party service runs as one process (its start-up releases every claim left ``in_flight``), so
it keeps its claims in memory (``local_claims=True``): a claim is a read of the table (on a
read connection, no write lock) plus an entry in this process's map of running keys, a release
forgets the entry, and only a success writes — one row, ``done``, in one transaction. The
durable claim (the default) costs two write transactions more per request and is what stores
shared by several processes need.

**The answer in the business transaction.** A route that knows how its answer follows from the
result of the command deciding it passes ``answer=`` (result → response) to :func:`run_idempotent`;
that command (a party's ``ctx.command(..., answers=True)``) writes the key's ``done`` row on its own
connection, inside its transaction (:func:`answer_hook`). The answer then commits with the books
and the command log or not at all, and the request costs no write transaction of its own: a crash
after the commit leaves a key whose retry is replayed, a crash before it leaves nothing, so the
retry runs once. Elsewhere the key store and the books commit separately: if a process dies
between the two commits, the retry runs again, and the ledger's own idempotency by transfer id
makes that run write nothing (it answers ``exists``): the effect is once, only the status of the
replay may differ (200, not 201).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request, Response
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.expression import Executable

from services.api.problems import FieldError, ProblemError
from services.clock import Clock, SystemClock
from services.ledger.sql import sqlite_engine
from services.logging import get_logger
from services.migrations import drop as drop_schema
from services.migrations import upgrade as upgrade_schema

__all__ = [
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENCY_KEY_LENGTH_MAX",
    "Answering",
    "Claim",
    "ClaimState",
    "IdempotencyKey",
    "IdempotencyStore",
    "answer_hook",
    "answer_in",
    "answering",
    "request_fingerprint",
    "run_idempotent",
    "run_idempotent_async",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 128
IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x21-\x7e]{1,128}$"  # visible ASCII: no spaces, no control characters
REPLAYED_HEADER: Final = "Idempotent-Replayed"

_log = get_logger(__name__)
T = TypeVar("T")


class ClaimState(StrEnum):
    STARTED = "started"  # this request owns the key: run it, then finish() or release()
    REPLAY = "replay"  # the same request already finished: send the stored answer
    IN_FLIGHT = "in_flight"  # the same request is running elsewhere
    MISMATCH = "mismatch"  # the key was used for another request


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    status: int = 0
    body: bytes = b""
    media_type: str = ""


def request_fingerprint(method: str, path: str, payload: Any) -> str:
    """SHA-256 of the method, the path and the body as canonical JSON (key order and spaces ignored)."""
    canonical = json.dumps([method.upper(), path, payload], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class IdempotencyStore:
    """The table of keys in one party's database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, table_prefix: str = "", clock: Clock | None = None,
                 lease_s: float = 60.0, local_claims: bool = False) -> None:
        self.clock: Clock = clock or SystemClock()
        self.lease_s = lease_s
        self.local_claims = local_claims
        self._running: dict[str, str] = {}  # local claims: key → request hash, while its request runs
        self._over_row: set[str] = set()  # local claims taken over a row in the table (a durable claim's)
        self._running_lock = threading.Lock()
        # Keys this process claimed and then could not release or finish (the database failed):
        # their rows say in_flight, but nothing runs under them any more.
        self._abandoned: set[str] = set()
        self._abandoned_lock = threading.Lock()
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        metadata = MetaData()
        self.table = Table(
            f"{table_prefix}idempotency_keys", metadata,
            Column("key", String(IDEMPOTENCY_KEY_LENGTH_MAX), primary_key=True),
            Column("request_hash", String(64), nullable=False),
            Column("state", String(16), nullable=False),
            Column("status", Integer, nullable=True),
            Column("media_type", String(64), nullable=True),
            Column("body", Text, nullable=True),
            Column("created_at", Float, nullable=False),
            Column("claimed_at", Float, nullable=False),
        )
        self._metadata = metadata
        self._by_key = select(self.table).where(self.table.c.key == bindparam("q_key"))  # built once: cached
        self._insert = insert(self.table)
        self._engine = _engine(parsed)
        self._reader = _reader(parsed, self._engine)
        # Local claims on a SQLite file: a claim is a one-row read, a release is memory, a finish
        # one short write on the file's writer lock. An event loop makes these calls in line: a
        # worker thread would cost more to wake than the call does, and under the GIL its time is
        # the loop's anyway (:func:`run_idempotent_async`). Over a network (PostgreSQL) they hop.
        self.in_line = local_claims and parsed.get_backend_name() == "sqlite"
        self._table_prefix = table_prefix
        upgrade_schema(self._engine, "idempotency", table_prefix)  # Alembic revisions (services/migrations)

    def close(self) -> None:
        self._engine.dispose()
        self._reader.dispose()

    def drop_table(self) -> None:
        """Drop the table and its version row (throwaway databases: tests, ``--reset``)."""
        drop_schema(self._engine, "idempotency", self._table_prefix, self._metadata)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar_one())

    def claim(self, key: str, request_hash: str) -> Claim:
        """Claim ``key`` for this request, or say why not (replay, in flight, mismatch)."""
        now = self.clock.now()
        if self.local_claims:
            return self._claim_local(key, request_hash, now)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(self.table).values(
                    key=key, request_hash=request_hash, state="in_flight", created_at=now,
                    claimed_at=now))
            self._take_abandoned(key)  # its row was released after all (at start-up, by hand)
            return Claim(ClaimState.STARTED)
        except IntegrityError:
            pass  # the key exists: decide below, in a transaction of its own
        with self._engine.begin() as conn:
            return self._existing(conn, key, request_hash, now)

    def _claim_local(self, key: str, request_hash: str, now: float) -> Claim:
        with self._running_lock:
            running = self._running.get(key)
            if running is not None:
                return Claim(ClaimState.IN_FLIGHT if running == request_hash else ClaimState.MISMATCH)
            self._running[key] = request_hash  # reserved while we read: a twin waits as in flight
        try:
            with self._reader.connect() as conn:
                row = conn.execute(self._by_key, {"q_key": key}).first()
        except BaseException:
            self._forget(key)
            raise
        if row is None:
            return Claim(ClaimState.STARTED)
        self._forget(key)
        if row.request_hash != request_hash:
            return Claim(ClaimState.MISMATCH)
        if row.state == "done":
            return Claim(ClaimState.REPLAY, int(row.status), str(row.body).encode("utf-8"), str(row.media_type))
        # A durable claim (another process, or this table before local claims): honour its lease.
        if now - row.claimed_at <= self.lease_s and not self._take_abandoned(key):
            return Claim(ClaimState.IN_FLIGHT)
        with self._running_lock:
            if key in self._running:
                return Claim(ClaimState.IN_FLIGHT)
            self._running[key] = request_hash
            self._over_row.add(key)
        return Claim(ClaimState.STARTED)

    def _forget(self, key: str) -> None:
        with self._running_lock:
            self._running.pop(key, None)
            self._over_row.discard(key)

    def _existing(self, conn: Connection, key: str, request_hash: str, now: float) -> Claim:
        t = self.table
        stmt = select(t).where(t.c.key == key)
        if conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds the write lock
        row = conn.execute(stmt).first()
        if row is None:  # released between our insert and this read: take it now
            conn.execute(insert(t).values(key=key, request_hash=request_hash, state="in_flight",
                                          created_at=now, claimed_at=now))
            return Claim(ClaimState.STARTED)
        if row.request_hash != request_hash:
            return Claim(ClaimState.MISMATCH)
        abandoned = self._take_abandoned(key)
        if row.state == "done":
            return Claim(ClaimState.REPLAY, int(row.status), str(row.body).encode("utf-8"),
                         str(row.media_type))
        if abandoned or now - row.claimed_at > self.lease_s:
            # This process claimed the key and nothing runs under it since the database failed,
            # or the claimer died (its lease ran out): this request takes over.
            conn.execute(update(t).where(t.c.key == key).values(claimed_at=now))
            return Claim(ClaimState.STARTED)
        return Claim(ClaimState.IN_FLIGHT)

    def _take_abandoned(self, key: str) -> bool:
        """Whether ``key`` was abandoned by this process; it is no longer (one taker only)."""
        with self._abandoned_lock:
            if key in self._abandoned:
                self._abandoned.remove(key)
                return True
            return False

    @property
    def abandoned(self) -> int:
        """Keys this process holds although nothing runs under them (their release failed)."""
        return len(self._abandoned)

    def finish(self, key: str, status: int, body: bytes, media_type: str) -> None:
        """Remember a success. If the database fails, the key is abandoned (see :meth:`release`)."""
        if self.local_claims:
            self._finish_local(key, status, body, media_type)
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(update(self.table).where(self.table.c.key == key).values(
                    state="done", status=status, body=body.decode("utf-8"), media_type=media_type))
        except SQLAlchemyError:
            self._abandon(key)
            raise

    def _finish_local(self, key: str, status: int, body: bytes, media_type: str) -> None:
        """One write: the ``done`` row (replacing a durable claim taken over, if any); then the
        key stops running here. If the database fails, the key is simply free again."""
        t = self.table
        now = self.clock.now()
        try:
            with self._engine.begin() as conn:
                done = {"state": "done", "status": status, "body": body.decode("utf-8"), "media_type": media_type}
                changed = conn.execute(update(t).where(t.c.key == key).values(**done)).rowcount
                if not changed:
                    conn.execute(insert(t).values(key=key, request_hash=self._running.get(key, ""),
                                                  created_at=now, claimed_at=now, **done))
        finally:
            self._forget(key)

    def done_writer(self, key: str, status: int, body: bytes, media_type: str) -> Callable[[Connection], None]:
        """The ``done`` row of a claimed key, written on a connection the caller's transaction holds
        (the business transaction of :func:`answer_hook`): an insert for a claim kept in memory, an
        update of the row of a durable claim or of one taken over. The caller then settles the key
        (:meth:`settle`) once that transaction committed."""
        t = self.table
        done = {"state": "done", "status": status, "body": body.decode("utf-8"), "media_type": media_type}
        with self._running_lock:
            insert_row = self.local_claims and key not in self._over_row
            request_hash = self._running.get(key, "")
        if insert_row:
            now = self.clock.now()
            stmt: Executable = self._insert
            params = {"key": key, "request_hash": request_hash, "created_at": now, "claimed_at": now, **done}
        else:
            stmt, params = update(t).where(t.c.key == key).values(**done), {}

        def write(conn: Connection) -> None:
            conn.execute(stmt, params)

        return write

    def settle(self, key: str) -> None:
        """A key whose ``done`` row committed with the business transaction: it stops running here."""
        if self.local_claims:
            self._forget(key)

    def release_in_flight(self) -> int:
        """Release every key still claimed (``in_flight``); how many. For a service's start-up: it
        runs as one process, so a claim left in the table belongs to a process that died, and its
        retries should not wait out the lease."""
        with self._engine.begin() as conn:
            return int(conn.execute(delete(self.table).where(self.table.c.state == "in_flight")).rowcount or 0)

    def release(self, key: str) -> None:
        """Forget a claim whose request failed with a fault, so that a retry runs again. If the
        database fails too, the row stays ``in_flight``: the key is remembered as abandoned, and
        the next claim of it takes it over without waiting out the lease."""
        if self.local_claims:
            self._forget(key)
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(delete(self.table).where(
                    self.table.c.key == key, self.table.c.state == "in_flight"))
        except SQLAlchemyError:
            self._abandon(key)
            raise

    def _abandon(self, key: str) -> None:
        with self._abandoned_lock:
            self._abandoned.add(key)
        _log.warning("idempotency_key_abandoned", key=key)


def _engine(url: Any) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=15, pool_timeout=60)
    return sqlite_engine(url)  # WAL, busy timeout, BEGIN IMMEDIATE: as the party's ledger


def _reader(url: Any, engine: Engine) -> Engine:
    """Reads that need no write lock (one statement each, so no BEGIN: a WAL snapshot of its own);
    PostgreSQL's pool."""
    if url.get_backend_name() != "sqlite":
        return engine
    # A claim reads one row: no BEGIN needed. Enough pooled connections that concurrent claims do
    # not open and close overflow connections (each opening costs a connect and three PRAGMAs).
    return sqlite_engine(url, begin="", pool_size=8, max_overflow=8)


async def _idempotency_key(  # async: FastAPI runs a sync dependency in a worker thread (a hop per request)
    key: Annotated[str, Header(
        alias=IDEMPOTENCY_HEADER, min_length=1, max_length=IDEMPOTENCY_KEY_LENGTH_MAX,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="a client-chosen key, the same on every retry of one request (1-128 visible ASCII)",
    )],
) -> str:
    return key


IdempotencyKey = Annotated[str, Depends(_idempotency_key)]
"""A route parameter: the validated ``Idempotency-Key`` header (missing or malformed → 400)."""


@dataclass
class Answering:
    """The idempotent request running in this context, whose answer a command may commit (see the
    module docstring): ``render`` turns that command's result into the answer (``None``: none to
    remember, e.g. a refusal)."""

    store: IdempotencyStore
    key: str
    render: Callable[[Any], Response | None]
    staged: bool = False  # the done row is in a command's transaction
    committed: bool = False  # ... and that transaction committed

    def hook(self) -> Callable[[Any], Callable[[Connection], None] | None]:
        """Given the command's result, the write of the key's ``done`` row on its connection."""
        def staged(result: Any) -> Callable[[Connection], None] | None:
            try:
                response = self.render(result)
            except Exception:  # never undo a command for its answer: the key is finished apart
                _log.exception("idempotent_answer_not_rendered", key=self.key)
                return None
            if response is None or not 200 <= response.status_code < 300:
                return None
            self.staged = True
            return self.store.done_writer(self.key, response.status_code, bytes(response.body),
                                          response.media_type or "")
        return staged

    def ended(self, committed: bool) -> None:
        """The command's transaction ended: committed, or rolled back (its done row with it)."""
        self.committed, self.staged = self.staged and committed, False


_ANSWERING: ContextVar[Answering | None] = ContextVar("ccsim_idempotent_answer", default=None)


def answer_hook(store: IdempotencyStore) -> Answering | None:
    """The request whose answer a command of ``store``'s party may commit in its transaction; ``None``
    when no such request runs in this context (or its answer is committed already)."""
    pending = _ANSWERING.get()
    if pending is None or pending.store is not store or pending.committed:
        return None
    return pending


@contextmanager
def answer_in(store: IdempotencyStore, result: Any) -> Iterator[Callable[[Connection], None] | None]:
    """The ``done`` row of the request running here, for the one transaction the block commits
    (``None`` when no request's answer is pending, or ``result`` is ``None``): ``result`` is
    rendered into the answer as :func:`answer_hook` does. The block ending without an exception
    means that transaction committed, and the answer with it."""
    pending = answer_hook(store) if result is not None else None
    write = pending.hook()(result) if pending is not None else None
    committed = False
    try:
        yield write
        committed = True
    finally:
        if pending is not None:
            pending.ended(committed)


@contextmanager
def answering(store: IdempotencyStore, key: str, render: Callable[[Any], Response | None] | None,
              ) -> Iterator[Answering | None]:
    """While the block runs, the command that decides the request under ``key`` may commit its
    answer (``render`` of its result); without ``render`` no command here does (an outer request
    of another party in the same process, in tests, is hidden)."""
    pending = Answering(store, key, render) if render is not None else None
    token = _ANSWERING.set(pending)
    try:
        yield pending
    finally:
        _ANSWERING.reset(token)


def _replay_or_refuse(claim: Claim, key: str) -> Response | None:
    """The stored answer (a replay), a refusal (raised), or ``None`` when this request runs."""
    field = [FieldError(field=IDEMPOTENCY_HEADER, reason=f"key {key!r}")]
    if claim.state is ClaimState.MISMATCH:
        raise ProblemError(422, "this Idempotency-Key was used for another request", field,
                           slug="idempotency-key-reused")
    if claim.state is ClaimState.IN_FLIGHT:
        raise ProblemError(409, "a request with this Idempotency-Key is still running; retry later",
                           field, slug="idempotency-key-in-flight")
    if claim.state is ClaimState.REPLAY:
        return Response(claim.body, status_code=claim.status, media_type=claim.media_type,
                        headers={REPLAYED_HEADER: "true"})
    return None


def _answered_in_transaction(store: IdempotencyStore, key: str, pending: Answering | None) -> bool:
    if pending is not None and pending.committed:  # the answer committed with the business rows
        store.settle(key)
        return True
    return False


def run_idempotent(
    store: IdempotencyStore, key: str, request: Request, payload: Any, work: Callable[[], Response],
    *, answer: Callable[[Any], Response | None] | None = None,
) -> Response:
    """Run ``work`` at most once per key; replay its answer for the same request, refuse another.

    ``work`` returns the response or raises :class:`ProblemError`. Only a success (2xx) is
    remembered; otherwise the key is released and the problem sent, or the exception propagates.
    With ``answer`` (result → the response ``work`` returns for it), the command that decides the
    answer commits it with its own transaction (see the module docstring).
    """
    claim = store.claim(key, request_fingerprint(request.method, request.url.path, payload))
    if (replay := _replay_or_refuse(claim, key)) is not None:
        return replay
    with answering(store, key, answer) as pending:
        try:
            response = work()
        except BaseException:  # a ProblemError (a rejection) or a fault: nothing to remember
            store.release(key)
            raise
    if _answered_in_transaction(store, key, pending):
        return response
    if not 200 <= response.status_code < 300:
        store.release(key)
        return response
    store.finish(key, response.status_code, bytes(response.body), response.media_type or "")
    return response


async def run_idempotent_async(
    store: IdempotencyStore, key: str, request: Request, payload: Any, work: Callable[[], Awaitable[Response]],
    *, answer: Callable[[Any], Response | None] | None = None,
) -> Response:
    """:func:`run_idempotent` for handlers that wait on other services. The store's own calls run in
    line when it says they are quick (:attr:`IdempotencyStore.in_line`), else in a worker thread."""
    claim = await _store_call(store, store.claim, key,
                              request_fingerprint(request.method, request.url.path, payload))
    if (replay := _replay_or_refuse(claim, key)) is not None:
        return replay
    with answering(store, key, answer) as pending:
        try:
            response = await work()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _store_call(store, store.release, key)
            raise
    if _answered_in_transaction(store, key, pending):
        return response
    if not 200 <= response.status_code < 300:
        await _store_call(store, store.release, key)
        return response
    await _store_call(store, store.finish, key, response.status_code, bytes(response.body),
                      response.media_type or "")
    return response


async def _store_call(store: IdempotencyStore, fn: Callable[..., T], *args: Any) -> T:
    if store.in_line or (store.local_claims and fn == store.release):  # a local release is memory only
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)
