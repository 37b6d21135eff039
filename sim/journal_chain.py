"""A hash chain over the ledger journals in ``results.db``: a changed, removed, added or reordered
transfer changes the chain's head, which ``summary.json`` records.

The journal is read in ``(party, seq)`` order and cut into batches of :data:`CHAIN_BATCH_ROWS`
transfers. Each batch's digest is SHA-256 over the previous batch's digest (hex; 64 zeros before the
first) and the batch's rows, one line each: every column of ``transfers`` in the table's order, as
text, separated by the unit separator (0x1F) and ended by a newline; ``t_s`` is written with
Python's ``repr`` of the float (the shortest text that reads back as the same number). The digest of
the last batch is the head. Anyone can recompute it from the database with a few lines of any
language; ``docs/verifying-a-run.md`` says how.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CHAIN_BATCH_ROWS", "GENESIS", "ChainBatch", "journal_chain"]

CHAIN_BATCH_ROWS: Final = 10_000
GENESIS: Final = "0" * 64
_COLUMNS: Final = ("party", "seq", "transfer_id", "debit_account_id", "credit_account_id", "amount_minor",
                   "asset", "code", "flags", "pending_id", "user_data", "t_s")


@dataclass(frozen=True, slots=True)
class ChainBatch:
    """One batch of the chain: where it starts, how many transfers, and its digest (hex)."""

    index: int
    party: str  # of its first transfer
    first_seq: int
    rows: int
    digest: str


def _lines(rows: list[tuple[Any, ...]]) -> bytes:
    """A batch's rows as the chain hashes them. One f-string per row, the batch encoded once (hashing
    the joined text equals hashing each line in turn): ``f"{v}"`` is ``str(v)`` for every type SQLite
    returns."""
    return "".join([f"{p}\x1f{s}\x1f{i}\x1f{d}\x1f{c}\x1f{a}\x1f{x}\x1f{k}\x1f{f}\x1f{q}\x1f{u}\x1f{float(t)!r}\n"
                    for p, s, i, d, c, a, x, k, f, q, u, t in rows]).encode()


def journal_chain(conn: sqlite3.Connection, batch_rows: int = CHAIN_BATCH_ROWS) -> Iterator[ChainBatch]:
    """The chain's batches, in order, over the ``transfers`` table of ``conn``."""
    cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM transfers ORDER BY party, seq")
    previous, index = GENESIS, 0
    while rows := cursor.fetchmany(batch_rows):
        h = hashlib.sha256(previous.encode())
        h.update(_lines(rows))
        previous = h.hexdigest()
        yield ChainBatch(index, str(rows[0][0]), int(rows[0][1]), len(rows), previous)
        index += 1
