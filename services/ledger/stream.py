"""A bounded journal for :class:`~services.ledger.memory.InMemoryLedger`: committed transfers are
handed to a sink in batches, checked as they go, and then dropped unless something may still refer
to them.

A ledger that keeps its whole journal grows by every transfer it ever commits; a simulation of a
million payments commits about fifteen million. With a stream (opt-in, see
:meth:`InMemoryLedger.stream_journal`) the journal leaves memory in commit order, in batches, and
the ledger keeps only what can still be asked for:

* every account and its balances (the books);
* every hold still pending, and its state (it can be posted, voided or expire);
* transfers under a *retention key* its owner still calls live: the owner (the simulation's chain)
  keeps a payment's ids while a replay of them can still happen and releases the key when it cannot
  (the argument is the owner's: :mod:`services.bounded_books` makes it for the simulation).

Everything else is dropped once it has reached the sink: a replay of a dropped id would be booked as
new, which is why only the owner may decide what is retained.

The journal-replay invariant ("stored balances equal a replay of the journal") is checked per batch
instead of once over the whole journal: when a batch leaves, every account it names or that
changed since the previous batch must hold exactly its balance at that previous batch (kept
copy-on-write: the engine replaces a committed account with a new object, so the old one is that
snapshot) plus what the batch's transfers add up to. By induction over the batches the stored
balances equal a replay of everything streamed, which is what the whole-journal check states. A
balance changed behind the ledger's back (not by a commit, so not in a batch) would escape that, so
a running fingerprint of every checked balance (a sum over accounts of a per-account weight times
the balances, modulo a 61-bit prime) is compared at the end with the same sum over all accounts:
any such change shows, without naming the account.
Holds are checked the same way: a resolution must name a hold committed before it, a hold resolves
at most once (counted while the hold is kept), and a dropped hold's state must agree with the one
resolution it had. The per-account rules that need no journal (no negative balance, the flags,
conservation per asset) run over the accounts at the end, as :func:`~services.ledger.engine.check_balances`
does. ``tests/test_sim_memory.py`` holds both checks to the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from services.ledger.model import Account, AccountFlags, PendingState, Transfer, TransferFlags, Violation

__all__ = ["JournalSink", "JournalStream", "RetentionKey"]

JournalSink = Callable[[int, list[Transfer]], None]
"""Receives the journal in commit order: the sequence number of the batch's first transfer (0 for
the first one ever committed), then the transfers."""

RetentionKey = Callable[[Transfer], "str | None"]
"""The live key a transfer is retained under, or ``None`` when it may be dropped once streamed."""

_PEND = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_RESOLVES = int(TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING | TransferFlags.EXPIRE_PENDING)
_DNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_PENDING = PendingState.PENDING
_NO_DELTA = (0, 0, 0, 0)
_P = (1 << 61) - 1  # the fingerprint's modulus (a Mersenne prime)
_B = 1_000_003  # combines an account's four balances into one number


def _weighed(account_id: str, dp: int, dpo: int, cp: int, cpo: int) -> int:
    """One account's term in the fingerprint (the weight is the id's hash: fixed within a process)."""
    return (hash(account_id) % _P) * (((cpo * _B + cp) * _B + dpo) * _B + dp) % _P


class JournalStream:
    """The streaming state of one ledger. It works on the ledger's own dicts (the same objects for
    the ledger's lifetime), so the ledger's commands stay as they are. Start it with
    :meth:`InMemoryLedger.stream_journal`: what the ledger committed before is the first batch, and
    its accounts are checked against zero balances, as a replay from the start would."""

    __slots__ = ("accounts", "before", "exported", "fingerprint", "key", "outbox", "pending", "resolutions",
                 "retained", "sink", "transfers", "violations")

    def __init__(
        self, transfers: dict[str, Transfer], pending: dict[str, PendingState],
        accounts: dict[str, Account], sink: JournalSink, key: RetentionKey,
    ) -> None:
        self.transfers = transfers
        self.pending = pending
        self.accounts = accounts
        self.sink = sink
        self.key = key
        self.outbox: list[Transfer] = list(transfers.values())  # committed, not yet streamed
        self.exported = 0  # transfers streamed so far: the journal's length minus the outbox
        # account id -> the account as it stood at the previous batch (only accounts changed since)
        self.before: dict[str, Account] = {aid: _zeroed(acc) for aid, acc in accounts.items()}
        self.retained: dict[str, list[str]] = {}  # live key -> streamed transfer ids kept for it
        self.resolutions: dict[str, int] = {}  # kept hold id -> resolutions streamed
        self.violations: list[Violation] = []  # found by the batches so far
        self.fingerprint = 0  # of every balance as the batches left it (zero: all accounts empty)

    # -- the ledger's commit hook ----------------------------------------------------------------
    def note_changes(self, changed: Iterable[str]) -> None:
        """Before committed accounts are replaced: keep each one's state as of the last batch."""
        before, accounts = self.before, self.accounts
        for aid in changed:
            if aid not in before:
                before[aid] = accounts[aid]

    # -- batches ---------------------------------------------------------------------------------
    def flush(self, released: Iterable[str] = ()) -> int:
        """Check and stream what was committed since the last batch, then drop what nothing may
        refer to: streamed transfers whose key is not live, those kept for a ``released`` key, and
        resolved holds. Returns how many transfers were streamed."""
        batch = self.outbox
        if batch or self.before:
            self._verify(batch)
        if batch:
            self.outbox = []
            seq = self.exported
            self.exported += len(batch)
            self.sink(seq, batch)
        retained = self.retained
        for k in released:
            for tid in retained.pop(k, ()):
                self._drop(tid)
        key, transfers, pending = self.key, self.transfers, self.pending
        for t in batch:
            live = key(t)
            if live is not None:
                kept = retained.get(live)
                if kept is None:
                    retained[live] = [t.id]
                else:
                    kept.append(t.id)
                continue
            if t.id in pending:
                self._drop(t.id)
            else:  # the common case: not a hold, streamed in this batch, so still here
                del transfers[t.id]
            if int(t.flags) & _RESOLVES:
                hold = transfers.get(t.pending_id)  # kept while it was pending: now it may go too
                if hold is not None and key(hold) is None:
                    self._drop(hold.id)
        return len(batch)

    def _drop(self, tid: str) -> None:
        state = self.pending.get(tid)
        if state is _PENDING or tid not in self.transfers:
            return  # a hold still pending stays (its resolution drops it); a dropped one is gone
        del self.transfers[tid]
        if state is not None:  # a resolved hold: it leaves with the one resolution it must have had
            del self.pending[tid]
            seen = self.resolutions.pop(tid, 0)
            if seen != 1:
                self.violations.append(Violation("holds_resolved_once", tid,
                                                 f"state {state.value} but {seen} resolutions in journal"))

    def _verify(self, batch: list[Transfer]) -> None:
        """The batch against the balances, as a replay of it on top of the previous batch."""
        delta = self._replay(batch)
        violations, before, accounts = self.violations, self.before, self.accounts
        fingerprint = self.fingerprint
        for aid in [*before, *(a for a in delta if a not in before)]:
            acc = accounts.get(aid)
            if acc is None:
                violations.append(Violation("balances_equal_journal_replay", aid, "journal names an unknown account"))
                continue
            base = before.get(aid, acc)
            d = delta.get(aid, _NO_DELTA)
            replayed = [base.debits_pending + d[0], base.debits_posted + d[1],
                        base.credits_pending + d[2], base.credits_posted + d[3]]
            stored = [acc.debits_pending, acc.debits_posted, acc.credits_pending, acc.credits_posted]
            if stored != replayed:
                violations.append(Violation("balances_equal_journal_replay", aid,
                                            f"stored {stored} != replayed {replayed}"))
            if base is not acc:  # the fingerprint is linear: add the change
                fingerprint += _weighed(aid, stored[0] - base.debits_pending, stored[1] - base.debits_posted,
                                        stored[2] - base.credits_pending, stored[3] - base.credits_posted)
        self.fingerprint = fingerprint % _P
        before.clear()

    def _replay(self, batch: list[Transfer]) -> dict[str, list[int]]:
        """What the batch adds to each account's four balances (the rules of
        :func:`~services.ledger.engine.replay_journal`), checking each resolution against its hold."""
        violations, resolutions, transfers = self.violations, self.resolutions, self.transfers
        delta: dict[str, list[int]] = {}
        holds_here: dict[str, int] = {}  # hold id -> its index in this batch
        for i, t in enumerate(batch):
            dr = delta.get(t.debit_account_id)
            if dr is None:
                dr = delta[t.debit_account_id] = [0, 0, 0, 0]
            cr = delta.get(t.credit_account_id)
            if cr is None:
                cr = delta[t.credit_account_id] = [0, 0, 0, 0]
            tf = int(t.flags)
            if tf & _PEND:
                holds_here[t.id] = i
                dr[0] += t.amount
                cr[2] += t.amount
            elif tf & _RESOLVES:
                p = transfers.get(t.pending_id)
                if p is None or not int(p.flags) & _PEND or holds_here.get(p.id, -1) > i:
                    # Not a hold committed before it (a dropped hold has been resolved already).
                    violations.append(Violation("holds_resolved_once", t.id, f"resolves unknown hold {t.pending_id}"))
                    continue
                seen = resolutions.get(p.id, 0) + 1
                resolutions[p.id] = seen
                if seen > 1:
                    violations.append(Violation("holds_resolved_once", p.id, f"resolved {seen} times"))
                posted = t.amount if tf & _POST else 0
                if posted > p.amount:
                    violations.append(Violation("posted_le_held", p.id, f"posted {posted} > held {p.amount}"))
                dr[0] -= p.amount
                cr[2] -= p.amount
                dr[1] += posted
                cr[3] += posted
            else:
                dr[1] += t.amount
                cr[3] += t.amount
        return delta

    # -- the end -----------------------------------------------------------------------------------
    def check(self) -> list[Violation]:
        """Every invariant over the streamed journal (call after :meth:`flush`): what the batches
        found, then the rules over the accounts and the holds still kept."""
        violations = list(self.violations)
        sums: dict[str, list[int]] = {}
        fingerprint = 0
        for acc in self.accounts.values():
            s = sums.get(acc.asset)
            if s is None:
                s = sums[acc.asset] = [0, 0, 0, 0]
            bal = [acc.debits_pending, acc.debits_posted, acc.credits_pending, acc.credits_posted]
            for i, v in enumerate(bal):
                s[i] += v
            fingerprint += _weighed(acc.id, *bal)
            if min(bal) < 0:
                violations.append(Violation("no_negative_balance_fields", acc.id, f"balances {bal}"))
            flags = int(acc.flags)
            if flags & _DNEC and acc.debits_pending + acc.debits_posted > acc.credits_posted:
                violations.append(Violation("flagged_not_negative", acc.id, "debits exceed credits"))
            if flags & _CNED and acc.credits_pending + acc.credits_posted > acc.debits_posted:
                violations.append(Violation("flagged_not_negative", acc.id, "credits exceed debits"))
        if fingerprint % _P != self.fingerprint:
            violations.append(Violation("balances_equal_journal_replay", "accounts",
                                        "a balance changed outside the journal (the running fingerprint differs)"))
        for asset, (dp, dpo, cp, cpo) in sorted(sums.items()):
            if dpo != cpo:
                violations.append(Violation("conservation_posted", asset, f"debits {dpo} != credits {cpo}"))
            if dp != cp:
                violations.append(Violation("conservation_pending", asset, f"debits {dp} != credits {cp}"))
        for pid, state in self.pending.items():
            seen = self.resolutions.get(pid, 0)
            expected = 0 if state is _PENDING else 1
            if seen != expected:
                violations.append(Violation("holds_resolved_once", pid,
                                            f"state {state.value} but {seen} resolutions in journal"))
        return violations


def _zeroed(acc: Account) -> Account:
    """``acc`` with no balances: how it stood before its first transfer."""
    return Account(acc.id, acc.asset, acc.owner, acc.kind, acc.flags, timestamp=acc.timestamp)
