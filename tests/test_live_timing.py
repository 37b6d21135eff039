"""Server-Timing: every service reports its own time and forwards its callees' (services.api.timing).

Parsing and formatting against the W3C grammar; the hop arithmetic on hand-computed trees; nested
ASGI apps (one calls another twice, whose sync endpoint calls a third from a worker thread) for the
forwarding and the naming of repeated calls; and a payment through the four party services
in-process, whose per-leg times (:func:`sim.live.load.leg_times_ms`) are each positive and add up
to the answer time the client measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from signing import RoleAuth

from services.api import ApiSettings, close_app, create_base_app
from services.api.parties import (
    PartySeed,
    PartySettings,
    create_bank_app,
    create_exchange_app,
    create_issuer_app,
    create_network_app,
    write_seed,
)
from services.api.timing import (
    ENTRIES_MAX,
    TimingCollector,
    TimingEntry,
    end_request,
    format_server_timing,
    parse_server_timing,
    record_response,
    self_times_ms,
    service_of,
    start_request,
)
from services.api.transport_http import HttpTransport
from services.chain import ChainConfig
from services.contracts import CardholderSpec, FundingMode, Holding, Lot, MerchantSpec, Residency
from services.money import D
from sim.live.load import FRONT_END_LEG, leg_times_ms

# -- the header's text ---------------------------------------------------------------------------


def test_parse_follows_the_grammar_and_skips_what_it_cannot_read() -> None:
    header = ('network;dur=38.5;desc="POST /v1/payments", network.issuer;DUR=31;desc="a, b; \\"c\\"", '
              'cache;desc="no dur", bad name;dur=1, nan;dur=NaN, neg;dur=-1, inf;dur=1e400, twice;dur=2;dur=9')
    assert parse_server_timing([header, 'db;dur="4.25"']) == [
        TimingEntry("network", 38.5, "POST /v1/payments"),
        TimingEntry("network.issuer", 31.0, 'a, b; "c"'),  # quoted commas and semicolons stay inside
        TimingEntry("twice", 2.0),  # the first dur counts
        TimingEntry("db", 4.25),  # a second header value
    ]
    entries = [TimingEntry("a", 1.5, 'x "y" \\ z'), TimingEntry("a.b#2", 0.25)]
    text = format_server_timing(entries)
    assert text == 'a;dur=1.500;desc="x \\"y\\" \\\\ z", a.b#2;dur=0.250'
    assert parse_server_timing(text) == entries
    assert service_of("network.issuer.exchange#2") == "exchange" and service_of("bank") == "bank"
    # A desc never carries what could end or break the header line: printable ASCII only.
    assert format_server_timing([TimingEntry("a", 1.0, "é\r\nx")]) == 'a;dur=1.000;desc="???x"'


def test_own_time_is_the_hop_less_its_direct_children() -> None:
    # network 50 ⊃ issuer 40 ⊃ {exchange 20 ⊃ bank 8 ⊃ issuer 3, exchange#2 5}
    entries = parse_server_timing(
        "network;dur=50, network.issuer;dur=40, network.issuer.exchange;dur=20, "
        "network.issuer.exchange.bank;dur=8, network.issuer.exchange.bank.issuer;dur=3, "
        "network.issuer.exchange#2;dur=5")
    own = self_times_ms(entries)
    assert own == pytest.approx({"network": 10.0, "issuer": (40 - 20 - 5) + 3, "exchange": (20 - 8) + 5,
                                 "bank": 8 - 3})
    assert sum(own.values()) == pytest.approx(50.0)  # sequential calls: the root's time, split
    # A child longer than its parent (concurrent calls) leaves the parent 0, never negative; a
    # hop whose parent is missing counts as a root.
    assert self_times_ms(parse_server_timing("a;dur=5, a.b;dur=7, x.c;dur=2")) == {"a": 0.0, "b": 7.0, "c": 2.0}
    legs = leg_times_ms(parse_server_timing("network;dur=50, network.issuer;dur=40"), answer_ms=57.0)
    assert legs == pytest.approx({"network": 10.0, "issuer": 40.0, FRONT_END_LEG: 7.0})
    assert leg_times_ms([], answer_ms=57.0) == {}


def test_the_collector_names_repeated_calls_and_bounds_the_header() -> None:
    c = TimingCollector("issuer")
    c.add(parse_server_timing("exchange;dur=20, exchange.bank;dur=8"))
    c.add(parse_server_timing("exchange;dur=5"))
    c.add(parse_server_timing("bank;dur=2"))
    assert [e.name for e in parse_server_timing(c.header(30.0, "POST /v1/authorizations"))] == [
        "issuer", "issuer.exchange", "issuer.exchange.bank", "issuer.exchange#2", "issuer.bank"]
    big = TimingCollector("a")
    for _ in range(ENTRIES_MAX + 5):
        big.add([TimingEntry("b", 1.0)])
    listed = parse_server_timing(big.header(100.0))
    assert len(listed) == ENTRIES_MAX + 1 and listed[-1].name == f"a.b#{ENTRIES_MAX}"
    assert listed[0].desc == "(+5 hops not listed)"
    big.close()
    big.add([TimingEntry("b", 1.0)])  # after the answer started: nothing more is taken
    assert len(big.entries) == ENTRIES_MAX


def test_outside_a_request_nothing_is_recorded_and_nesting_restores_the_outer_request() -> None:
    record_response(["x;dur=1"])  # no request: a no-op, no error
    outer, outer_token = start_request("a")
    inner, inner_token = start_request("b")
    record_response(["c;dur=1"])
    end_request(inner_token)
    record_response(["b;dur=3"])
    end_request(outer_token)
    assert [e.name for e in inner.entries] == ["b.c"]
    assert [e.name for e in outer.entries] == ["a.b"]


# -- nested ASGI apps ------------------------------------------------------------------------------


class Router(httpx.AsyncBaseTransport):
    """``http://<name>/…`` to that app, in-process (the same HTTP calls as over sockets)."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)


