"""``ccsim bundle RUN_DIR``: one archive with everything needed to check a run on another machine.

The archive (``.tar.gz``) holds one directory named after the run:

- ``summary.json``, ``results.db``, ``report.html``: the run as written;
- ``scenario.yaml``: the scenario as run (overrides applied), the text ``scenario_sha256`` covers;
- ``environment.json``: the seed, the ccsim version, Python, the platform, and the exact version of
  every installed distribution (what ``ccsim verify --rerun`` needs to reproduce the run);
- ``verify.txt``: the output of ``ccsim verify`` on the run when the bundle was made;
- ``SHA256SUMS``: the SHA-256 of every other file, in ``sha256sum`` format (``sha256sum -c`` reads it).

The bundle's digest is the SHA-256 of ``SHA256SUMS``: it covers every file, so a regulator who
writes that one line down can tell later that nothing in the bundle changed.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sqlite3
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import distributions
from pathlib import Path
from typing import Final
from urllib.parse import quote

from services.errors import CcsimError
from sim.report import build_report
from sim.run_dir import RunDirError, check_run_dir
from sim.verify import verify_run

__all__ = ["MANIFEST", "BundleError", "make_bundle", "manifest_digest", "opened_bundle"]

MANIFEST: Final = "SHA256SUMS"
_MEMBERS: Final = ("summary.json", "results.db", "report.html", "scenario.yaml", "environment.json", "verify.txt")
_MAX_MEMBER_BYTES: Final = 64 * 2**30  # a bundle is a run's files; refuse anything larger on extraction


class BundleError(CcsimError):
    """A bundle that cannot be made or read; the message names the file and the reason."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: Path) -> str:
    """The bundle's digest: the SHA-256 of its ``SHA256SUMS``."""
    return _sha256(manifest)


def _environment(run_dir: Path) -> dict[str, object]:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    packages = sorted({(d.metadata["Name"] or "?").lower(): d.version for d in distributions()}.items())
    return {
        "seed": summary.get("seed"),
        "scenario_name": summary.get("scenario_name"),
        "scenario_sha256": summary.get("scenario_sha256"),
        "ccsim_version": summary.get("ccsim_version"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(packages),
    }


def _scenario_text(run_dir: Path) -> str:
    uri = f"file:{quote(str((run_dir / 'results.db').resolve()))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        (text,) = conn.execute("SELECT scenario_yaml FROM runs").fetchone()
    finally:
        conn.close()
    return str(text)


def make_bundle(run_dir: Path, out: Path | None = None) -> tuple[Path, str, bool]:
    """Write the bundle of ``run_dir`` (default ``RUN_DIR.tar.gz`` beside it); its path, its digest
    and whether the run verified."""
    run_dir = Path(run_dir)
    try:
        check_run_dir(run_dir)
    except RunDirError as exc:
        raise BundleError(str(exc)) from exc
    if not (run_dir / "report.html").is_file():
        build_report(run_dir)  # the report is part of the evidence
    out = Path(out) if out is not None else run_dir.with_name(run_dir.name + ".tar.gz")
    name = run_dir.name
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / name
        stage.mkdir()
        for member in ("summary.json", "results.db", "report.html"):
            shutil.copy2(run_dir / member, stage / member)
        (stage / "scenario.yaml").write_text(_scenario_text(run_dir), encoding="utf-8")
        (stage / "environment.json").write_text(json.dumps(_environment(run_dir), indent=2) + "\n", encoding="utf-8")
        verification = verify_run(stage, name)
        (stage / "verify.txt").write_text(verification.report() + "\n", encoding="utf-8")
        lines = [f"{_sha256(stage / m)}  {m}\n" for m in _MEMBERS]
        (stage / MANIFEST).write_text("".join(lines), encoding="utf-8")
        digest = manifest_digest(stage / MANIFEST)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for member in (*_MEMBERS, MANIFEST):
                tar.add(stage / member, arcname=f"{name}/{member}")
        partial.chmod(0o644)
        partial.replace(out)
    return out, digest, verification.ok


@contextmanager
def opened_bundle(path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """Extract a bundle into a temporary directory: (run directory, digest, files whose SHA-256
    differs from ``SHA256SUMS``). Only regular files of the expected names are extracted."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 — closed by the with below; opening is what can fail
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{path} is not a ccsim bundle (.tar.gz): {exc}") from exc
    with tar, tempfile.TemporaryDirectory() as tmp:
        members = [m for m in tar.getmembers() if m.isfile()]
        roots = {m.name.split("/")[0] for m in members}
        if len(roots) != 1:
            raise BundleError(f"{path} must hold one run directory, found {sorted(roots)[:5]}")
        root = roots.pop()
        wanted = {f"{root}/{m}" for m in (*_MEMBERS, MANIFEST)}
        for m in members:
            if m.name not in wanted or m.size > _MAX_MEMBER_BYTES:
                raise BundleError(f"{path}: unexpected member {m.name!r}")
        missing = sorted(w for w in wanted if w not in {m.name for m in members})
        if missing:
            raise BundleError(f"{path} lacks {', '.join(missing)}")
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        for m in members:
            source = tar.extractfile(m)
            assert source is not None  # a regular file
            with source, (run_dir / m.name.split("/", 1)[1]).open("wb") as target:
                shutil.copyfileobj(source, target)
        changed = []
        for line in (run_dir / MANIFEST).read_text(encoding="utf-8").splitlines():
            digest, _, member = line.partition("  ")
            if member not in _MEMBERS or _sha256(run_dir / member) != digest:
                changed.append(member)
        yield run_dir, manifest_digest(run_dir / MANIFEST), changed
