"""Snapshots of a party's replayed state, so that a restart replays only the end of its command log.

A party rebuilds its state at start-up by replaying its command log (:mod:`.durable`); after a
day of load that is tens of thousands of commands. So every so many commands the party writes a
**snapshot**: its domain objects (pickled), its books as of the same instant (each ledger's
accounts, journal and pending states) and the **log position** they stand for, in one row of
``<prefix>snapshots``. A restart loads the newest snapshot, replays only the commands after its
position, and compares the result with the books in the database as a full replay does.

How a snapshot is taken without stalling payments: under the domain lock (no command is half
done then) the party pins a read transaction on the database and pickles its domain objects;
the lock is released, and the books and the log position are read on the pinned snapshot, so
they are of the instant the objects were pickled. Only the pickling holds the lock.

Why a snapshot can be trusted: it is written in one transaction (a torn write leaves no row, and
the row before it stays until the new one commits) with the SHA-256 of its content; one whose
digest, format or seed does not match, or that does not load, is **refused** with a log line
naming the reason (``snapshot_refused``) and the party replays the whole log instead. The log
before a snapshot is kept (a refused snapshot falls back on it) but a restart from a snapshot
never reads it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import Column, Engine, Float, Integer, LargeBinary, MetaData, String, Table, delete, insert, select

from services.clock import Clock
from services.errors import CcsimError
from services.ledger import Account, InMemoryLedger, PendingState, Transfer
from services.ledger.sql import SqlLedger
from services.money import AssetRegistry

__all__ = ["SNAPSHOT_FORMAT", "LedgerImage", "Snapshot", "SnapshotRefusedError", "SnapshotStore", "StateOwner",
           "dump_state", "load_state", "snapshot_table"]

# What the pickled domain objects look like. Raise it when a domain class changes its attributes:
# older snapshots are then refused (and the whole log replayed) instead of loaded into new code.
SNAPSHOT_FORMAT: Final = 2


class SnapshotRefusedError(CcsimError, ValueError):
    """A snapshot that cannot be used; the message says why (the party replays the whole log)."""


class StateOwner(Protocol):
    """The service whose domain objects a snapshot holds (:class:`.durable.StatefulService`)."""

    def capture_state(self) -> dict[str, object]:
        """The attributes that hold the domain state (called under the domain lock)."""

    def restore_state(self, state: dict[str, object]) -> None:
        """Put back what :meth:`capture_state` returned (from a snapshot)."""


def snapshot_table(metadata: MetaData, prefix: str) -> Table:
    """``<prefix>snapshots``: the newest snapshot of the party's state (revision ``commands_0002``)."""
    return Table(
        f"{prefix}snapshots", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("log_seq", Integer, nullable=False),
        Column("format", Integer, nullable=False),
        Column("seed_digest", String(64), nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("size", Integer, nullable=False),
        Column("created_s", Float, nullable=False),
        Column("state", LargeBinary, nullable=False),
    )


@dataclass(frozen=True)
class LedgerImage:
    """One ledger's books at an instant: what :meth:`InMemoryLedger.restored` rebuilds."""

    name: str
    accounts: list[Account]
    journal: list[Transfer]
    pending: dict[str, PendingState]
    last_seq: int  # the database's journal position of the last transfer in ``journal``

    @classmethod
    def of(cls, ledger: SqlLedger, base: LedgerImage | None = None) -> LedgerImage:
        """Read on the caller's pinned snapshot (``UnitOfWork.reading``) when there is one. With
        ``base`` (the previous image of the same ledger) only the journal after it is read: a
        transfer never changes once booked, except its pending state, which is read whole."""
        after, last = ledger.journal_after(base.last_seq if base is not None else 0)
        journal = [*base.journal, *after] if base is not None else after
        return cls(ledger.name, list(ledger.accounts()), journal, ledger.pending_states(), last)

    def restore(self, assets: AssetRegistry, clock: Clock) -> InMemoryLedger:
        return InMemoryLedger.restored(self.accounts, self.journal, self.pending, assets=assets, clock=clock,
                                       name=self.name)


@dataclass(frozen=True)
class Snapshot:
    """The domain objects (pickled by :func:`dump_state`), the books and the log position."""

    log_seq: int
    state: bytes
    ledgers: list[LedgerImage]


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, externals: Mapping[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._externals = externals

    def persistent_id(self, obj: Any) -> str | None:
        return self._externals.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, externals: Mapping[str, object]) -> None:
        super().__init__(file)
        self._externals = externals

    def persistent_load(self, pid: Any) -> object:
        try:
            return self._externals[str(pid)]
        except KeyError:
            raise SnapshotRefusedError(f"the snapshot refers to {pid!r}, which this service does not have") from None


def dump_state(obj: object, externals: Mapping[str, object]) -> bytes:
    """``obj`` pickled, with each object of ``externals`` (the service, its clock, its ledger
    switches: what the process owns, not the state) written as its name."""
    buffer = io.BytesIO()
    _Pickler(buffer, {id(v): k for k, v in externals.items()}).dump(obj)
    return buffer.getvalue()


def load_state(blob: bytes, externals: Mapping[str, object]) -> Any:
    """What :func:`dump_state` wrote, with the names of ``externals`` bound to this process's objects."""
    return _Unpickler(io.BytesIO(blob), externals).load()


class SnapshotStore:
    """The snapshot table of one party: write the newest, read it back verified."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table

    def write(self, snapshot: Snapshot, seed_digest: str, created_s: float) -> int:
        """Store ``snapshot`` as the newest, in one transaction that also removes the older ones
        (a crash before the commit leaves the previous one in place). Returns its size in bytes."""
        blob = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        row = {"log_seq": snapshot.log_seq, "format": SNAPSHOT_FORMAT, "seed_digest": seed_digest,
               "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob), "created_s": created_s, "state": blob}
        t = self.table
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(t).returning(t.c.id), [row]).scalar_one()
            conn.execute(delete(t).where(t.c.id < new_id))
        return len(blob)

    def newest(self, seed_digest: str) -> Snapshot | None:
        """The newest snapshot, verified; ``None`` when there is none; :class:`SnapshotRefusedError`
        naming the reason when there is one that cannot be used."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).order_by(t.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        blob = bytes(row.state)
        if row.format != SNAPSHOT_FORMAT:
            raise SnapshotRefusedError(f"snapshot {row.id} has format {row.format}; this version reads "
                                       f"{SNAPSHOT_FORMAT}")
        if row.seed_digest != seed_digest:
            raise SnapshotRefusedError(f"snapshot {row.id} was taken under another seed")
        if len(blob) != row.size or hashlib.sha256(blob).hexdigest() != row.sha256:
            raise SnapshotRefusedError(f"snapshot {row.id} is torn or corrupt: {len(blob)} bytes of {row.size}, "
                                       "and its SHA-256 differs from the one written with it")
        try:
            snapshot = pickle.loads(blob)  # this party's own row, its digest verified
        except Exception as exc:  # a digest that matches garbage: refuse, never crash the start-up
            raise SnapshotRefusedError(f"snapshot {row.id} does not load: {exc!r}") from None
        if not isinstance(snapshot, Snapshot) or snapshot.log_seq != row.log_seq:
            raise SnapshotRefusedError(f"snapshot {row.id} does not hold the state at log position {row.log_seq}")
        return snapshot
