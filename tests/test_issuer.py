"""The issuer's rules and its bad-input answers: each a specific result value, nothing written."""

from __future__ import annotations

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
    ReasonCode,
    Residency,
)
from services.issuer import CardResult, CardStatus, Issuer, IssuerConfig
from services.money import D

TIERS = {"basic": (100_000_00, 150_000_00, 200_000_00)}


def make_chain(**overrides: object) -> tuple[InProcessChain, FixedClock]:
    clock = FixedClock(500.0)
    settings: dict[str, object] = {"tier_limits_kzt": dict(TIERS), **overrides}
    chain = InProcessChain(ChainConfig(**settings), clock)  # type: ignore[arg-type]
    chain.set_mid_price("BTC", D("30000000"))
    chain.set_mid_price("ETH", D("1500000"))
    chain.open_merchant(MerchantSpec("m0", "acq-1", "retail"))
    chain.open_cardholder(card_spec("c1", balance_kzt=1_000_000_00, mode=FundingMode.PREFUNDED))
    return chain, clock


def card_spec(
    card: str,
    balance_kzt: int = 0,
    mode: FundingMode = FundingMode.JIT,
    priority: tuple[str, ...] = ("BTC", "ETH"),
    tier: str = "basic",
) -> CardholderSpec:
    lots = (Holding("BTC", (Lot(10**6, D("20000000")),)),)
    return CardholderSpec(
        f"h-{card}",
        card,
        Residency.RESIDENT,
        tier,
        mode,
        priority,
        lots,
        card_balance_kzt=balance_kzt,
    )


def req(
    auth: str, amount_kzt: int, card: str = "c1", merchant: str = "m0", acquirer: str = "acq-1"
) -> AuthorizationRequest:
    return AuthorizationRequest(auth, card, merchant, acquirer, amount_kzt)


def journal_size(chain: InProcessChain) -> int:
    ledgers = [
        chain.issuer.ledger,
        chain.exchange_ledger,
        chain.network.ledger,
        *(a.ledger for a in chain.acquirers.values()),
        *(b.ledger for b in chain.banks.values()),
    ]
    return sum(len(ledger) for ledger in ledgers)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (req("x1", 10_00, card="nope"), ReasonCode.NO_SUCH_CARD),
        (req("x2", 0), ReasonCode.INVALID_AMOUNT),
        (req("x3", -5), ReasonCode.INVALID_AMOUNT),
        (req("x4", 100_000_01), ReasonCode.EXCEEDS_AMOUNT_LIMIT),
        (req("", 10_00), ReasonCode.INVALID_TRANSACTION),
        (req("x5", 10_00, merchant="ghost"), ReasonCode.INVALID_TRANSACTION),
        (req("x6", 10_00, acquirer="acq-2"), ReasonCode.INVALID_TRANSACTION),  # not m0's acquirer
    ],
)
def test_bad_authorization_requests_decline_and_write_nothing(
    request_: AuthorizationRequest, code: ReasonCode
) -> None:
    chain, _ = make_chain()
    before = journal_size(chain)
    assert chain.screen(request_).decline is code
    response = chain.authorize(request_)
    assert response.code is code and not response.approved and response.held_kzt == 0
    assert journal_size(chain) == before


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (CardStatus.BLOCKED, ReasonCode.RESTRICTED_CARD),
        (CardStatus.EXPIRED, ReasonCode.EXPIRED_CARD),
    ],
)
def test_blocked_or_expired_card_declines(status: CardStatus, code: ReasonCode) -> None:
    chain, _ = make_chain()
    assert chain.set_card_status("c1", status) is CardResult.OK
    before = journal_size(chain)
    assert chain.authorize(req("a1", 10_00)).code is code
    assert journal_size(chain) == before
    assert chain.set_card_status("nope", status) is CardResult.UNKNOWN_CARD


