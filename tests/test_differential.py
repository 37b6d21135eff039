"""The differential test of the payment flows: one sequence of payments and events, driven once
through the in-process chain (``ccsim run``'s driver) and once through the live party services
(``ccsim serve``'s, over ASGI in this process with the clock injected), must leave every party with
the same journal — transfer by transfer: ids, accounts, amounts, flags, codes, references — the
same balances, clean invariants and an empty reconciliation.

The sequence covers a JIT sale with its proceeds, partial and over-captures, a refund, a
chargeback, a reversal, the issuer unreachable (the network stands in, approving one payment and
declining another, and advises the issuer later), the issuer answering after the deadline (its
sale becomes an orphaned sale; under ``rebuy`` the exchange buys the crypto back, but not while
the asset is halted), a payment id re-sent with another body (refused, never re-authorized), hold
expiry and two settlement windows. Each flow lives once in :mod:`services.flows`; a rule changed in
one driver only makes this test fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from conftest import SQL_BACKENDS
from test_live_parties import Live

from services.api.parties import PartySeed
from services.chain import InProcessChain
from services.clock import FixedClock
from services.contracts import (
    AuthorizationRequest,
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    OrphanPolicy,
    Residency,
)
from services.exchange import Invoice
from services.flows import ChainConfig
from services.ledger import Transfer
from services.money import D

START_S = 1_700_000_000.0  # the injected clock's start (live parties read Unix-like seconds)
HOLD_EXPIRY_S = 3_600.0

TransferRow = tuple[Any, ...]


def make_seed() -> PartySeed:
    lots = (Lot(5_000_000, D("30000000"), 0.0), Lot(5_000_000, D("40000000"), 86_400.0))
    return PartySeed(
        config=ChainConfig(orphan_policy=OrphanPolicy.REBUY, stand_in_limit_kzt=20_000_00,
                           hold_expiry_s=HOLD_EXPIRY_S),
        prices_kzt={"BTC": D("45000000"), "ETH": D("1600000")},
        cardholders=(
            CardholderSpec("h1", "c1", Residency.RESIDENT, "standard", FundingMode.JIT, ("BTC",),
                           (Holding("BTC", lots),)),
            CardholderSpec("h2", "c2", Residency.NON_RESIDENT, "standard", FundingMode.PREFUNDED, ("BTC",), (),
                           100_000_00),
            CardholderSpec("h3", "c3", Residency.RESIDENT, "basic", FundingMode.JIT, ("ETH", "BTC"),
                           (Holding("ETH", (Lot(10**18, D("1000000"), 0.0),)),
                            Holding("BTC", (Lot(2_000_000, D("50000000"), 0.0),))), 3_000_00),
        ),
        merchants=(MerchantSpec("m1", "acq-1", "grocery"), MerchantSpec("m2", "acq-2", "hotel"),
                   MerchantSpec("m3", "acq-3", "cafe")),
        deadline_ms=2_000,
    )


class Driver(Protocol):
    """One way of running the chain: the events of the sequence, and what the books say after."""

    async def pay(self, pid: str, card: str, merchant: str, amount: str, category: str = "") -> str: ...

    async def pay_unreachable(self, pid: str, card: str, merchant: str, amount: str) -> str: ...

    async def deliver_advices(self) -> None: ...

    async def pay_late(self, pid: str, card: str, merchant: str, amount: str, halt: str = "") -> str:
        """The issuer answers after the deadline; ``halt``: that asset is halted once its sale is done."""
        ...

    async def present(self, kind: str, auth_id: str, amount: str) -> bool: ...

    async def reverse(self, auth_id: str) -> bool: ...

    async def halt(self, asset: str, halted: bool) -> None: ...

    async def expire_holds(self, after_s: float) -> None: ...

    async def settle(self, window_id: str) -> dict[str, str]: ...

    async def journals(self) -> dict[str, list[TransferRow]]: ...

    async def clean(self) -> tuple[dict[str, list[str]], list[Any]]: ...


def _row(t: Transfer) -> TransferRow:
    return (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code, int(t.flags), t.pending_id,
            t.timeout_s, t.user_data, t.timestamp)


def _kzt(text: str) -> int:
    return int(D(text) * 100)


class InProcess:
    """``ccsim run``'s driver: the chain's steps in this process, as the simulation calls them."""

    def __init__(self, seed: PartySeed) -> None:
        self.clock = FixedClock(START_S)
        chain = self.chain = InProcessChain(seed.config, self.clock)
        for asset, price in seed.prices_kzt.items():
            chain.set_mid_price(asset, price)
        for holder in seed.cardholders:
            chain.open_cardholder(holder)
        for merchant in seed.merchants:
            chain.open_merchant(merchant)
        self.acquirer_of = {m.merchant_id: m.acquirer_id for m in seed.merchants}

    def _req(self, pid: str, card: str, merchant: str, amount: str, category: str = "") -> AuthorizationRequest:
        return AuthorizationRequest(pid, card, merchant, self.acquirer_of[merchant], _kzt(amount), category,
                                    self.clock.now())

    async def pay(self, pid: str, card: str, merchant: str, amount: str, category: str = "") -> str:
        return self.chain.authorize(self._req(pid, card, merchant, amount, category)).code.value

    async def pay_unreachable(self, pid: str, card: str, merchant: str, amount: str) -> str:
        req = self._req(pid, card, merchant, amount)
        response = self.chain.stand_in(req)
        self._advices = [*getattr(self, "_advices", []), (req, response)]
        return response.code.value

    async def deliver_advices(self) -> None:
        for req, response in getattr(self, "_advices", []):
            self.chain.apply_advice(req, response)
        self._advices = []

    async def pay_late(self, pid: str, card: str, merchant: str, amount: str, halt: str = "") -> str:
        req = self._req(pid, card, merchant, amount)
        self.chain.authorize(req)  # the issuer's work; its answer comes after the deadline
        if halt:
            self.chain.set_halted(halt, True)
        response = self.chain.stand_in(req)
        self.chain.apply_advice(req, response)
        sale = self.chain.exchange.sale(f"{pid}:sale")
        if sale is not None:
            self.chain.orphaned_sale(req, sale)
        return response.code.value

    async def present(self, kind: str, auth_id: str, amount: str) -> bool:
        step = {"capture": self.chain.capture, "refund": self.chain.refund, "chargeback": self.chain.chargeback}
        return step[kind](auth_id, _kzt(amount)).ok

    async def reverse(self, auth_id: str) -> bool:
        return self.chain.reverse(auth_id).ok

    async def halt(self, asset: str, halted: bool) -> None:
        self.chain.set_halted(asset, halted)

    async def expire_holds(self, after_s: float) -> None:
        self.clock.advance(after_s)
        self.chain.replenish_books(after_s)
        self.chain.expire_holds()

    async def settle(self, window_id: str) -> dict[str, str]:
        report = self.chain.settle(window_id)
        return {m: f"{D(v) / 100:.2f}" for m, v in sorted(report.merchant_credits_kzt.items())}

    async def journals(self) -> dict[str, list[TransferRow]]:
        chain = self.chain
        books = {chain.config.exchange_id: chain.exchange_ledger, chain.issuer.id: chain.issuer.ledger,
                 chain.network.id: chain.network.ledger}
        books.update({a.id: a.ledger for a in chain.acquirers.values()})
        books.update({b.id: b.ledger for b in chain.banks.values()})
        return {party: sorted(_row(t) for t in ledger.journal()) for party, ledger in books.items()}

    async def clean(self) -> tuple[dict[str, list[str]], list[Any]]:
        bad = {p: [v.invariant for v in vs] for p, vs in self.chain.check_invariants().items() if vs}
        return bad, self.chain.reconcile()


class LiveDriver:
    """``ccsim serve``'s driver: the four party apps over HTTP (ASGI), each with its own database."""

    def __init__(self, backend: str, tmp_path: Path, seed: PartySeed) -> None:
        self.clock = FixedClock(START_S)
        self.live = Live(backend, tmp_path, seed, clock=self.clock, outbound_retries_max=0)
        self.router = self.live.router
        self.n = 0

    async def _post(self, url: str, body: Any) -> httpx.Response:
        self.n += 1
        return await self.live.post(url, body, f"k{self.n}")

    async def pay(self, pid: str, card: str, merchant: str, amount: str, category: str = "") -> str:
        r = await self._post("http://network/v1/payments", {"id": pid, "card_id": card, "merchant_id": merchant,
                                                            "amount": amount, "category": category})
        if r.status_code == 409:
            return "refused"
        assert r.status_code == 200, r.text
        return str(r.json()["code"])

    async def pay_unreachable(self, pid: str, card: str, merchant: str, amount: str) -> str:
        self.router.unreachable |= {"issuer/v1/authorizations", "issuer/v1/advices"}
        try:
            return await self.pay(pid, card, merchant, amount)
        finally:
            self.router.unreachable.clear()

    async def deliver_advices(self) -> None:
        # The network's own background deliveries first (each ends once the issuer has it), then
        # one more round for any that gave up; the issuer is reachable again.
        await asyncio.gather(*list(self.live.apps["network"].state.network_service._advice_tasks))
        r = await self.live.client.post("http://network/v1/advices/retry")
        assert r.json()["pending"] == [], r.text

    async def pay_late(self, pid: str, card: str, merchant: str, amount: str, halt: str = "") -> str:
        self.router.late.add("issuer/v1/authorizations")
        if halt:
            self.router.after_late = lambda: self.halt(halt, True)
        try:
            code = await self.pay(pid, card, merchant, amount)
        finally:
            self.router.late.clear()
            self.router.after_late = None
        await self.deliver_advices()
        await self.live.client.post("http://issuer/v1/outbox/retry")  # a re-buy staged by the advice
        return code

    async def present(self, kind: str, auth_id: str, amount: str) -> bool:
        r = await self._post("http://network/v1/presentments", {"kind": kind, "auth_id": auth_id, "amount": amount})
        assert r.status_code in (201, 404, 409, 422), r.text
        return r.status_code == 201

    async def reverse(self, auth_id: str) -> bool:
        r = await self._post(f"http://network/v1/payments/{auth_id}/reverse", {})
        assert r.status_code in (200, 404, 409, 422), r.text
        return r.status_code == 200

    async def halt(self, asset: str, halted: bool) -> None:
        r = await self.live.client.post("http://exchange/v1/halts", json={"asset": asset, "halted": halted})
        assert r.status_code == 200, r.text

    async def expire_holds(self, after_s: float) -> None:
        self.clock.advance(after_s)
        r = await self.live.client.post("http://issuer/v1/holds/expire")
        assert r.status_code == 200, r.text

    async def settle(self, window_id: str) -> dict[str, str]:
        r = await self._post("http://network/v1/settlements", {"window_id": window_id})
        assert r.status_code == 201, r.text
        assert r.json()["undelivered"] == []
        return {m: f"{D(v):.2f}" for m, v in sorted(r.json()["merchant_credits"].items())}

    async def journals(self) -> dict[str, list[TransferRow]]:
        apps = self.live.apps
        books: dict[str, Any] = {"exchange": apps["exchange"].state.exchange_service.ledger,
                                 "issuer": apps["issuer"].state.issuer_service.ledger}
        books.update(apps["network"].state.network_service.ledger_of)
        books.update(apps["bank"].state.bank_service.ledgers)
        return {party: sorted(_row(t) for t in ledger.journal()) for party, ledger in books.items()}

    async def clean(self) -> tuple[dict[str, list[str]], list[Any]]:
        invariants, breaks = await self.live.integrity()
        bad = {party: [v["invariant"] for v in p["violations"]] for body in invariants.values()
               for party, p in _parties(body).items() if not p["ok"]}
        return bad, breaks


