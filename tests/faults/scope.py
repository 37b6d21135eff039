"""Which fault runs ``make test`` makes, and which only ``make faults`` does.

``make test`` keeps one short run of each kind of fault: SIGKILLs of a bare service (the bank
check, both databases), the party faults on PostgreSQL (a kill of each service, the proxy's chaos
and partition, clock jumps, and the server's crash, which only PostgreSQL has), and the supervised
kills on SQLite (``ccsim serve`` restarting its children, with the hostile probes). The same runs
on the other database repeat those kinds: they run in ``make faults`` (which sets
``CCSIM_FAULTS_ALL=1``, as does anyone who wants them from pytest), next to the long runs of every
harness on both databases. When the PostgreSQL party-fault run cannot run here (no private cluster,
``CCSIM_FAULTS_POSTGRES=0``, or ``-m "not postgres"``), the SQLite one runs in its place, so every
kind of fault is still made once.
"""

from __future__ import annotations

import os

import pytest

from .party_cluster import PgServer

ALL_ENV = "CCSIM_FAULTS_ALL"


def every_run() -> bool:
    """True under ``make faults`` (``CCSIM_FAULTS_ALL=1``): every short run on every database."""
    return os.environ.get(ALL_ENV) == "1"


def postgres_runs_unavailable(config: pytest.Config) -> str | None:
    """Why the PostgreSQL fault runs cannot run in this session (None when they can)."""
    if os.environ.get("CCSIM_FAULTS_POSTGRES") == "0":
        return "CCSIM_FAULTS_POSTGRES=0: the PostgreSQL fault runs are switched off"
    markexpr = str(config.getoption("markexpr", "") or "")
    if "postgres" in markexpr and "not postgres" in markexpr:
        return f"-m {markexpr!r} deselects the PostgreSQL runs"
    if reason := PgServer.unavailable("private"):
        return f"no private PostgreSQL cluster: {reason}"
    return None


def skip_unless_every_run(what: str, covered_by: str) -> None:
    """Skip a repeat of a kind of fault on the other database unless ``make faults`` runs."""
    if not every_run():
        pytest.skip(f"{what} runs in `make faults` ({ALL_ENV}=1); make test makes the same kinds of fault in "
                    f"{covered_by}")
