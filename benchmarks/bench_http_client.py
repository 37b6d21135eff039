"""The client side of a call between services: CPU per POST of httpx and aiohttp, same server, same run.

Why: every payment crosses four or five service-to-service calls, and the calling service pays the
client's CPU on each. This measures what the caller's process spends per keep-alive JSON POST
(``time.process_time`` around N calls at a fixed concurrency) against one uvicorn server running
the live benchmark's trivial app, interleaved client by client, ``--runs`` times; the server's CPU
is not counted. docs/adr/0007-service-to-service-http.md records the choice it informed.

    python -m benchmarks http_client [--calls 2000] [--concurrency 16] [--runs 3]

Writes ``benchmarks/results/http_client.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks.bench_live import ROOT, _free_port_block, _stop, _wait_healthy

RESULTS = Path(__file__).with_name("results") / "http_client.json"
BODY = {"id": "p1", "card_id": "c-1", "merchant_id": "m-1", "amount": "1000.00"}


async def _run(call: Callable[[], Awaitable[int]], calls: int, concurrency: int) -> float:
    """CPU seconds this process spent per call, over ``calls`` calls ``concurrency`` at a time."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if await call() != 200:
                raise RuntimeError("the server refused a call")

    await asyncio.gather(*(worker() for _ in range(min(concurrency, 4))))  # warm the pool
    left = calls
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / calls


async def _httpx(url: str, calls: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5.0, connect=1.0)) as client:
        async def call() -> int:
            return (await client.post(url, json=BODY, headers={"Idempotency-Key": "k"})).status_code

        return await _run(call, calls, concurrency)


async def _aiohttp(url: str, calls: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=0, keepalive_timeout=30.0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        content = json.dumps(BODY, separators=(",", ":")).encode()

        async def call() -> int:
            async with session.post(url, data=content, headers={"Idempotency-Key": "k",
                                                                 "Content-Type": "application/json"},
                                    timeout=aiohttp.ClientTimeout(total=5.0, sock_connect=1.0)) as r:
                await r.read()
                return r.status

        return await _run(call, calls, concurrency)


CLIENTS = {"httpx": _httpx, "aiohttp": _aiohttp}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks http_client", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 calls, 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.runs = 500, 2
    port = _free_port_block(1)
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bench_live:trivial_app",
                               "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level",
                               "warning"], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/payments"
    per_call: dict[str, list[float]] = {name: [] for name in CLIENTS}
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/docs", server, 30)
        for _ in range(args.runs):
            for name, client in CLIENTS.items():
                per_call[name].append(asyncio.run(client(url, args.calls, args.concurrency)))
    finally:
        _stop(server)
    out: dict[str, Any] = {"benchmark": "http_client", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                           "calls": args.calls, "concurrency": args.concurrency, "runs": args.runs, "clients": {}}
    for name, values in per_call.items():
        ms = statistics.median(values) * 1000
        out["clients"][name] = {"cpu_ms_per_call_median": round(ms, 3), "cpu_ms_per_call": [round(v * 1000, 3)
                                                                                          for v in values]}
        print(f"{name:<8} {ms:7.3f} ms of client CPU per call (median of {args.runs})")
    out["ratio_httpx_over_aiohttp"] = round(out["clients"]["httpx"]["cpu_ms_per_call_median"]
                                            / out["clients"]["aiohttp"]["cpu_ms_per_call_median"], 2)
    print(f"httpx / aiohttp: {out['ratio_httpx_over_aiohttp']:g}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