def _parties(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["party"]: p for p in body["parties"]}


async def run_sequence(d: Driver) -> list[Any]:
    """The sequence; returns what each step answered (both drivers must answer the same)."""
    out: list[Any] = [
        await d.pay("p1", "c1", "m1", "40000.00", "food"),  # JIT: a sale, its proceeds, a hold
        await d.pay("p2", "c2", "m2", "10000.00"),  # pre-funded: tenge only
        await d.pay("p3", "c1", "m3", "20000.00"),
        await d.pay("p4", "c3", "m1", "2000.00"),  # the card's own tenge covers it
        await d.pay("p5", "c3", "m2", "250000.00"),  # over the basic tier's per-payment limit: 61
        await d.present("capture", "p1", "30000.00"),  # partial capture
        await d.present("capture", "p2", "10150.00"),  # over-capture within the padding
        await d.present("capture", "p3", "25000.00"),  # beyond the padding: refused
        await d.reverse("p3"),
        await d.present("capture", "p4", "2000.00"),
        await d.settle("w1"),
        await d.present("refund", "p1", "5000.00"),
        await d.present("chargeback", "p2", "10150.00"),
        # The issuer unreachable: the network stands in (approves up to its limit, else 91).
        await d.pay_unreachable("p6", "c1", "m1", "15000.00"),
        await d.pay_unreachable("p7", "c2", "m2", "30000.00"),
        await d.deliver_advices(),
        await d.present("capture", "p6", "15000.00"),
        # The issuer answers after the deadline: its sale is an orphaned sale.
        await d.pay_late("p8", "c1", "m3", "30000.00"),  # declined by stand-in: re-bought
        await d.pay_late("p9", "c1", "m3", "25000.00", halt="BTC"),  # BTC halted after its sale: kept
        await d.halt("ETH", True),
        await d.pay_late("p10", "c3", "m1", "21000.00"),  # every asset halted: nothing sold, declined
        await d.halt("BTC", False),
        await d.halt("ETH", False),
        await d.pay_late("p11", "c3", "m2", "15000.00"),  # approved by stand-in: its tenge pays for it
        # The same payment id with another body: refused, never re-authorized.
        await d.pay("p5", "c3", "m2", "250000.00", "retail"),
        await d.pay("p12", "c2", "m1", "5000.00"),
        await d.expire_holds(HOLD_EXPIRY_S + 1),  # p12's hold was never captured
        await d.settle("w2"),
    ]
    return out


