"""``ccsim serve`` on a data directory that is already used: one line, exit 2, nothing started.

A data directory is used when another ``serve`` holds its lock, or when an earlier run left books
there (SQLite files, or tables of the same prefix in the ``--database-url`` database) and neither
``--resume`` nor ``--reset`` says what to do with them. The command runs as a user runs it (a
subprocess of the installed ``ccsim``); it must answer at once, before any service starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import require_postgres
from faults.service import drop_prefix

from services.ledger import Account, Transfer
from services.ledger.sql import SqlLedger
from sim.live.data_dir import DataDirInUseError, earlier_books, lock_data_dir

CCSIM = Path(sys.executable).parent / "ccsim"


def _serve(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CCSIM), "serve", "--data-dir", str(data_dir), "--port", "29990", "--no-gateway",
                           *extra], capture_output=True, text=True, timeout=120, check=False)


def _book(url: str, prefix: str = "") -> None:
    """A ledger with one transfer, as a party leaves its books."""
    ledger = SqlLedger(url, name="p", table_prefix=prefix)
    try:
        ledger.create_accounts([Account("a", "KZT"), Account("b", "KZT")])
        ledger.create_transfers([Transfer("t1", "a", "b", 100, "KZT")])
    finally:
        ledger.close()


def test_a_data_directory_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path / "live")
    try:
        result = _serve(tmp_path / "live")
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"ccsim serve: {tmp_path / 'live'} is in use by another ccsim serve (pid {os.getpid()}); stop it "
            "first, or give another --data-dir"]
        assert result.stdout == ""
        assert not (tmp_path / "live" / "logs").exists()  # no service was started
        with pytest.raises(DataDirInUseError):
            lock_data_dir(tmp_path / "live")
    finally:
        lock.release()
    lock_data_dir(tmp_path / "live").release()  # free again once released


def test_an_earlier_runs_books_ask_for_resume_or_reset_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "live"
    data_dir.mkdir()
    _book(f"sqlite:///{data_dir / 'issuer.db'}")
    _book(f"sqlite:///{data_dir / 'bank.db'}")
    result = _serve(data_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"ccsim serve: {data_dir} holds the books of an earlier run (bank, issuer): start with --resume to "
        "continue on them, or with --reset to drop them"]
    assert not (data_dir / "logs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--max-restarts", "-1"), "--max-restarts must be from 0 to 100"),
    (("--scenarios-dir", "/no/such/dir"), "--scenarios-dir /no/such/dir: not a directory"),
    (("--reset", "--resume"), "--reset and --resume exclude each other"),
])
def test_bad_serve_arguments_exit_2_naming_the_argument(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = _serve(tmp_path / "live", *args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_books_are_found_per_party_without_creating_anything(tmp_path: Path) -> None:
    assert earlier_books(tmp_path, ["issuer", "bank"]) == []
    assert list(tmp_path.iterdir()) == []  # no SQLite file was created by looking
    empty = SqlLedger(f"sqlite:///{tmp_path / 'bank.db'}", name="p")  # tables, but no transfer yet
    empty.close()
    assert earlier_books(tmp_path, ["issuer", "bank"]) == []
    _book(f"sqlite:///{tmp_path / 'issuer.db'}")
    assert earlier_books(tmp_path, ["issuer", "bank"]) == ["issuer"]


@pytest.mark.postgres
def test_books_in_a_shared_postgres_database_are_found_by_prefix(tmp_path: Path) -> None:
    url = require_postgres()
    prefix = f"t_{uuid.uuid4().hex[:10]}_"
    try:
        assert earlier_books(tmp_path, ["issuer", "bank"], url, prefix) == []
        _book(url, f"{prefix}bank_bank_1_")
        assert earlier_books(tmp_path, ["issuer", "bank"], url, prefix) == ["bank"]
        assert earlier_books(tmp_path, ["issuer", "bank"], url, f"t_{uuid.uuid4().hex[:10]}_") == []
    finally:
        drop_prefix(url, prefix)
