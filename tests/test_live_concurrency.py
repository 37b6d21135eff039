"""500 concurrent authorizations over real HTTP against a card whose funds cover exactly 250.

The four party services run under uvicorn on 127.0.0.1 as separate processes (started by the same
supervisor as ``ccsim serve``), each with its own database (SQLite files, or table prefixes in one
PostgreSQL database). 500 POS payments hit the network service at once; the network forwards each
to the issuer over HTTP. Exactly 250 must be approved, each holding exactly its amount plus
padding once, and every party's invariants and the cross-party reconciliation must be clean.
Every child process is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import SQL_BACKENDS, require_postgres
from faults.ports import free_port_block
from faults.service import drop_prefix
from signing import RoleAuth

from services.api.auth import SigningAuth, load_credentials
from services.api.parties import PartySeed, collect_invariants, collect_reconciliation
from services.chain import ChainConfig
from services.contracts import CardholderSpec, FundingMode, MerchantSpec, Residency
from sim.live.serve import ServeConfig, Supervisor

pytestmark = pytest.mark.slow

PAYMENTS = 500
COVERED = 250
AMOUNT_TIYN = 1_000_00  # 1,000 KZT
HOLD_TIYN = AMOUNT_TIYN + AMOUNT_TIYN * 200 // 10_000  # the issuer holds amount + 2 % padding


def exact_seed() -> PartySeed:
    config = ChainConfig(
        aml_velocity_max_payments=100_000,  # the AML velocity rule would stop the card at 20
        stand_in_enabled=False,  # an issuer that is late must not turn into extra approvals
    )
    card = CardholderSpec("h-exact", "c-exact", Residency.RESIDENT, "premium", FundingMode.PREFUNDED, ("BTC",),
                          card_balance_kzt=COVERED * HOLD_TIYN)
    return PartySeed(config=config, cardholders=(card,), merchants=(MerchantSpec("m-1", "acq-1", "grocery"),),
                     deadline_ms=120_000)


@pytest.fixture(params=SQL_BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    database_url = require_postgres() if request.param == "postgres" else ""
    prefix = f"t_{uuid.uuid4().hex[:10]}_" if database_url else ""
    config = ServeConfig(data_dir=tmp_path / "live", port=free_port_block(5), database_url=database_url,
                         table_prefix=prefix, gateway=False, start_timeout_s=120.0,
                         extra_env={"CCSIM_OUTBOUND_TIMEOUT_S": "120", "CCSIM_IDEMPOTENCY_LEASE_S": "600"})
    supervisor = Supervisor(config, exact_seed())
    try:
        with supervisor.running():
            yield {name: url for name, url in config.urls().items() if name != "gateway"}
            assert supervisor.dead() == [], "a service died during the test"
    finally:
        supervisor.stop()  # idempotent: every child is gone even if start or the test failed
        if database_url:
            drop_prefix(database_url, prefix)


async def test_500_concurrent_authorizations_approve_exactly_250(services: dict[str, str], tmp_path: Path) -> None:
    network, issuer = services["network"], services["issuer"]
    limits = httpx.Limits(max_connections=PAYMENTS, max_keepalive_connections=PAYMENTS)
    credentials = load_credentials(tmp_path / "live" / "credentials.json")  # the keys ccsim serve wrote
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(180.0, connect=30.0),
                                 auth=RoleAuth(credentials)) as client:

        async def pay(i: int) -> httpx.Response:
            return await client.post(f"{network}/v1/payments", headers={"Idempotency-Key": f"pos-{i}"}, json={
                "id": f"p{i:03d}", "card_id": "c-exact", "merchant_id": "m-1", "amount": "1000.00"})

        answers = await asyncio.gather(*(pay(i) for i in range(PAYMENTS)))
        assert [r.status_code for r in answers] == [200] * PAYMENTS, {r.status_code: r.text for r in answers}
        bodies = [r.json() for r in answers]
        approved = [b for b in bodies if b["approved"]]
        assert len(approved) == COVERED
        assert not any(b["stand_in"] for b in bodies)
        assert {b["code"] for b in bodies if not b["approved"]} == {"51"}  # insufficient funds, nothing else
        assert len({b["approval_code"] for b in approved}) == COVERED

        card = (await client.get(f"{issuer}/v1/cards/c-exact")).json()
        assert card["available"] == "0.00"
        held = [(await client.get(f"{issuer}/v1/authorizations/{b['id']}")).json() for b in approved]
        assert {h["held"] for h in held} == {"1020.00"}  # each approval held once, amount + padding

        # A retry after a lost answer (same key, or a new key for the same payment) moves nothing.
        again = await pay(int(approved[0]["id"][1:]))
        assert again.json() == approved[0] and again.headers.get("Idempotent-Replayed") == "true"
        other = await client.post(f"{network}/v1/payments", headers={"Idempotency-Key": "pos-retry-new-key"}, json={
            "id": approved[0]["id"], "card_id": "c-exact", "merchant_id": "m-1", "amount": "1000.00"})
        assert other.json()["approval_code"] == approved[0]["approval_code"]
        assert (await client.get(f"{issuer}/v1/cards/c-exact")).json()["available"] == "0.00"

    gateway = SigningAuth(credentials.principal("gateway"))
    invariants = await asyncio.to_thread(functools.partial(collect_invariants, services, auth=gateway))
    assert invariants["ok"], {p: v for p, v in invariants["parties"].items() if not v["ok"]}
    assert await asyncio.to_thread(functools.partial(collect_reconciliation, services, auth=gateway)) == []