@pytest.fixture(params=SQL_BACKENDS)
async def live_driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveDriver]:
    driver = LiveDriver(request.param, tmp_path, make_seed())
    try:
        yield driver
    finally:
        await driver.live.close()


async def test_both_drivers_leave_the_same_journals(live_driver: LiveDriver) -> None:
    local = InProcess(make_seed())
    answers_local = await run_sequence(local)
    answers_live = await run_sequence(live_driver)
    # The reused id is refused by the live network (409) and answered with its first decision in
    # process: in neither does anything move.
    assert answers_local[-4] == "61" and answers_live[-4] == "refused"
    answers_local[-4] = answers_live[-4] = "-"
    assert answers_live == answers_local
    journals_local, journals_live = await local.journals(), await live_driver.journals()
    assert journals_live.keys() == journals_local.keys()
    for party in journals_local:
        assert journals_live[party] == journals_local[party], party
    assert await local.clean() == ({}, [])
    assert await live_driver.clean() == ({}, [])
    chain = local.chain
    assert (chain.orphans_rebought, chain.orphans_kept, chain.orphans_funded) == (1, 1, 1)


# -- the direct rail (CryptoCity) -----------------------------------------------------------------
# The in-process side of the direct rail's differential test: the same sequence will be driven
# through the live exchange's quote-and-transfer routes once they exist (a LiveDriver with these
# methods), and both must leave the same journals, the zone merchants' books included.

