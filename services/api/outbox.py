"""A durable outbox per party service, its relay, and the start-up recovery report.

Why: a party books its half of a cross-party step (the exchange's sale and payout, the issuer's
re-buy or settlement payment, an acquirer's merchant payout) and then owes the next party a
message. If the message lives only in memory, a process killed between the commit and the
delivery loses it: the money left one party's books and never arrives. So the message is written
to ``<prefix>outbox`` **in the same database transaction as the booking**
(:meth:`Outbox.stage`, called from :meth:`services.ledger.sql.SqlLedger.also_in_transaction`):
either both are committed or neither is.

The :class:`Relay` then delivers every pending row with the **same id** (hence the same
``Idempotency-Key`` at every hop) until the receiver acknowledges it, with exponential backoff per
row, and marks it delivered. Duplicates are harmless: each hop books only what it lacks. A row
is one of two kinds:

- ``message``: a :class:`~services.messaging.PaymentMessage` for ``receiver`` (a bank), sent with
  :meth:`HttpTransport.asend`;
- ``post``: a JSON body POSTed to a peer service (``peer`` + ``path``) with a fixed key — the
  network's stand-in advices and the settlement payments the issuer books on request.

:class:`RecoveryReport` is what the start-up pass found (rows left pending by an earlier run) and
has resolved since; services serve it on ``GET /v1/recovery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import anyio.to_thread
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
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url

from services.api.transport_http import HttpTransport, idempotency_key, message_from_json, message_to_json
from services.clock import Clock, SystemClock
from services.ledger.sql import sqlite_engine
from services.logging import get_logger
from services.messaging import PaymentMessage
from services.migrations import drop as drop_schema
from services.migrations import upgrade as upgrade_schema
from services.money import AssetRegistry

__all__ = ["Outbox", "OutboxEntry", "RecoveryReport", "Relay"]

_log = get_logger(__name__)
PENDING: Final = "pending"
DELIVERED: Final = "delivered"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One owed delivery: a message to a receiver, or a POST to a peer service."""

    id: str
    kind: str  # "message" | "post" | "local" (a step this service completes itself, see Relay.complete_locally)
    target: str  # the receiver (message), the peer service name (post) or the step's name (local)
    path: str
    key: str
    body: dict[str, Any]
    attempts: int

    def message(self, assets: AssetRegistry) -> PaymentMessage:
        return message_from_json(self.body, assets)


