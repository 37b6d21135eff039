"""Issuer restart after a day of load: time from start to ready, from a snapshot and from the whole log.

The issuer service runs as ``ccsim serve`` runs it (a uvicorn process, its own SQLite file or a
PostgreSQL table prefix) on a seed of ``--cards`` prefunded cards. A day's worth of commands is
applied over HTTP as the network applies them (authorizations, each screen + finalize, and
captures) until its command log holds ``--commands`` rows; with snapshots on (every
``--every`` commands, the default of ``ccsim serve``) the service writes them as it goes. Then the
issuer is SIGKILLed and started again with ``--resume``, ``--runs`` times, and the time from the
start of the process to its first ``/healthz`` 200 is measured: **from the snapshot** (load it,
replay the tail of the log, compare with the books) and, as the baseline in the same run, **from
the whole log** (the snapshot row removed first). Medians are reported, with the ratio. The
snapshot's cost while serving (how long its pickling held the domain lock) is read from the
service's log.

    python -m benchmarks restart [--cards 10000] [--commands 80000] [--runs 3] [--db sqlite|postgresql|both]

Writes ``benchmarks/results/restart.json``. Issue 15 asks for at most 5 s at 10,000 cards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import MetaData, Table, create_engine, delete, func, select

from services.api.auth import SigningAuth, create_credentials
from services.api.parties import write_seed
from services.api.parties.seed import PartySeed
from services.chain import ChainConfig
from services.contracts import CardholderSpec, FundingMode, MerchantSpec, Residency

RESULTS = Path(__file__).with_name("results") / "restart.json"
PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/ccsim_bench"
_FACTORY = "services.api.parties.issuer:create_issuer_app_from_env"
_CARD_KZT_MINOR = 10_000_000_00  # enough for a day of payments: no card runs dry


def _seed(cards: int) -> PartySeed:
    holders = tuple(CardholderSpec(f"h{i}", f"c{i}", Residency.RESIDENT, "standard", FundingMode.PREFUNDED, ("BTC",),
                                   (), _CARD_KZT_MINOR) for i in range(cards))
    merchants = tuple(MerchantSpec(f"m{i}", "acq-1", "grocery") for i in range(20))
    return PartySeed(config=ChainConfig(), cardholders=holders, merchants=merchants)


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Issuer:
    """One issuer process on its data directory (or PostgreSQL prefix), started and killed at will."""

    def __init__(self, root: Path, seed: PartySeed, db_url: str, every: int) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.credentials = create_credentials(root / "credentials.json")
        write_seed(seed, root / "seed.json")
        self.log_path = root / "issuer.log"
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}_issuer_" if db_url else ""
        self.db_url = db_url or f"sqlite:///{root / 'data' / 'issuer.db'}"
        self.env = {**os.environ, "CCSIM_PARTY": "issuer", "CCSIM_DATA_DIR": str(root / "data"),
                    "CCSIM_SEED_FILE": str(root / "seed.json"),
                    "CCSIM_CREDENTIALS_FILE": str(root / "credentials.json"),
                    "CCSIM_SNAPSHOT_EVERY_COMMANDS": str(every), "CCSIM_RESET": "1", "CCSIM_RESUME": "0"}
        if db_url:
            self.env.update({"CCSIM_DATABASE_URL": db_url, "CCSIM_TABLE_PREFIX": self.prefix})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the process and wait for its first ``/healthz`` 200: seconds from the start."""
        argv = [sys.executable, "-m", "uvicorn", "--factory", _FACTORY, "--host", "127.0.0.1", "--port",
                str(self.port), "--no-access-log", "--log-level", "warning"]
        with self.log_path.open("a") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the issuer exited while starting; see {self.log_path}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.env["CCSIM_RESET"], self.env["CCSIM_RESUME"] = "0", "1"

    def _tables(self) -> tuple[Any, Table, Table]:
        engine = create_engine(self.db_url)
        meta = MetaData()
        return (engine, Table(f"{self.prefix}commands", meta, autoload_with=engine),
                Table(f"{self.prefix}snapshots", meta, autoload_with=engine))

    def commands(self) -> int:
        engine, commands, _ = self._tables()
        with engine.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(commands)).scalar_one())
        engine.dispose()
        return n

    def drop_snapshots(self) -> None:
        engine, _, snapshots = self._tables()
        with engine.begin() as conn:
            conn.execute(delete(snapshots))
        engine.dispose()

    def snapshot_costs(self) -> list[dict[str, float]]:
        """Each ``snapshot_written`` line of the service's log, as numbers (JSON or key=value lines)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "snapshot_written" in line:
                fields = dict(re.findall(r'"?(bytes|lock_held_s|seconds|log_seq)"?[=:] ?([0-9.]+)', line))
                found.append({k: float(v) for k, v in fields.items()})
        return found


async def _load(issuer: Issuer, cards: int, commands: int, concurrency: int) -> dict[str, Any]:
    """Authorizations and captures as the network sends them, until the log holds ``commands``."""
    auth = SigningAuth(issuer.credentials.principal("network"))
    started = time.perf_counter()
    payments = 0
    async with httpx.AsyncClient(base_url=issuer.url, auth=auth, timeout=60.0) as client:

        async def pay(n: int) -> None:
            body = {"auth_id": f"a{n}", "card_id": f"c{n % cards}", "merchant_id": f"m{n % 20}",
                    "acquirer_id": "acq-1", "amount": "1500.00", "category": "grocery"}
            r = await client.post("/v1/authorizations", json=body, headers={"Idempotency-Key": f"a{n}"})
            if r.status_code == 200 and r.json().get("approved") and n % 4:  # most are captured
                await client.post(f"/v1/authorizations/a{n}/capture", json={"amount": "1500.00"},
                                  headers={"Idempotency-Key": f"cap{n}"})

        logged = await asyncio.to_thread(issuer.commands)
        while logged < commands:
            batch = max(concurrency, min(2_000, (commands - logged) // 3 + concurrency))
            queue = iter(range(payments, payments + batch))

            async def worker(numbers: Any) -> None:
                for n in numbers:
                    await pay(n)

            await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
            payments += batch
            logged = await asyncio.to_thread(issuer.commands)
    return {"payments": payments, "commands": logged, "seconds": round(time.perf_counter() - started, 1)}


def _measure(db: str, db_url: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    issuer = Issuer(root, _seed(args.cards), db_url, args.every)
    try:
        seeded_s = issuer.start()
        print(f"[{db}] seeded {args.cards} cards in {seeded_s:.1f} s; applying {args.commands} commands", flush=True)
        load = asyncio.run(_load(issuer, args.cards, args.commands, args.concurrency))
        print(f"[{db}] load: {json.dumps(load)}", flush=True)
        costs = issuer.snapshot_costs()
        from_snapshot, from_log = [], []
        for _ in range(args.runs):
            issuer.kill()
            from_snapshot.append(issuer.start())
        issuer.kill()
        issuer.drop_snapshots()
        issuer.env["CCSIM_SNAPSHOT_EVERY_COMMANDS"] = "0"  # the baseline: the whole log, every time
        for _ in range(args.runs):
            issuer.kill()
            from_log.append(issuer.start())
        issuer.kill()
    finally:
        issuer.kill()
    snap_med, log_med = statistics.median(from_snapshot), statistics.median(from_log)
    return {
        "cards": args.cards, "load": load, "snapshot_every_commands": args.every,
        "ready_from_snapshot_s": [round(x, 2) for x in from_snapshot],
        "ready_from_snapshot_median_s": round(snap_med, 2),
        "ready_from_whole_log_s": [round(x, 2) for x in from_log], "ready_from_whole_log_median_s": round(log_med, 2),
        "ratio_snapshot_to_whole_log": round(snap_med / log_med, 3),
        "snapshots_written": len(costs),
        "snapshot_lock_held_s_max": max((c.get("lock_held_s", 0.0) for c in costs), default=None),
        "snapshot_write_s_max": max((c.get("seconds", 0.0) for c in costs), default=None),
        "snapshot_bytes_last": costs[-1].get("bytes") if costs else None,
        "target_s": 5.0, "met": snap_med <= 5.0,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks restart", description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--commands", type=int, default=80_000, help="the day's commands in the issuer's log")
    parser.add_argument("--every", type=int, default=5_000, help="a snapshot every this many commands")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("CCSIM_TEST_PG_URL", PG_URL_DEFAULT))
    parser.add_argument("--quick", action="store_true", help="1,000 cards, 8,000 commands, 2 runs")
    args, _ = parser.parse_known_args(argv)  # `make bench` passes every benchmark the same options
    if args.quick:
        args.cards, args.commands, args.every, args.runs = 1_000, 8_000, 1_000, 2
    results: dict[str, Any] = {"benchmark": "restart", "python": platform.python_version(),
                               "cpus": os.cpu_count(), "targets": {}}
    for db in (("sqlite", "postgresql") if args.db == "both" else (args.db,)):
        with tempfile.TemporaryDirectory(prefix="ccsim-restart-") as tmp:
            results["targets"][db] = _measure(db, args.pg_url if db == "postgresql" else "", args, Path(tmp))
        print(db, json.dumps(results["targets"][db]), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
