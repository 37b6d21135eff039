"""``ccsim serve``: the command line of the live party services (see :mod:`sim.live.serve`).

    ccsim serve [--database-url URL] [--data-dir DIR] [--host 127.0.0.1] [--port 8000]
                [--scenario FILE] [--seed N] [--set KEY=VALUE ...] [--reset | --resume] [--no-gateway]
                [--scenarios-dir DIR] [--max-restarts N]

Exit codes: 0 stopped on request (Ctrl-C, SIGTERM); 1 a service died at start or kept dying (a
crash loop); 2 bad input, a data directory in use or holding an earlier run's books without
``--resume``/``--reset`` (nothing started; one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from services.api.parties.seed import PartySeed, read_seed
from sim.live.data_dir import DataDirInUseError, DataDirLock, earlier_books, lock_data_dir
from sim.live.restarts import RESTARTS_MAX
from sim.live.serve import (
    PARTY_FACTORIES,
    ServeConfig,
    Supervisor,
    SupervisorError,
    SupervisorEvent,
    install_stop_handlers,
    scenario_seed,
)
from sim.scenario_load import ScenarioError

__all__ = ["add_serve_command", "serve_command"]

EXIT_OK: Final = 0
EXIT_DIED: Final = 1
EXIT_BAD_INPUT: Final = 2


def add_serve_command(subparsers: Any, commands: dict[str, Callable[[argparse.Namespace], int]] | None = None) -> None:
    """Add ``serve`` to ``ccsim``'s sub-commands (and to its dispatch table, when given)."""
    p = subparsers.add_parser(
        "serve", help="run every party as its own HTTP service with its own database (docs/live-mode.md)")
    p.add_argument("--database-url", default="",
                   help="PostgreSQL URL shared by the parties (a table prefix each); default: a SQLite file "
                        "per party in --data-dir")
    p.add_argument("--data-dir", type=Path, default=Path("data/live"),
                   help="SQLite files, seed.json, ports.json and the services' logs (default data/live)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000,
                   help="the gateway's port; network +1, issuer +2, exchange +3, bank +4")
    p.add_argument("--scenario", type=Path, default=None,
                   help="seed the population (cardholders, wallets, merchants) and the chain from a scenario")
    p.add_argument("--seed", type=int, default=1, help="the population's random seed (as ccsim run --seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field (repeatable)")
    p.add_argument("--seed-file", type=Path, default=None,
                   help="a seed.json written earlier (instead of --scenario)")
    p.add_argument("--reset", action="store_true",
                   help="drop the parties' tables first (required when --data-dir holds an earlier run's books)")
    p.add_argument("--resume", action="store_true",
                   help="continue on the books an earlier run left in --data-dir (each party rebuilds its state "
                        "from its command log and checks it against its books)")
    p.add_argument("--no-gateway", action="store_true", help="start the party services only")
    p.add_argument("--scenarios-dir", type=Path, default=None,
                   help="scenario files the dashboard lists, besides the --scenario file and ccsim's own library")
    p.add_argument("--max-restarts", type=int, default=5, metavar="N",
                   help="restarts of a service that dies, within 10 minutes, before serve gives up (default 5; "
                        "0: a death stops every service)")
    p.set_defaults(func=serve_command)
    if commands is not None:
        commands["serve"] = serve_command


def _err(message: str) -> None:
    print(f"ccsim serve: {message}", file=sys.stderr)


def _seed(args: argparse.Namespace) -> PartySeed:
    if args.seed_file is not None and args.scenario is not None:
        raise ScenarioError("give --scenario or --seed-file, not both")
    if args.seed_file is not None:
        try:
            return read_seed(args.seed_file)
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"{args.seed_file}: {exc}") from None
    if args.scenario is not None:
        return scenario_seed(args.scenario, args.seed, tuple(args.overrides))
    return PartySeed()


