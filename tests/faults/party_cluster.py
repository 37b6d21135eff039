"""The four party services under uvicorn for the fault harness, and a PostgreSQL it may crash.

- :func:`fault_seed` is the population the harness plays: JIT cards (every payment sells crypto at
  the exchange) and pre-funded cards with an auto top-up, at merchants of every acquirer.
- :class:`PartyProcess` is one party service in its own process on a fixed loopback port. It can be
  SIGKILLed and started again on the same port and database with ``CCSIM_RESUME=1``, and its wall
  clock can be stepped while it runs (:mod:`tests.faults.clock_shift`).
- :class:`Parties` starts the exchange, issuer, network and bank with their peers' URLs; the
  issuer reaches the exchange through a :class:`~tests.faults.tcp_proxy.TcpProxy`.
- :class:`PgServer` is the PostgreSQL the services use. ``private`` (the default) is a throwaway
  cluster made with the machine's own ``initdb`` on a free port, so ``pg_ctl stop -m immediate``
  hits no one else's tests; ``shared`` is the machine's cluster (``pg_lsclusters`` /
  ``pg_ctlcluster``, as ``.ci/run`` starts it), for a machine where nothing else uses it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from services.api.auth import Credentials, create_credentials
from services.api.parties import PartySeed
from services.chain import ChainConfig
from services.contracts import CardholderSpec, FundingMode, Holding, Lot, MerchantSpec, Residency
from services.money import D
from sim.live.serve import PARTY_FACTORIES

from .clock_shift import CLOCK_FILE_ENV, ack_path
from .ports import LOOPBACK, free_ports
from .service import kill_process, log_tail, stop_process, wait_healthy

__all__ = ["LOOPBACK", "PARTIES", "Parties", "PartyProcess", "PgServer", "fault_seed", "free_ports"]

PARTIES: Final = ("exchange", "issuer", "network", "bank")  # the kill order, round robin
_REPO: Final = Path(__file__).resolve().parents[2]
_SAT_PER_BTC: Final = 100_000_000


def fault_seed(cards: int, merchants: int, deadline_ms: int) -> PartySeed:
    """Two thirds JIT cards holding 2 BTC each, one third pre-funded (1,000,000 KZT on the card, an
    auto top-up below 300,000 from 1 BTC); premium KYC, AML velocity out of the way (a payment run
    of minutes would otherwise trip it on every card)."""
    config = ChainConfig(aml_velocity_max_payments=1_000_000, top_up_below_kzt=300_000_00,
                         top_up_to_kzt=1_000_000_00)
    holders = []
    for i in range(cards):
        jit = i % 3 != 2
        btc = 2 * _SAT_PER_BTC if jit else _SAT_PER_BTC
        holders.append(CardholderSpec(
            f"h{i}", f"c{i}", Residency.RESIDENT if i % 2 == 0 else Residency.NON_RESIDENT, "premium",
            FundingMode.JIT if jit else FundingMode.PREFUNDED, ("BTC",),
            (Holding("BTC", (Lot(btc, D("40000000"), 0.0),)),),
            card_balance_kzt=0 if jit else 1_000_000_00))
    acquirers = config.acquirer_ids
    shops = tuple(MerchantSpec(f"m{j}", acquirers[j % len(acquirers)], ("grocery", "fuel", "hotel")[j % 3])
                  for j in range(merchants))
    return PartySeed(config=config, prices_kzt={"BTC": D("45000000"), "ETH": D("1600000")},
                     cardholders=tuple(holders), merchants=shops, deadline_ms=deadline_ms)


@dataclass
class PartyProcess:
    """One party service; ``start`` the first time on empty books, again (``resume``) after a kill."""

    name: str
    port: int
    env: dict[str, str]  # its CCSIM_* settings
    log_path: Path
    clock_file: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    clock_offset_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, *, resume: bool) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running")
        factory = PARTY_FACTORIES[self.name][1]
        env = {**os.environ, **self.env, "CCSIM_RESUME": "1" if resume else "0", "CCSIM_RESET": "0",
               CLOCK_FILE_ENV: str(self.clock_file), "PYTHONPATH": str(_REPO)}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} (resume={resume}) ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.clock_shift", "--factory", factory, "--host", LOOPBACK,
                 "--port", str(self.port), "--no-access-log", "--log-level", "warning",
                 "--timeout-graceful-shutdown", "5"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=_REPO)
        self.starts += 1

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds until ``/healthz`` answers 200; raises when the process exits or time runs out."""
        return wait_healthy(self.proc, self.url, timeout_s, self.log_path, self.name)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self, grace_s: float = 10.0) -> None:
        stop_process(self.proc, grace_s)

    def step_clock(self, offset_s: float, timeout_s: float = 10.0) -> None:
        """Move this service's wall clock to real time + ``offset_s``, while it runs; returns once
        the process has applied it (its acknowledgement file says so)."""
        ack = ack_path(self.clock_file)
        ack.unlink(missing_ok=True)
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(repr(offset_s), encoding="ascii")
        tmp.replace(self.clock_file)
        self.clock_offset_s = offset_s
        if self.proc is None or self.proc.poll() is not None:
            return  # it reads the file when it starts
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if float(ack.read_text(encoding="ascii")) == offset_s:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not acknowledge the clock step to {offset_s:+g} s")

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


