"""One behavioural suite for every ledger repository: in-memory, SQLite and PostgreSQL.

The engine decides; these tests prove each repository loads, persists and reports what the engine
decided, identically (including "nothing written" on every refusal). ``ledger_factory`` checks
``check_invariants()`` on every ledger at the end of each test.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.clock import FixedClock
from services.ledger import (
    Account,
    AccountFlags,
    AccountResult,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    linked,
)
from services.ledger.engine import replay_journal
from services.money import AMOUNT_MAX, AssetRegistry, parse_amount

R = TransferResult
DNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
PEND = TransferFlags.PENDING
POST = TransferFlags.POST_PENDING
VOID = TransferFlags.VOID_PENDING


def open_books(make: Any, clock: FixedClock | None = None) -> Any:
    """A ledger with a funded KZT wallet (100.00 KZT), a merchant, and ETH/BTC accounts."""
    ledger = make(clock or FixedClock(1_000.0))
    results = ledger.create_accounts([
        Account("house", "KZT", owner="bank", kind="custody"),
        Account("wallet", "KZT", owner="alice", kind="wallet", flags=DNEC),
        Account("merchant", "KZT", owner="shop", kind="wallet"),
        Account("eth_house", "ETH", owner="exchange", kind="custody"),
        Account("eth_wallet", "ETH", owner="alice", kind="wallet", flags=DNEC),
        Account("btc_wallet", "BTC", owner="alice", kind="wallet"),
    ])
    assert results == [AccountResult.OK] * 6
    assert ledger.create_transfers([Transfer("fund", "house", "wallet", 10_000, "KZT")]) == [R.OK]
    return ledger


def balances(ledger: Any, account_id: str) -> tuple[int, int, int, int]:
    a = ledger.account(account_id)
    assert a is not None
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted


def snapshot(ledger: Any) -> tuple[list[Transfer], list[Account], int]:
    """Everything a refused command must leave untouched."""
    return list(ledger.journal()), sorted(ledger.accounts(), key=lambda a: a.id), len(ledger)


# -- accounts --------------------------------------------------------------------------------------
def test_accounts_create_exists_and_exists_with_different_fields(ledger_factory: Any) -> None:
    clock = FixedClock(50.0)
    ledger = ledger_factory(clock)
    base = Account("acc", "KZT", owner="alice", kind="wallet", flags=DNEC)
    assert ledger.create_accounts([base]) == [AccountResult.OK]
    stored = ledger.account("acc")
    assert stored == Account("acc", "KZT", owner="alice", kind="wallet", flags=DNEC, timestamp=50.0)
    assert isinstance(stored.debits_posted, int)
    clock.advance(1)
    assert ledger.create_accounts([
        base,
        Account("acc", "KZT", owner="alice", kind="wallet"),
        Account("acc", "USDT", owner="alice", kind="wallet", flags=DNEC),
        Account("acc", "KZT", owner="bob", kind="wallet", flags=DNEC),
        Account("acc", "KZT", owner="alice", kind="custody", flags=DNEC),
    ]) == [
        AccountResult.EXISTS,
        AccountResult.EXISTS_WITH_DIFFERENT_FLAGS,
        AccountResult.EXISTS_WITH_DIFFERENT_ASSET,
        AccountResult.EXISTS_WITH_DIFFERENT_OWNER,
        AccountResult.EXISTS_WITH_DIFFERENT_KIND,
    ]
    assert ledger.account("acc") == stored  # the first answer stands; nothing rewritten
    assert [a.id for a in ledger.accounts()] == ["acc"]


def test_account_bad_input_is_refused_and_nothing_written(ledger_factory: Any) -> None:
    ledger = ledger_factory()
    both = DNEC | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert ledger.create_accounts([
        Account("", "KZT"),
        Account("x" * 129, "KZT"),
        Account("both", "KZT", flags=both),
        Account("doge", "DOGE"),
        Account("ok", "KZT"),
        Account("ok", "KZT"),  # a duplicate within the batch sees the first
    ]) == [
        AccountResult.ID_MUST_NOT_BE_EMPTY,
        AccountResult.ID_TOO_LONG,
        AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        AccountResult.ASSET_UNKNOWN,
        AccountResult.OK,
        AccountResult.EXISTS,
    ]
    assert [a.id for a in ledger.accounts()] == ["ok"]


# -- posted transfers ------------------------------------------------------------------------------
def test_posted_transfer_moves_balances_and_is_journaled(ledger_factory: Any) -> None:
    clock = FixedClock(1_000.0)
    ledger = open_books(ledger_factory, clock)
    clock.advance(5)
    pay = Transfer("pay-1", "wallet", "merchant", 2_500, "KZT", code="purchase", user_data="ord-9")
    assert ledger.create_transfers([pay]) == [R.OK]
    assert balances(ledger, "wallet") == (0, 2_500, 0, 10_000)
    assert balances(ledger, "merchant") == (0, 0, 0, 2_500)
    assert ledger.account("wallet").available_credit_balance == 7_500
    assert ledger.transfer("pay-1") == Transfer(
        "pay-1", "wallet", "merchant", 2_500, "KZT", code="purchase", user_data="ord-9",
        timestamp=1_005.0,
    )
    assert [t.id for t in ledger.journal()] == ["fund", "pay-1"]
    assert len(ledger) == 2
    assert ledger.transfer("nope") is None
    assert ledger.account("nope") is None


def test_overspending_a_flagged_account_is_refused(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    before = snapshot(ledger)
    assert ledger.create_transfers([Transfer("big", "wallet", "merchant", 10_001, "KZT")]) == [
        R.EXCEEDS_CREDITS
    ]
    assert snapshot(ledger) == before
    assert ledger.transfer("big") is None


# -- two-phase -------------------------------------------------------------------------------------
def hold(ledger: Any, hold_id: str = "h1", amount: int = 4_000, timeout_s: float = 0.0) -> None:
    t = Transfer(hold_id, "wallet", "merchant", amount, "KZT", flags=PEND, timeout_s=timeout_s)
    assert ledger.create_transfers([t]) == [R.OK]
    assert ledger.pending_state(hold_id) is PendingState.PENDING


def test_pending_then_post_full_amount(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    hold(ledger)
    assert balances(ledger, "wallet") == (4_000, 0, 0, 10_000)
    assert balances(ledger, "merchant") == (0, 0, 4_000, 0)
    assert [t.id for t in ledger.pending_transfers()] == ["h1"]
    post = Transfer("p1", "", "", 0, "", flags=POST, pending_id="h1")
    assert ledger.create_transfers([post]) == [R.OK]
    assert balances(ledger, "wallet") == (0, 4_000, 0, 10_000)
    assert balances(ledger, "merchant") == (0, 0, 0, 4_000)
    assert ledger.pending_state("h1") is PendingState.POSTED
    stored = ledger.transfer("p1")
    assert (stored.amount, stored.debit_account_id, stored.asset) == (4_000, "wallet", "KZT")
    assert list(ledger.pending_transfers()) == []


def test_partial_post_releases_the_remainder(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    hold(ledger)
    post = Transfer("p1", "wallet", "merchant", 1_500, "KZT", flags=POST, pending_id="h1")
    assert ledger.create_transfers([post]) == [R.OK]
    assert balances(ledger, "wallet") == (0, 1_500, 0, 10_000)
    assert balances(ledger, "merchant") == (0, 0, 0, 1_500)
    assert ledger.account("wallet").available_credit_balance == 8_500
    # Resolved once: a second resolution with another id is refused and writes nothing.
    before = snapshot(ledger)
    again = Transfer("p2", "", "", 100, "", flags=POST, pending_id="h1")
    void = Transfer("v1", "", "", 0, "", flags=VOID, pending_id="h1")
    assert ledger.create_transfers([again]) == [R.PENDING_TRANSFER_ALREADY_POSTED]
    assert ledger.create_transfers([void]) == [R.PENDING_TRANSFER_ALREADY_POSTED]
    assert snapshot(ledger) == before


def test_post_above_the_hold_is_refused(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    hold(ledger)
    before = snapshot(ledger)
    post = Transfer("p1", "", "", 4_001, "", flags=POST, pending_id="h1")
    assert ledger.create_transfers([post]) == [R.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert snapshot(ledger) == before


def test_void_releases_the_hold(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    hold(ledger)
    void = Transfer("v1", "", "", 0, "", flags=VOID, pending_id="h1")
    assert ledger.create_transfers([void]) == [R.OK]
    assert balances(ledger, "wallet") == (0, 0, 0, 10_000)
    assert balances(ledger, "merchant") == (0, 0, 0, 0)
    assert ledger.pending_state("h1") is PendingState.VOIDED
    post = Transfer("p1", "", "", 0, "", flags=POST, pending_id="h1")
    assert ledger.create_transfers([post]) == [R.PENDING_TRANSFER_ALREADY_VOIDED]


def test_hold_expires_when_the_clock_passes_its_timeout(ledger_factory: Any) -> None:
    clock = FixedClock(1_000.0)
    ledger = open_books(ledger_factory, clock)
    hold(ledger, "h1", timeout_s=30.0)
    hold(ledger, "h2", amount=1_000)  # no timeout: never expires
    clock.advance(29.5)
    assert ledger.expire_pending() == []
    clock.advance(0.5)
    written = ledger.expire_pending()
    assert [(t.id, t.pending_id, t.amount, t.flags) for t in written] == [
        ("h1#expired", "h1", 4_000, TransferFlags.EXPIRE_PENDING)
    ]
    assert written[0].timestamp == 1_030.0
    assert ledger.transfer("h1#expired") == written[0]
    assert ledger.pending_state("h1") is PendingState.EXPIRED
    assert ledger.pending_state("h2") is PendingState.PENDING
    assert balances(ledger, "wallet") == (1_000, 0, 0, 10_000)
    assert [t.id for t in ledger.pending_transfers()] == ["h2"]
    clock.advance(1_000)
    assert ledger.expire_pending() == []  # each hold expires once


def test_post_after_expiry_is_refused_before_and_after_the_sweep(ledger_factory: Any) -> None:
    clock = FixedClock(1_000.0)
    ledger = open_books(ledger_factory, clock)
    hold(ledger, "h1", timeout_s=10.0)
    clock.advance(10.0)
    before = snapshot(ledger)
    post = Transfer("p1", "", "", 0, "", flags=POST, pending_id="h1")
    # Due but not yet swept: the engine still refuses, so a late capture can never win.
    assert ledger.create_transfers([post]) == [R.PENDING_TRANSFER_EXPIRED]
    assert snapshot(ledger) == before
    assert len(ledger.expire_pending()) == 1
    assert ledger.create_transfers([post]) == [R.PENDING_TRANSFER_EXPIRED]
    assert ledger.transfer("p1") is None


def test_pending_and_its_post_in_one_linked_batch(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    batch = linked([
        Transfer("h1", "wallet", "merchant", 3_000, "KZT", flags=PEND),
        Transfer("p1", "", "", 1_000, "", flags=POST, pending_id="h1"),
    ])
    assert ledger.create_transfers(batch) == [R.OK, R.OK]
    assert [t.id for t in ledger.journal()] == ["fund", "h1", "p1"]  # hold before its resolution
    assert ledger.pending_state("h1") is PendingState.POSTED
    assert balances(ledger, "wallet") == (0, 1_000, 0, 10_000)


# -- idempotency -----------------------------------------------------------------------------------
def test_replay_with_same_fields_is_exists_and_writes_nothing(ledger_factory: Any) -> None:
    clock = FixedClock(1_000.0)
    ledger = open_books(ledger_factory, clock)
    pay = Transfer("pay-1", "wallet", "merchant", 2_500, "KZT", code="purchase")
    assert ledger.create_transfers([pay]) == [R.OK]
    before = snapshot(ledger)
    clock.advance(60)
    assert ledger.create_transfers([pay]) == [R.EXISTS]
    assert ledger.create_transfers([pay, pay]) == [R.EXISTS, R.EXISTS]
    assert snapshot(ledger) == before
    assert ledger.transfer("pay-1").timestamp == 1_000.0  # the first answer stands

    assert ledger.create_transfers([
        replace(pay, amount=2_501),
        replace(pay, credit_account_id="house"),
        replace(pay, code="refund"),
        replace(pay, user_data="x"),
        replace(pay, flags=PEND),
    ]) == [
        R.EXISTS_WITH_DIFFERENT_AMOUNT,
        R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
        R.EXISTS_WITH_DIFFERENT_CODE,
        R.EXISTS_WITH_DIFFERENT_USER_DATA,
        R.EXISTS_WITH_DIFFERENT_FLAGS,
    ]
    assert snapshot(ledger) == before


def test_replay_of_a_resolution_is_exists(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    hold(ledger)
    post = Transfer("p1", "", "", 1_000, "", flags=POST, pending_id="h1")
    assert ledger.create_transfers([post]) == [R.OK]
    before = snapshot(ledger)
    assert ledger.create_transfers([post]) == [R.EXISTS]

    assert ledger.create_transfers([replace(post, amount=999)]) == [R.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert snapshot(ledger) == before


# -- linked batches --------------------------------------------------------------------------------
def test_linked_batch_with_one_failing_member_writes_nothing(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    before = snapshot(ledger)
    chain = linked([
        Transfer("l1", "wallet", "merchant", 1_000, "KZT"),
        Transfer("l2", "wallet", "merchant", 9_500, "KZT"),  # 1,000 + 9,500 > 10,000: refused
        Transfer("l3", "merchant", "house", 10, "KZT"),
    ])
    assert ledger.create_transfers(chain) == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS,
                                              R.LINKED_EVENT_FAILED]
    assert snapshot(ledger) == before
    assert all(ledger.transfer(i) is None for i in ("l1", "l2", "l3"))
    # A failed chain does not affect the independent event after it in the same batch.
    after_chain = Transfer("solo", "wallet", "merchant", 100, "KZT")
    assert ledger.create_transfers([*chain, after_chain])[-1] is R.OK
    assert [t.id for t in ledger.journal()] == ["fund", "solo"]


def test_linked_chain_left_open_is_refused(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    before = snapshot(ledger)
    open_chain = [Transfer("o1", "wallet", "merchant", 1, "KZT", flags=TransferFlags.LINKED)]
    assert ledger.create_transfers(open_chain) == [R.LINKED_EVENT_CHAIN_OPEN]
    assert snapshot(ledger) == before


def test_linked_batch_commits_all_together(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    chain = linked([
        Transfer("l1", "wallet", "merchant", 6_000, "KZT"),
        Transfer("l2", "wallet", "merchant", 4_000, "KZT"),
    ])
    assert ledger.create_transfers(chain) == [R.OK, R.OK]
    assert balances(ledger, "wallet") == (0, 10_000, 0, 10_000)


# -- bad input -------------------------------------------------------------------------------------
BAD_TRANSFERS = [
    pytest.param(Transfer("b", "wallet", "merchant", 0, "KZT"), R.AMOUNT_MUST_NOT_BE_ZERO,
                 id="zero"),
    pytest.param(Transfer("b", "wallet", "merchant", -5, "KZT"), R.AMOUNT_MUST_NOT_BE_NEGATIVE,
                 id="negative"),
    pytest.param(Transfer("b", "house", "merchant", AMOUNT_MAX + 1, "KZT"),
                 R.AMOUNT_EXCEEDS_MAXIMUM, id="oversized"),
    pytest.param(Transfer("b", "wallet", "merchant", 5, "DOGE"), R.ASSET_UNKNOWN,
                 id="unknown-asset"),
    pytest.param(Transfer("b", "wallet", "merchant", 5, "USDT"),
                 R.TRANSFER_MUST_HAVE_THE_SAME_ASSET_AS_ACCOUNTS, id="mismatched-asset"),
    pytest.param(Transfer("b", "wallet", "eth_wallet", 5, "KZT"),
                 R.ACCOUNTS_MUST_HAVE_THE_SAME_ASSET, id="accounts-of-two-assets"),
    pytest.param(Transfer("b", "wallet", "wallet", 5, "KZT"), R.ACCOUNTS_MUST_BE_DIFFERENT,
                 id="same-account"),
    pytest.param(Transfer("b", "ghost", "merchant", 5, "KZT"), R.DEBIT_ACCOUNT_NOT_FOUND,
                 id="unknown-debit"),
    pytest.param(Transfer("b", "wallet", "ghost", 5, "KZT"), R.CREDIT_ACCOUNT_NOT_FOUND,
                 id="unknown-credit"),
    pytest.param(Transfer("", "wallet", "merchant", 5, "KZT"), R.ID_MUST_NOT_BE_EMPTY,
                 id="empty-id"),
    pytest.param(Transfer("p", "", "", 0, "", flags=POST, pending_id="ghost"),
                 R.PENDING_TRANSFER_NOT_FOUND, id="post-unknown-hold"),
    pytest.param(Transfer("p", "", "", 0, "", flags=POST, pending_id="fund"),
                 R.PENDING_TRANSFER_NOT_PENDING, id="post-a-posted-transfer"),
    pytest.param(Transfer("b", "wallet", "merchant", 5, "KZT", flags=TransferFlags.EXPIRE_PENDING,
                          pending_id="fund"),
                 R.EXPIRE_IS_RESERVED_FOR_THE_LEDGER, id="client-expiry"),
]


@pytest.mark.parametrize(("transfer", "expected"), BAD_TRANSFERS)
def test_bad_transfer_gets_its_result_and_nothing_is_written(
    ledger_factory: Any, transfer: Transfer, expected: TransferResult
) -> None:
    ledger = open_books(ledger_factory)
    before = snapshot(ledger)
    assert ledger.create_transfers([transfer]) == [expected]
    assert snapshot(ledger) == before


def test_float_amount_is_a_programmer_error_and_writes_nothing(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    before = snapshot(ledger)
    ok_first = Transfer("fine", "wallet", "merchant", 5, "KZT")
    bad = Transfer("float", "wallet", "merchant", 5.0, "KZT")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ledger.create_transfers([ok_first, bad])
    assert snapshot(ledger) == before  # the whole batch is one unit, even on a fault


# -- exact amounts ---------------------------------------------------------------------------------
def test_eighteen_decimal_amount_above_2_pow_63_round_trips_exactly(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    eth = AssetRegistry().get("ETH")
    amount = parse_amount("12345.678901234567890123", eth)
    assert amount > 2**63
    assert ledger.create_transfers([
        Transfer("eth-in", "eth_house", "eth_wallet", amount, "ETH"),
        Transfer("eth-out", "eth_wallet", "eth_house", amount - 1, "ETH"),
    ]) == [R.OK, R.OK]
    stored = ledger.transfer("eth-in")
    assert stored.amount == amount
    assert type(stored.amount) is int
    assert balances(ledger, "eth_wallet") == (0, amount - 1, 0, amount)
    assert ledger.account("eth_wallet").credit_balance == 1
    replayed, _, problems = replay_journal(ledger.journal())
    assert problems == []
    assert replayed["eth_house"] == [0, amount, 0, amount - 1]


def test_maximum_amount_round_trips(ledger_factory: Any) -> None:
    ledger = open_books(ledger_factory)
    biggest = Transfer("max", "eth_house", "eth_wallet", AMOUNT_MAX, "ETH")
    assert ledger.create_transfers([biggest]) == [R.OK]
    assert ledger.transfer("max").amount == AMOUNT_MAX
    assert ledger.account("eth_house").debits_posted == AMOUNT_MAX
