"""The direct rail's cost live: CPU per direct payment (quote + acceptance at the exchange) against
CPU per card payment (network → issuer, a pre-funded card: no sale), measured in the same run over
the four party apps in this process (ASGI, no sockets, SQLite files), each figure the median of
``--repeats`` rounds. A ratio, not a speed: the machine is shared and noisy.

    python -m benchmarks direct [--payments 200] [--repeats 3]

Writes ``benchmarks/results/direct.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from services.api import close_app
from services.api.auth import SigningAuth, create_credentials, load_credentials
from services.api.parties import (
    PartySeed,
    PartySettings,
    create_bank_app,
    create_exchange_app,
    create_issuer_app,
    create_network_app,
    write_seed,
)
from services.contracts import CardholderSpec, FundingMode, Holding, Lot, MerchantSpec, Residency
from services.flows import ChainConfig
from services.money import D

RESULTS = Path(__file__).with_name("results") / "direct.json"
FACTORIES = {"exchange": create_exchange_app, "issuer": create_issuer_app, "network": create_network_app,
             "bank": create_bank_app}


def _seed(n: int) -> PartySeed:
    btc = (Holding("BTC", (Lot(10**8, D("30000000"), 0.0),)),)
    holders = tuple(CardholderSpec(f"h{i}", f"c{i}", Residency.RESIDENT, "premium", FundingMode.PREFUNDED, ("BTC",),
                                   btc, 10_000_000_00) for i in range(n))
    return PartySeed(config=ChainConfig(), prices_kzt={"BTC": D("45000000"), "ETH": D("1600000")},
                     cardholders=holders,
                     merchants=(MerchantSpec("z1", "acq-1", "cafe", cryptocity=True),))


class _Router(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)




async def _round(tmp: Path, n: int, creds: Path) -> tuple[float, float]:
    seed_path = tmp / "seed.json"
    write_seed(_seed(n), seed_path)
    router = _Router()
    outbound = httpx.AsyncClient(transport=router)
    apps = {p: f(PartySettings(party=p, seed_file=seed_path, data_dir=tmp / "data", exchange_url="http://exchange",
                               issuer_url="http://issuer", network_url="http://network", bank_url="http://bank"),
                 http_client=outbound) for p, f in FACTORIES.items()}
    for p, app in apps.items():
        router.apps[p] = httpx.ASGITransport(app=app)
    pos = httpx.AsyncClient(transport=router, auth=SigningAuth(load_credentials(creds).principal("pos")))
    try:
        started = time.process_time()
        for i in range(n):
            r = await pos.post("http://network/v1/payments", json={"id": f"a{i}", "card_id": f"c{i}",
                                                                   "merchant_id": "z1", "amount": "5000.00"},
                               headers={"Idempotency-Key": f"a{i}"})
            assert r.status_code == 200 and r.json()["approved"], r.text
        card_ms = (time.process_time() - started) * 1000 / n
        started = time.process_time()
        for i in range(n):
            inv = {"invoice_id": f"d{i}", "holder_id": f"h{i}", "merchant_id": "z1", "amount": "5000.00",
                   "asset_priority": ["BTC"]}
            r = await pos.post("http://exchange/v1/direct/quotes", json=inv, headers={"Idempotency-Key": f"q{i}"})
            assert r.status_code == 201, r.text
            r = await pos.post("http://exchange/v1/direct/payments", json={"invoice_id": f"d{i}"},
                               headers={"Idempotency-Key": f"p{i}"})
            assert r.status_code == 201, r.text
        direct_ms = (time.process_time() - started) * 1000 / n
    finally:
        await pos.aclose()
        await outbound.aclose()
        for app in apps.values():
            close_app(app)
    return card_ms, direct_ms


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks direct")
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    card, direct = [], []
    with tempfile.TemporaryDirectory() as d:
        creds = Path(d) / "credentials.json"
        create_credentials(creds)
        os.environ.setdefault("CCSIM_CREDENTIALS_FILE", str(creds))
        creds = Path(os.environ["CCSIM_CREDENTIALS_FILE"])
        for r in range(args.repeats):
            tmp = Path(d) / f"round{r}"
            tmp.mkdir()
            c, x = asyncio.run(_round(tmp, args.payments, creds))
            card.append(c)
            direct.append(x)
    out = {"payments": args.payments, "repeats": args.repeats,
           "card_cpu_ms_per_payment": statistics.median(card), "direct_cpu_ms_per_payment": statistics.median(direct),
           "direct_over_card": statistics.median(direct) / statistics.median(card),
           "rounds": {"card": card, "direct": direct}}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
