"""A Hypothesis state machine drives a ledger and a plain-dict model side by side.

Every step (open accounts, fund, transfer, hold, partial post, void, expiry by advancing the clock,
replays with the same and with different fields, linked batches with a failing member) is applied
to both; after every step the balances and hold states must agree and ``check_invariants()`` must
be empty.

The machine is backend-neutral: :func:`ledger_machine` builds a machine for any factory
``(clock) -> LedgerRepository``, so the SQL backends can run the same machine; here it runs
against :class:`InMemoryLedger`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from services.clock import FixedClock
from services.ledger import (
    Account,
    AccountFlags,
    AccountResult,
    InMemoryLedger,
    LedgerRepository,
    Transfer,
    TransferFlags,
    TransferResult,
    linked,
)

R = TransferResult
F = TransferFlags
DNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
CNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
ASSETS = ("KZT", "USDT")
START_S = 1_000.0

LedgerFactory = Callable[[FixedClock], LedgerRepository]


# --- the reference model: dicts and the rules written out plainly ------------------------------

@dataclass
class Hold:
    debit: str
    credit: str
    amount: int
    due_s: float | None  # None: no timeout
    state: str = "pending"


@dataclass
class Model:
    """What the ledger should hold. Balances are [debits_pending, debits_posted, credits_pending,
    credits_posted] per account."""

    asset: dict[str, str] = field(default_factory=dict)
    flags: dict[str, AccountFlags] = field(default_factory=dict)
    balances: dict[str, list[int]] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    journal_length: int = 0

    def open(self, account_id: str, asset: str, flags: AccountFlags) -> None:
        self.asset[account_id] = asset
        self.flags[account_id] = flags
        self.balances[account_id] = [0, 0, 0, 0]

    def _limit(self, debit: str, credit: str, amount: int) -> TransferResult | None:
        dp, dpo, _, cpo = self.balances[debit]
        if self.flags[debit] & DNEC and dp + dpo + amount > cpo:
            return R.EXCEEDS_CREDITS
        _, dpo, cp, cpo = self.balances[credit]
        if self.flags[credit] & CNED and cp + cpo + amount > dpo:
            return R.EXCEEDS_DEBITS
        return None

    def apply(self, t: Transfer, now_s: float) -> TransferResult:
        """The result of a transfer with a fresh id; applied to the model when OK."""
        if t.flags & (F.POST_PENDING | F.VOID_PENDING):
            return self._resolve(t, now_s)
        if t.amount == 0:
            return R.AMOUNT_MUST_NOT_BE_ZERO
        if t.debit_account_id == t.credit_account_id:
            return R.ACCOUNTS_MUST_BE_DIFFERENT
        if t.debit_account_id not in self.asset:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        if t.credit_account_id not in self.asset:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if self.asset[t.debit_account_id] != self.asset[t.credit_account_id]:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_ASSET
        refused = self._limit(t.debit_account_id, t.credit_account_id, t.amount)
        if refused is not None:
            return refused
        dr, cr = self.balances[t.debit_account_id], self.balances[t.credit_account_id]
        if t.flags & F.PENDING:
            dr[0] += t.amount
            cr[2] += t.amount
            due = now_s + t.timeout_s if t.timeout_s else None
            self.holds[t.id] = Hold(t.debit_account_id, t.credit_account_id, t.amount, due)
        else:
            dr[1] += t.amount
            cr[3] += t.amount
        self.journal_length += 1
        return R.OK

    def _resolve(self, t: Transfer, now_s: float) -> TransferResult:
        h = self.holds[t.pending_id]
        if h.state == "posted":
            return R.PENDING_TRANSFER_ALREADY_POSTED
        if h.state == "voided":
            return R.PENDING_TRANSFER_ALREADY_VOIDED
        if h.state == "expired" or (h.due_s is not None and now_s >= h.due_s):
            return R.PENDING_TRANSFER_EXPIRED
        posting = bool(t.flags & F.POST_PENDING)
        posted = (t.amount or h.amount) if posting else 0
        if posted > h.amount:
            return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        self._release(h, posted)
        h.state = "posted" if posting else "voided"
        self.journal_length += 1
        return R.OK

    def _release(self, h: Hold, posted: int) -> None:
        dr, cr = self.balances[h.debit], self.balances[h.credit]
        dr[0] -= h.amount
        cr[2] -= h.amount
        dr[1] += posted
        cr[3] += posted

    def expire(self, now_s: float) -> list[str]:
        due = sorted(pid for pid, h in self.holds.items()
                     if h.state == "pending" and h.due_s is not None and h.due_s <= now_s)
        for pid in due:
            self._release(self.holds[pid], posted=0)
            self.holds[pid].state = "expired"
            self.journal_length += 1
        return due


# --- the machine ---------------------------------------------------------------------------------

amounts = st.integers(min_value=0, max_value=3_000)
timeouts_s = st.sampled_from([0.0, 1.0, 2.0, 5.0, 30.0])
account_flags = st.sampled_from([AccountFlags.NONE, DNEC, CNED])
changes = st.sampled_from(["code", "user_data", "amount", "timeout", "flags"])


class LedgerMachine(RuleBasedStateMachine):
    """Drives ``ledger_factory(clock)`` and a :class:`Model`; see :func:`ledger_machine`."""

    ledger_factory: ClassVar[LedgerFactory]

    def __init__(self) -> None:
        super().__init__()
        self.clock = FixedClock(START_S)
        self.ledger = type(self).ledger_factory(self.clock)
        self.model = Model()
        self.ids = (f"id{n}" for n in itertools.count())
        self.account_ids: list[str] = []
        self.batches: list[list[Transfer]] = []  # committed batches, as submitted
        self.hold_ids: list[str] = []

    def teardown(self) -> None:
        close = getattr(self.ledger, "close", None)
        if callable(close):
            close()

    # -- helpers --------------------------------------------------------------------------------
    def _open(self, account_id: str, asset: str, flags: AccountFlags) -> None:
        result = self.ledger.create_accounts([Account(account_id, asset, flags=flags)])
        assert result == [AccountResult.OK]
        self.model.open(account_id, asset, flags)
        self.account_ids.append(account_id)

    def _pair(self, data: st.DataObject) -> tuple[str, str]:
        """Two accounts: usually different (same asset more often than not), sometimes equal."""
        debit = data.draw(st.sampled_from(self.account_ids), label="debit")
        if data.draw(st.integers(min_value=0, max_value=19), label="same?") == 0:
            return debit, debit
        others = [a for a in self.account_ids if a != debit]
        same_asset = [a for a in others if self.model.asset[a] == self.model.asset[debit]]
        pool = same_asset if same_asset and data.draw(st.integers(0, 9), label="mix?") else others
        return debit, data.draw(st.sampled_from(pool), label="credit")

    def _hold(self, data: st.DataObject) -> str:
        """Usually a hold still open; sometimes any hold, to reach the already-resolved rules."""
        still_open = [pid for pid in self.hold_ids if self.model.holds[pid].state == "pending"]
        pool = still_open if still_open and data.draw(st.integers(0, 4), label="open?") else None
        return data.draw(st.sampled_from(pool or self.hold_ids), label="hold")

    def _submit(self, batch: list[Transfer]) -> list[TransferResult]:
        """Submit a batch to the ledger and to a copy of the model; keep the copy if it commits."""
        trial = copy.deepcopy(self.model)
        expected: list[TransferResult] = []
        for t in batch:
            expected.append(trial.apply(t, self.clock.now()))
            if expected[-1] is not R.OK:
                break
        if expected[-1] is R.OK:
            self.model = trial
            self.batches.append(batch)
        elif len(batch) > 1:
            failed = len(expected) - 1
            expected = [expected[failed] if i == failed else R.LINKED_EVENT_FAILED
                        for i in range(len(batch))]
        results = self.ledger.create_transfers(batch)
        assert results == expected, (batch, results, expected)
        return results

    def _new_transfer(self, debit: str, credit: str, amount: int, **kw: Any) -> Transfer:
        asset = self.model.asset.get(debit, "KZT")
        return Transfer(next(self.ids), debit, credit, amount, asset, **kw)

    def _journal_length(self) -> int:
        return len(list(self.ledger.journal()))

    # -- rules ----------------------------------------------------------------------------------
    @initialize()
    def open_starting_accounts(self) -> None:
        """An unflagged source per asset (where funding comes from) and one of each flag."""
        for asset in ASSETS:
            self._open(f"src-{asset}", asset, AccountFlags.NONE)
        self._open("wallet", "KZT", DNEC)
        self._open("custody", "KZT", CNED)

    @rule(asset=st.sampled_from(ASSETS), flags=account_flags)
    def open_account(self, asset: str, flags: AccountFlags) -> None:
        self._open(next(self.ids), asset, flags)

    @rule(data=st.data(), amount=st.integers(min_value=1, max_value=10_000))
    def fund(self, data: st.DataObject, amount: int) -> None:
        """Give an account room: credit a wallet-style account, debit a custody-style one."""
        account = data.draw(st.sampled_from(self.account_ids), label="account")
        source = f"src-{self.model.asset[account]}"
        if account == source:
            return
        if self.model.flags[account] & CNED:
            self._submit([self._new_transfer(account, source, amount)])
        else:
            self._submit([self._new_transfer(source, account, amount)])

    @rule(data=st.data(), amount=amounts)
    def transfer(self, data: st.DataObject, amount: int) -> None:
        self._submit([self._new_transfer(*self._pair(data), amount)])

    @rule(data=st.data(), amount=amounts, timeout_s=timeouts_s)
    def pending(self, data: st.DataObject, amount: int, timeout_s: float) -> None:
        t = self._new_transfer(*self._pair(data), amount, flags=F.PENDING, timeout_s=timeout_s)
        if self._submit([t]) == [R.OK]:
            self.hold_ids.append(t.id)

    @precondition(lambda self: self.hold_ids)
    @rule(data=st.data(), amount=st.integers(min_value=0, max_value=600))
    def post(self, data: st.DataObject, amount: int) -> None:
        """Post all (amount 0) or part; over-posting, late or second posts are refused."""
        pid = self._hold(data)
        t = Transfer(next(self.ids), "", "", amount, "", flags=F.POST_PENDING, pending_id=pid)
        self._submit([t])

    @precondition(lambda self: self.hold_ids)
    @rule(data=st.data(), amount=st.integers(min_value=0, max_value=10**6))
    def void(self, data: st.DataObject, amount: int) -> None:
        """Void a hold; the amount is ignored."""
        pid = self._hold(data)
        t = Transfer(next(self.ids), "", "", amount, "", flags=F.VOID_PENDING, pending_id=pid)
        self._submit([t])

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 31.0]))
    def advance_and_expire(self, seconds: float) -> None:
        self.clock.advance(max(seconds, 0.0))
        written = self.ledger.expire_pending()
        expected = self.model.expire(self.clock.now())
        assert sorted(t.pending_id for t in written) == expected
        assert all(t.flags == F.EXPIRE_PENDING for t in written)
        assert self.ledger.expire_pending() == []  # one expiry per hold, never two

    def _timed_open_holds(self) -> list[float]:
        return sorted(h.due_s for h in self.model.holds.values()
                      if h.state == "pending" and h.due_s is not None)

    @precondition(lambda self: self._timed_open_holds())
    @rule(late=st.booleans())
    def advance_to_a_due_hold(self, late: bool) -> None:
        """Move the clock to exactly the next due time (the boundary), or just short of it."""
        due_s = self._timed_open_holds()[0]
        self.advance_and_expire(due_s - self.clock.now() - (0.0 if late else 0.25))

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def replay_same(self, data: st.DataObject) -> None:
        """The same batch again: every member is EXISTS and nothing changes."""
        batch = data.draw(st.sampled_from(self.batches), label="batch")
        length = self._journal_length()
        assert self.ledger.create_transfers(batch) == [R.EXISTS] * len(batch)
        assert self._journal_length() == length

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), change=changes)
    def replay_different(self, data: st.DataObject, change: str) -> None:
        """One member of a committed batch changed: EXISTS_WITH_DIFFERENT_*, nothing written."""
        batch = data.draw(st.sampled_from(self.batches), label="batch")
        i = data.draw(st.integers(min_value=0, max_value=len(batch) - 1), label="member")
        changed, expected = _changed(batch[i], change)
        replayed = [changed if j == i else t for j, t in enumerate(batch)]
        want = [expected if j == i else R.LINKED_EVENT_FAILED for j in range(len(batch))]
        length = self._journal_length()
        assert self.ledger.create_transfers(replayed) == want
        assert self._journal_length() == length

    @rule(data=st.data(), amounts_=st.lists(amounts, min_size=1, max_size=4),
          failure=st.sampled_from(["zero", "same", "unknown"]))
    def linked_batch_with_a_failing_member(
        self, data: st.DataObject, amounts_: list[int], failure: str
    ) -> None:
        """A chain with one member that must fail: nothing of the chain is written."""
        debit, credit = self._pair(data)
        members = [self._new_transfer(debit, credit, a) for a in amounts_]
        if failure == "zero":
            bad = self._new_transfer(debit, credit, 0)
        elif failure == "same":
            bad = self._new_transfer(debit, debit, 1)
        else:
            bad = self._new_transfer("ghost", credit, 1)
        at = data.draw(st.integers(min_value=0, max_value=len(members)), label="position")
        members.insert(at, bad)
        length = self._journal_length()
        results = self._submit(linked(members))
        assert R.OK not in results
        assert self._journal_length() == length

    @rule(data=st.data(), amounts_=st.lists(amounts, min_size=2, max_size=4),
          pending=st.booleans())
    def linked_batch(self, data: st.DataObject, amounts_: list[int], pending: bool) -> None:
        """A chain that may or may not pass: all members commit, or none."""
        debit, credit = self._pair(data)
        flags = F.PENDING if pending else F.NONE
        members = [self._new_transfer(debit, credit, a, flags=flags) for a in amounts_]
        if self._submit(linked(members)) == [R.OK] * len(members) and pending:
            self.hold_ids.extend(t.id for t in members)

    # -- after every step -----------------------------------------------------------------------
    @invariant()
    def balances_match_the_model(self) -> None:
        for account_id, expected in self.model.balances.items():
            acc = self.ledger.account(account_id)
            assert acc is not None
            got = [acc.debits_pending, acc.debits_posted, acc.credits_pending, acc.credits_posted]
            assert got == expected, account_id

    @invariant()
    def holds_match_the_model(self) -> None:
        for pid, h in self.model.holds.items():
            state = self.ledger.pending_state(pid)
            assert state is not None
            assert state.value == h.state, pid

    @invariant()
    def journal_matches_the_model(self) -> None:
        assert len(list(self.ledger.journal())) == self.model.journal_length

    @invariant()
    def ledger_invariants_hold(self) -> None:
        assert self.ledger.check_invariants() == []


def _changed(original: Transfer, change: str) -> tuple[Transfer, TransferResult]:
    """``original`` with one field changed, and the result a replay of it must get."""
    if change == "amount" and not original.is_resolution:
        return replace(original, amount=original.amount + 1), R.EXISTS_WITH_DIFFERENT_AMOUNT
    if change == "timeout" and original.flags & F.PENDING:
        return replace(original, timeout_s=original.timeout_s + 1), R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if change == "flags" and not original.flags & (F.PENDING | F.POST_PENDING | F.VOID_PENDING):
        return replace(original, flags=original.flags | F.PENDING), R.EXISTS_WITH_DIFFERENT_FLAGS
    if change == "user_data":
        return replace(original, user_data="other"), R.EXISTS_WITH_DIFFERENT_USER_DATA
    return replace(original, code="other"), R.EXISTS_WITH_DIFFERENT_CODE


def ledger_machine(factory: LedgerFactory, name: str = "LedgerMachine") -> type[LedgerMachine]:
    """A :class:`LedgerMachine` subclass that drives ledgers made by ``factory``."""
    return type(name, (LedgerMachine,), {"ledger_factory": staticmethod(factory)})


STATEFUL_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

InMemoryLedgerMachine = ledger_machine(lambda clock: InMemoryLedger(clock=clock),
                                       "InMemoryLedgerMachine")
TestInMemoryLedgerMachine = InMemoryLedgerMachine.TestCase
TestInMemoryLedgerMachine.settings = STATEFUL_SETTINGS
