"""Snapshots of a party's replayed state, so that a restart replays only the end of its command log.

A party rebuilds its state at start-up by replaying its command log (:mod:`.durable`); after a
day of load that is tens of thousands of commands. So every so many commands the party writes a
**snapshot**: its domain objects (pickled), its books as of the same instant (each ledger's
accounts and the holds pending then, :class:`LedgerImage`) and the **log position** they stand
for, in one row of ``<prefix>snapshots``. The journal is not in it: it is in the database, where a
transfer never changes once booked but for a hold's state, which is final once the hold is no
longer pending. A restart loads the newest snapshot, replays only the commands after its
position on books that read a transfer booked before it from the database
(:mod:`.resumed_ledger`), and compares with the books what the replay can have changed: the
transfers after the snapshot, the holds' states, the accounts they touched.

How a snapshot is taken without stalling payments: under the domain lock (no command is half
done then) the party pins a read transaction on the database and forks (:func:`dump_state_forked`:
the child pickles the domain objects from its copy-on-write image of the process, the parent
reads the bytes from a pipe); the lock is released as soon as the child exists, and the books and
the log position are read on the pinned snapshot, so they are of the instant of the fork. Where
the system cannot fork, the pickling itself holds the lock.

Why a snapshot can be trusted: it is written in one transaction (a torn write leaves no row, and
the row before it stays until the new one commits) with the SHA-256 of its content; one whose
digest, format or seed does not match, or that does not load, is **refused** with a log line
naming the reason (``snapshot_refused``) and the party replays the whole log instead. The log
before a snapshot is kept (a refused snapshot falls back on it) but a restart from a snapshot
never reads it.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import pickle
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import Column, Engine, Float, Integer, LargeBinary, MetaData, String, Table, delete, insert, select

from services.api.parties.resumed_ledger import ResumedLedger
from services.clock import Clock
from services.errors import CcsimError
from services.ledger import Account, Transfer
from services.ledger.sql import SqlLedger
from services.money import AssetRegistry

__all__ = ["FORK_ABOVE_BYTES", "SNAPSHOT_FORMAT", "LedgerImage", "Snapshot", "SnapshotRefusedError", "SnapshotStore",
           "StateOwner", "dump_state", "dump_state_forked", "load_state", "snapshot_table"]

# A state that pickled to fewer bytes last time is pickled under the lock (a few milliseconds): a
# fork, its child and the pages it makes the parent copy cost more than that. One of unknown size
# (the first snapshot after a replay of the whole log) is pickled in a forked child.
FORK_ABOVE_BYTES: Final = 1 << 20
_CHILD_SECONDS_MAX: Final = 300  # a forked pickling child that runs longer is ended

# What the pickled domain objects look like. Raise it when a domain class changes its attributes:
# older snapshots are then refused (and the whole log replayed) instead of loaded into new code.
SNAPSHOT_FORMAT: Final = 3


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
    """One ledger's books at an instant, without their journal (the database keeps it): its
    accounts, the holds pending then, how many transfers it held and the journal position of the
    last one. :meth:`restore` gives a :class:`.resumed_ledger.ResumedLedger` that reads a transfer
    booked before that position from the database when a replay asks for it."""

    name: str
    accounts: list[Account]
    held: list[Transfer]
    transfers: int
    last_seq: int  # the database's journal position of the last transfer at the snapshot

    @classmethod
    def of(cls, ledger: SqlLedger) -> LedgerImage:
        """Read on the caller's pinned snapshot (``UnitOfWork.reading``)."""
        _, transfers, last_seq = ledger.extent()
        return cls(ledger.name, list(ledger.accounts()), list(ledger.pending_transfers()), transfers, last_seq)

    def restore(self, sql: SqlLedger, after: Iterable[str], assets: AssetRegistry, clock: Clock) -> ResumedLedger:
        """The books at the snapshot, on ``sql``'s journal (``after``: the ids it booked since)."""
        return ResumedLedger(self.name, self.accounts, self.held, transfers=self.transfers, through_seq=self.last_seq,
                             sql=sql, after=after, assets=assets, clock=clock)


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


def dump_state_forked(obj: object, externals: Mapping[str, object], *, fork: bool = True) -> Callable[[], bytes]:
    """:func:`dump_state` of ``obj`` as it is now, pickled after the call returns: what the
    returned function gives. Where the system can fork, the pickling runs in a forked child, on a
    copy-on-write image of this process taken at the call, and the bytes come back through a pipe;
    so a caller holding the domain lock holds it only for the fork, not for the pickling. With
    ``fork=False`` (or where the system cannot fork) it pickles now.

    The child closes its copies of the parent's descriptors (sockets, database files) but the
    pipe's, then only pickles (with the cycle collector off, so no finalizer of the parent's
    objects runs in it), writes and leaves with ``os._exit``: it touches nothing another thread of
    the parent may have held at the fork."""
    if not fork or not hasattr(os, "fork"):  # a small state: pickling it costs less than a fork
        blob = dump_state(obj, externals)
        return lambda: blob
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover — the child (coverage does not follow it)
        try:
            _pickle_in_child(obj, externals, write_fd)
        finally:
            os._exit(0)  # never back into the parent's code, whatever happened
    os.close(write_fd)

    def wait() -> bytes:
        with os.fdopen(read_fd, "rb") as pipe:
            out = pipe.read()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not out or out[:1] != b"\x00":
            raise RuntimeError(f"pickling the state failed in its forked child: {out[1:].decode(errors='replace')!r}")
        return out[1:]

    return wait


def _pickle_in_child(obj: object, externals: Mapping[str, object], write_fd: int) -> None:  # pragma: no cover
    # A limit on everything: a child that hangs (a lock some other thread held at the fork) is
    # ended by the kernel, and the parent's read sees the pipe close: that snapshot fails, no other.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_CHILD_SECONDS_MAX)
    gc.disable()
    # Its copies of the parent's descriptors go first: a listening socket held here would keep the
    # port of a parent killed meanwhile from its restart, and take connections no one answers.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nor the parent's output pipes, open after the parent is gone
        os.dup2(null, fd)
    os.closerange(3, write_fd)
    os.closerange(write_fd + 1, max(os.sysconf("SC_OPEN_MAX"), write_fd + 1))
    try:
        out = b"\x00" + dump_state(obj, externals)
    except BaseException as exc:
        out = b"\x01" + repr(exc)[:2000].encode("utf-8", "replace")
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(out)


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
