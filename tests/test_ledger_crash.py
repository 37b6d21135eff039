"""Crash safety on SQLite: a writer SIGKILLed at random moments never leaves a broken ledger.

Each batch is one SQLite transaction (WAL, ``synchronous=NORMAL``): after a kill the database holds
every batch that committed and nothing of the one in flight. So on every restart the invariants
hold, the stored balances equal a replay of the journal, and the journal only grows.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.ledger.engine import replay_journal
from services.ledger.sql import SqlLedger

KILLS = 12
WORKER = Path(__file__).with_name("ledger_crash_worker.py")
REPO = WORKER.parent.parent


def start_worker(db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the worker is writing (or has died)
    assert line.strip() == "ready", f"worker did not start (exit code {proc.poll()})"
    return proc


def wait_for_commits(proc: subprocess.Popen[str], count: int) -> None:
    """Read the worker's ``committed N`` lines until it has committed ``count`` batches."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == f"committed {count}":
            return
    raise AssertionError(f"the worker stopped before committing {count} batches (exit code {proc.poll()})")


def stored_vs_replayed(ledger: SqlLedger) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    stored = {a.id: [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
              for a in ledger.accounts()}
    replayed, _, problems = replay_journal(ledger.journal())
    assert problems == []
    return stored, {k: replayed.get(k, [0, 0, 0, 0]) for k in stored}


@pytest.mark.slow
def test_sigkilled_writer_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(20240611)  # the kill moments vary but are repeatable
    counts: list[int] = []
    for _ in range(KILLS):
        proc = start_worker(db)
        # The kill comes after a random number of committed batches (events, whatever the
        # machine's speed), then a random moment into the next one.
        wait_for_commits(proc, rng.randint(1, 40))
        time.sleep(rng.uniform(0.0, 0.01))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL  # it was still writing when killed
        with SqlLedger(f"sqlite:///{db}") as ledger:
            assert ledger.check_invariants() == []
            stored, replayed = stored_vs_replayed(ledger)
            assert stored == replayed
            counts.append(len(ledger))
    assert counts == sorted(counts), f"the journal shrank across restarts: {counts}"
    assert counts[-1] > counts[0] > 0, f"the worker made no progress: {counts}"
