"""Crash-test worker: posts transfers to a SQLite ledger in an endless loop until it is killed.

Run as ``python tests/ledger_crash_worker.py PATH.db``. It prints ``ready`` once the accounts exist,
and ``committed N`` after each batch it committed (so the test kills it after events, not after a
wall-clock wait), then keeps committing a mix of what the ledger does (posted transfers, holds, partial posts, voids,
linked chains, batches) so that a SIGKILL lands inside every kind of transaction sooner or later.
Ids carry the process id, so a restarted worker never reuses one.
"""

from __future__ import annotations

import itertools
import os
import sys

from services.clock import SystemClock
from services.ledger import Account, AccountFlags, Transfer, TransferFlags, linked
from services.ledger.sql import SqlLedger
from services.logging import configure_logging

PEND = TransferFlags.PENDING
POST = TransferFlags.POST_PENDING
VOID = TransferFlags.VOID_PENDING


def batch_for(n: int, run: str) -> list[Transfer]:
    """The n-th batch of the loop: a small mix of every kind of write."""
    i = f"{run}-{n}"
    kind = n % 5
    if kind == 0:
        return [Transfer(f"fund-{i}", "house", "wallet", 10_000, "KZT")]
    if kind == 1:
        return linked([
            Transfer(f"pay-{i}", "wallet", "merchant", 700, "KZT"),
            Transfer(f"fee-{i}", "merchant", "fees", 7, "KZT"),
        ])
    if kind == 2:
        return linked([
            Transfer(f"hold-{i}", "wallet", "merchant", 500, "KZT", flags=PEND, timeout_s=3600),
            Transfer(f"post-{i}", "", "", 300, "", flags=POST, pending_id=f"hold-{i}"),
        ])
    if kind == 3:
        return [
            Transfer(f"hold-{i}", "wallet", "merchant", 200, "KZT", flags=PEND, timeout_s=3600),
            Transfer(f"void-{i}", "", "", 0, "", flags=VOID, pending_id=f"hold-{i}"),
        ]
    return [Transfer(f"many-{i}-{k}", "merchant", "house", 3, "KZT") for k in range(50)]


def main(path: str) -> None:
    configure_logging(level="warning")  # stdout carries the protocol ("ready", ids); logs go to stderr
    ledger = SqlLedger(f"sqlite:///{path}", clock=SystemClock(), name="crash-worker")
    dnec = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    ledger.create_accounts([
        Account("house", "KZT"),
        Account("wallet", "KZT", flags=dnec),
        Account("merchant", "KZT", flags=dnec),
        Account("fees", "KZT"),
    ])
    print("ready", flush=True)
    run = str(os.getpid())
    for n in itertools.count():
        ledger.create_transfers(batch_for(n, run))
        print(f"committed {n + 1}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
