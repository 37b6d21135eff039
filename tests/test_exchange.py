"""The exchange: market sells by priority, refusals that book nothing, stablecoin, re-buys, depth.

Prices used throughout: BTC mid 30,000,000 KZT, ETH mid 1,500,000 KZT; spread 10 bps, so the best
bid is 0.9995 * mid (BTC 29,985,000 KZT = 29.985 tiyn per satoshi); taker fee 10 bps.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.clock import FixedClock
from services.contracts import Holding, Lot, Residency, SaleResult, SellOrder, TaxPolicy
from services.exchange import BookConfig, Exchange, ExchangeConfig, SaleReason
from services.ledger import InMemoryLedger
from services.money import AssetRegistry, D
from services.tax import TaxBook

BTC_MID = D("30000000")
ETH_MID = D("1500000")
SAT = 10**8
WEI = 10**18


def make_exchange(**overrides: object) -> tuple[Exchange, InMemoryLedger, FixedClock]:
    assets = AssetRegistry()
    clock = FixedClock(1_000.0)
    ledger = InMemoryLedger(assets, clock, name="exchange")
    settings: dict[str, object] = {
        "taker_fee_bps": 10,
        "books": {"BTC": BookConfig(levels=10, level_step_bps=5, depth_per_level_kzt=5_000_000_00,
                                    spread_bps=10, replenish_per_s=D("0.01")),
                  "ETH": BookConfig(levels=10, level_step_bps=5, depth_per_level_kzt=5_000_000_00,
                                    spread_bps=10, replenish_per_s=D("0.01"))},
        "house_kzt_minor": 100_000_000_00,
    }
    settings.update(overrides)
    config = ExchangeConfig(**settings)  # type: ignore[arg-type]
    exchange = Exchange(ledger, assets, clock, config, TaxBook(config.cost_basis, assets=assets))
    for code, mid in (("BTC", BTC_MID), ("ETH", ETH_MID)):
        if code in config.books:
            exchange.set_mid_price(code, mid)
    return exchange, ledger, clock


def open_holder(ex: Exchange, holder: str = "h1", *, btc_sat: int = SAT, eth_wei: int = WEI,
                stable: int = 0, residency: Residency = Residency.RESIDENT) -> None:
    ex.open_wallet(holder, residency, (
        Holding("BTC", (Lot(btc_sat, D("20000000")),)),
        Holding("ETH", (Lot(eth_wei, D("1000000")),)),
    ), stablecoin_minor=stable)


def order(net_kzt: int, *, sale_id: str = "s1", holder: str = "h1",
          priority: tuple[str, ...] = ("BTC", "ETH"), cap_bps: int = 100,
          ttl_s: float = 2.0) -> SellOrder:
    return SellOrder(sale_id, f"auth-{sale_id}", holder, net_kzt, priority, cap_bps, ttl_s)


def assert_clean(ex: Exchange) -> None:
    assert ex.check_invariants() == []


def test_sell_one_asset() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex)
    result = ex.sell(order(100_000_00))
    # Net 100,000.00 KZT needs gross >= ceil(10,000,000 / 0.999) = 10,010,011 tiyn.
    # Satoshi: ceil(10,010,011 / 29.985) = ceil(333,833.6...) = 333,834;
    # gross: floor(333,834 * 29.985) = floor(10,010,012.49) = 10,010,012 tiyn;
    # fee: ceil(10,010.012) = 10,011; net 10,000,001 tiyn.
    assert result.ok, result.reason
    (leg,) = result.legs
    assert (leg.asset, leg.quantity_minor, leg.gross_kzt, leg.fee_kzt) == (
        "BTC", 333_834, 10_010_012, 10_011)
    assert result.net_kzt == 10_000_001
    assert leg.avg_price_kzt < BTC_MID
    assert Decimal(5) <= leg.slippage_bps < Decimal("5.001")  # half the spread, plus rounding
    # Gain: basis 333,834 sat at 20 tiyn/sat = 6,676,680 tiyn; gain 3,333,332; PIT 10 % 333,333.2.
    assert (leg.realized_gain_kzt, leg.pit_kzt) == (3_333_332, 333_333)
    assert ex.wallet_balance("h1", "BTC") == SAT - 333_834
    assert ex.bank_balance_kzt() == 100_000_000_00 - 10_000_001
    assert ledger.account("fees:KZT").credit_balance == 10_011  # type: ignore[union-attr]
    assert ex.book("BTC").depth_kzt(0) == 5_000_000_00 - 10_010_012
    assert ex.sales() == [result]
    assert_clean(ex)


def test_sell_btc_then_eth_when_btc_runs_out() -> None:
    ex, _, _ = make_exchange()
    open_holder(ex, btc_sat=100_000)  # 0.001 BTC: worth about 29,985 KZT at the best bid
    result = ex.sell(order(100_000_00))
    assert result.ok, result.reason
    btc, eth = result.legs
    # BTC: the whole wallet, 100,000 sat -> floor(2,998,500) tiyn, fee ceil(2,998.5) = 2,999.
    assert (btc.asset, btc.quantity_minor, btc.gross_kzt, btc.fee_kzt) == (
        "BTC", 100_000, 2_998_500, 2_999)
    # ETH nets the rest: 10,000,000 - 2,995,501 = 7,004,499 tiyn at least.
    assert eth.asset == "ETH"
    assert eth.gross_kzt - eth.fee_kzt >= 7_004_499
    assert result.net_kzt == sum(leg.gross_kzt - leg.fee_kzt for leg in result.legs) >= 100_000_00
    assert ex.wallet_balance("h1", "BTC") == 0
    assert ex.wallet_balance("h1", "ETH") == WEI - eth.quantity_minor
    assert_clean(ex)


def test_slippage_cap_refusal_books_nothing() -> None:
    thin = BookConfig(levels=20, level_step_bps=50, depth_per_level_kzt=1_000_000, spread_bps=10)
    ex, ledger, _ = make_exchange(books={"BTC": thin, "ETH": thin})
    open_holder(ex)
    journal_before = len(ledger)
    depth_before = ex.book("BTC").depths_kzt
    # 100,000 KZT walks ten 10,000-KZT levels, 50 bps apart: far more than 20 bps below the mid.
    result = ex.sell(order(100_000_00, cap_bps=20))
    assert (result.ok, result.reason) == (False, SaleReason.SLIPPAGE_CAP)
    assert len(ledger) == journal_before
    assert ex.book("BTC").depths_kzt == depth_before
    assert ex.tax.holding_minor("h1", "BTC") == SAT
    assert ex.sales() == []
    # The same order under a looser cap goes through and walks the levels.
    result = ex.sell(order(100_000_00, cap_bps=500))
    assert result.ok and result.legs[0].slippage_bps > 20
    assert ex.book("BTC").depth_kzt(0) == 0
    assert_clean(ex)


def test_halted_asset_is_skipped_or_refused() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex)
    ex.set_halted("BTC", True)
    refused = ex.sell(order(10_000_00, priority=("BTC",)))
    assert (refused.ok, refused.reason) == (False, SaleReason.HALTED)
    assert len(ledger) == 3  # funding + two deposits
    funded_by_eth = ex.sell(order(10_000_00, sale_id="s2"))
    assert [leg.asset for leg in funded_by_eth.legs] == ["ETH"]
    ex.set_halted("BTC", False)
    retried = ex.sell(order(10_000_00, priority=("BTC",)))  # a refusal is not remembered
    assert retried.ok and retried.legs[0].asset == "BTC"
    assert_clean(ex)


def test_exchange_short_of_tenge() -> None:
    ex, ledger, _ = make_exchange(house_kzt_minor=50_000_00)
    open_holder(ex)
    journal_before = len(ledger)
    refused = ex.sell(order(100_000_00))
    assert (refused.ok, refused.reason) == (False, SaleReason.EXCHANGE_SHORT_OF_KZT)
    assert len(ledger) == journal_before
    assert ex.wallet_balance("h1", "BTC") == SAT
    assert ex.book("BTC").depth_kzt(0) == 5_000_000_00
    assert ex.top_up_kzt("topup-1", 100_000_00)
    assert ex.top_up_kzt("topup-1", 100_000_00)  # idempotent: counted once
    assert ex.bank_balance_kzt() == 150_000_00
    assert ex.sell(order(100_000_00)).ok
    assert_clean(ex)


def test_replayed_order_returns_the_first_result_and_books_nothing() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex)
    first = ex.sell(order(100_000_00))
    journal = len(ledger)
    ex.set_mid_price("BTC", D("25000000"))  # a replay is not re-priced
    again = ex.sell(order(100_000_00))
    assert again is first
    assert len(ledger) == journal
    assert ex.wallet_balance("h1", "BTC") == SAT - first.legs[0].quantity_minor
    assert len(ex.tax.statement("h1").sales) == 1
    assert_clean(ex)


def test_bad_orders_are_refused_with_a_reason() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex, btc_sat=1_000, eth_wei=0)
    journal = len(ledger)
    assert ex.sell(order(0)).reason == SaleReason.INVALID_AMOUNT
    assert ex.sell(order(10_00, priority=("BTC", "DOGE"))).reason == SaleReason.UNKNOWN_ASSET
    assert ex.sell(order(10_00, holder="ghost")).reason == SaleReason.UNKNOWN_HOLDER
    assert ex.sell(order(1_000_000_00)).reason == SaleReason.INSUFFICIENT_CRYPTO
    assert len(ledger) == journal
    assert_clean(ex)


def test_withholding_still_nets_the_order() -> None:
    ex, ledger, _ = make_exchange(tax_policy=TaxPolicy.WITHHOLD)
    open_holder(ex, btc_sat=100_000, residency=Residency.NON_RESIDENT)
    result = ex.sell(order(100_000_00))
    assert result.ok, result.reason
    pit = sum(leg.pit_kzt for leg in result.legs)
    assert pit > 0
    assert result.net_kzt == sum(leg.gross_kzt - leg.fee_kzt - leg.pit_kzt for leg in result.legs)
    assert 100_000_00 <= result.net_kzt < 100_000_00 + 100  # enough, and not much more
    assert ledger.account("tax_withheld:KZT").credit_balance == pit  # type: ignore[union-attr]
    statement = ex.tax.statement("h1")
    assert statement.pit_withheld_kzt == pit and statement.pit_to_declare_kzt == 0
    assert_clean(ex)


def test_stablecoin_redemption() -> None:
    ex, ledger, _ = make_exchange(stablecoin_fee_bps=20)
    open_holder(ex, stable=2_000_000)  # 20,000.00 KZTE
    result = ex.redeem_stablecoin(order(10_000_00, priority=("KZTE",)))
    # Gross: ceil(1,000,000 / 0.998) = 1,002,005 tiyn = 1,002,005 KZTE minor (1:1);
    # fee: ceil(2,004.01) = 2,005; net exactly 1,000,000. No gain, no PIT.
    assert result.ok
    (leg,) = result.legs
    assert (leg.asset, leg.quantity_minor, leg.gross_kzt, leg.fee_kzt) == (
        "KZTE", 1_002_005, 1_002_005, 2_005)
    assert (result.net_kzt, leg.realized_gain_kzt, leg.pit_kzt) == (1_000_000, 0, 0)
    assert ex.wallet_balance("h1", "KZTE") == 2_000_000 - 1_002_005
    assert ex.redeem_stablecoin(order(10_000_00, priority=("KZTE",))) is result
    short = ex.redeem_stablecoin(order(10_000_00, sale_id="s2"))
    assert short.reason == SaleReason.INSUFFICIENT_CRYPTO
    assert ledger.account("redeemed:KZTE").credit_balance == 1_002_005  # type: ignore[union-attr]
    assert_clean(ex)


def test_rebuy_restores_the_wallet() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex, btc_sat=100_000)
    sale = ex.sell(order(100_000_00))
    assert sale.ok and len(sale.legs) == 2
    ex.set_mid_price("BTC", D("31000000"))  # the price rose before the re-buy
    rebuy = ex.rebuy(sale, "rb-1")
    assert rebuy.ok
    assert ex.wallet_balance("h1", "BTC") == 100_000
    assert ex.wallet_balance("h1", "ETH") == WEI
    btc = rebuy.legs[0]
    assert btc.gross_kzt == 3_100_000  # 100,000 sat at 31,000,000 KZT/BTC
    assert ex.bank_balance_kzt() == 100_000_000_00  # the proceeds came back
    cost = sum(leg.gross_kzt for leg in rebuy.legs)
    assert ledger.account("house_pnl:KZT").credit_balance == sale.net_kzt - cost  # type: ignore[union-attr]
    assert ex.tax.holding_minor("h1", "BTC") == 100_000  # a new lot at the re-buy cost
    journal = len(ledger)
    assert ex.rebuy(sale, "rb-1") is rebuy
    assert ex.rebuy(sale, "rb-2").reason == SaleReason.ALREADY_REBOUGHT
    never_sold = SaleResult("never-sold", "a", "h1", True)
    assert ex.rebuy(never_sold, "rb-3").reason == SaleReason.UNKNOWN_SALE
    assert len(ledger) == journal
    assert_clean(ex)


def test_replenishment_restores_depth_over_time() -> None:
    ex, _, _ = make_exchange()
    open_holder(ex, btc_sat=10 * SAT)
    book = ex.book("BTC")
    assert ex.sell(order(4_000_000_00)).ok  # takes 4,000,000.00 KZT of the 5,000,000.00 level
    taken = 5_000_000_00 - book.depth_kzt(0)
    assert taken > 4_000_000_00
    ex.replenish(10.0)  # 1 % of 5,000,000.00 per second for 10 s = 500,000.00 KZT
    assert book.depth_kzt(0) == 5_000_000_00 - taken + 500_000_00
    ex.replenish(0.25)
    ex.replenish(0.25)  # sub-second calls add up exactly: 2 * 12,500.00
    assert book.depth_kzt(0) == 5_000_000_00 - taken + 525_000_00
    ex.replenish(1_000.0)
    assert book.depth_kzt(0) == 5_000_000_00  # capped at the configured depth
    assert_clean(ex)


def test_a_quote_is_firm_within_its_ttl() -> None:
    ex, _, clock = make_exchange()
    open_holder(ex)
    quote = ex.quote(order(100_000_00))
    assert not isinstance(quote, SaleReason)
    clock.advance(1.0)
    ex.set_mid_price("ETH", D("1400000"))  # another book moving does not matter
    sold = ex.sell(order(100_000_00), quote=quote)
    assert sold.ok and sold.legs[0].quantity_minor == quote.legs[0].quote.quantity_minor

    late = ex.quote(order(100_000_00, sale_id="s2"))
    assert not isinstance(late, SaleReason)
    clock.advance(2.5)
    assert ex.sell(order(100_000_00, sale_id="s2"), quote=late).reason == SaleReason.QUOTE_EXPIRED

    moved = ex.quote(order(100_000_00, sale_id="s3"))
    assert not isinstance(moved, SaleReason)
    ex.set_mid_price("BTC", D("32000000"))
    repriced = ex.sell(order(100_000_00, sale_id="s3"), quote=moved)
    assert repriced.ok
    assert repriced.legs[0].quantity_minor < moved.legs[0].quote.quantity_minor  # higher price
    assert_clean(ex)


def test_a_quote_whose_pit_changed_since_is_repriced_not_a_crash() -> None:
    """Quoted at a loss (no PIT to withhold), then another sale of the same holder takes that lot:
    the quote now sells a lot at a gain, so the PIT to withhold changed from zero — the sale is
    re-priced with the PIT it realizes (it used to raise 'PIT realized differs from the PIT
    withheld' and end the run)."""
    ex, _, _ = make_exchange(tax_policy=TaxPolicy.WITHHOLD)
    ex.open_wallet("h1", Residency.RESIDENT, (Holding("BTC", (
        Lot(SAT // 200, D("40000000"), acquired_at=1.0),  # older: bought dear, sold at a loss
        Lot(SAT, D("1000000"), acquired_at=2.0),  # newer: bought cheap, sold at a gain
    )),))
    quoted = ex.quote(order(100_000_00, sale_id="s2", priority=("BTC",)))
    assert not isinstance(quoted, SaleReason)
    assert [leg.pit_withheld_kzt for leg in quoted.legs] == [0]
    assert ex.sell(order(100_000_00, sale_id="s1", priority=("BTC",))).ok  # takes most of the older lot
    sold = ex.sell(order(100_000_00, sale_id="s2", priority=("BTC",)), quote=quoted)
    assert sold.ok, sold.reason
    assert sold.legs[0].pit_kzt > 0
    assert sold.net_kzt >= 100_000_00
    assert_clean(ex)


def test_open_wallet_is_idempotent_and_checks_assets() -> None:
    ex, ledger, _ = make_exchange()
    open_holder(ex)
    journal = len(ledger)
    open_holder(ex)
    assert len(ledger) == journal
    assert ex.wallet_balance("h1", "BTC") == SAT
    with pytest.raises(ValueError):
        ex.open_wallet("h2", Residency.RESIDENT, (Holding("DOGE", (Lot(1, D(1)),)),))
    with pytest.raises(ValueError):
        ex.set_halted("DOGE", True)
    assert_clean(ex)


def test_no_price_and_no_liquidity_are_refused() -> None:
    tiny = BookConfig(levels=2, level_step_bps=5, depth_per_level_kzt=1_000_00, spread_bps=10)
    ex, ledger, _ = make_exchange(books={"BTC": tiny, "USDT": tiny})  # USDT: no mid set
    open_holder(ex)
    journal = len(ledger)
    # Two levels of 1,000.00 KZT cannot absorb a 10,000.00 KZT sale.
    assert ex.sell(order(10_000_00, priority=("BTC",))).reason == SaleReason.INSUFFICIENT_LIQUIDITY
    assert ex.sell(order(1_000_00, priority=("USDT",))).reason == SaleReason.INSUFFICIENT_CRYPTO
    ex.open_wallet("h2", Residency.RESIDENT, (Holding("USDT", (Lot(10**9, D("500")),)),))
    assert ex.sell(order(1_000_00, holder="h2", priority=("USDT",))).reason == SaleReason.NO_PRICE
    assert len(ledger) == journal + 1  # only h2's deposit
    assert_clean(ex)
