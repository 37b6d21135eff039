"""``ccsim serve``: the command line of the live party services (see :mod:`sim.live.serve`).

    ccsim serve [--database-url URL] [--data-dir DIR] [--host 127.0.0.1] [--port 8000]
                [--scenario FILE] [--seed N] [--set KEY=VALUE ...] [--reset | --resume] [--no-gateway]

Exit codes: 0 stopped on request (Ctrl-C, SIGTERM); 1 a service died; 2 bad input (nothing started).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from services.api.parties.seed import PartySeed, read_seed
from sim.live.serve import ServeConfig, Supervisor, SupervisorError, install_stop_handlers, scenario_seed
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


def serve_command(args: argparse.Namespace) -> int:
    if args.reset and args.resume:
        _err("--reset and --resume exclude each other: drop the books, or continue on them")
        return EXIT_BAD_INPUT
    if not 1 <= args.port <= 65_535 - 4:
        _err("--port must leave room for the four party ports above it")
        return EXIT_BAD_INPUT
    if args.seed < 0:
        _err("--seed must not be negative")
        return EXIT_BAD_INPUT
    try:
        seed = _seed(args)
    except ScenarioError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    config = ServeConfig(data_dir=args.data_dir, host=args.host, port=args.port, database_url=args.database_url,
                         reset=args.reset, resume=args.resume, gateway=not args.no_gateway)
    print(f"ccsim serve: {len(seed.cardholders)} cardholders, {len(seed.merchants)} merchants; "
          f"starting {', '.join(config.ports())} (logs in {args.data_dir / 'logs'})", flush=True)
    stop_requested: list[bool] = []
    install_stop_handlers(stop_requested)
    supervisor = Supervisor(config, seed)
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
