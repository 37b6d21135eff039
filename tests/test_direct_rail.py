"""CryptoCity's direct rail through every party (services.flows.direct driven by
services.chain_direct): a zone merchant's invoice paid from the holder's wallet into the merchant's,
its failure paths, the refund rule, the merchant's conversion and its tax — each ending with every
ledger's invariants (custody = wallets incl. the merchant's + market makers + fees) and the
cross-party reconciliation checked."""

from __future__ import annotations

from fractions import Fraction

from services.chain import ChainConfig, InProcessChain
from services.clock import FixedClock
from services.contracts import (
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    ReasonCode,
    Residency,
    SaleReason,
    TaxPolicy,
)
from services.exchange import Invoice, PaymentQuote, merchant_owner
from services.flows.direct import DirectDecline, FallbackPolicy
from services.money import D

BTC = 10**8
BTC_KZT = D("30000000")


def make_chain(**overrides: object) -> tuple[InProcessChain, FixedClock]:
    clock = FixedClock(1_000.0)
    chain = InProcessChain(ChainConfig(**overrides), clock)  # type: ignore[arg-type]
    chain.set_mid_price("BTC", BTC_KZT)
    chain.set_mid_price("ETH", D("1500000"))
    chain.open_merchant(MerchantSpec("z1", "acq-1", "retail", cryptocity=True))
    chain.open_merchant(MerchantSpec("m1", "acq-2", "retail"))
    chain.open_cardholder(holder())
    return chain, clock


def holder(card: str = "c1", *, btc: int = BTC // 100, stable: int = 0, tier: str = "standard",
           residency: Residency = Residency.RESIDENT) -> CardholderSpec:
    holdings = (Holding("BTC", (Lot(btc, D("20000000")),)),) if btc else ()
    return CardholderSpec(f"h-{card}", card, residency, tier, FundingMode.JIT, ("BTC",), holdings,
                          stablecoin_minor=stable)


def invoice(inv: str = "inv1", amount_kzt: int = 60_000_00, holder_id: str = "h-c1",
            priority: tuple[str, ...] = ("BTC",), merchant: str = "z1") -> Invoice:
    return Invoice(inv, holder_id, merchant, amount_kzt, priority)


def assert_clean(chain: InProcessChain) -> None:
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}
    assert chain.reconcile() == []


