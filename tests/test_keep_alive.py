"""Idle connections are always closed by the client first.

A server that closes an idle keep-alive connection at the moment a client reuses it makes the
client's request fail with a read error; a POST (a payment) cannot be blindly re-sent on another
connection. The live CI run lost that race once (httpx and uvicorn both defaulting to 5 s). Every
``ccsim serve`` child therefore keeps idle connections longer than each client ccsim itself runs.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from services.api.parties import PartySeed
from services.api.transport_http import POOL_KEEP_ALIVE_S
from sim.live.load import LOAD_KEEP_ALIVE_S
from sim.live.serve import SERVER_KEEP_ALIVE_S, ServeConfig, Supervisor


def test_every_service_outlasts_every_client_on_an_idle_connection(tmp_path: Path) -> None:
    supervisor = Supervisor(ServeConfig(data_dir=tmp_path / "live"), PartySeed())
    assert {c.name for c in supervisor.children} == {"gateway", "network", "issuer", "exchange", "bank"}
    for child in supervisor.children:
        flag = child.argv.index("--timeout-keep-alive")
        assert int(child.argv[flag + 1]) == SERVER_KEEP_ALIVE_S, child.name
    httpx_expiry = httpx.Limits().keepalive_expiry  # the tests' and tools' httpx clients keep the default
    assert httpx_expiry is not None
    for client_expiry in (POOL_KEEP_ALIVE_S, LOAD_KEEP_ALIVE_S, httpx_expiry):
        assert client_expiry < SERVER_KEEP_ALIVE_S
