"""Clearing and settlement: presentment batches, windows, net positions, fees, merchant payouts."""

from __future__ import annotations

import random
from collections import Counter

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
)
from services.money import D
from services.network import FeeSchedule, fee_kzt

ACQUIRERS = ("acq-1", "acq-2", "acq-3")


def make_day(cards: int = 100, merchants: int = 50) -> tuple[InProcessChain, FixedClock]:
    clock = FixedClock(0.0)
    chain = InProcessChain(ChainConfig(acquirer_ids=ACQUIRERS, bank_count=4), clock)
    chain.set_mid_price("BTC", D("30000000"))
    chain.set_mid_price("ETH", D("1500000"))
    for m in range(merchants):
        chain.open_merchant(MerchantSpec(f"m{m}", ACQUIRERS[m % 3], "retail"))
    for c in range(cards):
        mode = (FundingMode.JIT, FundingMode.PREFUNDED)[c % 2]
        holdings = (Holding("BTC", (Lot(10**8, D("25000000")),)),)
        chain.open_cardholder(
            CardholderSpec(
                f"h{c}",
                f"c{c}",
                Residency.RESIDENT,
                "standard",
                mode,
                ("BTC",),
                holdings,
                card_balance_kzt=2_000_000_00 if mode is FundingMode.PREFUNDED else 0,
            )
        )
    return chain, clock


def test_a_settlement_day_of_1000_payments() -> None:
    chain, clock = make_day()
    rng = random.Random(20_240_601)
    fees = FeeSchedule()
    expected_credit: Counter[str] = Counter()
    expected_interchange = expected_scheme = 0
    cleared: list[str] = []
    reports = []
    for i in range(1_000):
        clock.advance(30.0)
        m = rng.randrange(50)
        amount = rng.randrange(500_00, 80_000_00)
        auth_id = f"a{i}"
        request = AuthorizationRequest(
            auth_id, f"c{rng.randrange(100)}", f"m{m}", ACQUIRERS[m % 3], amount
        )
        response = chain.authorize(request)
        assert response.approved, response
        roll = rng.random()
        if roll < 0.85:
            captured = amount if roll < 0.6 else amount * rng.randrange(50, 101) // 100
            assert chain.capture(auth_id, captured).ok
            cleared.append(auth_id)
            expected_credit[f"m{m}"] += captured - fee_kzt(captured, fees.mdr_bps)
            expected_interchange += fees.interchange_kzt(captured)
            expected_scheme += fees.scheme_fee_kzt(captured)
        else:
            assert chain.reverse(auth_id).ok
        if i % 250 == 249:
            reports.append(chain.settle(f"w{i // 250}"))

    for report in reports:
        assert sum(report.net_positions_kzt.values()) == 0
        assert (
            report.net_positions_kzt[chain.network.id] > 0
        )  # the scheme's fee income is a position
    assert sum(r.payments for r in reports) == len(
        cleared
    )  # each presentment in exactly one window
    credited: Counter[str] = Counter()
    for report in reports:
        credited.update(report.merchant_credits_kzt)
    assert credited == expected_credit
    presented = Counter(
        t.user_data
        for acquirer in chain.acquirers.values()
        for t in acquirer.ledger.journal()
        if t.id.endswith(":present")
    )
    assert set(presented) == set(cleared) and set(presented.values()) == {1}
    assert chain.network.fee_income_kzt() == expected_scheme
    interchange = chain.issuer.ledger.account("interchange:KZT")
    assert interchange is not None and interchange.credit_balance == expected_interchange
    for acquirer in chain.acquirers.values():
        assert all(acquirer.payable_kzt(m) == 0 for m in acquirer.merchants)
    assert chain.settlement_failures == []
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}
    assert chain.reconcile() == []


def test_settling_a_window_twice_moves_nothing_and_an_empty_window_is_empty() -> None:
    chain, _ = make_day(cards=2, merchants=3)
    chain.authorize(AuthorizationRequest("a1", "c1", "m0", "acq-1", 10_000_00))
    chain.capture("a1", 10_000_00)
    first = chain.settle("w1")
    sizes = [len(b.ledger) for b in chain.banks.values()]
    assert chain.settle("w1") == first
    assert [len(b.ledger) for b in chain.banks.values()] == sizes
    empty = chain.settle("w2")
    assert (
        empty.net_positions_kzt == {} and empty.merchant_credits_kzt == {} and empty.payments == 0
    )


def test_net_positions_and_fees_for_one_payment() -> None:
    chain, _ = make_day(cards=2, merchants=3)
    chain.authorize(AuthorizationRequest("a1", "c1", "m1", "acq-2", 100_000_00))
    chain.capture("a1", 100_000_00)
    report = chain.settle("w1")
    # interchange 0.80 % = 800 KZT, scheme fee 0.10 % = 100 KZT, MDR 1.50 % = 1,500 KZT
    assert report.net_positions_kzt == {"issuer": -99_200_00, "acq-2": 99_100_00, "network": 100_00}
    assert report.merchant_credits_kzt == {"m1": 98_500_00}
    acquirer = chain.acquirers["acq-2"]
    mdr = acquirer.ledger.account("mdr_income:KZT")
    assert mdr is not None and mdr.credit_balance == 1_500_00  # it pays 900 of it in fees
    assert acquirer.bank_kzt() == chain.config.acquirer_float_kzt + 600_00
    assert chain.network.bank_kzt() == 100_00


def test_unsettled_presentments_are_in_transit_not_breaks() -> None:
    chain, _ = make_day(cards=2, merchants=3)
    chain.authorize(AuthorizationRequest("a1", "c1", "m0", "acq-1", 10_000_00))
    chain.capture("a1", 10_000_00)
    assert chain.reconcile() == []  # issuer and acquirer booked it, the network clears it later
    assert [p.id for p in chain.acquirers["acq-1"].open_batch()] == ["a1"]
    chain.settle("w1")
    assert chain.acquirers["acq-1"].open_batch() == []
    assert chain.reconcile() == []