def make_direct_seed() -> PartySeed:
    seed = make_seed()
    return PartySeed(config=seed.config, prices_kzt=seed.prices_kzt, cardholders=seed.cardholders,
                     merchants=(*seed.merchants, MerchantSpec("z1", "acq-1", "food", cryptocity=True)),
                     deadline_ms=seed.deadline_ms)


class DirectDriver(Protocol):
    async def pay_direct(self, invoice_id: str, holder: str, merchant: str, amount: str,
                         priority: tuple[str, ...] = ("BTC",)) -> str:
        """``paid``, or the decline (services.flows.direct.DirectDecline)."""
        ...

    async def refund_direct(self, refund_id: str, invoice_id: str, amount: str) -> str: ...

    async def convert(self, merchant: str, asset: str) -> str:
        """Sell everything the merchant holds in ``asset``: the tenge net, or the refusal."""
        ...

    async def journals(self) -> dict[str, list[TransferRow]]: ...

    async def clean(self) -> tuple[dict[str, list[str]], list[Any]]: ...


class InProcessDirect(InProcess):
    """``ccsim run``'s driver of the direct rail (services.chain_direct)."""

    async def pay_direct(self, invoice_id: str, holder: str, merchant: str, amount: str,
                         priority: tuple[str, ...] = ("BTC",)) -> str:
        invoice = Invoice(invoice_id, holder, merchant, _kzt(amount), priority)
        outcome = self.chain.direct.pay(invoice)
        return "paid" if outcome.paid_direct else outcome.decline.value

    async def refund_direct(self, refund_id: str, invoice_id: str, amount: str) -> str:
        refund = self.chain.direct.refund(refund_id, invoice_id, _kzt(amount))
        return "refunded" if refund.ok else refund.reason.value

    async def convert(self, merchant: str, asset: str) -> str:
        held = self.chain.direct.desk.wallet_minor(merchant, asset)
        sale = self.chain.direct.convert(merchant, asset, held)
        return f"{D(sale.net_kzt) / 100:.2f}" if sale.ok else sale.reason.value

    async def journals(self) -> dict[str, list[TransferRow]]:
        out = await super().journals()
        books = self.chain.direct.books
        out[books.name] = sorted(_row(t) for t in books.ledger.journal())
        return out


