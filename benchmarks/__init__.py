"""Micro-benchmarks (``make bench`` = ``python -m benchmarks``); speed lives here, not in tests.

Each ``benchmarks/bench_<name>.py`` module has ``main(argv: list[str]) -> None``; results go to
``benchmarks/results/<name>.json``.
"""