class Outbox:
    """The ``<prefix>outbox`` table in the party's own database (the one its ledgers use)."""

    def __init__(self, url: str, *, table_prefix: str = "", assets: AssetRegistry | None = None,
                 clock: Clock | None = None) -> None:
        self.assets = assets or AssetRegistry()
        self.clock: Clock = clock or SystemClock()
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._metadata = MetaData()
        self.table = Table(
            f"{table_prefix}outbox", self._metadata,
            Column("id", String(200), primary_key=True),
            Column("kind", String(16), nullable=False),
            Column("target", String(160), nullable=False),
            Column("path", String(300), nullable=False),
            Column("key", String(160), nullable=False),
            Column("body", Text, nullable=False),
            Column("state", String(16), nullable=False),
            Column("attempts", Integer, nullable=False),
            Column("created_at", Float, nullable=False),
            Column("delivered_at", Float, nullable=True),
        )
        self._engine = _engine(parsed)
        # Reads (the relay's pending rows, a sender's "still owed?") take no write lock.
        self._reader = self._engine if parsed.get_backend_name() != "sqlite" else sqlite_engine(
            parsed, begin="BEGIN", pool_size=2, max_overflow=8)
        self._table_prefix = table_prefix
        self._in_line: set[str] = set()  # rows a request is sending itself right now
        self._in_line_lock = threading.Lock()
        upgrade_schema(self._engine, "outbox", table_prefix)  # Alembic revisions (services/migrations)

    def close(self) -> None:
        self._engine.dispose()
        self._reader.dispose()

    def drop_table(self) -> None:
        """Drop the table and its version row (throwaway databases: tests, ``--reset``)."""
        drop_schema(self._engine, "outbox", self._table_prefix, self._metadata)

    # -- writing (inside the booking's transaction) ------------------------------------------
    def stage_message(self, conn: Connection, receiver: str, msg: PaymentMessage) -> None:
        """Record ``msg`` for ``receiver`` on ``conn`` (the ledger batch's own transaction)."""
        self._insert(conn, msg.id, "message", receiver, f"/v1/inbox/{receiver}",
                     idempotency_key("msg", receiver, msg.id), message_to_json(msg, self.assets))

    def stage_post(self, conn: Connection | None, row_id: str, peer: str, path: str, key: str,  # noqa: PLR0917
                   body: dict[str, Any]) -> bool:
        """Record a POST owed to ``peer``; ``conn`` None: in a transaction of its own. ``False``
        when a row with this id exists (it was recorded before)."""
        if conn is not None:
            return self._insert(conn, row_id, "post", peer, path, key, body)
        with self._engine.begin() as own:
            return self._insert(own, row_id, "post", peer, path, key, body)

    def stage_local(self, row_id: str, step: str, key: str, body: dict[str, Any]) -> bool:
        """Record a step this service owes itself (in a transaction of its own): the relay completes
        it with the handler registered for ``step`` if the request that staged it does not (it
        died, or its caller gave up). ``False`` when the row exists."""
        with self._engine.begin() as own:
            return self._insert(own, row_id, "local", step, "", key, body)

    def drop_pending(self, row_id: str) -> None:
        """Remove a row still pending: what it recorded was refused for good and is owed no more
        (a refusal leaves the tables as they were)."""
        with self._engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.id == row_id, self.table.c.state == PENDING))

    def _insert(self, conn: Connection, row_id: str, kind: str, target: str, path: str, key: str,  # noqa: PLR0917
                body: dict[str, Any]) -> bool:
        t = self.table
        if conn.execute(select(t.c.id).where(t.c.id == row_id)).first() is not None:
            return False
        conn.execute(insert(t).values(id=row_id, kind=kind, target=target, path=path, key=key,
                                      body=json.dumps(body, sort_keys=True), state=PENDING, attempts=0,
                                      created_at=self.clock.now(), delivered_at=None))
        return True

    @contextlib.contextmanager
    def sending_in_line(self, row_id: str) -> Iterator[None]:
        """While open, the request that staged ``row_id`` is sending it (and marking it): the relay
        leaves the row alone, so a slow receiver does not get the same message twice at once
        (the second would only be refused as in flight — more work exactly when the chain is full)."""
        with self._in_line_lock:
            self._in_line.add(row_id)
        try:
            yield
        finally:
            with self._in_line_lock:
                self._in_line.discard(row_id)

    def is_in_line(self, row_id: str) -> bool:
        with self._in_line_lock:
            return row_id in self._in_line

    # -- reading and marking -----------------------------------------------------------------
    def pending(self, limit: int = 500) -> list[OutboxEntry]:
        t = self.table
        stmt = select(t).where(t.c.state == PENDING).order_by(t.c.created_at, t.c.id).limit(limit)
        with self._reader.connect() as conn:
            return [_entry(r)
                    for r in conn.execute(stmt)]

    def entry(self, row_id: str) -> OutboxEntry | None:
        """The row ``row_id`` if it is still pending."""
        t = self.table
        with self._reader.connect() as conn:
            r = conn.execute(select(t).where(t.c.id == row_id, t.c.state == PENDING)).first()
        return None if r is None else _entry(r)

    def state(self, row_id: str) -> str | None:
        with self._reader.connect() as conn:
            value = conn.execute(select(self.table.c.state).where(self.table.c.id == row_id)).scalar()
        return None if value is None else str(value)

    def undelivered(self) -> list[str]:
        return sorted(e.id for e in self.pending(limit=100_000))

    def counts(self) -> dict[str, int]:
        t = self.table
        with self._reader.connect() as conn:
            rows = conn.execute(select(t.c.state, func.count()).group_by(t.c.state)).all()
        out = {PENDING: 0, DELIVERED: 0}
        out.update({str(state): int(n) for state, n in rows})
        return out

    def mark(self, row_id: str, *, delivered: bool, also: Callable[[Connection], None] | None = None) -> None:
        """Record a delivery attempt (and the delivery, if it was one); ``also`` adds a write of the
        caller's to the same transaction (a request's answer)."""
        t = self.table
        with self._engine.begin() as conn:
            if also is not None:
                also(conn)
            if delivered:
                conn.execute(update(t).where(t.c.id == row_id, t.c.state == PENDING).values(
                    state=DELIVERED, delivered_at=self.clock.now(), attempts=t.c.attempts + 1))
            else:
                conn.execute(update(t).where(t.c.id == row_id).values(attempts=t.c.attempts + 1))


@dataclass
class RecoveryReport:
    """What the start-up recovery pass found left over by an earlier run, and what it resolved."""

    service: str
    outbox_found: list[str] = field(default_factory=list)
    outbox_resolved: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    found_ids: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.found_ids = frozenset(self.outbox_found)

    def resolved(self, row_id: str) -> None:
        with self._lock:
            if row_id in self.found_ids and row_id not in self.outbox_resolved:
                self.outbox_resolved.add(row_id)
                _log.info("in_doubt_resolved", service=self.service, id=row_id,
                          left=len(self.found_ids) - len(self.outbox_resolved))

    def as_dict(self, outbox: Outbox) -> dict[str, Any]:
        # A row in doubt is resolved when it is no longer pending, whoever ended it: the relay, a
        # request that sent it in line (a presenter's retry, an advice), or a refusal that removed it.
        pending = set(outbox.undelivered())
        with self._lock:
            self.outbox_resolved.update(self.found_ids - pending)
            found, resolved = list(self.outbox_found), sorted(self.outbox_resolved)
        counts = outbox.counts()
        return {"service": self.service, "in_doubt_found": len(found), "in_doubt_resolved": len(resolved),
                "in_doubt_left": len(found) - len(resolved), "outbox_pending": counts[PENDING],
                "outbox_delivered": counts[DELIVERED], "found": found, "resolved": resolved,
                "notes": list(self.notes)}


