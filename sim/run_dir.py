"""A run directory holds exactly one complete run, or it is refused.

A run is written into a hidden staging directory beside its destination and renamed into place
only when ``summary.json`` and ``results.db`` are both complete, so an interrupted run leaves the
destination as it was (the previous run, or nothing). A directory is *complete and single* when:

- ``summary.json`` and ``results.db`` are both there;
- ``results.db`` holds its ``runs`` row (written last, so a run cut short has none);
- the summary recorded in that row is the ``summary.json`` beside it (a database from one run next
  to the summary of another fails this).

``report``, ``compare``, ``export``, ``verify`` and ``bundle`` check this before reading anything.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from services.errors import CcsimError

__all__ = ["RUN_FILES", "RunDirError", "check_run_dir", "publish", "staging_dir"]

SUMMARY: Final = "summary.json"
RESULTS: Final = "results.db"
# What a run directory may hold: a run's own files and what the commands write into it.
RUN_FILES: Final = frozenset({SUMMARY, RESULTS, "results.db-wal", "results.db-shm", "report.html",
                              "export", "overlay.yaml", "overlay.set", "compare.html",
                              "gateway-run.json",  # the gateway's marker on a run it started (sim/live)
                              # what an evidence bundle adds (sim/bundle.py)
                              "verify.txt", "scenario.yaml", "environment.json", "SHA256SUMS"})


_KEPT_ON_REPLACE: Final = ("gateway-run.json",)  # the gateway's marker (sim/live/run_limits.py)


class RunDirError(CcsimError):
    """A run directory that is missing, incomplete, or mixes files of two runs."""


def staging_dir(run_dir: Path) -> Path:
    """A fresh hidden directory beside ``run_dir`` (same file system, so the rename is atomic)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a directory")
    if run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
        if foreign:
            raise RunDirError(f"{run_dir} holds files that are not a run's ({', '.join(foreign[:5])}); "
                              "choose another --out")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = run_dir.parent / f".{run_dir.name}.incomplete-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)  # left by a killed run with the same process id
    stage.mkdir()
    return stage


def publish(stage: Path, run_dir: Path) -> None:
    """Replace ``run_dir`` (if any) by the complete run in ``stage``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        stage.rename(run_dir)
        return
    for name in _KEPT_ON_REPLACE:  # files that belong to the directory, not to the run in it
        kept = run_dir / name
        if kept.is_file() and not (stage / name).exists():
            shutil.copy2(kept, stage / name)
    old = run_dir.parent / f".{run_dir.name}.replaced-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    run_dir.rename(old)
    stage.rename(run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _recorded_summary(db_path: Path) -> dict[str, Any] | None:
    """The summary in the ``runs`` row of ``db_path`` (None when there is no row)."""
    wal = db_path.with_name(db_path.name + "-wal")  # immutable (no side files) unless a writer left a log
    uri = f"file:{quote(str(db_path.resolve()))}?mode=ro" + ("" if wal.exists() else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("SELECT summary_json FROM runs").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RunDirError(f"{db_path} is not a readable results database: {exc}") from exc
    if len(rows) > 1:
        raise RunDirError(f"{db_path} records {len(rows)} runs: it mixes runs")
    if not rows:
        return None
    recorded = json.loads(rows[0][0])
    return recorded if isinstance(recorded, dict) else None


def check_run_dir(run_dir: Path) -> None:
    """Raise :class:`RunDirError` unless ``run_dir`` holds one complete run (module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    summary_path, db_path = run_dir / SUMMARY, run_dir / RESULTS
    if not summary_path.is_file():
        raise RunDirError(f"{summary_path} is missing: the run did not finish, or this is not a run directory")
    if not db_path.is_file():
        raise RunDirError(f"{db_path} is missing: the run did not finish, or this is not a run directory")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{summary_path} is not valid JSON: {exc}") from exc
    recorded = _recorded_summary(db_path)
    if recorded is None:
        raise RunDirError(f"{db_path} has no run record: the run that wrote it did not finish")
    if recorded != summary:
        raise RunDirError(f"{run_dir} mixes two runs: {summary_path.name} is not the summary {db_path.name} "
                          "recorded; run the scenario again into this directory")
