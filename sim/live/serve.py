"""``ccsim serve``: every party as its own uvicorn process, under a small supervisor.

The scenario (or a prepared seed file) becomes one :class:`~services.api.parties.PartySeed`, written
to ``<data dir>/seed.json``; every party process reads it and books its own side of the opening
state. Ports: the gateway on ``port``, network + acquirers ``port+1``, issuer ``port+2``, exchange
``port+3``, bank ``port+4``; they are written to ``<data dir>/ports.json`` and printed.

The supervisor starts the children, waits for each ``/healthz`` (reporting each service as it
comes up, and every few seconds the ones still seeding), then watches them. A child that dies at
start makes ``serve`` stop the others and exit non-zero (its log's tail is printed). A child that
dies later is restarted on its own books, as ``--resume`` starts it, while the others keep serving;
the restarts are bounded by :class:`~sim.live.restarts.RestartPolicy`, and a child in a crash loop
makes ``serve`` give up with its log's tail and stop every service. Ctrl-C or SIGTERM stops every
child (SIGTERM, then SIGKILL after a grace period). Each child's output goes to
``<data dir>/logs/<name>.log``. What happens is reported as :class:`SupervisorEvent` values to the
``on_event`` callback (the CLI prints them; tests wait on them).
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

import httpx

from services.api.auth import AuthError, create_credentials
from services.api.parties.seed import PartySeed, write_seed
from services.errors import CcsimError
from sim.components.direct import stable_wallets
from sim.components.population import build_population
from sim.domain import chain_config
from sim.live.restarts import RestartPolicy
from sim.rng import Streams
from sim.scenario import Scenario
from sim.scenario_load import load_scenario

__all__ = [
    "PARTY_FACTORIES",
    "ServeConfig",
    "ServiceProcess",
    "Supervisor",
    "SupervisorError",
    "SupervisorEvent",
    "scenario_seed",
    "seed_from_scenario",
]

# How long a service keeps an idle connection open. It must outlast every client's own idle expiry
# (the parties' aiohttp pool 30 s, ccsim load's aiohttp 15 s, httpx 5 s): a server that closes
# first races the client's next request on that connection, which then fails with a read error that
# a POST must not blindly retry. uvicorn's default (5 s) equals httpx's and lost that race under load.
SERVER_KEEP_ALIVE_S: Final = 75

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
_WAITING_EVERY_S: Final = 5.0  # while seeding, name the services not up yet this often
_PROBE_TIMEOUT_S: Final = 1.0
_PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h


class SupervisorError(CcsimError, RuntimeError):
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
    restarts_max: int = 5  # restarts of one child within restart_window_s; one more death gives up
    restart_window_s: float = 600.0
    gateway_env: Mapping[str, str] = field(default_factory=dict)  # CCSIM_* settings for the gateway only

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
    streams = Streams(seed)
    population = build_population(scenario, streams)
    if scenario.direct.enabled and scenario.direct.assets.stablecoin > 0:  # as ccsim run's world does
        stable_wallets(scenario, streams, population.cardholders)
    registry = scenario.registry()
    prices = {code: scenario.market.assets[code].start_price_kzt
              for code in config.exchange.books if code in scenario.market.assets}
    return PartySeed(config=config, assets=tuple(registry.get(c) for c in registry.codes()), prices_kzt=prices,
                     cardholders=tuple(population.cardholders), merchants=tuple(population.merchants),
                     deadline_ms=round(scenario.network.deadline_ms))


@dataclass(frozen=True)
class SupervisorEvent:
    """Something the supervisor saw or did.

    ``kind``: ``up`` (a child answers ``/healthz`` at start), ``waiting`` (children not up yet,
    ``name`` lists them), ``died``, ``restarting``, ``restarted`` (healthy again), ``gave_up``
    (a crash loop, or a restart that never became healthy: every service is then stopped).
    """

    kind: str
    name: str
    detail: str = ""
    elapsed_s: float = 0.0


def _die_with_parent() -> None:
    """In the child, before it runs uvicorn: ask Linux to SIGTERM it when the thread that started it
    ends, so a ``serve`` that is itself killed (SIGKILL, the OOM killer) leaves no orphan services
    holding the ports and the books. Elsewhere nothing is done: ``serve`` stops them itself."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415 — only in the forked child, on Linux

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(code: int) -> str:
    """``-9`` → ``killed by SIGKILL``; ``1`` → ``exit code 1``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


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
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)  # noqa: PLW1509 — prctl only, no locks taken: safe after fork

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def restart_on_books(self, note: str) -> None:
        """Start again on the books the last life left: resume, never reset (a reset would drop
        the books the rest of the chain still relies on)."""
        self.stop()
        if "CCSIM_RESUME" in self.env:
            self.env["CCSIM_RESUME"], self.env["CCSIM_RESET"] = "1", "0"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- ccsim serve: {note} ---\n")
        self.start()

    def healthy(self, client: httpx.Client, host: str) -> bool:
        """``/healthz`` answers: 200, or 429 (rate-limited: the process serves, someone else on
        this machine spends the bucket its polls share; services.api.rate_limit)."""
        try:
            return client.get(f"http://{host}:{self.port}/healthz").status_code in (200, 429)
        except httpx.TransportError:
            return False

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

    def __init__(self, config: ServeConfig, seed: PartySeed,
                 on_event: Callable[[SupervisorEvent], None] | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.policy = RestartPolicy(config.restarts_max, config.restart_window_s)
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
            env.update(cfg.gateway_env)
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
                "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "5",
                "--timeout-keep-alive", str(SERVER_KEEP_ALIVE_S)]
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

    def _emit(self, kind: str, name: str, detail: str = "", elapsed_s: float = 0.0) -> None:
        if self.on_event is not None:
            self.on_event(SupervisorEvent(kind, name, detail, elapsed_s))

    def _wait_healthy(self, stop_requested: list[bool]) -> None:
        waiting = {c.name: c for c in self.children}
        t0 = time.monotonic()
        deadline = t0 + self.config.start_timeout_s
        next_report = t0 + _WAITING_EVERY_S
        with httpx.Client(timeout=_PROBE_TIMEOUT_S) as client:
            while waiting:
                if stop_requested:
                    raise SupervisorError("stopped on request while starting")
                for name, child in list(waiting.items()):
                    code = child.exit_code()
                    if code is not None:
                        raise SupervisorError(f"{name} exited ({describe_exit(code)}) while starting; "
                                              f"its log ({child.log_path}):\n{child.log_tail()}")
                    if child.healthy(client, self.config.host):
                        del waiting[name]
                        self._emit("up", name, f"port {child.port}", time.monotonic() - t0)
                now = time.monotonic()
                if now > deadline:
                    raise SupervisorError(f"not healthy after {self.config.start_timeout_s:g} s: "
                                          f"{', '.join(sorted(waiting))}")
                if waiting and now >= next_report:
                    next_report = now + _WAITING_EVERY_S
                    self._emit("waiting", ", ".join(sorted(waiting)), "starting", now - t0)
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
        """Block until a stop is requested (0), restarting every child that dies on its books; a
        child in a crash loop, or one that does not come back, stops every service (1)."""
        due: dict[str, float] = {}  # a dead child's restart time
        coming_back: dict[str, tuple[float, float]] = {}  # restarted child → (started at, deadline)
        with httpx.Client(timeout=_PROBE_TIMEOUT_S) as client:
            while not stop_requested:
                now = time.monotonic()
                for child in self.children:
                    if child.name in due:
                        if now >= due[child.name]:
                            del due[child.name]
                            child.restart_on_books("restarted on its books after it died")
                            coming_back[child.name] = (now, now + self.config.start_timeout_s)
                        continue
                    code = child.exit_code()
                    if code is not None:
                        coming_back.pop(child.name, None)
                        if not self._died(child, code, now, due):
                            return 1
                    elif child.name in coming_back:
                        started, deadline = coming_back[child.name]
                        if child.healthy(client, self.config.host):
                            del coming_back[child.name]
                            self._write_ports()
                            self._emit("restarted", child.name, f"pid {child.process.pid if child.process else 0}",
                                       now - started)
                        elif now > deadline:
                            child.stop()  # not healthy in time: a death like any other, next round
                time.sleep(_POLL_S)
        return 0

    def _died(self, child: ServiceProcess, code: int, now: float, due: dict[str, float]) -> bool:
        """Schedule the restart of a dead child (True), or give up on a crash loop (False)."""
        self._emit("died", child.name, describe_exit(code))
        decision = self.policy.died(child.name, now)
        if not decision.allowed:
            self._emit("gave_up", child.name, f"{decision.reason}; stopping every service. "
                                              f"Its log ({child.log_path}):\n{child.log_tail()}")
            return False
        self._emit("restarting", child.name, decision.reason)
        due[child.name] = now + decision.delay_s
        return True

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
