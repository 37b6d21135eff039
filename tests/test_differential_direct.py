"""The differential test of CryptoCity's direct rail: one sequence of direct payments, a fallback to
the card, refunds and merchant conversions, driven once through the in-process chain
(``services.chain_direct``, ``ccsim run``'s driver) and once through the live party services over
HTTP (``ccsim serve``'s: the exchange's ``/v1/direct/*`` routes, the POS sending the card payment a
declined direct payment falls back to), must leave every party — the zone merchants' books
included — with the same journal, transfer by transfer, clean invariants (custody = wallets incl.
the merchants' + market makers + the rail's fees and PIT in crypto; each merchant's books equal to
its wallets at the exchange) and an empty reconciliation. Each step of the rail is written once in
:mod:`services.flows.direct`; a rule changed in one driver only makes this test fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import httpx
import pytest
from conftest import SQL_BACKENDS
from test_differential import START_S, InProcess, LiveDriver, TransferRow, _kzt, _row, make_direct_seed
from test_differential import InProcessDirect as FlowsInProcessDirect
from test_differential import run_direct_sequence as run_flows_direct_sequence

from services.api.parties import PartySeed
from services.contracts import (
    AuthorizationResponse,
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    ReasonCode,
    Residency,
    TaxPolicy,
)
from services.exchange import DirectPayment, Invoice
from services.flows import ChainConfig
from services.flows.direct import DirectDecline, DirectOutcome, FallbackPolicy, fall_back
from services.money import D

QUOTE_TTL_S = 30.0


def make_seed() -> PartySeed:
    btc = (Holding("BTC", (Lot(5_000_000, D("30000000"), 0.0), Lot(5_000_000, D("40000000"), 86_400.0))),)
    return PartySeed(
        config=ChainConfig(direct_fee_bps=50, direct_quote_ttl_s=QUOTE_TTL_S, tax_policy=TaxPolicy.WITHHOLD),
        prices_kzt={"BTC": D("45000000"), "ETH": D("1600000")},
        cardholders=(
            CardholderSpec("h1", "c1", Residency.RESIDENT, "standard", FundingMode.JIT, ("BTC",), btc),
            CardholderSpec("h2", "c2", Residency.NON_RESIDENT, "standard", FundingMode.PREFUNDED, ("BTC",), (),
                           100_000_00),
            CardholderSpec("h3", "c3", Residency.RESIDENT, "basic", FundingMode.JIT, ("ETH", "BTC"),
                           (Holding("ETH", (Lot(10**18, D("1000000"), 0.0),)),), stablecoin_minor=80_000_00),
        ),
        merchants=(MerchantSpec("z1", "acq-1", "cafe", cryptocity=True), MerchantSpec("m2", "acq-2", "hotel"),
                   MerchantSpec("z2", "acq-2", "retail", cryptocity=True)),
        deadline_ms=2_000,
    )


class DirectDriver(Protocol):
    async def direct(self, inv: str, holder: str, merchant: str, amount: str, priority: tuple[str, ...],
                     *, fallback: bool = False, confirm_after_s: float = 0.0) -> str: ...

    async def refund(self, refund_id: str, inv: str, amount: str) -> str: ...

    async def convert(self, merchant: str, asset: str, quantity: str) -> str: ...

    async def wallet(self, merchant: str, asset: str) -> str: ...

    async def halt(self, asset: str, halted: bool) -> None: ...

    async def present(self, kind: str, auth_id: str, amount: str) -> bool: ...

    async def settle(self, window_id: str) -> dict[str, str]: ...

    async def journals(self) -> dict[str, list[TransferRow]]: ...

    async def clean(self) -> tuple[dict[str, list[str]], list[Any]]: ...


def _paid(p: DirectPayment) -> str:
    return f"paid {p.asset} {p.quantity_minor} fee {p.fee_minor} pit {p.pit_minor}"


def _outcome(o: DirectOutcome) -> str:
    if o.card is not None:
        return f"card {o.card.code.value} after {o.decline.value}"
    if o.payment is not None and o.paid_direct:
        return _paid(o.payment)
    return f"declined {o.decline.value}"


class InProcessDirect(InProcess):
    """``ccsim run``'s driver: :class:`services.chain_direct.DirectRail` in this process."""

    async def direct(self, inv: str, holder: str, merchant: str, amount: str, priority: tuple[str, ...],
                     *, fallback: bool = False, confirm_after_s: float = 0.0) -> str:
        invoice = Invoice(inv, holder, merchant, _kzt(amount), priority)
        rail = self.chain.direct
        quoted = rail.quote(invoice)
        if isinstance(quoted, DirectDecline):
            outcome = DirectOutcome(inv, quoted)
        else:
            if confirm_after_s:  # the holder confirms late
                self.clock.advance(confirm_after_s)
                self.chain.replenish_books(confirm_after_s)
            outcome = rail.accept(invoice)
        policy = FallbackPolicy.CARD if fallback else FallbackPolicy.FAIL
        return _outcome(rail.fall_back(outcome, invoice, policy))

    async def refund(self, refund_id: str, inv: str, amount: str) -> str:
        r = self.chain.direct.refund(refund_id, inv, _kzt(amount))
        return f"refunded {r.quantity_minor}" if r.ok else f"refused {r.reason.value}"

    async def convert(self, merchant: str, asset: str, quantity: str) -> str:
        sale = self.chain.direct.convert(merchant, asset, self.chain.assets.parse(quantity, asset))
        return f"converted {sale.id} net {sale.net_kzt}" if sale.ok else f"refused {sale.reason.value}"

    async def wallet(self, merchant: str, asset: str) -> str:
        return self.chain.assets.format(self.chain.direct.desk.wallet_minor(merchant, asset), asset)

    async def journals(self) -> dict[str, list[TransferRow]]:
        out = await super().journals()
        out["merchants"] = sorted(_row(t) for t in self.chain.direct.books.ledger.journal())
        return out


