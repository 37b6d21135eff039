"""Messages between parties, their transport, and the reconciliation that matches their halves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.bank import Bank, BankResult
from services.chain import ChainConfig, InProcessChain
from services.clock import FixedClock
from services.contracts import (
    AuthorizationRequest,
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    Residency,
    SaleResult,
)
from services.messaging import InProcessTransport, PaymentMessage, Purpose
from services.money import D
from services.reconciliation import Half, bank_halves, reconcile


def make_chain(bank_count: int = 3) -> InProcessChain:
    chain = InProcessChain(ChainConfig(bank_count=bank_count), FixedClock(100.0))
    chain.set_mid_price("BTC", D("30000000"))
    chain.set_mid_price("ETH", D("1500000"))
    chain.open_merchant(MerchantSpec("m0", "acq-1", "retail"))
    chain.open_cardholder(
        CardholderSpec(
            "h1",
            "c1",
            Residency.RESIDENT,
            "standard",
            FundingMode.JIT,
            ("BTC",),
            (Holding("BTC", (Lot(10**7, D("20000000")),)),),
        )
    )
    return chain


def sale_for(
    chain: InProcessChain,
    auth_id: str,
    amount_kzt: int,
) -> tuple[AuthorizationRequest, SaleResult]:
    request = AuthorizationRequest(auth_id, "c1", "m0", "acq-1", amount_kzt)
    screening = chain.screen(request)
    assert screening.sell is not None
    return request, chain.sell(screening.sell)


# -- reconcile() on its own ------------------------------------------------------------------


def test_matching_halves_reconcile_clean() -> None:
    halves = [
        Half("s1", "proceeds", side, party, 500)
        for side, party in (
            ("payer", "exchange"),
            ("payer_bank", "bank-1"),
            ("payee_bank", "bank-2"),
            ("payee", "issuer"),
        )
    ]
    assert reconcile(halves) == []


def test_one_side_only_and_amount_differs_are_reported() -> None:
    halves = [
        Half("s1", "proceeds", "payer", "exchange", 500),
        Half("s1", "proceeds", "payer_bank", "bank-1", 500),
        Half("p1", "capture", "issuer", "issuer", 900),
        Half("p1", "capture", "network", "network", 900),
        Half("p1", "capture", "acquirer", "acq-1", 901),
    ]
    breaks = {(b.message_id, b.kind): b.detail for b in reconcile(halves)}
    assert set(breaks) == {("s1", "one_side_only"), ("p1", "amount_differs")}
    assert "not by payee, payee_bank" in breaks[("s1", "one_side_only")]
    assert "acquirer (acq-1) 901" in breaks[("p1", "amount_differs")]


def test_in_transit_messages_may_miss_sides_but_must_agree_on_amounts() -> None:
    halves = [
        Half("p1", "capture", "issuer", "issuer", 900),
        Half("p1", "capture", "acquirer", "a", 800),
    ]
    assert [b.kind for b in reconcile(halves, in_transit={"p1"})] == ["amount_differs"]


def test_merchant_payouts_and_card_loads_expect_no_books_from_merchants_or_cardholders() -> None:
    payout = [
        Half("w:a:m", "merchant_payout", s, p, 10)
        for s, p in (("payer", "acq-1"), ("payer_bank", "bank-1"), ("payee_bank", "bank-2"))
    ]
    load = [
        Half("l1", "card_load", s, p, 10)
        for s, p in (("payer_bank", "bank-1"), ("payee_bank", "bank-1"), ("payee", "issuer"))
    ]
    assert reconcile(payout + load) == []


# -- transport and banks ---------------------------------------------------------------------


def test_transport_drops_and_duplicates_on_request() -> None:
    transport = InProcessTransport()
    seen: list[str] = []
    transport.register("r", lambda msg: seen.append(msg.id) is None)
    msg = PaymentMessage("x", Purpose.PROCEEDS, "a", "b", "bank-1", "bank-1", 5)
    transport.drop(1, receiver="r")
    assert transport.send("r", msg) is False and seen == []
    transport.duplicate(1)
    assert transport.send("r", msg) is True and seen == ["x", "x"]
    assert transport.send("r", msg) is True and seen == ["x", "x", "x"]
    assert (transport.dropped, transport.duplicated, transport.delivered) == (1, 1, 2)
    with pytest.raises(KeyError):
        transport.send("nobody", msg)


def test_bank_books_each_half_once_and_refuses_overdrafts() -> None:
    transport = InProcessTransport()
    bank = Bank("bank-1", FixedClock(), transport)
    bank.open_account("a")
    bank.open_account("b")
    assert bank.deposit("d1", "a", 100) is BankResult.OK
    internal = PaymentMessage("p1", Purpose.PROCEEDS, "a", "b", "bank-1", "bank-1", 60)
    assert bank.book(internal) is BankResult.OK
    assert bank.book(internal) is BankResult.EXISTS
    assert bank.book(replace(internal, amount_kzt=61)) is BankResult.EXISTS_WITH_DIFFERENT_FIELDS
    assert bank.book(replace(internal, id="p2")) is BankResult.INSUFFICIENT_FUNDS
    assert bank.book(replace(internal, id="p3", payee="ghost")) is BankResult.UNKNOWN_CUSTOMER
    assert bank.book(replace(internal, id="p4", amount_kzt=0)) is BankResult.INVALID_AMOUNT
    assert bank.book(replace(internal, id="p5", payer_bank="x", payee_bank="y")) is (
        BankResult.NOT_THIS_BANK
    )
    assert (bank.balance_kzt("a"), bank.balance_kzt("b"), bank.reserve_kzt()) == (40, 60, 100)
    halves = list(bank_halves("bank-1", bank.ledger.journal()))
    assert sorted(h.side for h in halves) == [
        "payee_bank",
        "payer_bank",
    ]  # one transfer, both sides
    assert bank.ledger.check_invariants() == []


# -- the chain's reconciliation --------------------------------------------------------------


@pytest.mark.parametrize("hop", ["payer_bank", "payee_bank", "payee"])
def test_proceeds_lost_at_any_hop_is_a_break_until_retried(hop: str) -> None:
    chain = make_chain()
    receiver = {
        "payer_bank": chain.bank_of["exchange"],
        "payee_bank": chain.bank_of["issuer"],
        "payee": "issuer",
    }[hop]
    _, sale = sale_for(chain, "a1", 10_000_00)
    chain.transport.drop(1, receiver=receiver)
    assert chain.pay_proceeds(sale) is False
    breaks = chain.reconcile()
    assert len(breaks) == 1 and breaks[0].kind == "one_side_only" and hop in breaks[0].detail
    assert chain.retry_undelivered() == 0
    assert chain.reconcile() == []
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}


def test_proceeds_between_customers_of_one_bank() -> None:
    chain = make_chain(bank_count=1)
    request, sale = sale_for(chain, "a1", 10_000_00)
    assert chain.pay_proceeds(sale)
    assert chain.finalize(request, sale).approved
    assert chain.reconcile() == []


def test_lost_settlement_payment_is_a_break_and_tenge_is_in_flight() -> None:
    chain = make_chain()
    chain.authorize(AuthorizationRequest("a1", "c1", "m0", "acq-1", 10_000_00))
    chain.capture("a1", 10_000_00)
    chain.transport.drop(1, receiver=chain.bank_of["network"])  # the issuer's payment gets lost
    report = chain.settle("w1")
    assert sum(report.net_positions_kzt.values()) == 0
    breaks = chain.reconcile()
    assert [(b.message_id, b.kind) for b in breaks] == [("w1:issuer:in", "one_side_only")]
    assert chain.undelivered() == ["w1:issuer:in"]
    assert chain.retry_undelivered() == 0
    assert chain.reconcile() == []
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}


def test_a_half_booked_with_another_amount_is_reported() -> None:
    chain = make_chain()
    _, sale = sale_for(chain, "a1", 10_000_00)
    # A faulty message reaches the issuer first: same sale id, one tiyn more.
    wrong = PaymentMessage(
        sale.id, Purpose.PROCEEDS, "exchange", "issuer", "x", "y", sale.net_kzt + 1
    )
    assert chain.issuer.handle(wrong)
    assert (
        chain.pay_proceeds(sale) is False
    )  # the issuer refuses the real one: exists, other amount
    breaks = chain.reconcile()
    assert [(b.message_id, b.kind) for b in breaks] == [(sale.id, "amount_differs")]
    assert f"payee (issuer) {sale.net_kzt + 1}" in breaks[0].detail


def test_duplicated_card_load_is_credited_once() -> None:
    chain = make_chain()
    chain.transport.duplicate(5)
    chain.open_cardholder(
        CardholderSpec(
            "h2",
            "c2",
            Residency.NON_RESIDENT,
            "basic",
            FundingMode.PREFUNDED,
            ("BTC",),
            card_balance_kzt=7_000_00,
        )
    )
    assert chain.card_balance_kzt("c2") == 7_000_00
    assert chain.reconcile() == []
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}
