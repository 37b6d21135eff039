"""Run benchmarks: ``python -m benchmarks`` runs all, ``python -m benchmarks ledger [args]`` one.

Any module ``benchmarks/bench_<name>.py`` with a ``main(argv)`` is found automatically, so adding
a benchmark needs no change here. Arguments after the name go to that benchmark (``--help``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable

import benchmarks

PREFIX = "bench_"


def discover() -> dict[str, Callable[[list[str]], None]]:
    found: dict[str, Callable[[list[str]], None]] = {}
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith(PREFIX):
            module = importlib.import_module(f"benchmarks.{info.name}")
            found[info.name.removeprefix(PREFIX)] = module.main
    return found


def main(argv: list[str]) -> int:
    available = discover()
    if argv and argv[0] in ("-h", "--help", "--list"):
        print("usage: python -m benchmarks [NAME [ARGS...]]\navailable:", " ".join(available))
        return 0
    if argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in available:
            print(f"unknown benchmark {name!r}; available: {' '.join(available)}", file=sys.stderr)
            return 2
        available[name](rest)
        return 0
    for name, run in available.items():  # no name: every benchmark, each given the same options
        print(f"== {name}")
        run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