def _print_event(event: SupervisorEvent) -> None:
    """One line per thing the supervisor saw; restarts and deaths go to stderr."""
    at = f" after {event.elapsed_s:.1f} s" if event.elapsed_s else ""
    if event.kind == "up":
        print(f"ccsim serve: {event.name} is up{at} ({event.detail})", flush=True)
    elif event.kind == "waiting":
        print(f"ccsim serve: waiting for {event.name} ({event.elapsed_s:.0f} s so far; a party answers once it "
              "has seeded its books)", flush=True)
    elif event.kind == "restarted":
        print(f"ccsim serve: {event.name} is up again{at} ({event.detail})", file=sys.stderr, flush=True)
    elif event.kind == "died":
        print(f"ccsim serve: {event.name} died ({event.detail})", file=sys.stderr, flush=True)
    elif event.kind == "restarting":
        print(f"ccsim serve: {event.detail}", file=sys.stderr, flush=True)
    else:
        print(f"ccsim serve: giving up: {event.detail}", file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> str:
    """What is wrong with the arguments, or "" (nothing is started when something is)."""
    if args.reset and args.resume:
        return "--reset and --resume exclude each other: drop the books, or continue on them"
    if not 1 <= args.port <= 65_535 - 4:
        return "--port must leave room for the four party ports above it"
    if args.seed < 0:
        return "--seed must not be negative"
    if not 0 <= args.max_restarts <= RESTARTS_MAX:
        return f"--max-restarts must be from 0 to {RESTARTS_MAX}"
    if args.scenarios_dir is not None and not args.scenarios_dir.is_dir():
        return f"--scenarios-dir {args.scenarios_dir}: not a directory"
    return ""


def _claim_data_dir(args: argparse.Namespace) -> DataDirLock:
    """Lock the data directory; refuse (ScenarioError, one line) one in use or with an earlier run's books."""
    try:
        lock = lock_data_dir(args.data_dir)
    except DataDirInUseError as exc:
        raise ScenarioError(str(exc)) from None
    except OSError as exc:
        raise ScenarioError(f"--data-dir {args.data_dir}: {exc.strerror or exc}") from None
    if not (args.reset or args.resume):
        used = earlier_books(args.data_dir, PARTY_FACTORIES, args.database_url)
        if used:
            lock.release()
            where = args.database_url.split("@")[-1] if args.database_url else str(args.data_dir)
            raise ScenarioError(f"{where} holds the books of an earlier run ({', '.join(used)}): start with "
                                "--resume to continue on them, or with --reset to drop them")
    return lock


def serve_command(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        _err(problem)
        return EXIT_BAD_INPUT
    try:
        seed = _seed(args)
        lock = _claim_data_dir(args)
    except ScenarioError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    try:
        return _serve(args, seed)
    finally:
        lock.release()


def _serve(args: argparse.Namespace, seed: PartySeed) -> int:
    gateway_env = {"CCSIM_RUNS_DIR": str((args.data_dir / "runs").resolve())}
    if args.scenario is not None:
        gateway_env["CCSIM_SCENARIO_FILE"] = str(args.scenario.resolve())
    if args.scenarios_dir is not None:
        gateway_env["CCSIM_SCENARIOS_DIR"] = str(args.scenarios_dir.resolve())
    config = ServeConfig(data_dir=args.data_dir, host=args.host, port=args.port, database_url=args.database_url,
                         reset=args.reset, resume=args.resume, gateway=not args.no_gateway,
                         restarts_max=args.max_restarts, gateway_env=gateway_env)
    print(f"ccsim serve: {len(seed.cardholders)} cardholders, {len(seed.merchants)} merchants; "
          f"starting {', '.join(config.ports())} (logs in {args.data_dir / 'logs'}); each service seeds its "
          "books before it answers", flush=True)
    stop_requested: list[bool] = []
    install_stop_handlers(stop_requested)
    supervisor = Supervisor(config, seed, on_event=_print_event)
    try:
        supervisor.start(stop_requested)
    except SupervisorError as exc:
        _err(str(exc))
        return EXIT_DIED
    try:
        for name, url in config.urls().items():
            print(f"  {name:9} {url}", flush=True)
        print(f"ports written to {supervisor.ports_path}; Ctrl-C stops every service", flush=True)
        code = supervisor.watch(stop_requested)
    finally:
        supervisor.stop()
    return EXIT_DIED if code else EXIT_OK