def test_a_direct_payment_moves_the_crypto_between_the_two_wallets() -> None:
    chain, _ = make_chain(direct_fee_bps=50)
    before = chain.exchange.wallet_balance("h-c1", "BTC")
    outcome = chain.direct.pay(invoice())
    assert outcome.paid_direct and outcome.payment is not None
    paid = outcome.payment
    # 60,000 KZT at 30,000,000 KZT/BTC = 0.002 BTC, exactly.
    assert paid.quantity_minor == 200_000
    assert chain.exchange.wallet_balance("h-c1", "BTC") == before - 200_000
    fee = -(-200_000 * 50 // 10_000)
    assert paid.fee_minor == fee
    assert chain.exchange.wallet_balance(merchant_owner("z1"), "BTC") == 200_000 - fee
    assert chain.direct.books.wallet_minor("z1", "BTC") == 200_000 - fee  # the merchant's own half
    # The holder's disposal realizes a gain: 60,000 KZT of BTC bought at 20,000,000 KZT/BTC.
    assert paid.gain_kzt == 60_000_00 - 40_000_00
    assert chain.tax_summary().pit_due_kzt == 2_000_00  # 10 % resident
    assert_clean(chain)


def test_a_replayed_acceptance_books_nothing_new() -> None:
    chain, _ = make_chain()
    first = chain.direct.pay(invoice())
    again = chain.direct.accept(invoice())
    assert again.payment == first.payment
    assert chain.exchange.wallet_balance(merchant_owner("z1"), "BTC") == 200_000
    # The replay counts nothing toward the holder's limits either: still one payment's worth today.
    assert chain.direct.limits.spent_kzt("h-c1", 1_000.0) == (60_000_00, 60_000_00)
    assert_clean(chain)


def test_an_expired_quote_is_refused_and_nothing_moves() -> None:
    chain, clock = make_chain(direct_quote_ttl_s=30.0)
    quoted = chain.direct.quote(invoice())
    assert isinstance(quoted, PaymentQuote)
    clock.advance(30.5)
    outcome = chain.direct.accept(invoice())
    assert outcome.decline is DirectDecline.QUOTE_EXPIRED
    assert chain.exchange.wallet_balance(merchant_owner("z1"), "BTC") == 0
    assert_clean(chain)


def test_within_its_ttl_the_quote_holds_its_price() -> None:
    chain, clock = make_chain()
    assert isinstance(chain.direct.quote(invoice()), PaymentQuote)
    chain.set_mid_price("BTC", BTC_KZT * 2)
    clock.advance(10)
    outcome = chain.direct.accept(invoice())
    assert outcome.payment is not None and outcome.payment.quantity_minor == 200_000


def test_insufficient_balance_and_the_card_limits_decline() -> None:
    chain, _ = make_chain()
    poor = chain.direct.pay(invoice(amount_kzt=400_000_00))  # the wallet holds 0.01 BTC = 300,000 KZT
    assert poor.decline is DirectDecline.INSUFFICIENT_BALANCE
    chain.open_cardholder(holder("c2", btc=BTC, tier="basic"))
    over = chain.direct.pay(invoice("inv2", 250_000_00, "h-c2"))  # basic: 200,000 KZT a payment
    assert over.decline is DirectDecline.EXCEEDS_AMOUNT_LIMIT
    assert chain.exchange.wallet_balance(merchant_owner("z1"), "BTC") == 0
    assert_clean(chain)


def test_the_aml_velocity_rule_of_the_card_applies() -> None:
    chain, _ = make_chain(aml_velocity_max_payments=2)
    assert chain.direct.pay(invoice("a", 1_000_00)).paid_direct
    assert chain.direct.pay(invoice("b", 1_000_00)).paid_direct
    assert chain.direct.pay(invoice("c", 1_000_00)).decline is DirectDecline.EXCEEDS_FREQUENCY_LIMIT


def test_a_halt_fails_or_falls_back_to_the_card_by_policy() -> None:
    chain, _ = make_chain()
    chain.set_halted("BTC", True)
    failed = chain.direct.pay(invoice(), FallbackPolicy.FAIL)
    assert failed.decline is DirectDecline.HALTED and not failed.fell_back
    chain.set_halted("BTC", False)
    chain.open_cardholder(CardholderSpec("h-c3", "c3", Residency.RESIDENT, "standard", FundingMode.PREFUNDED,
                                         ("BTC",), card_balance_kzt=100_000_00))
    chain.set_halted("BTC", True)
    card = chain.direct.pay(invoice("inv3", 50_000_00, "h-c3"), FallbackPolicy.CARD)
    assert card.fell_back and card.card is not None and card.card.code is ReasonCode.APPROVED
    assert_clean(chain)


def test_the_stablecoin_pays_one_to_one_without_tax() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(holder("c4", btc=0, stable=100_000_00))
    outcome = chain.direct.pay(invoice("s1", 25_000_00, "h-c4", ("KZTE",)))
    assert outcome.payment is not None and outcome.payment.quantity_minor == 25_000_00
    assert outcome.payment.gain_kzt == 0 and chain.tax_summary().sales == 0
    sale = chain.direct.convert("z1", "KZTE", 25_000_00)
    fee_bps = chain.config.exchange.stablecoin_fee_bps
    assert sale.ok and sale.net_kzt == 25_000_00 - -(-25_000_00 * fee_bps // 10_000)  # the redemption fee
    assert chain.direct.books.bank_kzt("z1") == sale.net_kzt
    assert_clean(chain)


def test_a_refund_gives_the_original_quantity_back_from_the_merchant() -> None:
    chain, _ = make_chain()
    chain.direct.pay(invoice())
    chain.set_mid_price("BTC", BTC_KZT / 2)  # the price halves: the same quantity goes back
    refund = chain.direct.refund("inv1:refund1", "inv1", 30_000_00)
    assert refund.ok and refund.quantity_minor == 100_000
    assert chain.exchange.wallet_balance(merchant_owner("z1"), "BTC") == 100_000
    too_much = chain.direct.refund("inv1:refund2", "inv1", 40_000_00)
    assert too_much.reason is SaleReason.REFUND_EXCEEDS_PAYMENT
    assert_clean(chain)


def test_a_merchant_that_converted_cannot_refund_in_crypto() -> None:
    chain, _ = make_chain()
    chain.direct.pay(invoice())
    assert chain.direct.convert("z1", "BTC", 200_000).ok
    refund = chain.direct.refund("inv1:refund1", "inv1", 60_000_00)
    assert refund.reason is SaleReason.INSUFFICIENT_CRYPTO
    assert_clean(chain)


def test_a_conversion_brings_tenge_to_the_merchant_and_a_gain_toward_cit() -> None:
    chain, _ = make_chain(tax_policy=TaxPolicy.WITHHOLD)
    chain.direct.pay(invoice())
    chain.set_mid_price("BTC", BTC_KZT * 11 / 10)  # +10 % between receipt and sale
    sale = chain.direct.convert("z1", "BTC", 200_000)
    assert sale.ok and sale.net_kzt > 60_000_00
    assert chain.direct.books.bank_kzt("z1") == sale.net_kzt
    # The merchant's gain: proceeds at the book minus its receipt's value; never withheld as PIT.
    leg = sale.legs[0]
    assert leg.pit_kzt == 0 and leg.realized_gain_kzt == leg.gross_kzt - 60_000_00
    corporate = chain.exchange.corporate_tax.authority_summary()
    assert corporate.realized_gain_kzt == leg.realized_gain_kzt
    assert_clean(chain)


def test_withholding_takes_the_pit_in_crypto_on_top_of_the_invoice() -> None:
    chain, _ = make_chain(tax_policy=TaxPolicy.WITHHOLD)
    outcome = chain.direct.pay(invoice())
    paid = outcome.payment
    assert paid is not None and paid.pit_kzt > 0 and paid.pit_minor > 0
    # The PIT covers the gain on the invoice's crypto and on the PIT's own crypto.
    disposed_kzt = 60_000_00 + paid.pit_kzt
    basis = Fraction(paid.quantity_minor + paid.pit_minor, BTC) * 20_000_000_00
    assert paid.pit_kzt >= int((disposed_kzt - basis) / 10)
    assert chain.exchange.wallet_balance("h-c1", "BTC") == BTC // 100 - paid.quantity_minor - paid.pit_minor
    assert_clean(chain)


def test_a_card_only_merchant_takes_no_direct_payment() -> None:
    chain, _ = make_chain()
    assert chain.direct.pay(invoice(merchant="m1")).decline is DirectDecline.REFUSED


def test_a_merchant_half_missing_breaks_the_books_and_the_reconciliation() -> None:
    chain, _ = make_chain()
    # The exchange books the transfer; the merchant's own half is lost (a crash between the two).
    chain.direct.quote(invoice())
    assert chain.direct.desk.accept("inv1").ok
    violations = chain.check_invariants()["merchants"]
    assert [v.invariant for v in violations] == ["merchant_wallet_matches_exchange"]
    assert [b.message_id for b in chain.reconcile()] == ["inv1"]
