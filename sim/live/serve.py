"""``ccsim serve``: every party as its own uvicorn process, under a small supervisor.

The scenario (or a prepared seed file) becomes one :class:`~services.api.parties.PartySeed`, written
to ``<data dir>/seed.json``; every party process reads it and books its own side of the opening
state. Ports: the gateway on ``port``, network + acquirers ``port+1``, issuer ``port+2``, exchange
``port+3``, bank ``port+4``; they are written to ``<data dir>/ports.json`` and printed.

The supervisor starts the children, waits for each ``/healthz``, then watches them. It restarts
nothing: a child that dies at start makes ``serve`` stop the others and exit non-zero (its log's
tail is printed), and so does a child that dies later. Ctrl-C or SIGTERM stops every child (SIGTERM,
then SIGKILL after a grace period). Each child's output goes to ``<data dir>/logs/<name>.log``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

import httpx

from services.api.auth import AuthError, create_credentials
from services.api.parties.seed import PartySeed, write_seed
from sim.components.population import build_population
from sim.domain import chain_config
from sim.rng import Streams
from sim.scenario import Scenario
from sim.scenario_load import load_scenario

__all__ = [
    "PARTY_FACTORIES",
    "ServeConfig",
    "ServiceProcess",
    "Supervisor",
    "SupervisorError",
    "scenario_seed",
    "seed_from_scenario",
]

# name → (port offset from --port, uvicorn factory)
PARTY_FACTORIES: Final[dict[str, tuple[int, str]]] = {
    "network": (1, "services.api.parties.network:create_network_app_from_env"),
    "issuer": (2, "services.api.parties.issuer:create_issuer_app_from_env"),
    "exchange": (3, "services.api.parties.exchange:create_exchange_app_from_env"),
    "bank": (4, "services.api.parties.bank:create_bank_app_from_env"),
}
GATEWAY_FACTORY: Final = "sim.live.gateway:create_gateway_app"
_STOP_GRACE_S: Final = 10.0
_POLL_S: Final = 0.1
_LOG_TAIL_LINES: Final = 30


class SupervisorError(RuntimeError):
    """A child did not start or died; ``str()`` says which and shows its log's tail."""


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = ""  # empty: a SQLite file per party in data_dir
    table_prefix: str = ""  # with database_url: the parties' tables are <table_prefix><party>_*
    reset: bool = False
    resume: bool = False  # continue on the books in data_dir / database_url (the parties replay their logs)
    gateway: bool = True  # start the gateway too, when sim.live.gateway is installed
    start_timeout_s: float = 600.0  # seeding a large population takes a while
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def ports(self) -> dict[str, int]:
        out = {name: self.port + offset for name, (offset, _) in PARTY_FACTORIES.items()}
        if self.gateway and gateway_available():
            out = {"gateway": self.port, **out}
        return out

    def urls(self) -> dict[str, str]:
        return {name: f"http://{self.host}:{port}" for name, port in self.ports().items()}


def gateway_available() -> bool:
    return importlib.util.find_spec("sim.live.gateway") is not None


def scenario_seed(path: Path, seed: int = 1, overrides: tuple[str, ...] = ()) -> PartySeed:
    """The chain and population of a scenario file (raises :class:`ScenarioError` naming the field)."""
    scenario, _ = load_scenario(path, list(overrides))
    return seed_from_scenario(scenario, seed)


def seed_from_scenario(scenario: Scenario, seed: int = 1) -> PartySeed:
    """The chain and population exactly as ``ccsim run`` builds them for ``seed`` (the population
    is drawn on its own named rng streams), so ``ccsim load`` can play the same cardholders."""
    config = chain_config(scenario)
    population = build_population(scenario, Streams(seed))
    registry = scenario.registry()
    prices = {code: scenario.market.assets[code].start_price_kzt
              for code in config.exchange.books if code in scenario.market.assets}
    return PartySeed(config=config, assets=tuple(registry.get(c) for c in registry.codes()), prices_kzt=prices,
                     cardholders=tuple(population.cardholders), merchants=tuple(population.merchants),
                     deadline_ms=round(scenario.network.deadline_ms))


@dataclass
class ServiceProcess:
    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])