async def run_direct_sequence(d: DirectDriver) -> list[Any]:
    """A direct payment, its limits and its failure, a partial refund, a conversion, and a refund
    the merchant can no longer make in crypto."""
    return [
        await d.pay_direct("d1", "h1", "z1", "45000.00"),  # 0.001 BTC at 45,000,000 KZT/BTC
        await d.pay_direct("d2", "h3", "z1", "250000.00", ("ETH", "BTC")),  # basic tier: over its limit
        await d.pay_direct("d3", "h1", "z1", "50000.00", ("ETH",)),  # h1 holds no ETH
        await d.refund_direct("d1:refund1", "d1", "15000.00"),  # a third of the quantity back
        await d.convert("z1", "BTC"),
        await d.refund_direct("d1:refund2", "d1", "15000.00"),  # converted: no crypto left to give back
    ]


async def test_the_in_process_driver_runs_the_direct_sequence() -> None:
    local = InProcessDirect(make_direct_seed())
    answers = await run_direct_sequence(local)
    assert answers[:4] == ["paid", "exceeds_amount_limit", "insufficient_balance", "refunded"]
    assert answers[5] == "insufficient_crypto"
    assert D(answers[4]) > 0
    journals = await local.journals()
    assert [row[0] for row in journals["merchants"]] == sorted(
        ["conv:z1:1:sold", "conv:z1:1:recv", "d1:recv", "d1:refund1:pay"])
    exchange = {row[0]: row for row in journals["exchange"]}
    assert exchange["d1:direct"][3] == 100_000 and exchange["d1:refund1:direct"][3] == 33_333
    assert await local.clean() == ({}, [])