class _NetworkCard:
    """The POS's card port: a declined direct payment that falls back is a card payment to the network."""

    def __init__(self, driver: LiveDirect, category: str) -> None:
        self.driver, self.category = driver, category

    async def pay_by_card(self, invoice: Invoice) -> AuthorizationResponse:
        card = {"h1": "c1", "h2": "c2", "h3": "c3"}[invoice.holder_id]
        amount = f"{D(invoice.amount_kzt) / 100:.2f}"
        r = await self.driver._post("http://network/v1/payments", {
            "id": f"{invoice.invoice_id}:card", "card_id": card, "merchant_id": invoice.merchant_id,
            "amount": amount, "category": self.category})
        assert r.status_code == 200, r.text
        return AuthorizationResponse(r.json()["id"], ReasonCode(r.json()["code"]))


def _reason(r: httpx.Response) -> str:
    """A refusal's reason; an unknown holder or merchant (a 404 naming the field) is the rail's
    ``refused``, which the in-process desk answers for them."""
    assert 400 <= r.status_code < 500 or r.status_code == 503, r.text
    return DirectDecline.REFUSED.value if r.status_code == 404 else str(r.json()["errors"][0]["reason"])


class LiveDirect(LiveDriver):
    """``ccsim serve``'s driver: the exchange's direct routes over HTTP; the card through the network."""

    categories: ClassVar[dict[str, str]] = {"z1": "cafe", "z2": "retail", "m2": "hotel"}

    async def direct(self, inv: str, holder: str, merchant: str, amount: str, priority: tuple[str, ...],
                     *, fallback: bool = False, confirm_after_s: float = 0.0) -> str:
        invoice = Invoice(inv, holder, merchant, _kzt(amount), priority)
        q = await self._post("http://exchange/v1/direct/quotes", {
            "invoice_id": inv, "holder_id": holder, "merchant_id": merchant, "amount": amount,
            "asset_priority": list(priority)})
        if q.status_code != 201:
            outcome = DirectOutcome(inv, DirectDecline(_reason(q)))
        else:
            if confirm_after_s:
                self.clock.advance(confirm_after_s)
            r = await self._post("http://exchange/v1/direct/payments", {"invoice_id": inv})
            if r.status_code == 201:
                b = r.json()
                assets = self.live.apps["exchange"].state.party.assets
                payment = DirectPayment(inv, inv, holder, merchant, True, asset=b["asset"],
                                        quantity_minor=assets.parse(b["quantity"], b["asset"]),
                                        fee_minor=assets.parse(b["fee"], b["asset"]),
                                        pit_minor=assets.parse(b["pit_withheld"], b["asset"]))
                outcome = DirectOutcome(inv, payment=payment)
            else:
                outcome = DirectOutcome(inv, DirectDecline(_reason(r)))
        policy = FallbackPolicy.CARD if fallback else FallbackPolicy.FAIL
        return _outcome(await fall_back(outcome, invoice, policy, _NetworkCard(self, self.categories[merchant])))

    async def refund(self, refund_id: str, inv: str, amount: str) -> str:
        r = await self._post("http://exchange/v1/direct/refunds", {"id": refund_id, "invoice_id": inv,
                                                                   "amount": amount})
        if r.status_code not in (200, 201):
            return f"refused {_reason(r)}"
        assets = self.live.apps["exchange"].state.party.assets
        return f"refunded {assets.parse(r.json()['quantity'], r.json()['asset'])}"

    async def convert(self, merchant: str, asset: str, quantity: str) -> str:
        r = await self._post("http://exchange/v1/direct/conversions", {"merchant_id": merchant, "asset": asset,
                                                                       "quantity": quantity})
        if r.status_code != 201:
            return f"refused {_reason(r)}"
        assert r.json()["delivered"] is True, r.text
        return f"converted {r.json()['id']} net {_kzt(r.json()['net'])}"

    async def wallet(self, merchant: str, asset: str) -> str:
        r = await self.live.client.get(f"http://exchange/v1/direct/merchants/{merchant}")
        assert r.status_code == 200, r.text
        assert r.json()["books"].get(asset, "0") in (r.json()["wallets"][asset], "0")
        return str(r.json()["wallets"][asset])

    async def journals(self) -> dict[str, list[TransferRow]]:
        out = await super().journals()
        svc = self.live.apps["exchange"].state.exchange_service
        out["merchants"] = sorted(_row(t) for t in svc.merchants_ledger.journal())
        return out