@dataclass
class Parties:
    """The four services; the issuer's exchange URL is ``exchange_via`` (the proxy) when given."""

    work_dir: Path
    seed_file: Path
    database_url: str  # "" = a SQLite file per party in work_dir
    table_prefix: str
    extra_env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    exchange_via: str = ""
    procs: dict[str, PartyProcess] = field(default_factory=dict)
    credentials: Credentials = field(init=False)

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = dict(zip(PARTIES, free_ports(len(PARTIES)), strict=True))
        urls = self.urls()
        # the keys, as ccsim serve writes them: the harness signs as the POS and the operator
        self.credentials = create_credentials(self.work_dir / "credentials.json")
        for name in PARTIES:
            env = {**self.extra_env, "CCSIM_PARTY": name, "CCSIM_DATA_DIR": str(self.work_dir / "data"),
                   "CCSIM_SEED_FILE": str(self.seed_file), "CCSIM_CREDENTIALS_FILE": str(self.credentials.path)}
            env.update({f"CCSIM_{peer.upper()}_URL": url for peer, url in urls.items()})
            if name == "issuer" and self.exchange_via:
                env["CCSIM_EXCHANGE_URL"] = self.exchange_via
            if self.database_url:
                env["CCSIM_DATABASE_URL"] = self.database_url
                env["CCSIM_TABLE_PREFIX"] = f"{self.table_prefix}{name}_"
            self.procs[name] = PartyProcess(name, self.ports[name], env, self.work_dir / "logs" / f"{name}.log",
                                            self.work_dir / "clock" / f"{name}.offset")
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "clock").mkdir(parents=True, exist_ok=True)

    def urls(self) -> dict[str, str]:
        return {name: f"http://{LOOPBACK}:{port}" for name, port in self.ports.items()}

    def start_all(self, timeout_s: float) -> dict[str, float]:
        """Start the four on empty books (the bank first: the others' opening state goes through it
        only by message later, but it is the cheapest); seconds each took to be healthy."""
        out: dict[str, float] = {}
        for name in ("bank", "exchange", "issuer", "network"):
            self.procs[name].start(resume=False)
        for name in ("bank", "exchange", "issuer", "network"):
            out[name] = round(self.procs[name].wait_healthy(timeout_s), 3)
        return out

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.proc is not None and not p.alive()]


# -- PostgreSQL -----------------------------------------------------------------------------------


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL's tools refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _clusters() -> list[tuple[str, str, str]]:
    """(version, name, status) of the machine's clusters, from ``pg_lsclusters``."""
    try:
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((parts[0], parts[1], parts[3]))
    return rows


class PgServer:
    """A PostgreSQL server the harness may crash (``pg_ctl stop -m immediate``) and start again."""

    def __init__(self, mode: str, shared_url: str = "") -> None:
        if mode not in ("private", "shared"):
            raise ValueError(f"mode must be 'private' or 'shared', not {mode!r}")
        self.mode = mode
        self.url = shared_url
        self.data_dir: Path | None = None
        self.port = 0
        self._bin: Path | None = None
        self._cluster: tuple[str, str] | None = None

    @staticmethod
    def unavailable(mode: str) -> str | None:
        """Why this machine cannot give the harness such a server (None when it can)."""
        clusters = _clusters()
        if not clusters:
            return "pg_lsclusters lists no PostgreSQL cluster (is PostgreSQL installed?)"
        if mode == "private":
            binary = Path(f"/usr/lib/postgresql/{clusters[0][0]}/bin/initdb")
            if not binary.exists():
                return f"{binary} not found"
            if os.geteuid() == 0 and shutil.which("runuser") is None:
                return "running as root without runuser"
        return None

    def start(self) -> str:
        """Make (private) or find (shared) the server and have it running; the SQLAlchemy URL."""
        clusters = _clusters()
        version, name, _ = clusters[0]
        if self.mode == "shared":
            self._cluster = (version, name)
            self._start_shared()
            return self.url
        self._bin = Path(f"/usr/lib/postgresql/{version}/bin")
        self.data_dir = Path(tempfile.mkdtemp(prefix="ccsim-faults-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        subprocess.run(_as_postgres([str(self._bin / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                                     "-U", "postgres", "-E", "UTF8", "--no-instructions"]),
                       check=True, capture_output=True, timeout=180)
        self.port = free_ports(1)[0]
        self._pg_ctl_start()
        self.url = f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres"
        return self.url

    def _pg_ctl_start(self) -> None:
        assert self._bin is not None and self.data_dir is not None
        options = (f"-c listen_addresses={LOOPBACK} -c port={self.port} -c unix_socket_directories={self.data_dir} "
                   "-c max_connections=400 -c shared_buffers=64MB")
        subprocess.run(_as_postgres([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                                     "-l", str(self.data_dir / "server.log"), "-w", "-t", "120", "start"]),
                       check=True, capture_output=True, timeout=180)

    def _start_shared(self) -> None:
        assert self._cluster is not None
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *self._cluster, "start"],
                       capture_output=True, timeout=180, check=False)  # "already running" is fine

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: the server exits at once, no checkpoint; crash recovery
        (WAL replay) runs at the next start."""
        if self.mode == "shared":
            assert self._cluster is not None
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *self._cluster, "stop", "-m", "immediate"],
                           check=True, capture_output=True, timeout=120)
            return
        assert self._bin is not None and self.data_dir is not None
        subprocess.run(_as_postgres([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                                     "-w", "stop"]), check=True, capture_output=True, timeout=120)

    def restart(self) -> None:
        if self.mode == "shared":
            self._start_shared()
        else:
            self._pg_ctl_start()

    def close(self) -> None:
        """Stop and remove a private cluster (the shared one is left running)."""
        if self.mode != "private" or self.data_dir is None or self._bin is None:
            return
        subprocess.run(_as_postgres([str(self._bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                                     "stop"]), capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = None

    def log_tail(self, lines: int = 30) -> str:
        if self.data_dir is None:
            return ""
        try:
            return "\n".join((self.data_dir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
