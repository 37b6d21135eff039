"""The ledger's rules, written once and shared by every repository.

The engine reads through a :class:`LedgerView` (what is committed) and writes only into a
:class:`Staging` overlay; the repository persists the overlay in one transaction. A failed chain of
linked events leaves nothing in the overlay, so "all or nothing" and "nothing written on a failed
check" fall out of the structure rather than from undo code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from services.ledger.model import (
    Account,
    AccountFlags,
    AccountResult,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
    Violation,
)
from services.money import AMOUNT_MAX

__all__ = [
    "ID_LENGTH_MAX",
    "LedgerView",
    "Staging",
    "apply_accounts",
    "apply_transfers",
    "check_balances",
    "expiry_transfer",
    "replay_journal",
]

ID_LENGTH_MAX = 128
# Plain ints on the hot path: IntFlag arithmetic builds a new enum member per operation.
_DNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_PEND = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_VOID = int(TransferFlags.VOID_PENDING)
_EXPIRE = int(TransferFlags.EXPIRE_PENDING)
_LINKED = int(TransferFlags.LINKED)
_KINDS = _PEND | _POST | _VOID | _EXPIRE
R = TransferResult
_OK = R.OK
_EXISTS = R.EXISTS


class LedgerView(Protocol):
    """Read access to committed state."""

    def account(self, account_id: str) -> Account | None: ...

    def transfer(self, transfer_id: str) -> Transfer | None: ...

    def pending_state(self, transfer_id: str) -> PendingState | None: ...


class Staging:
    """Changes made by one batch, layered over a view. Accounts are copied on first write."""

    __slots__ = ("accounts", "base", "new_accounts", "pending", "transfers")

    def __init__(self, base: LedgerView) -> None:
        self.base = base
        self.accounts: dict[str, Account] = {}
        self.new_accounts: dict[str, Account] = {}
        self.transfers: dict[str, Transfer] = {}
        self.pending: dict[str, PendingState] = {}

    def account(self, account_id: str) -> Account | None:
        st = self  # walk down nested overlays in a loop: a frame per level costs more than the lookups
        while True:
            acc = st.accounts.get(account_id)
            if acc is not None:
                return acc
            acc = st.new_accounts.get(account_id)
            if acc is not None:
                return acc
            base = st.base
            if type(base) is not Staging:
                return base.account(account_id)
            st = base

    def writable(self, acc: Account) -> Account:
        """``acc`` (as :meth:`account` returned it) made writable in this overlay: the overlay's own
        copy, or a new copy of the committed one. Same as ``writable_account(acc.id)`` without
        looking the base up again."""
        account_id = acc.id
        own = self.accounts.get(account_id)
        if own is not None:
            return own
        own = self.new_accounts.get(account_id)
        if own is not None:
            return own
        own = self.accounts[account_id] = acc.copy()
        return own

    def writable_account(self, account_id: str) -> Account:
        acc = self.accounts.get(account_id) or self.new_accounts.get(account_id)
        if acc is None:
            base = self.base.account(account_id)
            assert base is not None, f"writable_account({account_id!r}) before existence check"
            acc = self.accounts[account_id] = base.copy()
        return acc

    def transfer(self, transfer_id: str) -> Transfer | None:
        st = self
        while True:
            t = st.transfers.get(transfer_id)
            if t is not None:
                return t
            base = st.base
            if type(base) is not Staging:
                return base.transfer(transfer_id)
            st = base

    @property
    def empty(self) -> bool:
        return not (self.accounts or self.new_accounts or self.transfers or self.pending)

    def pending_state(self, transfer_id: str) -> PendingState | None:
        s = self.pending.get(transfer_id)
        return s if s is not None else self.base.pending_state(transfer_id)

    def merge(self, child: Staging) -> None:
        self.accounts.update(child.accounts)
        self.new_accounts.update(child.new_accounts)
        self.transfers.update(child.transfers)
        self.pending.update(child.pending)

    @property
    def touched_account_ids(self) -> set[str]:
        return set(self.accounts)


def _chains(n: int, linked: Callable[[int], bool]) -> Iterable[tuple[int, int, bool]]:
    """Yield (start, stop, closed) for each chain of linked events in a batch of ``n``."""
    start = 0
    for i in range(n):
        if not linked(i):
            yield start, i + 1, True
            start = i + 1
    if start < n:
        yield start, n, False


def apply_accounts(
    view: LedgerView, batch: Sequence[Account], now: float, asset_known: Callable[[str], bool]
) -> tuple[list[AccountResult], Staging]:
    """Create accounts; each is its own event (accounts are not linked here)."""
    staging = Staging(view)
    results: list[AccountResult] = []
    for acc in batch:
        result = _check_account(staging, acc, asset_known)
        if result is AccountResult.OK:
            staging.new_accounts[acc.id] = Account(
                id=acc.id, asset=acc.asset, owner=acc.owner, kind=acc.kind,
                flags=acc.flags if type(acc.flags) is AccountFlags else AccountFlags(acc.flags), timestamp=now,
            )
        results.append(result)
    return results, staging


def _check_account(
    view: Staging, acc: Account, asset_known: Callable[[str], bool]
) -> AccountResult:
    if not acc.id:
        return AccountResult.ID_MUST_NOT_BE_EMPTY
    if len(acc.id) > ID_LENGTH_MAX:
        return AccountResult.ID_TOO_LONG
    flags = int(acc.flags)  # IntFlag arithmetic builds a new enum member per operation
    if flags & _DNEC and flags & _CNED:
        return AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if not asset_known(acc.asset):
        return AccountResult.ASSET_UNKNOWN
    existing = view.account(acc.id)
    if existing is None:
        return AccountResult.OK
    if existing.flags != flags:
        return AccountResult.EXISTS_WITH_DIFFERENT_FLAGS
    if existing.asset != acc.asset:
        return AccountResult.EXISTS_WITH_DIFFERENT_ASSET
    if existing.owner != acc.owner:
        return AccountResult.EXISTS_WITH_DIFFERENT_OWNER
    if existing.kind != acc.kind:
        return AccountResult.EXISTS_WITH_DIFFERENT_KIND
    return AccountResult.EXISTS


def apply_transfers(
    view: LedgerView, batch: Sequence[Transfer], now: float, asset_known: Callable[[str], bool]
) -> tuple[list[TransferResult], Staging]:
    """Apply a batch of transfers; chains of ``LINKED`` events commit all or nothing."""
    staging = Staging(view)
    if len(batch) == 1 and not int(batch[0].flags) & _LINKED:
        # The common case (one closed event): what the loop below does for it, minus the chain scan.
        return [_apply_one(staging, batch[0], now, asset_known)], staging
    results: list[TransferResult] = [_OK] * len(batch)
    for start, stop, closed in _chains(len(batch), lambda i: bool(int(batch[i].flags) & _LINKED)):
        if stop - start == 1 and closed:
            # A lone event writes nothing unless every check passed, so it needs no overlay of its own.
            results[start] = _apply_one(staging, batch[start], now, asset_known)
            continue
        # A chain gets its own overlay, dropped if any event fails; when nothing is staged yet (the
        # usual batch is one chain) the batch's overlay serves, and a failure starts it afresh.
        chain = Staging(staging) if not staging.empty else staging
        failed_at = -1
        for i in range(start, stop):
            if i == stop - 1 and not closed:
                results[i] = R.LINKED_EVENT_CHAIN_OPEN
            else:
                results[i] = _apply_one(chain, batch[i], now, asset_known)
            if results[i] is not _OK and results[i] is not _EXISTS:
                failed_at = i
                break
        if failed_at < 0:
            if chain is not staging:
                staging.merge(chain)
            continue
        if chain is staging:
            staging = Staging(view)
        for i in range(start, stop):
            if i != failed_at:
                results[i] = R.LINKED_EVENT_FAILED
    return results, staging


def _stored_flags(flags: int | TransferFlags) -> TransferFlags:
    return flags if type(flags) is TransferFlags else TransferFlags(flags)


def _apply_one(
    st: Staging, t: Transfer, now: float, asset_known: Callable[[str], bool]
) -> TransferResult:
    flags = int(t.flags)
    if not t.id:
        return R.ID_MUST_NOT_BE_EMPTY
    if len(t.id) > ID_LENGTH_MAX:
        return R.ID_TOO_LONG
    kind = flags & _KINDS
    if kind & (kind - 1):  # more than one of pending / post / void / expire
        return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if kind == _EXPIRE:
        return R.EXPIRE_IS_RESERVED_FOR_THE_LEDGER
    if kind & (_POST | _VOID):
        return _apply_resolution(st, t, flags, now)
    if t.pending_id:
        return R.PENDING_ID_MUST_BE_EMPTY
    if t.timeout_s and kind != _PEND:
        return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    if t.timeout_s < 0:
        return R.TIMEOUT_MUST_NOT_BE_NEGATIVE
    amount = t.amount
    if type(amount) is not int or amount <= 0 or amount > AMOUNT_MAX:  # the checks, in order, only when one fails
        amount_error = _check_amount(amount)
        if amount_error is not None:
            return amount_error
    debit_id, credit_id, asset = t.debit_account_id, t.credit_account_id, t.asset
    if debit_id == credit_id:
        return R.ACCOUNTS_MUST_BE_DIFFERENT
    if not asset_known(asset):
        return R.ASSET_UNKNOWN
    dr = st.account(debit_id)
    if dr is None:
        return R.DEBIT_ACCOUNT_NOT_FOUND
    cr = st.account(credit_id)
    if cr is None:
        return R.CREDIT_ACCOUNT_NOT_FOUND
    if dr.asset != cr.asset:
        return R.ACCOUNTS_MUST_HAVE_THE_SAME_ASSET
    if asset != dr.asset:
        return R.TRANSFER_MUST_HAVE_THE_SAME_ASSET_AS_ACCOUNTS
    tid = t.id
    existing = st.transfer(tid)
    if existing is not None:
        return _compare_existing(existing, t, amount_given=True)
    if int(dr.flags) & _DNEC and dr.debits_pending + dr.debits_posted + amount > dr.credits_posted:
        return R.EXCEEDS_CREDITS
    if int(cr.flags) & _CNED and cr.credits_pending + cr.credits_posted + amount > cr.debits_posted:
        return R.EXCEEDS_DEBITS
    dr = st.writable(dr)
    cr = st.writable(cr)
    if kind == _PEND:
        dr.debits_pending += amount
        cr.credits_pending += amount
        st.pending[tid] = PendingState.PENDING
    else:
        dr.debits_posted += amount
        cr.credits_posted += amount
    st.transfers[tid] = Transfer(
        tid, debit_id, credit_id, amount, asset, t.code,
        _stored_flags(t.flags), t.pending_id, t.timeout_s, t.user_data, now,
    )
    return _OK


def _check_amount(amount: int) -> TransferResult | None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        # Programmer error: amounts are ints of minor units; the edges parse text into them.
        raise TypeError(f"transfer amount must be int minor units, got {type(amount).__name__}")
    if amount == 0:
        return R.AMOUNT_MUST_NOT_BE_ZERO
    if amount < 0:
        return R.AMOUNT_MUST_NOT_BE_NEGATIVE
    if amount > AMOUNT_MAX:
        return R.AMOUNT_EXCEEDS_MAXIMUM
    return None


def _apply_resolution(st: Staging, t: Transfer, flags: int, now: float) -> TransferResult:
    if not t.pending_id:
        return R.PENDING_ID_REQUIRED
    if t.pending_id == t.id:
        return R.PENDING_ID_MUST_BE_DIFFERENT
    if t.timeout_s:
        return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    if flags & _POST and t.amount:
        amount_error = _check_amount(t.amount)
        if amount_error is not None:
            return amount_error
    elif t.amount < 0:
        return R.AMOUNT_MUST_NOT_BE_NEGATIVE
    p = st.transfer(t.pending_id)
    if p is None:
        return R.PENDING_TRANSFER_NOT_FOUND
    if not int(p.flags) & _PEND:
        return R.PENDING_TRANSFER_NOT_PENDING
    if t.debit_account_id and t.debit_account_id != p.debit_account_id:
        return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id and t.credit_account_id != p.credit_account_id:
        return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.asset and t.asset != p.asset:
        return R.PENDING_TRANSFER_HAS_DIFFERENT_ASSET
    existing = st.transfer(t.id)
    if existing is not None:
        return _compare_existing(existing, t, amount_given=bool(flags & _POST and t.amount))
    state = st.pending_state(p.id)
    if state is PendingState.POSTED:
        return R.PENDING_TRANSFER_ALREADY_POSTED
    if state is PendingState.VOIDED:
        return R.PENDING_TRANSFER_ALREADY_VOIDED
    if state is PendingState.EXPIRED or (p.timeout_s and now >= p.timestamp + p.timeout_s):
        return R.PENDING_TRANSFER_EXPIRED
    amount = (t.amount or p.amount) if flags & _POST else p.amount
    if amount > p.amount:
        return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
    _release(st, p, posted=amount if flags & _POST else 0)
    st.pending[p.id] = PendingState.POSTED if flags & _POST else PendingState.VOIDED
    st.transfers[t.id] = Transfer(
        t.id, p.debit_account_id, p.credit_account_id, amount, p.asset, t.code,
        _stored_flags(t.flags), t.pending_id, t.timeout_s, t.user_data, now,
    )
    return _OK


def _release(st: Staging, p: Transfer, posted: int) -> None:
    dr = st.writable_account(p.debit_account_id)
    cr = st.writable_account(p.credit_account_id)
    dr.debits_pending -= p.amount
    cr.credits_pending -= p.amount
    dr.debits_posted += posted
    cr.credits_posted += posted


def _compare_existing(e: Transfer, t: Transfer, *, amount_given: bool) -> TransferResult:
    if int(e.flags) != int(t.flags):
        return R.EXISTS_WITH_DIFFERENT_FLAGS
    if t.debit_account_id and e.debit_account_id != t.debit_account_id:
        return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id and e.credit_account_id != t.credit_account_id:
        return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if amount_given and e.amount != t.amount:
        return R.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.asset and e.asset != t.asset:
        return R.EXISTS_WITH_DIFFERENT_ASSET
    if e.pending_id != t.pending_id:
        return R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if e.timeout_s != t.timeout_s:
        return R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if e.code != t.code:
        return R.EXISTS_WITH_DIFFERENT_CODE
    if e.user_data != t.user_data:
        return R.EXISTS_WITH_DIFFERENT_USER_DATA
    return R.EXISTS


def expiry_transfer(p: Transfer, now: float) -> Transfer:
    """The transfer the ledger writes when pending ``p`` times out (one per hold, by its id)."""
    return Transfer(
        id=f"{p.id}#expired", debit_account_id=p.debit_account_id,
        credit_account_id=p.credit_account_id, amount=p.amount, asset=p.asset, code=p.code,
        flags=TransferFlags.EXPIRE_PENDING, pending_id=p.id, timestamp=now,
    )


def apply_expiry(st: Staging, p: Transfer, now: float) -> Transfer:
    """Release an expired hold into ``st``; the caller has checked it is still pending and due."""
    _release(st, p, posted=0)
    st.pending[p.id] = PendingState.EXPIRED
    t = expiry_transfer(p, now)
    # Client ids are free text: one may already be "<hold>#expired". Never overwrite the journal.
    suffix = 2
    while st.transfer(t.id) is not None:
        t = replace(t, id=f"{p.id}#expired#{suffix}")
        suffix += 1
    st.transfers[t.id] = t
    return t


Balances = dict[str, list[int]]  # account id -> [debits_pending, debits_posted, credits_pending, credits_posted]


def replay_journal(journal: Iterable[Transfer]) -> tuple[Balances, dict[str, list[Transfer]], list[Violation]]:
    """Recompute every balance from the journal alone, in commit order.

    Returns the balances, the resolutions seen per pending id, and journal-level violations
    (a resolution of an unknown hold, a hold resolved twice, posted above held).
    """
    balances: Balances = {}
    pendings: dict[str, Transfer] = {}
    resolutions: dict[str, list[Transfer]] = {}
    problems: list[Violation] = []
    for t in journal:
        dr = balances.setdefault(t.debit_account_id, [0, 0, 0, 0])
        cr = balances.setdefault(t.credit_account_id, [0, 0, 0, 0])
        tf = int(t.flags)
        if tf & _PEND:
            pendings[t.id] = t
            dr[0] += t.amount
            cr[2] += t.amount
        elif tf & (_POST | _VOID | _EXPIRE):
            p = pendings.get(t.pending_id)
            seen = resolutions.setdefault(t.pending_id, [])
            seen.append(t)
            if p is None:
                problems.append(Violation("holds_resolved_once", t.id, f"resolves unknown hold {t.pending_id}"))
                continue
            if len(seen) > 1:
                problems.append(Violation("holds_resolved_once", p.id, f"resolved {len(seen)} times"))
            posted = t.amount if tf & _POST else 0
            if posted > p.amount:
                problems.append(Violation("posted_le_held", p.id, f"posted {posted} > held {p.amount}"))
            dr[0] -= p.amount
            cr[2] -= p.amount
            dr[1] += posted
            cr[3] += posted
        else:
            dr[1] += t.amount
            cr[3] += t.amount
    return balances, resolutions, problems


def check_balances(
    accounts: Iterable[Account], journal: Iterable[Transfer], pending_states: dict[str, PendingState]
) -> list[Violation]:
    """Every invariant of the ledger over committed state; an empty list means all hold."""
    violations: list[Violation] = []
    replayed, resolutions, problems = replay_journal(journal)
    violations.extend(problems)
    sums: dict[str, list[int]] = {}
    for acc in accounts:
        s = sums.setdefault(acc.asset, [0, 0, 0, 0])
        bal = [acc.debits_pending, acc.debits_posted, acc.credits_pending, acc.credits_posted]
        for i, v in enumerate(bal):
            s[i] += v
        replayed_bal = replayed.pop(acc.id, [0, 0, 0, 0])
        if bal != replayed_bal:
            violations.append(Violation("balances_equal_journal_replay", acc.id,
                                        f"stored {bal} != replayed {replayed_bal}"))
        if min(bal) < 0:
            violations.append(Violation("no_negative_balance_fields", acc.id, f"balances {bal}"))
        if acc.flags & _DNEC and acc.debits_pending + acc.debits_posted > acc.credits_posted:
            violations.append(Violation("flagged_not_negative", acc.id, "debits exceed credits"))
        if acc.flags & _CNED and acc.credits_pending + acc.credits_posted > acc.debits_posted:
            violations.append(Violation("flagged_not_negative", acc.id, "credits exceed debits"))
    for account_id in replayed:
        violations.append(Violation("balances_equal_journal_replay", account_id, "journal names an unknown account"))
    for asset, (dp, dpo, cp, cpo) in sorted(sums.items()):
        if dpo != cpo:
            violations.append(Violation("conservation_posted", asset, f"debits {dpo} != credits {cpo}"))
        if dp != cp:
            violations.append(Violation("conservation_pending", asset, f"debits {dp} != credits {cp}"))
    for pid, state in pending_states.items():
        seen = resolutions.get(pid, [])
        expected = 0 if state is PendingState.PENDING else 1
        if len(seen) != expected:
            violations.append(Violation("holds_resolved_once", pid,
                                        f"state {state.value} but {len(seen)} resolutions in journal"))
    return violations