def test_daily_and_monthly_limits() -> None:
    chain, clock = make_chain()
    assert chain.authorize(req("a1", 90_000_00)).approved
    assert chain.authorize(req("a2", 60_000_01)).code is ReasonCode.EXCEEDS_AMOUNT_LIMIT  # > daily
    assert chain.authorize(req("a3", 60_000_00)).approved  # exactly the daily limit
    clock.advance(86_400)
    assert (
        chain.authorize(req("a4", 50_000_01)).code is ReasonCode.EXCEEDS_AMOUNT_LIMIT
    )  # > monthly
    assert chain.authorize(req("a5", 50_000_00)).approved
    clock.advance(30 * 86_400)
    assert chain.authorize(req("a6", 50_000_00)).approved  # a new month


def test_velocity_rule_declines_the_payment_past_the_limit_within_the_window() -> None:
    chain, clock = make_chain(aml_velocity_max_payments=3, aml_velocity_window_s=600.0)
    for i in range(3):
        assert chain.authorize(req(f"a{i}", 1_000_00)).approved
        clock.advance(10)
    assert chain.authorize(req("a3", 1_000_00)).code is ReasonCode.EXCEEDS_FREQUENCY_LIMIT
    clock.advance(600)
    assert chain.authorize(req("a4", 1_000_00)).approved


def test_structuring_just_under_the_limit_is_suspected_fraud() -> None:
    chain, clock = make_chain(
        aml_structuring_max_near=2,
        aml_structuring_band_bps=500,
        tier_limits_kzt={"basic": (100_000_00, 10**12, 10**13)},
    )
    near = 96_000_00  # within 5 % under the 100,000 KZT per-transaction limit
    assert chain.authorize(req("a1", near)).approved
    assert chain.authorize(req("a2", near)).approved
    assert chain.authorize(req("a3", 50_000_00)).approved  # not near: no suspicion
    assert chain.authorize(req("a4", near)).code is ReasonCode.SUSPECTED_FRAUD
    clock.advance(86_400)
    assert chain.authorize(req("a5", near)).approved


def test_unknown_asset_tier_or_rule_in_a_card_is_refused_before_anything_is_written() -> None:
    issuer = Issuer(
        IssuerConfig(tier_limits_kzt=dict(TIERS)),
        FixedClock(),
        tradable={"BTC", "ETH"}.__contains__,
    )
    accounts = len(list(issuer.ledger.accounts()))
    assert issuer.open_card(card_spec("c1", priority=("BTC", "DOGE"))) is CardResult.UNKNOWN_ASSET
    assert issuer.open_card(card_spec("c1", tier="platinum")) is CardResult.UNKNOWN_TIER
    assert issuer.open_card(card_spec("c1", priority=())) is CardResult.EMPTY_ASSET_PRIORITY
    assert len(list(issuer.ledger.accounts())) == accounts and issuer.cards == {}
    assert issuer.open_card(card_spec("c1")) is CardResult.OK
    assert issuer.open_card(card_spec("c1")) is CardResult.EXISTS
    assert issuer.open_card(card_spec("c1", mode=FundingMode.PREFUNDED)) is (
        CardResult.EXISTS_WITH_DIFFERENT_FIELDS
    )


def test_chain_refuses_a_card_with_an_unknown_asset() -> None:
    chain, _ = make_chain()
    with pytest.raises(ValueError, match="unknown_asset"):
        chain.open_cardholder(card_spec("c2", priority=("DOGE",)))
    assert "c2" not in chain.issuer.cards


def test_clearing_bad_input_writes_nothing() -> None:
    chain, _ = make_chain()
    response = chain.authorize(req("a1", 10_000_00))
    padding = 10_000_00 * 200 // 10_000
    before = journal_size(chain)
    cases = [
        (chain.capture("nope", 1), "unknown_auth"),
        (chain.capture("a1", 0), "invalid_amount"),
        (chain.capture("a1", response.held_kzt + 1), "exceeds_padding"),
        (chain.capture("a1", 10_000_00 + padding + 1), "exceeds_padding"),
        (chain.refund("a1", 1), "not_captured"),
        (chain.reverse("nope"), "unknown_auth"),
    ]
    for result, reason in cases:
        assert not result.ok and result.reason == reason
    assert journal_size(chain) == before


