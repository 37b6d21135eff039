"""The ledger's rules in detail (services/ledger/engine.py through InMemoryLedger).

tests/test_ledger_backends.py runs the behaviour every backend must share; this file pins down the
finer semantics of the engine itself: which result wins when several checks fail, how holds are
resolved, and that check_invariants() can actually fail.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.clock import FixedClock
from services.ledger import (
    Account,
    AccountFlags,
    AccountResult,
    InMemoryLedger,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    linked,
)
from services.ledger.engine import ID_LENGTH_MAX, check_balances, replay_journal
from services.money import AMOUNT_MAX

R = TransferResult
F = TransferFlags
DNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
CNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
FUNDED_MINOR = 10_000


def make_ledger(clock: FixedClock | None = None) -> InMemoryLedger:
    """Wallets w1, w2 (may not go negative), a custody account that may not be credited beyond
    its debits, an unflagged funding source, and a USDT account for asset mismatches."""
    ledger = InMemoryLedger(clock=clock or FixedClock(100.0))
    results = ledger.create_accounts([
        Account("src", "KZT", kind="funding"),
        Account("w1", "KZT", owner="alice", kind="wallet", flags=DNEC),
        Account("w2", "KZT", owner="bob", kind="wallet", flags=DNEC),
        Account("custody", "KZT", kind="custody", flags=CNED),
        Account("u1", "USDT", kind="wallet"),
        Account("u2", "USDT", kind="wallet"),
    ])
    assert all(r is AccountResult.OK for r in results)
    funding = Transfer("fund-w1", "src", "w1", FUNDED_MINOR, "KZT")
    assert ledger.create_transfers([funding]) == [R.OK]
    return ledger


def state(ledger: InMemoryLedger) -> tuple[object, ...]:
    """Everything a command could change, to prove that a refused one changed nothing."""
    balances = tuple(
        (a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        for a in ledger.accounts()
    )
    pending = tuple((t.id, ledger.pending_state(t.id)) for t in ledger.journal())
    return balances, tuple(ledger.journal()), pending


def one(ledger: InMemoryLedger, transfer: Transfer) -> TransferResult:
    (result,) = ledger.create_transfers([transfer])
    return result


def hold(ledger: InMemoryLedger, tid: str, amount: int = 500, timeout_s: float = 0.0, *,
         dr: str = "w1", cr: str = "w2") -> None:
    result = one(ledger, Transfer(tid, dr, cr, amount, "KZT", flags=F.PENDING, timeout_s=timeout_s))
    assert result is R.OK


def post(tid: str, pid: str, amount: int = 0, **fields: object) -> Transfer:
    base = Transfer(tid, "", "", amount, "", flags=F.POST_PENDING, pending_id=pid)
    return replace(base, **fields)  # type: ignore[arg-type]


def void(tid: str, pid: str, amount: int = 0, **fields: object) -> Transfer:
    base = Transfer(tid, "", "", amount, "", flags=F.VOID_PENDING, pending_id=pid)
    return replace(base, **fields)  # type: ignore[arg-type]


# --- precedence: the lowest-valued failing check is the answer --------------------------------

@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        # zero amount (12) beats same accounts (15)
        (Transfer("t", "w1", "w1", 0, "KZT"), R.AMOUNT_MUST_NOT_BE_ZERO),
        # negative amount (13) beats unknown accounts (17, 18)
        (Transfer("t", "nobody", "nowhere", -5, "KZT"), R.AMOUNT_MUST_NOT_BE_NEGATIVE),
        # oversized (14) beats same accounts (15)
        (Transfer("t", "w1", "w1", AMOUNT_MAX + 1, "KZT"), R.AMOUNT_EXCEEDS_MAXIMUM),
        # same accounts (15) beats unknown asset (16)
        (Transfer("t", "w1", "w1", 5, "DOGE"), R.ACCOUNTS_MUST_BE_DIFFERENT),
        # unknown asset (16) beats unknown debit account (17)
        (Transfer("t", "nobody", "w2", 5, "DOGE"), R.ASSET_UNKNOWN),
        # unknown debit (17) beats unknown credit (18)
        (Transfer("t", "nobody", "nowhere", 5, "KZT"), R.DEBIT_ACCOUNT_NOT_FOUND),
        (Transfer("t", "w1", "nowhere", 5, "KZT"), R.CREDIT_ACCOUNT_NOT_FOUND),
        # accounts of two assets (19) beats the transfer's own asset (20)
        (Transfer("t", "w1", "u1", 5, "USDT"), R.ACCOUNTS_MUST_HAVE_THE_SAME_ASSET),
        (Transfer("t", "u1", "u2", 5, "KZT"), R.TRANSFER_MUST_HAVE_THE_SAME_ASSET_AS_ACCOUNTS),
        # empty id (3) beats everything else that is wrong here
        (Transfer("", "w1", "w1", 0, "DOGE", flags=F.PENDING | F.VOID_PENDING),
         R.ID_MUST_NOT_BE_EMPTY),
        (Transfer("x" * (ID_LENGTH_MAX + 1), "w1", "w1", 0, "KZT"), R.ID_TOO_LONG),
        # flags (5) beat a zero amount (12)
        (Transfer("t", "w1", "w2", 0, "KZT", flags=F.PENDING | F.POST_PENDING),
         R.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        # pending id on a plain transfer (7) beats a timeout on it (10)
        (Transfer("t", "w1", "w2", 5, "KZT", pending_id="p", timeout_s=5),
         R.PENDING_ID_MUST_BE_EMPTY),
        (Transfer("t", "w1", "w2", 5, "KZT", timeout_s=5), R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        # negative timeout (11) beats a zero amount (12)
        (Transfer("t", "w1", "w2", 0, "KZT", flags=F.PENDING, timeout_s=-1),
         R.TIMEOUT_MUST_NOT_BE_NEGATIVE),
        # overspending a wallet
        (Transfer("t", "w1", "w2", FUNDED_MINOR + 1, "KZT"), R.EXCEEDS_CREDITS),
    ],
)
def test_first_failing_check_wins_and_nothing_is_written(transfer: Transfer,
                                                          expected: TransferResult) -> None:
    ledger = make_ledger()
    before = state(ledger)
    assert one(ledger, transfer) is expected
    assert state(ledger) == before
    assert ledger.check_invariants() == []


def test_precedence_follows_enum_order_in_the_examples() -> None:
    """The cases above name pairs of failures; the winner always has the lower value."""
    assert R.AMOUNT_MUST_NOT_BE_ZERO < R.ACCOUNTS_MUST_BE_DIFFERENT
    assert R.ACCOUNTS_MUST_BE_DIFFERENT < R.ASSET_UNKNOWN < R.DEBIT_ACCOUNT_NOT_FOUND
    assert R.EXISTS < R.PENDING_TRANSFER_ALREADY_POSTED < R.EXCEEDS_CREDITS


def test_id_of_maximum_length_is_accepted() -> None:
    ledger = make_ledger()
    assert one(ledger, Transfer("x" * ID_LENGTH_MAX, "w1", "w2", 5, "KZT")) is R.OK


def test_replay_is_checked_before_balance_limits() -> None:
    """A replay of a transfer that spent everything is EXISTS, not EXCEEDS_CREDITS."""
    ledger = make_ledger()
    spend_all = Transfer("spend", "w1", "w2", FUNDED_MINOR, "KZT")
    assert one(ledger, spend_all) is R.OK
    before = state(ledger)
    assert one(ledger, spend_all) is R.EXISTS
    assert state(ledger) == before


def test_replay_with_several_differences_reports_the_first() -> None:
    ledger = make_ledger()
    original = Transfer("t", "w1", "w2", 100, "KZT", code="purchase", user_data="order-1")
    assert one(ledger, original) is R.OK
    before = state(ledger)
    cases = [
        (replace(original, flags=F.PENDING, amount=7), R.EXISTS_WITH_DIFFERENT_FLAGS),
        (replace(original, debit_account_id="src", amount=7),
         R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        (replace(original, credit_account_id="src", amount=7),
         R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        (replace(original, amount=7, code="refund"), R.EXISTS_WITH_DIFFERENT_AMOUNT),
        (replace(original, code="refund", user_data="x"), R.EXISTS_WITH_DIFFERENT_CODE),
        (replace(original, user_data="order-2"), R.EXISTS_WITH_DIFFERENT_USER_DATA),
        (replace(original, timestamp=999.0), R.EXISTS),  # the ledger sets timestamps, not clients
    ]
    for transfer, expected in cases:
        assert one(ledger, transfer) is expected, transfer
    assert state(ledger) == before


def test_account_precedence() -> None:
    ledger = make_ledger()
    both = DNEC | CNED
    assert ledger.create_accounts([
        Account("", "DOGE", flags=both),
        Account("a" * (ID_LENGTH_MAX + 1), "KZT"),
        Account("new", "DOGE", flags=both),
        Account("new", "DOGE"),
        Account("w1", "USDT", owner="eve"),  # exists with other flags, asset and owner
        Account("w1", "USDT", owner="eve", flags=DNEC),
        Account("w1", "KZT", owner="eve", kind="x", flags=DNEC),
        Account("w1", "KZT", owner="alice", kind="x", flags=DNEC),
        Account("w1", "KZT", owner="alice", kind="wallet", flags=DNEC),
    ]) == [
        AccountResult.ID_MUST_NOT_BE_EMPTY,
        AccountResult.ID_TOO_LONG,
        AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        AccountResult.ASSET_UNKNOWN,
        AccountResult.EXISTS_WITH_DIFFERENT_FLAGS,
        AccountResult.EXISTS_WITH_DIFFERENT_ASSET,
        AccountResult.EXISTS_WITH_DIFFERENT_OWNER,
        AccountResult.EXISTS_WITH_DIFFERENT_KIND,
        AccountResult.EXISTS,
    ]
    assert {a.id for a in ledger.accounts()} == {"src", "w1", "w2", "custody", "u1", "u2"}


# --- flags ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "flags",
    [F.PENDING | F.POST_PENDING, F.PENDING | F.VOID_PENDING, F.POST_PENDING | F.VOID_PENDING,
     F.PENDING | F.EXPIRE_PENDING, F.POST_PENDING | F.EXPIRE_PENDING],
)
def test_flags_are_mutually_exclusive(flags: TransferFlags) -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    before = state(ledger)
    result = one(ledger, Transfer("t", "w1", "w2", 5, "KZT", flags=flags, pending_id="h"))
    assert result is R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    assert state(ledger) == before


def test_expire_flag_is_reserved_for_the_ledger() -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    before = state(ledger)
    forged = Transfer("h#expired", "w1", "w2", 500, "KZT", flags=F.EXPIRE_PENDING, pending_id="h")
    assert one(ledger, forged) is R.EXPIRE_IS_RESERVED_FOR_THE_LEDGER
    assert state(ledger) == before
    assert ledger.pending_state("h") is PendingState.PENDING


def test_linked_flag_combines_with_the_others() -> None:
    ledger = make_ledger()
    batch = [Transfer("p", "w1", "w2", 5, "KZT", flags=F.PENDING | F.LINKED),
             post("q", "p", flags=F.POST_PENDING)]
    assert ledger.create_transfers(batch) == [R.OK, R.OK]


# --- linked chains ----------------------------------------------------------------------------

def test_unterminated_chain_is_refused_as_open() -> None:
    ledger = make_ledger()
    before = state(ledger)
    a = Transfer("a", "w1", "w2", 5, "KZT", flags=F.LINKED)
    b = Transfer("b", "w1", "w2", 5, "KZT", flags=F.LINKED)
    assert ledger.create_transfers([a, b]) == [R.LINKED_EVENT_FAILED, R.LINKED_EVENT_CHAIN_OPEN]
    assert ledger.create_transfers([a]) == [R.LINKED_EVENT_CHAIN_OPEN]
    assert state(ledger) == before


def test_open_chain_does_not_undo_an_earlier_closed_chain_in_the_batch() -> None:
    ledger = make_ledger()
    plain = Transfer("plain", "w1", "w2", 5, "KZT")
    dangling = Transfer("dangling", "w1", "w2", 5, "KZT", flags=F.LINKED)
    assert ledger.create_transfers([plain, dangling]) == [R.OK, R.LINKED_EVENT_CHAIN_OPEN]
    assert ledger.transfer("plain") is not None
    assert ledger.transfer("dangling") is None


def test_failure_in_the_middle_fails_the_whole_chain_only() -> None:
    ledger = make_ledger()
    chain = linked([
        Transfer("c1", "w1", "w2", 100, "KZT"),
        Transfer("c2", "w2", "w1", 10**9, "KZT"),  # w2 cannot pay this
        Transfer("c3", "w1", "w2", 100, "KZT"),
    ])
    after = Transfer("after", "w1", "w2", 1, "KZT")
    results = ledger.create_transfers([*chain, after])
    assert results == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.LINKED_EVENT_FAILED, R.OK]
    assert [t.id for t in ledger.journal()] == ["fund-w1", "after"]


def test_a_chain_sees_its_own_earlier_effects() -> None:
    """w2 starts empty; inside the chain it is funded first and can then pay on."""
    ledger = make_ledger()
    chain = linked([Transfer("in", "w1", "w2", 300, "KZT"),
                    Transfer("on", "w2", "src", 300, "KZT")])
    assert ledger.create_transfers(chain) == [R.OK, R.OK]
    w2 = ledger.account("w2")
    assert w2 is not None
    assert w2.credit_balance == 0


def test_linked_helper() -> None:
    plain = Transfer("a", "w1", "w2", 1, "KZT")
    marked = Transfer("b", "w1", "w2", 1, "KZT", flags=F.LINKED | F.PENDING)
    out = linked([plain, plain, marked])
    assert [bool(t.flags & F.LINKED) for t in out] == [True, True, False]
    assert out[2].flags == F.PENDING  # other flags kept, LINKED cleared on the last
    assert plain.flags == F.NONE  # inputs are not mutated (they are frozen anyway)
    assert linked([]) == []
    assert linked([marked])[0].flags == F.PENDING


# --- holds: post, void, expire ----------------------------------------------------------------

def test_post_with_amount_zero_posts_the_full_hold() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=700)
    assert one(ledger, post("p", "h", amount=0)) is R.OK
    stored = ledger.transfer("p")
    assert stored is not None
    assert stored.amount == 700
    assert (stored.debit_account_id, stored.credit_account_id, stored.asset) == ("w1", "w2", "KZT")
    w1, w2 = ledger.account("w1"), ledger.account("w2")
    assert w1 is not None and w2 is not None
    assert (w1.debits_pending, w1.debits_posted) == (0, 700)
    assert (w2.credits_pending, w2.credits_posted) == (0, 700)
    assert ledger.pending_state("h") is PendingState.POSTED


def test_partial_post_releases_the_rest_and_the_hold_is_done() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=700)
    assert one(ledger, post("p", "h", amount=200)) is R.OK
    w1 = ledger.account("w1")
    assert w1 is not None
    assert (w1.debits_pending, w1.debits_posted) == (0, 200)
    assert w1.available_credit_balance == FUNDED_MINOR - 200
    assert one(ledger, post("p2", "h", amount=100)) is R.PENDING_TRANSFER_ALREADY_POSTED


def test_post_amount_checks() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=700)
    before = state(ledger)
    assert one(ledger, post("p", "h", amount=701)) is R.EXCEEDS_PENDING_TRANSFER_AMOUNT
    assert one(ledger, post("p", "h", amount=-1)) is R.AMOUNT_MUST_NOT_BE_NEGATIVE
    assert one(ledger, post("p", "h", amount=AMOUNT_MAX + 1)) is R.AMOUNT_EXCEEDS_MAXIMUM
    assert state(ledger) == before


def test_void_ignores_the_amount() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=700)
    assert one(ledger, void("v", "h", amount=123_456)) is R.OK
    stored = ledger.transfer("v")
    assert stored is not None
    assert stored.amount == 700  # the whole hold is released, whatever was asked
    w1 = ledger.account("w1")
    assert w1 is not None
    assert (w1.debits_pending, w1.debits_posted) == (0, 0)
    assert ledger.pending_state("h") is PendingState.VOIDED


def test_void_refuses_a_negative_amount() -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    assert one(ledger, void("v", "h", amount=-1)) is R.AMOUNT_MUST_NOT_BE_NEGATIVE
    assert ledger.pending_state("h") is PendingState.PENDING


@pytest.mark.parametrize("make", [post, void])
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"debit_account_id": "w2"}, R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        ({"credit_account_id": "w1"}, R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
        ({"debit_account_id": "src", "credit_account_id": "src"},
         R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        ({"asset": "USDT"}, R.PENDING_TRANSFER_HAS_DIFFERENT_ASSET),
        ({"debit_account_id": "w1", "credit_account_id": "w2", "asset": "KZT"}, R.OK),
        ({}, R.OK),  # empty fields are taken from the hold
    ],
)
def test_resolution_fields_must_match_the_hold(make: object, fields: dict[str, str],
                                               expected: TransferResult) -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    before = state(ledger)
    assert callable(make)
    assert one(ledger, make("r", "h", **fields)) is expected
    if expected is not R.OK:
        assert state(ledger) == before


@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        (post("r", ""), R.PENDING_ID_REQUIRED),
        (post("h", "h"), R.PENDING_ID_MUST_BE_DIFFERENT),
        (post("r", "h", timeout_s=5), R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (post("r", "ghost"), R.PENDING_TRANSFER_NOT_FOUND),
        (post("r", "fund-w1"), R.PENDING_TRANSFER_NOT_PENDING),
        (void("r", "fund-w1"), R.PENDING_TRANSFER_NOT_PENDING),
        # required pending id (8) beats a negative amount (13)
        (post("r", "", amount=-5), R.PENDING_ID_REQUIRED),
    ],
)
def test_resolution_preconditions(transfer: Transfer, expected: TransferResult) -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    before = state(ledger)
    assert one(ledger, transfer) is expected
    assert state(ledger) == before


def test_replay_of_a_post_is_exists_and_a_second_post_is_already_posted() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=700)
    first = post("p", "h", amount=300)
    assert one(ledger, first) is R.OK
    before = state(ledger)
    assert one(ledger, first) is R.EXISTS  # the same post again: success, nothing new
    assert one(ledger, replace(first, amount=0)) is R.EXISTS  # "full" is not a different amount
    assert one(ledger, replace(first, amount=301)) is R.EXISTS_WITH_DIFFERENT_AMOUNT
    assert one(ledger, replace(first, code="other")) is R.EXISTS_WITH_DIFFERENT_CODE
    assert one(ledger, post("p2", "h", amount=300)) is R.PENDING_TRANSFER_ALREADY_POSTED
    assert one(ledger, void("v", "h")) is R.PENDING_TRANSFER_ALREADY_POSTED
    assert state(ledger) == before


def test_replay_of_a_void_is_exists_and_a_post_after_void_is_already_voided() -> None:
    ledger = make_ledger()
    hold(ledger, "h")
    assert one(ledger, void("v", "h")) is R.OK
    before = state(ledger)
    assert one(ledger, void("v", "h", amount=99)) is R.EXISTS  # a void's amount is ignored
    assert one(ledger, void("v2", "h")) is R.PENDING_TRANSFER_ALREADY_VOIDED
    assert one(ledger, post("p", "h")) is R.PENDING_TRANSFER_ALREADY_VOIDED
    assert one(ledger, post("v", "h")) is R.EXISTS_WITH_DIFFERENT_FLAGS
    assert state(ledger) == before


def test_post_after_timeout_is_expired_even_before_the_sweep() -> None:
    clock = FixedClock(100.0)
    ledger = make_ledger(clock)
    hold(ledger, "h", timeout_s=30)
    clock.set(129.999)
    assert one(ledger, post("early", "h", amount=1)) is R.OK

    hold(ledger, "h2", timeout_s=30)  # placed at 129.999, due at 159.999
    clock.set(159.999)  # exactly due: a hold is valid strictly before its timeout
    before = state(ledger)
    assert one(ledger, post("late", "h2")) is R.PENDING_TRANSFER_EXPIRED
    assert one(ledger, void("late-void", "h2")) is R.PENDING_TRANSFER_EXPIRED
    assert state(ledger) == before
    assert ledger.pending_state("h2") is PendingState.PENDING  # nothing swept yet
    assert [t.pending_id for t in ledger.expire_pending()] == ["h2"]
    assert one(ledger, post("late", "h2")) is R.PENDING_TRANSFER_EXPIRED


def test_expire_pending_writes_exactly_one_expiry_per_hold() -> None:
    clock = FixedClock(100.0)
    ledger = make_ledger(clock)
    hold(ledger, "short", amount=100, timeout_s=10)
    hold(ledger, "long", amount=200, timeout_s=20)
    hold(ledger, "forever", amount=300)  # no timeout: never expires
    hold(ledger, "posted", amount=400, timeout_s=10)
    assert one(ledger, post("p", "posted")) is R.OK  # resolved before its timeout

    assert ledger.expire_pending() == []
    clock.advance(15)
    (first,) = ledger.expire_pending()
    assert (first.id, first.pending_id, first.amount, first.flags) == (
        "short#expired", "short", 100, F.EXPIRE_PENDING)
    assert (first.debit_account_id, first.credit_account_id, first.timestamp) == ("w1", "w2", 115.0)
    assert ledger.expire_pending() == []  # a second sweep at the same time writes nothing
    clock.advance(1_000)
    assert [t.id for t in ledger.expire_pending()] == ["long#expired"]
    assert ledger.expire_pending() == []

    expiries = [t for t in ledger.journal() if t.flags & F.EXPIRE_PENDING]
    assert sorted(t.pending_id for t in expiries) == ["long", "short"]
    assert ledger.pending_state("forever") is PendingState.PENDING
    assert ledger.pending_state("posted") is PendingState.POSTED
    w1 = ledger.account("w1")
    assert w1 is not None
    assert w1.debits_pending == 300
    assert w1.debits_posted == 400
    assert ledger.check_invariants() == []


def test_expiry_never_overwrites_a_client_transfer_with_the_same_id() -> None:
    """Client ids are free text; one may already be "<hold>#expired"."""
    clock = FixedClock(100.0)
    ledger = make_ledger(clock)
    hold(ledger, "h", amount=100, timeout_s=10)
    assert one(ledger, Transfer("h#expired", "w1", "w2", 5, "KZT")) is R.OK
    clock.advance(10)
    (expiry,) = ledger.expire_pending()
    assert expiry.id == "h#expired#2"
    client = ledger.transfer("h#expired")
    assert client is not None
    assert client.amount == 5
    assert ledger.check_invariants() == []


# --- balance limits ---------------------------------------------------------------------------

def test_credits_must_not_exceed_debits_gives_exceeds_debits() -> None:
    ledger = make_ledger()
    before = state(ledger)
    assert one(ledger, Transfer("in", "w1", "custody", 1, "KZT")) is R.EXCEEDS_DEBITS
    assert state(ledger) == before
    # custody holds 5 000 after it pays out (a debit), so it can then be credited up to that.
    assert one(ledger, Transfer("out", "custody", "w2", 5_000, "KZT")) is R.OK
    assert one(ledger, Transfer("back", "w1", "custody", 4_000, "KZT")) is R.OK
    hold(ledger, "h", amount=1_000, cr="custody")  # pending credits count too
    assert one(ledger, Transfer("more", "w1", "custody", 1, "KZT")) is R.EXCEEDS_DEBITS
    assert one(ledger, void("v", "h")) is R.OK
    assert one(ledger, Transfer("more", "w1", "custody", 1_000, "KZT")) is R.OK
    assert ledger.check_invariants() == []


def test_pending_debits_count_against_a_wallet() -> None:
    ledger = make_ledger()
    hold(ledger, "h", amount=FUNDED_MINOR - 10)
    assert one(ledger, Transfer("t", "w1", "w2", 11, "KZT")) is R.EXCEEDS_CREDITS
    assert one(ledger, Transfer("t", "w1", "w2", 10, "KZT")) is R.OK


def test_exceeds_credits_is_checked_before_exceeds_debits() -> None:
    ledger = make_ledger()
    assert one(ledger, Transfer("t", "w2", "custody", 1, "KZT")) is R.EXCEEDS_CREDITS


# --- invariants -------------------------------------------------------------------------------

def _busy_ledger() -> tuple[InMemoryLedger, FixedClock]:
    clock = FixedClock(100.0)
    ledger = make_ledger(clock)
    hold(ledger, "h1", amount=300, timeout_s=5)
    hold(ledger, "h2", amount=200)
    hold(ledger, "h3", amount=100)
    assert ledger.create_transfers([post("p2", "h2", amount=50), void("v3", "h3"),
                                    Transfer("t", "w1", "w2", 1_000, "KZT"),
                                    Transfer("u", "u1", "u2", 7, "USDT")]) == [R.OK] * 4
    clock.advance(10)
    assert len(ledger.expire_pending()) == 1
    return ledger, clock


def test_conservation_after_a_busy_ledger() -> None:
    ledger, _ = _busy_ledger()
    assert ledger.check_invariants() == []
    for asset in ("KZT", "USDT"):
        accounts = [a for a in ledger.accounts() if a.asset == asset]
        assert sum(a.debits_posted for a in accounts) == sum(a.credits_posted for a in accounts)
        assert sum(a.debits_pending for a in accounts) == sum(a.credits_pending for a in accounts)


def test_check_invariants_detects_a_corrupted_balance() -> None:
    ledger, _ = _busy_ledger()
    ledger._accounts["w2"].credits_posted += 1  # a lost update, as a buggy repository might do
    found = {(v.invariant, v.subject) for v in ledger.check_invariants()}
    assert ("balances_equal_journal_replay", "w2") in found
    assert ("conservation_posted", "KZT") in found
    assert not any(subject in ("u1", "u2", "USDT") for _, subject in found)


def test_check_invariants_detects_a_corrupted_pending_balance() -> None:
    ledger, _ = _busy_ledger()
    ledger._accounts["w1"].debits_pending -= 1
    found = {(v.invariant, v.subject) for v in ledger.check_invariants()}
    assert ("balances_equal_journal_replay", "w1") in found
    assert ("conservation_pending", "KZT") in found


def test_check_invariants_detects_a_hold_marked_resolved_without_a_resolution() -> None:
    ledger, _ = _busy_ledger()
    hold(ledger, "h4", amount=10)
    ledger._pending["h4"] = PendingState.POSTED
    found = {(v.invariant, v.subject) for v in ledger.check_invariants()}
    assert found == {("holds_resolved_once", "h4")}


def test_check_invariants_detects_a_journal_entry_for_an_unknown_account() -> None:
    ledger, _ = _busy_ledger()
    del ledger._accounts["u2"]
    found = {(v.invariant, v.subject) for v in ledger.check_invariants()}
    assert ("balances_equal_journal_replay", "u2") in found


def test_check_balances_detects_flagged_overdraft_and_negative_fields() -> None:
    journal = [Transfer("t", "w", "x", 5, "KZT")]
    w = Account("w", "KZT", flags=DNEC, debits_posted=5)  # a wallet that paid without credits
    x = Account("x", "KZT", credits_posted=5)
    found = {(v.invariant, v.subject) for v in check_balances([w, x], journal, {})}
    assert found == {("flagged_not_negative", "w")}
    y = Account("y", "KZT", debits_pending=-1, credits_pending=-1)
    found = {(v.invariant, v.subject) for v in check_balances([y], [], {})}
    assert ("no_negative_balance_fields", "y") in found


def test_replay_journal_flags_double_resolution_and_over_post() -> None:
    h = Transfer("h", "a", "b", 100, "KZT", flags=F.PENDING)
    journal = [
        h,
        Transfer("p", "a", "b", 150, "KZT", flags=F.POST_PENDING, pending_id="h"),
        Transfer("v", "a", "b", 100, "KZT", flags=F.VOID_PENDING, pending_id="h"),
        Transfer("x", "a", "b", 1, "KZT", flags=F.VOID_PENDING, pending_id="ghost"),
    ]
    _, resolutions, problems = replay_journal(journal)
    found = {(v.invariant, v.subject) for v in problems}
    assert found == {("posted_le_held", "h"), ("holds_resolved_once", "h"),
                     ("holds_resolved_once", "x")}
    assert [t.id for t in resolutions["h"]] == ["p", "v"]