class Supervisor:
    """Starts, watches and stops the service processes of one ``ccsim serve``."""

    def __init__(self, config: ServeConfig, seed: PartySeed) -> None:
        self.config = config
        self.seed_path = config.data_dir / "seed.json"
        self.ports_path = config.data_dir / "ports.json"
        config.data_dir.mkdir(parents=True, exist_ok=True)
        write_seed(seed, self.seed_path)
        # One key per principal, mode 0600, kept across restarts (--resume); every child reads it
        # (services.api.auth), ccsim load --credentials signs the POS's payments with it.
        self.credentials_path = (config.data_dir / "credentials.json").resolve()
        try:
            create_credentials(self.credentials_path)
        except AuthError as exc:
            raise SupervisorError(str(exc)) from None
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"ccsim serve: --host {config.host} makes the parties reachable from other machines; each "
                  f"refuses unsigned calls (keys in {self.credentials_path}) and answers only the Host names "
                  "in its peer URLs and CCSIM_ALLOWED_HOSTS", file=sys.stderr)
        self.children = [self._child(name, port) for name, port in config.ports().items()]

    def _child(self, name: str, port: int) -> ServiceProcess:
        cfg = self.config
        factory = GATEWAY_FACTORY if name == "gateway" else PARTY_FACTORIES[name][1]
        urls = cfg.urls()
        env = {**os.environ, **cfg.extra_env,
               "CCSIM_PARTY": name, "CCSIM_DATA_DIR": str(cfg.data_dir.resolve()),
               "CCSIM_SEED_FILE": str(self.seed_path.resolve()),
               "CCSIM_CREDENTIALS_FILE": str(self.credentials_path),
               "CCSIM_RESET": "1" if cfg.reset else "0", "CCSIM_RESUME": "1" if cfg.resume else "0"}
        if name == "gateway":
            env["CCSIM_PORTS_FILE"] = str(self.ports_path.resolve())
            for key in ("CCSIM_SEED_FILE", "CCSIM_RESET", "CCSIM_RESUME"):
                env.pop(key)
        else:
            env.update({f"CCSIM_{peer.upper()}_URL": urls[peer] for peer in PARTY_FACTORIES})
        if cfg.database_url:
            env["CCSIM_DATABASE_URL"] = cfg.database_url
            env["CCSIM_TABLE_PREFIX"] = f"{cfg.table_prefix}{name}_"  # one database, a table prefix per party
        else:
            env.pop("CCSIM_DATABASE_URL", None)
            env.pop("CCSIM_TABLE_PREFIX", None)
        argv = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", cfg.host, "--port", str(port),
                "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "5"]
        return ServiceProcess(name, port, argv, env, cfg.data_dir / "logs" / f"{name}.log")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, stop_requested: list[bool] | None = None) -> None:
        """Start every child and wait for each ``/healthz``; on any failure (or a stop request) stop
        them all and raise :class:`SupervisorError`."""
        try:
            for child in self.children:
                child.start()
            self._wait_healthy(stop_requested if stop_requested is not None else [])
        except BaseException:
            self.stop()
            raise
        self._write_ports()

    def _wait_healthy(self, stop_requested: list[bool]) -> None:
        waiting = {c.name: c for c in self.children}
        deadline = time.monotonic() + self.config.start_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                if stop_requested:
                    raise SupervisorError("stopped on request while starting")
                for name, child in list(waiting.items()):
                    code = child.exit_code()
                    if code is not None:
                        raise SupervisorError(f"{name} exited with code {code} while starting; "
                                              f"its log ({child.log_path}):\n{child.log_tail()}")
                    try:
                        if client.get(f"http://{self.config.host}:{child.port}/healthz").status_code == 200:
                            del waiting[name]
                    except httpx.TransportError:
                        pass
                if time.monotonic() > deadline:
                    raise SupervisorError(f"not healthy after {self.config.start_timeout_s:g} s: "
                                          f"{', '.join(sorted(waiting))}")
                if waiting:
                    time.sleep(_POLL_S)

    def _write_ports(self) -> None:
        body = {"host": self.config.host, "ports": self.config.ports(), "urls": self.config.urls(),
                "seed_file": str(self.seed_path), "pids": {c.name: c.process.pid for c in self.children if c.process}}
        tmp = self.ports_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.ports_path)

    def dead(self) -> list[tuple[str, int]]:
        return [(c.name, code) for c in self.children if (code := c.exit_code()) is not None]

    def watch(self, stop_requested: list[bool]) -> int:
        """Block until a stop is requested (0) or a child dies (1)."""
        while not stop_requested:
            dead = self.dead()
            if dead:
                for name, code in dead:
                    child = next(c for c in self.children if c.name == name)
                    print(f"ccsim serve: {name} exited with code {code}; stopping the others. "
                          f"Its log ({child.log_path}):\n{child.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(_POLL_S * 5)
        return 0

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        with contextlib.suppress(OSError):
            self.ports_path.unlink()

    @contextlib.contextmanager
    def running(self) -> Iterator[Supervisor]:
        """Started on entry, every child stopped on exit (also on an exception)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def install_stop_handlers(stop_requested: list[bool]) -> None:
    """SIGINT and SIGTERM set the flag; the supervisor's loop then stops the children."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(True)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
