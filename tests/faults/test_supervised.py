"""A short run of the supervised-kill harness (tests/faults/supervised.py): a real ``ccsim serve``
whose children are SIGKILLed under load and restarted by its supervisor, with the hostile probes of
issue 15 (F1–F6) sent between kills. The long run (>= 30 kills per database) is ``make faults``,
which also makes the short run on PostgreSQL; ``make test`` makes the SQLite one
(``tests/faults/scope.py``).

Asserts what docs/reliability.md promises: every kill answered by the supervisor (a new process
on the same port, on its books), 0 violations, 0 reconciliation breaks, nothing lost or doubled,
every probe refused with its 4xx and none with a 5xx.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim.live.restarts import RESTARTS_MAX

from .party_cluster import PARTIES, PgServer
from .scope import skip_unless_every_run
from .supervised import SupervisedConfig, restarts_allowed, run_supervised_faults

pytestmark = pytest.mark.slow

SHORT = SupervisedConfig(duration_s=24.0, kills=4, probes_every=2, settle_every_s=8.0, give_up_s=60.0, min_up_s=0.5,
                         snapshot_every_commands=20)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_supervisor_restarts_every_killed_child_and_nothing_is_lost(db: str, tmp_path: Path) -> None:
    if db == "postgresql":
        skip_unless_every_run("the supervised run on PostgreSQL",
                              "the SQLite supervised run and the PostgreSQL party-fault run")
        if os.environ.get("CCSIM_FAULTS_POSTGRES") == "0":
            pytest.skip("CCSIM_FAULTS_POSTGRES=0: the PostgreSQL fault runs are switched off")
        if reason := PgServer.unavailable("private"):
            pytest.skip(f"no private PostgreSQL cluster: {reason}")
    s = run_supervised_faults(db, SHORT, tmp_path / "work", out_dir=tmp_path / "artifacts", log=lambda _line: None)
    assert "payments" in s, s["problems"]
    assert s["problems"] == [], s["problems"]
    kills = s["kill_records"]
    assert [k["target"] for k in kills] == list(PARTIES)
    assert all(k["recovered"] and k["new_pid"] != k["old_pid"] and k["back_s"] > 0 for k in kills), kills
    assert s["violations"] == 0 and s["breaks"] == 0 and s["lost"] == 0 and s["doubled"] == 0
    assert s["payments"]["errors"] == 0 and s["payments"]["approved"] > 0
    assert s["restarts_from_snapshot"] >= 1  # the issuer or network restarted from a snapshot
    issues = {p["issue"] for p in s["probes"]}
    assert issues == {"F1", "F2", "F3", "F4", "F6"}
    assert s["probes_failed"] == 0 and s["probes_5xx"] == 0


@pytest.mark.parametrize("kills", [SHORT.kills, 32, 120, 1_000])
def test_the_long_run_asks_serve_for_restarts_it_accepts(kills: int) -> None:
    # make faults' 32 kills once asked for 128 restarts, past serve's bound, and serve refused to start.
    allowed = restarts_allowed(kills)
    assert allowed <= RESTARTS_MAX
    assert allowed >= min(RESTARTS_MAX, -(-kills // len(PARTIES)))  # each child's share of the kills