async def run_direct_sequence(d: DirectDriver) -> list[Any]:
    """The sequence; what each step answered (both drivers must answer the same)."""
    return [
        await d.direct("d1", "h1", "z1", "60000.00", ("BTC",)),  # BTC, the fee and the PIT withheld in crypto
        await d.direct("d2", "h3", "z1", "25000.00", ("KZTE",)),  # the tenge stablecoin, 1:1, no tax
        await d.direct("d3", "h3", "z2", "250000.00", ("ETH",)),  # over the basic tier's limit: declined
        await d.direct("d4", "h2", "z2", "5000.00", ("BTC",)),  # the wallet holds no BTC
        await d.direct("d5", "h3", "z2", "3000.00", ("ETH",), confirm_after_s=QUOTE_TTL_S + 1),  # quote expired
        await d.direct("d6", "h1", "m2", "1000.00", ("BTC",)),  # a merchant outside the zone: refused
        await d.halt("BTC", True),
        await d.direct("d7", "h2", "z1", "7000.00", ("BTC",), fallback=True),  # halted: the card pays instead
        await d.direct("d8", "h1", "z1", "7000.00", ("BTC",)),  # halted, no fallback: fails
        await d.convert("z1", "BTC", "0.001"),  # halted: refused, and it takes no conversion number
        await d.halt("BTC", False),
        await d.direct("d9", "h3", "z2", "4000.00", ("ETH", "BTC")),
        await d.refund("d1:r1", "d1", "30000.00"),  # half back, at the original quantity
        await d.refund("d1:r2", "d1", "40000.00"),  # more than is left of the payment
        await d.refund("d1:r1", "d1", "30000.00"),  # the same refund again: its first answer
        await d.wallet("z1", "BTC"),
        await d.convert("z1", "BTC", await d.wallet("z1", "BTC")),  # everything z1 holds in BTC
        await d.convert("z1", "KZTE", await d.wallet("z1", "KZTE")),  # the stablecoin redeemed 1:1 for its fee
        await d.refund("d1:r3", "d1", "1000.00"),  # z1 converted: it cannot refund in crypto
        await d.convert("z2", "ETH", "0.001"),
        await d.present("capture", "d7:card", "7000.00"),  # the card payment of the fallback
        await d.settle("w1"),  # the card's payout to z1 ends at its bank; the conversions reached its books
    ]