def test_second_resolution_of_a_hold_is_refused() -> None:
    chain, _ = make_chain()
    chain.authorize(req("a1", 10_000_00))
    assert chain.capture("a1", 10_000_00).ok
    before = journal_size(chain)
    for result in (chain.capture("a1", 10_000_00), chain.reverse("a1"), chain.capture("a1", 1)):
        assert not result.ok and result.reason == "already_resolved"
    chain.authorize(req("a2", 10_000_00))
    assert chain.reverse("a2").ok
    before = journal_size(chain)
    assert chain.capture("a2", 10_000_00).reason == "already_resolved"
    assert chain.increment("a2", 1_000_00).reason == "already_resolved"
    assert journal_size(chain) == before


def test_refund_above_the_captured_amount_is_refused() -> None:
    chain, _ = make_chain()
    chain.authorize(req("a1", 10_000_00))
    chain.capture("a1", 8_000_00)
    before = journal_size(chain)
    over = chain.refund("a1", 8_000_01)
    assert not over.ok and over.reason == "exceeds_captured"
    assert chain.refund("a1", 0).reason == "invalid_amount"
    assert journal_size(chain) == before
    assert chain.refund("a1", 5_000_00).ok
    assert chain.refund("a1", 3_000_01).reason == "exceeds_captured"
    assert chain.refund("a1", 3_000_00).ok


def test_declined_authorization_cannot_be_cleared() -> None:
    chain, _ = make_chain()
    chain.authorize(req("a1", 100_000_01))
    assert chain.capture("a1", 1).reason == "not_approved"
    assert chain.reverse("a1").reason == "not_approved"


def test_incremental_authorization_respects_limits_and_funds() -> None:
    chain, _ = make_chain()
    chain.authorize(req("a1", 60_000_00))
    assert chain.increment("a1", 40_000_01).reason == "limit"  # above the per-transaction limit
    assert chain.increment("a1", 0).reason == "invalid_amount"
    assert chain.increment("a1", 20_000_00).ok
    auth = chain.issuer.auths["a1"]
    assert auth.amount_kzt == 80_000_00 and len(auth.holds) == 2
    assert chain.capture("a1", 80_000_00 + 1_600_00).ok  # padding of both holds


def test_prefunded_card_without_tenge_declines_51() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(card_spec("c2", mode=FundingMode.PREFUNDED))
    assert chain.authorize(req("a1", 1_00, card="c2")).code is ReasonCode.INSUFFICIENT_FUNDS


def test_jit_card_without_enough_crypto_declines_51() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(card_spec("c2"))  # 0.01 BTC
    chain.set_mid_price("BTC", D("1000000"))  # at 1,000,000 KZT per BTC: worth 10,000 KZT
    assert chain.authorize(req("a1", 50_000_00, card="c2")).code is ReasonCode.INSUFFICIENT_FUNDS


def test_stand_in_is_refused_above_its_limit_or_when_disabled() -> None:
    chain, _ = make_chain(stand_in_limit_kzt=10_000_00)
    assert chain.stand_in(req("a1", 10_000_00)).approved
    assert chain.stand_in(req("a2", 10_000_01)).code is ReasonCode.ISSUER_UNAVAILABLE
    off, _ = make_chain(stand_in_enabled=False)
    assert off.stand_in(req("a1", 1_00)).code is ReasonCode.ISSUER_UNAVAILABLE


def test_advice_after_the_issuer_already_approved_keeps_one_hold() -> None:
    chain, _ = make_chain()
    request = req("a1", 10_000_00)
    response = chain.authorize(request)  # the issuer answered, but after the deadline
    before = journal_size(chain)
    assert chain.apply_advice(request, chain.stand_in(request))
    assert journal_size(chain) == before
    assert chain.issuer.auths["a1"].stand_in
    assert chain.capture("a1", 10_000_00).ok
    assert response.approved


def test_declined_stand_in_advice_releases_a_late_issuer_hold() -> None:
    chain, _ = make_chain(stand_in_enabled=False)
    request = req("a1", 10_000_00)
    chain.authorize(request)
    balance = chain.card_balance_kzt("c1")
    assert chain.apply_advice(request, chain.stand_in(request))
    assert chain.card_balance_kzt("c1") == balance + chain.issuer.auths["a1"].held_kzt
    assert chain.capture("a1", 1).reason == "already_resolved"
