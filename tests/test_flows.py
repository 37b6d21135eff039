"""Whole Crypto Card flows through every party, each ending with every party's ledger invariants
and the cross-party reconciliation checked (issue 3, "Must show")."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.chain import ChainConfig, InProcessChain
from services.clock import FixedClock
from services.contracts import (
    AuthorizationRequest,
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    OrphanPolicy,
    ReasonCode,
    Residency,
    TaxPolicy,
)
from services.exchange import BookConfig, ExchangeConfig
from services.issuer import AuthState
from services.money import D

BTC_KZT = D("30000000")  # 30 million KZT per BTC
ETH_KZT = D("1500000")
BTC = 10**8  # satoshi per BTC
ETH = 10**18


def make_chain(**overrides: object) -> tuple[InProcessChain, FixedClock]:
    clock = FixedClock(1_000.0)
    chain = InProcessChain(ChainConfig(**overrides), clock)  # type: ignore[arg-type]
    chain.set_mid_price("BTC", BTC_KZT)
    chain.set_mid_price("ETH", ETH_KZT)
    for i, acquirer in enumerate(chain.config.acquirer_ids):
        chain.open_merchant(MerchantSpec(f"m{i}", acquirer, "retail"))
    return chain, clock


def holder(
    card: str = "c1",
    *,
    mode: FundingMode = FundingMode.JIT,
    btc: int = BTC // 1000,
    eth: int = ETH // 100,
    balance_kzt: int = 0,
    stable: int = 0,
    residency: Residency = Residency.RESIDENT,
) -> CardholderSpec:
    holdings = []
    if btc:
        holdings.append(Holding("BTC", (Lot(btc, D("20000000")),)))
    if eth:
        holdings.append(Holding("ETH", (Lot(eth, D("1000000")),)))
    return CardholderSpec(
        f"h-{card}",
        card,
        residency,
        "standard",
        mode,
        ("BTC", "ETH"),
        tuple(holdings),
        card_balance_kzt=balance_kzt,
        stablecoin_minor=stable,
    )


def req(
    auth: str, amount_kzt: int, card: str = "c1", merchant: str = "m0", acquirer: str = "acq-1"
) -> AuthorizationRequest:
    return AuthorizationRequest(auth, card, merchant, acquirer, amount_kzt)


def assert_clean(chain: InProcessChain) -> None:
    violations = {party: v for party, v in chain.check_invariants().items() if v}
    assert violations == {}
    assert chain.reconcile() == []


def test_jit_payment_sells_btc_then_eth_by_priority() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(btc=100_000, eth=ETH // 100))  # 30,000 KZT of BTC, 15,000 of ETH
    response = chain.authorize(req("a1", 40_000_00))
    assert response.approved and response.approval_code
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None and [leg.asset for leg in sale.legs] == ["BTC", "ETH"]
    assert chain.exchange.wallet_balance("h-c1", "BTC") == 0  # BTC first, all of it
    assert 0 < chain.exchange.wallet_balance("h-c1", "ETH") < ETH // 100
    padding = 40_000_00 * chain.config.hold_padding_bps // 10_000
    assert 0 <= sale.net_kzt - (40_000_00 + padding) < 100
    assert response.held_kzt == 40_000_00 + padding
    assert chain.card_balance_kzt("c1") == sale.net_kzt - response.held_kzt
    assert chain.capture("a1", 40_000_00).ok
    assert chain.card_balance_kzt("c1") == sale.net_kzt - 40_000_00  # padding released
    report = chain.settle("w1")
    assert sum(report.net_positions_kzt.values()) == 0
    assert report.merchant_credits_kzt == {"m0": 40_000_00 - 40_000_00 * 150 // 10_000}
    assert_clean(chain)


def test_card_tenge_is_used_first_and_only_the_shortfall_is_sold() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(balance_kzt=10_000_00))
    screening = chain.screen(req("a1", 25_000_00))
    assert screening.sell is not None
    assert screening.sell.net_kzt == 15_000_00 + 25_000_00 * 200 // 10_000  # shortfall + padding
    assert screening.sell.asset_priority == ("BTC", "ETH")
    assert chain.authorize(req("a1", 25_000_00)).approved
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None
    # the exchange nets at least that; the excess is less than one satoshi's worth
    assert 0 <= sale.net_kzt - screening.sell.net_kzt < 100
    assert_clean(chain)


def test_prefunded_payment_touches_tenge_only() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(mode=FundingMode.PREFUNDED, balance_kzt=100_000_00))
    assert chain.authorize(req("a1", 60_000_00)).approved
    assert chain.exchange.sales() == []
    declined = chain.authorize(req("a2", 60_000_00))
    assert declined.code is ReasonCode.INSUFFICIENT_FUNDS
    assert chain.exchange.sales() == []  # a pre-funded card never sells at authorization time
    assert chain.capture("a1", 60_000_00).ok
    chain.settle("w1")
    assert_clean(chain)


def test_prefunded_card_is_topped_up_automatically_below_its_threshold() -> None:
    chain, _ = make_chain(top_up_below_kzt=20_000_00, top_up_to_kzt=50_000_00)
    chain.open_cardholder(holder(mode=FundingMode.PREFUNDED, btc=BTC // 100, balance_kzt=30_000_00))
    top = chain.top_up("c1", 10_000_00, "prefund-1")
    assert top.ok and chain.card_balance_kzt("c1") == 30_000_00 + top.net_kzt
    assert chain.authorize(req("a1", 25_000_00)).approved
    # about 40,000 - 25,500 held = 14,500 < 20,000: one sale brings it back to (at least) 50,000
    assert 0 <= chain.card_balance_kzt("c1") - 50_000_00 < 100
    assert len(chain.exchange.sales()) == 2
    assert_clean(chain)


def test_stablecoin_payment_redeems_one_to_one_for_a_fee() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(mode=FundingMode.STABLECOIN, btc=0, eth=0, stable=100_000_00))
    assert chain.authorize(req("a1", 30_000_00)).approved
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None and [leg.asset for leg in sale.legs] == ["KZTE"]
    leg = sale.legs[0]
    assert leg.gross_kzt == leg.quantity_minor  # 1:1 (KZTE has the tiyn's scale)
    assert leg.fee_kzt > 0 and leg.realized_gain_kzt == 0  # no price, no tax event
    assert chain.capture("a1", 30_000_00).ok
    chain.settle("w1")
    assert_clean(chain)


def test_partial_clearing_releases_the_remainder() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(mode=FundingMode.PREFUNDED, balance_kzt=100_000_00))
    response = chain.authorize(req("a1", 50_000_00))
    result = chain.capture("a1", 30_000_00)
    assert result.ok and result.captured_kzt == 30_000_00
    assert result.released_kzt == response.held_kzt - 30_000_00
    assert chain.card_balance_kzt("c1") == 70_000_00
    report = chain.settle("w1")
    assert report.merchant_credits_kzt["m0"] == 30_000_00 - 30_000_00 * 150 // 10_000
    assert_clean(chain)


def test_over_capture_within_the_padding() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    response = chain.authorize(req("a1", 20_000_00))
    padding = 20_000_00 * 200 // 10_000
    assert response.held_kzt == 20_000_00 + padding
    too_much = chain.capture("a1", 20_000_00 + padding + 1)
    assert not too_much.ok and too_much.reason == "exceeds_padding"
    result = chain.capture("a1", 20_000_00 + padding)
    assert result.ok and result.released_kzt == 0
    chain.settle("w1")
    assert_clean(chain)


def test_refund_after_settlement_flows_back_in_the_next_window() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(mode=FundingMode.PREFUNDED, balance_kzt=100_000_00))
    chain.authorize(req("a1", 40_000_00))
    chain.capture("a1", 40_000_00)
    first = chain.settle("w1")
    assert first.merchant_credits_kzt["m0"] == 40_000_00 - 60_000
    assert chain.refund("a1", 10_000_00).ok
    assert chain.card_balance_kzt("c1") == 70_000_00
    assert not chain.refund("a1", 30_000_01).ok  # 10,000 refunded of 40,000 captured
    second = chain.settle("w2")
    assert second.net_positions_kzt == {"issuer": 10_000_00, "acq-1": -10_000_00}
    assert second.merchant_credits_kzt == {}  # the merchant owes the acquirer until it sells more
    assert chain.acquirers["acq-1"].payable_kzt("m0") == -10_000_00
    assert_clean(chain)


def test_hold_expiry_gives_the_tenge_back() -> None:
    chain, clock = make_chain()
    chain.open_cardholder(holder(mode=FundingMode.PREFUNDED, balance_kzt=50_000_00))
    chain.authorize(req("a1", 20_000_00))
    assert chain.card_balance_kzt("c1") < 50_000_00
    clock.advance(chain.config.hold_expiry_s + 1)
    assert chain.expire_holds() == 1
    assert chain.expire_holds() == 0
    assert chain.card_balance_kzt("c1") == 50_000_00
    late = chain.capture("a1", 20_000_00)
    assert not late.ok and late.reason == "hold_expired"
    assert chain.auth_state("a1") is AuthState.EXPIRED
    assert_clean(chain)


def test_reversal_after_a_network_timeout_keeps_the_proceeds_as_tenge() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    response = chain.authorize(
        req("a1", 20_000_00)
    )  # approved, but the answer never reached the POS
    assert response.approved
    result = chain.reverse("a1")
    assert result.ok and result.released_kzt == response.held_kzt
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None
    assert chain.card_balance_kzt("c1") == sale.net_kzt  # sold crypto stays on the card as tenge
    again = chain.reverse("a1")
    assert not again.ok and again.reason == "already_resolved"
    report = chain.settle("w1")
    assert report.payments == 0
    assert_clean(chain)


def test_stand_in_approval_whose_advice_arrives_twice() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder(btc=0, eth=0, balance_kzt=10_000_00))  # nothing to sell
    request = req("a1", 30_000_00)
    decision = chain.stand_in(request)  # the issuer was too slow; the network approves
    assert decision.approved and decision.stand_in
    assert chain.apply_advice(request, decision) is True
    assert chain.apply_advice(request, decision) is False  # the repeat books nothing
    assert chain.card_balance_kzt("c1") == 0
    assert chain.stand_in_exposure_kzt() == 20_000_00  # what the card could not cover
    assert chain.capture("a1", 30_000_00).ok
    chain.settle("w1")
    assert chain.stand_in_exposure_kzt() == 20_000_00
    assert_clean(chain)


def test_stand_in_advice_sells_a_jit_cards_crypto_first() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    request = req("a1", 30_000_00)
    assert chain.apply_advice(request, chain.stand_in(request))
    assert chain.exchange.sale("a1:advice-sale") is not None
    assert chain.stand_in_exposure_kzt() == 0
    assert_clean(chain)


@pytest.mark.parametrize("policy", [OrphanPolicy.KEEP_TENGE, OrphanPolicy.REBUY])
def test_orphaned_sale_under_both_policies(policy: OrphanPolicy) -> None:
    chain, _ = make_chain(orphan_policy=policy, stand_in_limit_kzt=10_000_00)
    chain.open_cardholder(holder())
    btc_before = chain.exchange.wallet_balance("h-c1", "BTC")
    cash_before = chain.exchange_kzt_cash()
    request = req("a1", 20_000_00)
    screening = chain.screen(request)
    assert screening.sell is not None
    sale = chain.sell(screening.sell)
    assert sale.ok
    # The deadline passed while selling: the network declines (above its stand-in limit)...
    decision = chain.stand_in(request)
    assert decision.code is ReasonCode.ISSUER_UNAVAILABLE
    chain.orphaned_sale(request, sale)  # ...and the sale finished with no payment to fund
    chain.orphaned_sale(request, sale)  # counted once
    assert chain.apply_advice(request, decision)
    if policy is OrphanPolicy.KEEP_TENGE:
        assert chain.orphans_kept == 1 and chain.orphans_rebought == 0
        assert chain.card_balance_kzt("c1") == sale.net_kzt
        assert chain.exchange.wallet_balance("h-c1", "BTC") < btc_before
    else:
        assert chain.orphans_kept == 0 and chain.orphans_rebought == 1
        assert chain.card_balance_kzt("c1") == 0
        assert chain.exchange.wallet_balance("h-c1", "BTC") == btc_before
        assert chain.exchange_kzt_cash() == cash_before
    assert_clean(chain)


def test_proceeds_message_delivered_twice_is_booked_once() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    chain.transport.duplicate(10)  # every hop of the next messages arrives twice
    response = chain.authorize(req("a1", 20_000_00))
    assert response.approved
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None
    assert chain.pay_proceeds(sale)  # and the exchange sends it once more
    assert chain.card_balance_kzt("c1") == sale.net_kzt - response.held_kzt
    assert chain.transport.duplicated > 0
    assert_clean(chain)


def test_proceeds_message_lost_then_retried() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    issuer_bank = chain.bank_of[chain.config.issuer_id]
    request = req("a1", 20_000_00)
    screening = chain.screen(request)
    assert screening.sell is not None
    sale = chain.sell(screening.sell)
    chain.transport.drop(1, receiver=issuer_bank)  # lost between the two banks
    assert chain.pay_proceeds(sale) is False
    breaks = chain.reconcile()
    assert [(b.message_id, b.kind) for b in breaks] == [("a1:sale", "one_side_only")]
    assert "payee_bank" in breaks[0].detail and "payee" in breaks[0].detail
    assert chain.undelivered() == ["a1:sale"]
    assert chain.retry_undelivered() == 0
    assert chain.finalize(request, sale).approved
    assert_clean(chain)


def test_lost_proceeds_decline_the_payment_and_show_in_reconciliation() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    chain.transport.drop(1, receiver=chain.bank_of[chain.config.exchange_id])
    response = chain.authorize(req("a1", 20_000_00))
    assert response.code is ReasonCode.ISSUER_UNAVAILABLE
    assert [b.kind for b in chain.reconcile()] == ["one_side_only"]
    assert chain.retry_undelivered() == 0
    assert chain.card_balance_kzt("c1") > 0  # the crypto's tenge is on the card, not lost
    assert_clean(chain)


def test_sale_refused_by_the_slippage_cap_declines_and_moves_nothing() -> None:
    # 5,000 KZT per level, each level 1 % further below mid: 20,400 KZT averages about 1.5 % off
    thin = BookConfig(levels=5, level_step_bps=100, depth_per_level_kzt=5_000_00)
    exchange = ExchangeConfig(books={"BTC": thin, "ETH": thin})
    chain, _ = make_chain(exchange=exchange)
    chain.open_cardholder(holder())
    btc_before = chain.exchange.wallet_balance("h-c1", "BTC")
    response = chain.authorize(req("a1", 20_000_00))
    assert response.code is ReasonCode.DO_NOT_HONOUR
    assert chain.exchange.sales() == []
    assert chain.exchange.wallet_balance("h-c1", "BTC") == btc_before
    assert chain.card_balance_kzt("c1") == 0
    assert_clean(chain)


def test_exchange_short_of_tenge_declines_with_91() -> None:
    chain, _ = make_chain(exchange=ExchangeConfig(house_kzt_minor=5_000_00))
    chain.open_cardholder(holder())
    response = chain.authorize(req("a1", 20_000_00))
    assert response.code is ReasonCode.ISSUER_UNAVAILABLE
    screening = chain.screen(req("a2", 20_000_00))
    assert screening.sell is not None
    assert chain.sell(screening.sell).reason == "exchange_short_of_kzt"
    assert chain.exchange_kzt_cash() == 5_000_00
    assert_clean(chain)


def test_trading_halt_declines_with_91_and_orphan_rebuy_falls_back_to_tenge() -> None:
    chain, _ = make_chain(orphan_policy=OrphanPolicy.REBUY)
    chain.open_cardholder(holder())
    request = req("a1", 20_000_00)
    screening = chain.screen(request)
    assert screening.sell is not None
    sale = chain.sell(screening.sell)
    chain.set_halted("BTC", True)
    chain.orphaned_sale(request, sale)
    assert chain.orphans_kept == 1  # cannot buy back a halted asset
    chain.set_halted("ETH", True)
    assert chain.authorize(req("a2", 500_000_00)).code in (
        ReasonCode.ISSUER_UNAVAILABLE,
        ReasonCode.INSUFFICIENT_FUNDS,
    )
    assert_clean(chain)


def test_withholding_at_source_still_nets_the_shortfall() -> None:
    chain, _ = make_chain(tax_policy=TaxPolicy.WITHHOLD)
    chain.open_cardholder(holder(residency=Residency.NON_RESIDENT))
    assert chain.authorize(req("a1", 20_000_00)).approved
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None and sum(leg.pit_kzt for leg in sale.legs) > 0
    summary = chain.tax_summary()
    assert summary.pit_withheld_kzt == sum(leg.pit_kzt for leg in sale.legs)
    assert summary.sales == len(sale.legs)
    assert_clean(chain)


def test_incremental_authorization_and_chargeback() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    first = chain.authorize(req("a1", 10_000_00))
    assert first.approved
    assert chain.increment("a1", 5_000_00).ok
    assert chain.capture("a1", 15_000_00).ok
    chain.settle("w1")
    assert chain.chargeback("a1", 15_000_00).ok
    assert not chain.chargeback("a1", 1).ok
    report = chain.settle("w2")
    assert report.net_positions_kzt["issuer"] == 15_000_00
    assert_clean(chain)


def test_replayed_authorization_returns_the_first_answer_and_books_nothing() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder())
    first = chain.authorize(req("a1", 20_000_00))
    journal = len(chain.issuer.ledger)
    assert chain.authorize(req("a1", 20_000_00)) == first
    assert len(chain.issuer.ledger) == journal
    assert len(chain.exchange.sales()) == 1
    assert isinstance(chain.exchange.sales()[0].legs[0].avg_price_kzt, Decimal)