Deliverer = Callable[[OutboxEntry], Awaitable[bool]]


class Relay:
    """Delivers pending outbox rows until acknowledged; backoff per row, one pass at a time."""

    def __init__(self, outbox: Outbox, deliver: Deliverer, *, report: RecoveryReport | None = None,
                 interval_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.outbox = outbox
        self._deliver = deliver
        self.report = report
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self._next_at: dict[str, float] = {}  # row id → loop time of its next attempt
        self._pass_lock = asyncio.Lock()
        self._local: dict[str, Deliverer] = {}
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed_attempts = 0

    def complete_locally(self, step: str, handler: Deliverer) -> None:
        """Rows staged with :meth:`Outbox.stage_local` for ``step`` are completed by ``handler``
        (``True``: done, or refused for good; ``False``: try again after the backoff)."""
        self._local[step] = handler

    async def _attempt(self, entry: OutboxEntry) -> bool:
        if entry.kind != "local":
            return await self._deliver(entry)
        handler = self._local.get(entry.target)
        if handler is None:
            _log.warning("outbox_local_step_unknown", id=entry.id, step=entry.target)
            return False
        try:
            return await handler(entry)
        except Exception as exc:
            _log.warning("outbox_local_step_failed", id=entry.id, error=repr(exc)[:300])
            return False

    async def run_once(self, *, force: bool = False) -> list[str]:
        """One pass over the pending rows (``force``: ignore the backoff); the ids still pending."""
        async with self._pass_lock:
            now = asyncio.get_running_loop().time()
            left: list[str] = []
            for entry in await anyio.to_thread.run_sync(self.outbox.pending):
                if not force and entry.id not in self._next_at and not self._left_by_earlier_run(entry.id):
                    # A row just staged is being sent in line by the request that booked it: give
                    # that sender one interval before the relay sends the same message too.
                    self._next_at[entry.id] = now + self.interval_s
                if (not force and self._next_at.get(entry.id, 0.0) > now) or self.outbox.is_in_line(entry.id):
                    left.append(entry.id)
                    continue
                ok = await self._attempt(entry)
                await self._record(entry.id, ok)
                if ok:
                    self._next_at.pop(entry.id, None)
                else:
                    self.failed_attempts += 1
                    pause_s = min(self.backoff_max_s, self.interval_s * 2 ** min(entry.attempts, 10))
                    self._next_at[entry.id] = now + pause_s
                    left.append(entry.id)
            return sorted(left)

    async def deliver_now(self, row_id: str) -> bool:
        """Try one row now, outside the relay's passes; ``True`` when it is no longer owed. A step
        the relay itself is completing may call this (a pass would wait for the pass it runs in)."""
        entry = await anyio.to_thread.run_sync(self.outbox.entry, row_id)
        if entry is None:
            return True
        ok = await self._attempt(entry)
        await self._record(row_id, ok)
        return ok

    async def _record(self, row_id: str, ok: bool) -> None:
        """An attempt's outcome: the row marked (delivered, or one attempt more) and counted."""
        await anyio.to_thread.run_sync(functools.partial(self.outbox.mark, row_id, delivered=ok))
        if ok:
            self.delivered += 1
            if self.report is not None:
                self.report.resolved(row_id)

    def _left_by_earlier_run(self, row_id: str) -> bool:
        return self.report is not None and row_id in self.report.found_ids

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                _log.warning("outbox_relay_pass_failed", error=repr(exc))
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def transport_deliverer(transport: HttpTransport, base_url: Callable[[str], str]) -> Deliverer:
    """Deliver ``message`` rows with :meth:`HttpTransport.asend` and ``post`` rows with ``apost``
    to ``base_url(peer)``; acknowledged means 200/201 from the receiver."""

    async def deliver(entry: OutboxEntry) -> bool:
        try:
            if entry.kind == "message":
                return await transport.asend(entry.target, entry.message(transport.assets))
            response = await transport.apost(base_url(entry.target), entry.path, entry.body, key=entry.key)
        except Exception as exc:
            _log.warning("outbox_delivery_failed", id=entry.id, error=repr(exc))
            return False
        return response is not None and response.status_code in (200, 201)

    return deliver


def _entry(r: Any) -> OutboxEntry:
    return OutboxEntry(r.id, r.kind, r.target, r.path, r.key, json.loads(r.body), r.attempts)


def _engine(url: Any) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=3, max_overflow=5, pool_timeout=60)
    return sqlite_engine(url)  # WAL, busy timeout, BEGIN IMMEDIATE: as the party's ledger
