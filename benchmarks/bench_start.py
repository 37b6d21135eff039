"""Party-set start-up: CPU to build the four party apps in this process, serve one card payment
through them and close them, on SQLite and on PostgreSQL (ASGI, no sockets).

Each set starts on the tables an earlier set left at the newest revision, emptied between sets
(as a party set of the tests does, and ``ccsim serve`` after its first start): every store opens,
checks its schema version and seeds, and one payment reaches every party (network, issuer,
exchange, bank). The figures are the process CPU (every thread) per set, split into start, payment
and close, each the median of ``--sets`` sets after one warm-up set. A ratio, not a speed: compare
two checkouts in the same run (``--against``), on a shared, noisy machine.

    python -m benchmarks start [--sets 15] [--db sqlite|postgresql|both] [--pg-url URL]
                               [--against WORKTREE] [--pairs 3]

``--db both`` (the default) measures SQLite only when PostgreSQL (``--pg-url``, by default
``$CCSIM_TEST_PG_URL``) cannot be reached.

With ``--against``, this benchmark runs on the other checkout's code (its ``.venv``) and on this
one in turn, each in a fresh process, ``--pairs`` times; the ratio (this over that) of each pair
and their median are reported.
Writes ``benchmarks/results/start.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from benchmarks.bench_direct import FACTORIES, _Router, _seed
from benchmarks.bench_live import load_average
from services.api import close_app
from services.api.auth import SigningAuth, create_credentials, load_credentials
from services.api.parties import PartySettings, write_seed

RESULTS = Path(__file__).with_name("results") / "start.json"
PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/ccsim_bench"
_URLS = {f"{p}_url": f"http://{p}" for p in FACTORIES}


class _Where:
    """The database of the sets: a SQLite data directory, or a table prefix in a PostgreSQL database."""

    def __init__(self, root: Path, pg_url: str | None) -> None:
        self.data_dir, self.pg_url = root / "data", pg_url
        self.prefix = f"bench_start_{uuid.uuid4().hex[:8]}_"

    def settings(self, party: str) -> dict[str, Any]:
        if self.pg_url is None:
            return {"data_dir": self.data_dir}
        return {"database_url": self.pg_url, "table_prefix": f"{self.prefix}{party}_"}

    def _engines(self) -> list[Any]:
        if self.pg_url is not None:
            return [create_engine(self.pg_url, poolclass=NullPool)]
        return [create_engine(f"sqlite:///{db}", poolclass=NullPool) for db in sorted(self.data_dir.glob("*.db"))]

    def empty(self, *, drop: bool = False) -> None:
        """Every row of the sets' tables deleted, the schema versions kept (``drop``: the tables too)."""
        for engine in self._engines():
            try:
                with engine.begin() as conn:
                    mine = [t for t in inspect(conn).get_table_names() if t.startswith(self.prefix)] \
                        if self.pg_url is not None else inspect(conn).get_table_names()
                    for name in mine:
                        if drop:
                            conn.execute(text(f'DROP TABLE "{name}"'))
                        elif not name.endswith("alembic_version"):
                            conn.execute(text(f'DELETE FROM "{name}"'))
            finally:
                engine.dispose()


async def _one_set(where: _Where, seed_path: Path, pos_auth: SigningAuth, n: int) -> tuple[float, float, float]:
    router = _Router()
    outbound = httpx.AsyncClient(transport=router)
    pos = httpx.AsyncClient(transport=router, auth=pos_auth)
    t0 = time.process_time()
    apps = {p: f(PartySettings(party=p, seed_file=seed_path, **_URLS, **where.settings(p)), http_client=outbound)
            for p, f in FACTORIES.items()}
    for p, app in apps.items():
        router.apps[p] = httpx.ASGITransport(app=app)
    t1 = time.process_time()
    r = await pos.post("http://network/v1/payments", json={"id": f"s{n}", "card_id": "c0", "merchant_id": "z1",
                                                           "amount": "5000.00"}, headers={"Idempotency-Key": f"s{n}"})
    assert r.status_code == 200 and r.json()["approved"], r.text
    t2 = time.process_time()
    await pos.aclose()
    await outbound.aclose()
    for app in apps.values():
        close_app(app)
    t3 = time.process_time()
    return t1 - t0, t2 - t1, t3 - t2


def _measure(db: str, sets: int, pg_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        creds = root / "credentials.json"
        create_credentials(creds)
        os.environ["CCSIM_CREDENTIALS_FILE"] = str(creds)
        seed_path = root / "seed.json"
        write_seed(_seed(3), seed_path)
        auth = SigningAuth(load_credentials(creds).principal("pos"))
        where = _Where(root, pg_url if db == "postgresql" else None)
        rows: list[tuple[float, float, float]] = []
        load_before = load_average()
        try:
            for n in range(sets + 1):  # the first set makes the tables and warms the process up
                rows.append(asyncio.run(_one_set(where, seed_path, auth, n)))
                where.empty()
        finally:
            if db == "postgresql":
                where.empty(drop=True)
            shutil.rmtree(where.data_dir, ignore_errors=True)
    measured = rows[1:]
    ms = [round(sum(r) * 1000, 1) for r in measured]
    return {"db": db, "sets": sets, "cpu_ms_per_set": statistics.median(ms),
            "start_ms": round(statistics.median(r[0] for r in measured) * 1000, 1),
            "payment_ms": round(statistics.median(r[1] for r in measured) * 1000, 1),
            "close_ms": round(statistics.median(r[2] for r in measured) * 1000, 1),
            "load_average_before": load_before, "load_average_after": load_average(), "all_ms": ms}


def _reachable(url: str) -> bool:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def _run_in(worktree: Path, args: argparse.Namespace, db: str) -> dict[str, Any]:
    """This benchmark on ``worktree``'s code, in its interpreter (``.venv``), in a process of its
    own; the result it printed. The checkout needs ``benchmarks/bench_direct.py``, not this file."""
    cmd = [str(worktree / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--sets", str(args.sets),
           "--db", db, "--pg-url", args.pg_url, "--json-only"]
    env = {**os.environ, "PYTHONPATH": str(worktree)}
    done = subprocess.run(cmd, cwd=worktree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1])[0])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks start")
    parser.add_argument("--sets", type=int, default=15)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT))
    parser.add_argument("--against", type=Path, default=None, help="a checkout to compare with (its .venv)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if args.db == "both" and not _reachable(args.pg_url):  # make bench on a machine without PostgreSQL
        print(f"PostgreSQL at {args.pg_url} is not reachable: SQLite only", file=sys.stderr)
        dbs = ["sqlite"]
    if args.json_only:  # one line for --against of another checkout
        print(json.dumps([_measure(db, args.sets, args.pg_url) for db in dbs]))
        return
    out: dict[str, Any] = {"sets": args.sets, "results": []}
    for db in dbs:
        if args.against is None:
            out["results"].append(_measure(db, args.sets, args.pg_url))
            continue
        pairs = []
        for _ in range(args.pairs):  # interleaved: the other checkout, then this one
            other = _run_in(args.against, args, db)
            here = _run_in(Path(__file__).resolve().parents[1], args, db)
            pairs.append({"against": other, "this": here,
                          "ratio": round(here["cpu_ms_per_set"] / other["cpu_ms_per_set"], 3)})
        out["results"].append({"db": db, "against": str(args.against), "pairs": pairs,
                               "median_ratio": statistics.median(p["ratio"] for p in pairs),
                               "median_this_ms": statistics.median(p["this"]["cpu_ms_per_set"] for p in pairs),
                               "median_against_ms": statistics.median(p["against"]["cpu_ms_per_set"] for p in pairs)})
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