@pytest.fixture(params=SQL_BACKENDS)
async def live_direct(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LiveDirect]:
    driver = LiveDirect(request.param, tmp_path, make_seed())
    try:
        yield driver
    finally:
        await driver.live.close()


async def test_both_drivers_leave_the_same_journals_on_the_direct_rail(live_direct: LiveDirect) -> None:
    local = InProcessDirect(make_seed())
    assert local.clock.now() == live_direct.clock.now() == START_S
    answers_local = await run_direct_sequence(local)
    answers_live = await run_direct_sequence(live_direct)
    assert answers_live == answers_local
    # What the sequence is meant to exercise, read from the answers (so a path that silently stops
    # being taken fails here rather than passing as "the same nothing"):
    assert answers_local[0].startswith("paid BTC") and " pit 0" not in answers_local[0]
    assert answers_local[1] == "paid KZTE 2500000 fee 12500 pit 0"
    assert answers_local[2:6] == ["declined exceeds_amount_limit", "declined insufficient_balance",
                                  "declined quote_expired", "declined refused"]
    assert answers_local[7] == "card 00 after halted" and answers_local[8] == "declined halted"
    assert answers_local[9] == "refused halted"
    assert answers_local[12].startswith("refunded ") and answers_local[13] == "refused refund_exceeds_payment"
    assert answers_local[14] == answers_local[12]
    assert answers_local[16].startswith("converted conv:z1:1 ") and answers_local[17].startswith("converted conv:z1:2")
    assert answers_local[18] == "refused insufficient_crypto"
    assert answers_local[19].startswith("converted conv:z2:1 ")
    journals_local, journals_live = await local.journals(), await live_direct.journals()
    assert journals_live.keys() == journals_local.keys()
    for party in journals_local:
        assert journals_live[party] == journals_local[party], party
    assert journals_local["merchants"], "the zone merchants booked nothing"
    assert await local.clean() == ({}, [])
    assert await live_direct.clean() == ({}, [])


class LiveFlowsDirect(LiveDirect):
    """The live half of ``tests/test_differential.py``'s direct sequence (its ``DirectDriver``)."""

    async def pay_direct(self, invoice_id: str, holder: str, merchant: str, amount: str,
                         priority: tuple[str, ...] = ("BTC",)) -> str:
        answer = await self.direct(invoice_id, holder, merchant, amount, priority)
        return "paid" if answer.startswith("paid ") else answer.removeprefix("declined ")

    async def refund_direct(self, refund_id: str, invoice_id: str, amount: str) -> str:
        answer = await self.refund(refund_id, invoice_id, amount)
        return "refunded" if answer.startswith("refunded ") else answer.removeprefix("refused ")

    async def convert_all(self, merchant: str, asset: str) -> str:
        answer = await LiveDirect.convert(self, merchant, asset, await self.wallet(merchant, asset))
        if not answer.startswith("converted "):
            return answer.removeprefix("refused ")
        return f"{D(int(answer.rpartition(' ')[2])) / 100:.2f}"


class _FlowsLive:
    """``test_differential.DirectDriver`` over :class:`LiveFlowsDirect` (its ``convert`` sells all)."""

    def __init__(self, driver: LiveFlowsDirect) -> None:
        self.d = driver
        self.pay_direct, self.refund_direct = driver.pay_direct, driver.refund_direct
        self.journals, self.clean = driver.journals, driver.clean

    async def convert(self, merchant: str, asset: str) -> str:
        return await self.d.convert_all(merchant, asset)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_the_flows_direct_sequence_leaves_the_same_journals_live(backend: str, tmp_path: Path) -> None:
    """tests/test_differential.py's direct sequence (written with the in-process driver) through the
    live exchange too."""
    local = FlowsInProcessDirect(make_direct_seed())
    live = LiveFlowsDirect(backend, tmp_path, make_direct_seed())
    try:
        answers_local = await run_flows_direct_sequence(local)
        assert await run_flows_direct_sequence(_FlowsLive(live)) == answers_local
        journals_local, journals_live = await local.journals(), await live.journals()
        assert journals_live == journals_local
        assert await live.clean() == ({}, [])
    finally:
        await live.live.close()
