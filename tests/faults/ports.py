"""Free TCP ports on the loopback interface for the servers the tests and fault runs start.

Two rules keep two servers off one port:

- the ports come from below the kernel's ephemeral range (``ip_local_port_range``), so no client
  connection is ever given one while its server is down (a service killed and restarted on the
  same port gets it back);
- under pytest-xdist each worker draws from its own slice of that range
  (``PYTEST_XDIST_WORKER`` = ``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``), so two workers never pick the same
  port between the check and the server's bind.

Within its slice a block is drawn at random and every port of it is bound once to check it is free.
"""

from __future__ import annotations

import os
import random
import socket
from contextlib import ExitStack
from pathlib import Path
from typing import Final

__all__ = ["LOOPBACK", "free_port", "free_port_block", "free_ports", "port_slice"]

LOOPBACK: Final = "127.0.0.1"
LOWEST: Final = 10_000
_EPHEMERAL_LOW_DEFAULT: Final = 32_768
_TRIES: Final = 500


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_LOW_DEFAULT


def port_slice() -> range:
    """This process's ports: its xdist worker's share of ``[LOWEST, ephemeral low)``."""
    high = max(_ephemeral_low(), LOWEST + 2_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    span = (high - LOWEST) // count
    start = LOWEST + (index % count) * span
    return range(start, start + span)


def free_port_block(size: int = 1) -> int:
    """The first of ``size`` consecutive ports that were all free a moment ago."""
    ports = port_slice()
    rng = random.Random()
    for _ in range(_TRIES):
        base = rng.randrange(ports.start, ports.stop - size)
        with ExitStack() as stack:
            try:
                for port in range(base, base + size):
                    stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)).bind((LOOPBACK, port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no block of {size} free ports in {ports.start}-{ports.stop - 1}")


def free_ports(count: int) -> list[int]:
    """``count`` free ports (consecutive)."""
    base = free_port_block(count)
    return list(range(base, base + count))


def free_port() -> int:
    return free_port_block(1)
