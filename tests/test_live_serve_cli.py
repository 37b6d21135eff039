"""``ccsim serve`` on a data directory that is already used: one line, exit 2, nothing started.

A data directory is used when another ``serve`` holds its lock, or when an earlier run left books
there (SQLite files, or tables of the same prefix in the ``--database-url`` database) and neither
``--resume`` nor ``--reset`` says what to do with them. The command runs as a user runs it (a
subprocess of the installed ``ccsim``); it must answer at once, before any service starts.

And the whole command once, end to end: it prints each service as it comes up, the gateway's
``/readyz`` turns ready, a SIGKILLed party is restarted (the lines it prints are the events the test
waits for), and SIGTERM stops everything with exit code 0.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import require_postgres
from faults.service import drop_prefix
from signing import RoleAuth
from test_live_concurrency import free_port_block
from test_live_parties import make_seed

from services.api.auth import load_credentials
from services.api.parties import write_seed
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


class Lines:
    """The merged output of a process, line by line, read by a thread: :meth:`until` waits for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, text: str) -> str:
        while True:
            try:
                line = self._queue.get(timeout=180.0)  # a failure detector only: each wait ends at a line
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; seen:\n" + "\n".join(self.seen)) from None
            assert line is not None, "the output ended first:\n" + "\n".join(self.seen)
            self.seen.append(line)
            if text in line:
                return line


@pytest.mark.slow
def test_serve_comes_up_ready_restarts_a_killed_party_and_stops_on_sigterm(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    write_seed(make_seed(), seed_file)
    data_dir, port = tmp_path / "live", free_port_block()
    proc = subprocess.Popen([str(CCSIM), "serve", "--seed-file", str(seed_file), "--data-dir", str(data_dir),
                             "--port", str(port), "--max-restarts", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        lines = Lines(proc)
        lines.until("ports written to")
        up = sorted(line.split()[2] for line in lines.seen if " is up after " in line)
        assert up == ["bank", "exchange", "gateway", "issuer", "network"]  # each service, as it came up
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10.0)
        assert ready.status_code == 200 and set(ready.json()["parties"].values()) == {"up"}

        pids = json.loads((data_dir / "ports.json").read_text())["pids"]
        os.kill(pids["exchange"], signal.SIGKILL)
        assert lines.until("exchange died") == "ccsim serve: exchange died (killed by SIGKILL)"
        assert lines.until("restarting exchange") == (
            "ccsim serve: restarting exchange on its books in 0.5 s (restart 1 of at most 2 within 600 s)")
        lines.until("exchange is up again")
        assert json.loads((data_dir / "ports.json").read_text())["pids"]["exchange"] != pids["exchange"]
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10.0).status_code == 200
        signed = RoleAuth(load_credentials(data_dir / "credentials.json"))  # the keys serve wrote
        recovery = httpx.get(f"http://127.0.0.1:{port + 3}/v1/recovery", timeout=10.0, auth=signed).json()
        assert recovery["state"]["started"] == "replayed"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        assert not any("Traceback" in line for line in lines.seen)
        assert not (data_dir / "ports.json").exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # serve stops its services; a SIGKILL would leave them to Linux
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_a_serve_killed_with_sigkill_leaves_no_service_behind(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    write_seed(make_seed(), seed_file)
    data_dir = tmp_path / "live"
    proc = subprocess.Popen([str(CCSIM), "serve", "--seed-file", str(seed_file), "--data-dir", str(data_dir),
                             "--port", str(free_port_block()), "--no-gateway"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        Lines(proc).until("ports written to")
        pids = json.loads((data_dir / "ports.json").read_text())["pids"]
        exits = {name: os.pidfd_open(pid) for name, pid in pids.items()}  # readable once the process has ended
        proc.kill()  # no handler runs in serve: its children must still go
        proc.wait()
        try:
            for name, fd in exits.items():
                readable, _, _ = select.select([fd], [], [], 60.0)  # a failure detector only
                assert readable == [fd], f"{name} outlived the serve that started it"
        finally:
            for fd in exits.values():
                os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