def _service(name: str, tmp_path: Path) -> FastAPI:
    return create_base_app(ApiSettings(party=name, data_dir=tmp_path))


async def test_nested_services_forward_each_hop_once(tmp_path: Path) -> None:
    """``a`` calls ``b`` twice; ``b``'s sync endpoint calls ``c`` from its worker thread."""
    apps = {name: _service(name, tmp_path) for name in ("a", "b", "c")}
    client = httpx.AsyncClient(transport=Router(apps))
    to_b = HttpTransport({}, client=client, retries_max=0)
    to_c = HttpTransport({}, client=client, retries_max=0)
    later: list[asyncio.Task[Any]] = []

    @apps["c"].post("/v1/leaf")
    def leaf() -> dict[str, str]:
        time.sleep(0.002)
        return {"ok": "c"}

    @apps["b"].get("/v1/work")
    def work() -> dict[str, int]:
        answer = to_c.post("http://c", "/v1/leaf", {})  # worker thread → the loop → c
        assert answer is not None
        return {"status": answer.status_code}

    @apps["a"].get("/v1/go")
    async def go() -> dict[str, int]:
        first = await to_b.aget("http://b", "/v1/work")
        second = await to_b.aget("http://b", "/v1/work")
        assert first is not None and second is not None
        # Still running when the answer leaves: its call is not part of this answer.
        later.append(asyncio.get_running_loop().create_task(to_b.aget("http://b", "/v1/work")))
        return {"calls": 2}

    try:
        answer = await client.get("http://a/v1/go")
        assert answer.status_code == 200, answer.text
        await asyncio.gather(*later)
        entries = parse_server_timing(answer.headers.get_list("server-timing"))
        assert [e.name for e in entries] == ["a", "a.b", "a.b.c", "a.b#2", "a.b#2.c"]
        assert [e.desc for e in entries] == ["GET /v1/go", "GET /v1/work", "POST /v1/leaf", "GET /v1/work",
                                             "POST /v1/leaf"]
        dur = {e.name: e.dur_ms for e in entries}
        for e in entries[1:]:
            assert 0 < e.dur_ms <= dur[e.parent]  # a callee's time lies inside its caller's
        assert dur["a.b.c"] >= 2.0 and dur["a.b#2.c"] >= 2.0  # c slept 2 ms each time
        own = self_times_ms(entries)
        assert set(own) == {"a", "b", "c"} and all(v > 0 for v in own.values())
        assert sum(own.values()) == pytest.approx(dur["a"], abs=0.005)  # rounding to the microsecond
        # Each service's own answer carries its own entry first.
        leaf_answer = await client.post("http://c/v1/leaf", json={})
        assert [e.name for e in parse_server_timing(leaf_answer.headers["server-timing"])] == ["c"]
        refused = await client.post("http://c/v1/leaf", content=b"{}", headers={"content-length": "999999"})
        assert refused.status_code == 413 and refused.headers["server-timing"].startswith("c;dur=")
    finally:
        await client.aclose()
        for app in apps.values():
            close_app(app)


