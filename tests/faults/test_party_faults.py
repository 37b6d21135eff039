"""A short run of the party-fault harness (tests/faults/party_faults.py): the four party services
under uvicorn, an open-loop POS load, and every kind of fault once or more.

Each run SIGKILLs every service once (and restarts it on its books with CCSIM_RESUME=1), puts
the proxy between the issuer and the exchange into its chaos phase and into a partition, steps a
service's wall clock, and on PostgreSQL crashes the server (a private cluster made with initdb,
never the shared one). Then it asserts what docs/reliability.md promises: 0 invariant violations,
0 reconciliation breaks, 0 in-doubt operations left, every fault recovered, every payment answered.
The long run (>= 30 kills per database, both databases) is ``make faults``.

``make test`` runs the PostgreSQL one (about half a minute on idle cores; it gets a private cluster
for its crash, and makes every kind of fault), ``make faults`` both (``tests/faults/scope.py``);
when the PostgreSQL run cannot run (``CCSIM_FAULTS_POSTGRES=0``, no private cluster), the SQLite
one runs in ``make test`` in its place.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from .party_cluster import PARTIES, PgServer
from .party_faults import FaultsConfig, run_party_faults
from .scope import every_run, postgres_runs_unavailable

pytestmark = pytest.mark.slow

SHORT = FaultsConfig(duration_s=12.0, kills=4, rate_per_s=4.0, partition_s=3.0, pg_crashes=1, pg_down_s=1.0,
                     settle_every_s=5.0, min_up_s=0.3, breaker_cooldown_s=1.5, give_up_s=60.0)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_party_services_lose_nothing_under_kills_and_faults(db: str, tmp_path: Path,
                                                           pytestconfig: pytest.Config) -> None:
    if db == "sqlite" and not every_run() and postgres_runs_unavailable(pytestconfig) is None:
        pytest.skip("the SQLite party-fault run is in `make faults` (CCSIM_FAULTS_ALL=1): make test makes every "
                    "kind of fault in the PostgreSQL one, and kills SQLite services in the supervised run")
    if db == "postgresql":
        if os.environ.get("CCSIM_FAULTS_POSTGRES") == "0":
            pytest.skip("CCSIM_FAULTS_POSTGRES=0: the PostgreSQL party-fault run is switched off")
        if reason := PgServer.unavailable("private"):
            pytest.skip(f"no private PostgreSQL cluster for the crash fault: {reason}")
    out = tmp_path / "artifacts"
    s = run_party_faults(db, SHORT, tmp_path / "work", out_dir=out, log=lambda _line: None)
    assert "payments" in s, s["problems"]  # the harness itself ran to the end
    assert s["problems"] == [], s["problems"]  # incl. the audit of every payment against the issuer

    kinds = Counter(f["kind"] for f in s["faults"])
    assert kinds["kill"] == 4 and s["kills_by_service"] == dict.fromkeys(PARTIES, 1)
    assert kinds["partition"] == 1 and kinds["chaos"] == 2 and kinds["clock_jump"] == 4
    assert kinds["pg_crash"] == (1 if db == "postgresql" else 0)
    assert kinds["unexpected_exit"] == 0
    assert s["kills_recovered"] == 4
    assert [f for f in s["faults"] if not f["recovered"]] == []
    assert all(f["recovery_s"] is not None and f["recovery_s"] > 0 for f in s["faults"] if f["kind"] == "kill")
    assert all(f["commands_replayed"] > 0 for f in s["faults"] if f["kind"] == "kill" and f["target"] != "bank")

    # The state at the end, after the relays drained. (A violation between two faults is in the
    # report's faults[].violations_after; docs/reliability.md has the one the long run found.)
    assert s["violations"] == 0, s["violation_list"]
    assert s["breaks"] == 0, s["break_list"]
    assert s["in_doubt"]["left"] == 0 and s["in_doubt"]["left_at_end"] == 0
    assert s["in_doubt"]["outbox_pending_at_end"] == 0

    pays = s["payments"]
    assert pays["attempted"] > 20 and pays["approved"] > 0
    assert pays["errors"] == 0  # every POS got an answer, retrying with its key
    assert pays["captured"] > 0 and s["final_window"]["status"] == 201
    assert s["partition"]["outcomes"]  # payments arrived during the partition, and were answered

    html = (out / f"party_faults_{db}.html").read_text(encoding="utf-8")
    assert "Faults against the party services" in html and 'id="timeline-chart"' in html
    assert (out / f"party_faults_{db}.json").exists()
