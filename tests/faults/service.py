"""A party service under real uvicorn, in a subprocess on 127.0.0.1, that a test can SIGKILL and restart.

In-process ASGI tests cannot show what a crash does: the process must really die mid-request, with
its connections, its threads and its open transactions. This starts ``uvicorn --factory`` with the
service's ``CCSIM_*`` settings, waits for ``/healthz``, and on :meth:`ServiceProcess.kill` sends
SIGKILL; :meth:`ServiceProcess.start` again brings it back on the same port and database.
Every start is logged to one file (stdout and stderr of each incarnation, appended).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from sqlalchemy import create_engine, inspect, text

from .ports import LOOPBACK, free_port

__all__ = ["LEDGER_FACTORY", "LOOPBACK", "ServiceProcess", "free_port"]

LEDGER_FACTORY = "services.api.ledger_service:create_ledger_app_from_env"
_REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One service's process: start, SIGKILL, restart on the same port; always stopped on exit."""

    def __init__(self, env: dict[str, str], log_path: Path, *, factory: str = LEDGER_FACTORY,
                 port: int | None = None) -> None:
        self.env = env  # CCSIM_* settings of the service
        self.log_path = log_path
        self.factory = factory
        self.port = port or free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 60.0) -> float:
        """Start the process and wait until ``/healthz`` answers; returns the seconds that took."""
        if self.running():
            raise RuntimeError("the service is already running")
        t0 = time.monotonic()
        env = {**os.environ, **self.env, "PYTHONPATH": str(_REPO)}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host", LOOPBACK,
                 "--port", str(self.port), "--no-access-log", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=_REPO)
        self.starts += 1
        try:
            wait_healthy(self.proc, self.base_url, timeout_s, self.log_path, "the service")
        except RuntimeError:
            self.stop()
            raise
        return time.monotonic() - t0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions die with the process."""
        kill_process(self.proc)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown closes the engines), SIGKILL after ``grace_s``."""
        stop_process(self.proc, grace_s)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- a service process's life, shared with tests/faults/party_cluster.py ----------------------------


def wait_healthy(proc: subprocess.Popen[bytes] | None, base_url: str, timeout_s: float, log_path: Path,
                 name: str) -> float:
    """Seconds until ``base_url/healthz`` answers 200; raises when the process exits or time runs out."""
    t0 = time.monotonic()
    with httpx.Client(timeout=1.0) as client:
        while True:
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RuntimeError(f"{name} exited with {code} while starting; log {log_path}:\n"
                                   f"{log_tail(log_path, 40)}")
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"{name} did not answer within {timeout_s} s; log:\n{log_tail(log_path, 40)}")
            time.sleep(0.02)


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL and reap: no shutdown code runs; open transactions and half-sent answers die with it."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM (a graceful shutdown closes the engines), SIGKILL after ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill_process(proc)


def log_tail(log_path: Path, lines: int) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def drop_prefix(url: str, prefix: str) -> None:
    """Drop every table named ``prefix…`` in a throwaway database (a test's or a fault run's)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in inspect(conn).get_table_names():
                if table.startswith(prefix):
                    conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    finally:
        engine.dispose()