# -- a payment through the four party services ---------------------------------------------------

PARTIES = {"exchange": create_exchange_app, "issuer": create_issuer_app, "network": create_network_app,
           "bank": create_bank_app}


@pytest.fixture
async def parties(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    seed = PartySeed(
        config=ChainConfig(), prices_kzt={"BTC": D("45000000")},
        cardholders=(CardholderSpec("h1", "c1", Residency.RESIDENT, "standard", FundingMode.JIT, ("BTC",),
                                    (Holding("BTC", (Lot(10_000_000, D("40000000"), 0.0),)),)),),
        merchants=(MerchantSpec("m1", "acq-1", "grocery"),))
    write_seed(seed, tmp_path / "seed.json")
    urls = {f"{p}_url": f"http://{p}" for p in PARTIES}
    apps: dict[str, FastAPI] = {}
    router = Router({})
    client = httpx.AsyncClient(transport=router, auth=RoleAuth())  # the parties' own calls sign as themselves
    for party, factory in PARTIES.items():
        apps[party] = factory(PartySettings(party=party, seed_file=tmp_path / "seed.json", data_dir=tmp_path / "data",
                                            **urls), http_client=client)
        router.apps[party] = httpx.ASGITransport(app=apps[party])
    try:
        yield client
    finally:
        await client.aclose()
        for app in apps.values():
            close_app(app)


async def test_a_jit_payment_reports_every_leg_once(parties: httpx.AsyncClient) -> None:
    body = {"id": "p1", "card_id": "c1", "merchant_id": "m1", "amount": "5000.00", "category": "grocery"}
    started = time.perf_counter()
    answer = await parties.post("http://network/v1/payments", json=body, headers={"Idempotency-Key": "p1"})
    answer_ms = (time.perf_counter() - started) * 1000.0
    assert answer.status_code == 200 and answer.json()["approved"], answer.text
    entries = parse_server_timing(answer.headers.get_list("server-timing"))
    # The issuer sells on the exchange, whose proceeds go through the bank back to the issuer.
    assert [e.name for e in entries] == ["network", "network.issuer", "network.issuer.exchange",
                                         "network.issuer.exchange.bank", "network.issuer.exchange.bank.issuer"]
    legs = leg_times_ms(entries, answer_ms)
    assert set(legs) == {FRONT_END_LEG, "network", "issuer", "exchange", "bank"}
    assert all(ms > 0 for ms in legs.values()), legs
    assert sum(legs.values()) == pytest.approx(answer_ms, abs=0.01)  # the legs split the answer time
    assert sum(legs.values()) - legs[FRONT_END_LEG] == pytest.approx(entries[0].dur_ms, abs=0.01)
    # A replay of the same key is the network's own work only: its stored answer, nothing called.
    again = await parties.post("http://network/v1/payments", json=body, headers={"Idempotency-Key": "p1"})
    assert [e.name for e in parse_server_timing(again.headers["server-timing"])] == ["network"]
