"""Replay every party's journal from ``results.db`` with nothing but the rules of double entry.

This module deliberately imports nothing of ccsim's ledger, parties or reconciliation: it reads the
``transfers`` and ``accounts`` tables with ``sqlite3`` and re-derives, by its own short code,

- each account's four balances, compared with what the party's ledger held at the end of the run;
- debits = credits: per party and asset, posted debits and posted credits add up to the same total;
- holds: every pending transfer resolved (posted, voided or expired) at most once, a post never
  above the hold, a resolution never of an unknown hold;
- limits: no account flagged "debits must not exceed credits" (or the reverse) ever went past it,
  checked after each committed batch of linked transfers;
- conservation: the tenge in the banks' reserves is the tenge deposited from outside, and for each
  asset the exchange's custody holds exactly what its wallets and house accounts are owed;
- the reconciliation: every message between parties booked by each side that should book it, for
  the same amount.

Each finding is a line naming the party, the account or message, and what differs.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple

__all__ = ["LedgerReplay", "replay_ledgers"]

_LINKED, _PENDING, _POST, _VOID, _EXPIRE = 1, 2, 4, 8, 16
_DNEC, _CNED = 1, 2  # account flags: debits must not exceed credits; credits must not exceed debits
_MAX_FINDINGS: Final = 50  # per check: enough to act on, bounded for a broken run of millions

_PAYMENT: Final = frozenset({"payer", "payer_bank", "payee_bank", "payee"})
_PRESENTMENT: Final = frozenset({"issuer", "network", "acquirer"})
# Which sides must book a message, by its purpose (the transfer's code).
_SIDES: Final = {
    "proceeds": _PAYMENT, "rebuy": _PAYMENT, "settlement_in": _PAYMENT, "settlement_out": _PAYMENT,
    "card_load": _PAYMENT - {"payer"}, "merchant_payout": _PAYMENT - {"payee"},
    # The direct rail: a conversion's tenge reaches a zone merchant that keeps books; an on-exchange
    # transfer is booked by the exchange (both wallets) and the merchant.
    "conversion": _PAYMENT, "direct_payment": frozenset({"exchange", "merchant"}),
    "direct_refund": frozenset({"exchange", "merchant"}),
}
_PRESENTMENT_CODES: Final = frozenset({"capture", "refund", "chargeback"})


@dataclass
class _Acct:
    asset: str
    flags: int
    dp: int = 0  # debits pending
    dpo: int = 0  # debits posted
    cp: int = 0  # credits pending
    cpo: int = 0  # credits posted


@dataclass
class LedgerReplay:
    """What the replay found: per check, its findings (empty: the check holds)."""

    transfers: int = 0
    findings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    checked: list[str] = field(default_factory=list)

    def add(self, check: str, finding: str) -> None:
        found = self.findings[check]
        if len(found) < _MAX_FINDINGS:
            found.append(finding)
        elif len(found) == _MAX_FINDINGS:
            found.append("… more not shown")


def _accounts(conn: sqlite3.Connection) -> dict[str, dict[str, tuple[str, int, int, int, int, int, str]]]:
    out: dict[str, dict[str, tuple[str, int, int, int, int, int, str]]] = defaultdict(dict)
    for party, aid, asset, kind, flags, dp, dpo, cp, cpo in conn.execute(
            "SELECT party, account_id, asset, kind, flags, debits_pending, debits_posted, credits_pending, "
            "credits_posted FROM accounts"):
        out[party][aid] = (asset, int(flags), int(dp), int(dpo), int(cp), int(cpo), kind)
    return out


class _T(NamedTuple):
    """One journal row."""

    party: str
    tid: str
    dr: str
    cr: str
    amount: int
    asset: str
    code: str
    flags: int
    pid: str
    user: str


def _journal(conn: sqlite3.Connection) -> Iterator[_T]:
    for party, tid, dr, cr, amount, asset, code, flags, pid, user in conn.execute(
            "SELECT party, transfer_id, debit_account_id, credit_account_id, amount_minor, asset, code, flags, "
            "pending_id, user_data FROM transfers ORDER BY party, seq"):
        yield _T(party, tid, dr, cr, int(amount), asset, code, int(flags), pid, user)


def _over_limit(a: _Acct) -> str | None:
    if a.flags & _DNEC and a.dpo + a.dp > a.cpo:
        return f"debits {a.dpo} + pending {a.dp} exceed credits {a.cpo}"
    if a.flags & _CNED and a.cpo + a.cp > a.dpo:
        return f"credits {a.cpo} + pending {a.cp} exceed debits {a.dpo}"
    return None


class _Party:
    """One party's books being replayed."""

    def __init__(self, name: str, recorded: dict[str, tuple[str, int, int, int, int, int, str]],
                 out: LedgerReplay) -> None:
        self.name, self.out = name, out
        self.accts = {aid: _Acct(r[0], r[1]) for aid, r in recorded.items()}
        self.holds: dict[str, tuple[str, str, int]] = {}  # pending id -> (debit, credit, amount)
        self.resolved: dict[str, str] = {}  # pending id -> the transfer that resolved it
        self.touched: list[_Acct] = []  # accounts changed since the last committed batch

    def _acct(self, aid: str, asset: str, tid: str) -> _Acct:
        a = self.accts.get(aid)
        if a is None:
            self.out.add("balances", f"{self.name}: transfer {tid} uses account {aid}, which the party does not have")
            a = self.accts[aid] = _Acct(asset, 0)
        return a

    def apply(self, t: _T) -> None:
        tid, amount, flags = t.tid, t.amount, t.flags
        d, c = self._acct(t.dr, t.asset, tid), self._acct(t.cr, t.asset, tid)
        if t.asset not in {d.asset, c.asset} or d.asset != c.asset:
            self.out.add("balances", f"{self.name}: transfer {tid} in {t.asset} between accounts of another asset")
        if flags & (_POST | _VOID | _EXPIRE):
            self._resolve(t, d, c)
        elif flags & _PENDING:
            if tid in self.holds:
                self.out.add("holds", f"{self.name}: hold {tid} placed twice")
            self.holds[tid] = (t.dr, t.cr, amount)
            d.dp += amount
            c.cp += amount
        else:
            d.dpo += amount
            c.cpo += amount
        self.touched += (d, c)
        if not flags & _LINKED:  # the end of a committed batch: the limits must hold now
            for a in self.touched:
                problem = _over_limit(a)
                if problem:
                    name = next(k for k, v in self.accts.items() if v is a)
                    self.out.add("limits", f"{self.name}: {name} after {tid}: {problem}")
            self.touched = []

    def _resolve(self, t: _T, d: _Acct, c: _Acct) -> None:
        tid, pid, amount = t.tid, t.pid, t.amount
        hold = self.holds.get(pid)
        if hold is None:
            self.out.add("holds", f"{self.name}: {tid} resolves {pid!r}, which was never held")
            return
        if pid in self.resolved:
            self.out.add("holds", f"{self.name}: hold {pid} resolved twice ({self.resolved[pid]}, {tid})")
            return
        self.resolved[pid] = tid
        hdr, hcr, held = hold
        if (hdr, hcr) != (t.dr, t.cr):
            self.out.add("holds", f"{self.name}: {tid} resolves {pid} on other accounts")
        d.dp -= held
        c.cp -= held
        if t.flags & _POST:
            if amount > held:
                self.out.add("holds", f"{self.name}: {tid} posts {amount}, more than the hold {pid} of {held}")
            d.dpo += amount
            c.cpo += amount

    def finish(self, recorded: dict[str, tuple[str, int, int, int, int, int, str]]) -> None:
        for aid, a in self.accts.items():
            r = recorded.get(aid)
            replayed = (a.dp, a.dpo, a.cp, a.cpo)
            if r is None:
                self.out.add("balances", f"{self.name}: account {aid} is in the journal but not in the books")
            elif replayed != r[2:6]:
                self.out.add("balances", f"{self.name}: {aid} replays to (pending, posted) debits "
                                         f"{a.dp}, {a.dpo}, credits {a.cp}, {a.cpo}; the books say {r[2]}, {r[3]}, "
                                         f"{r[4]}, {r[5]}")
        by_asset: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in recorded.values():
            by_asset[r[0]][0] += r[3]
            by_asset[r[0]][1] += r[5]
        for asset, (debits, credits) in sorted(by_asset.items()):
            if debits != credits:
                self.out.add("debits = credits",
                             f"{self.name} {asset}: debits posted {debits} != credits posted {credits}")


def _conservation(books: dict[str, dict[str, tuple[str, int, int, int, int, int, str]]],
                  deposits_kzt: int, out: LedgerReplay) -> None:
    reserves = sum(r[3] - r[5] for accts in books.values() for aid, r in accts.items()
                   if aid == "reserve:KZT")
    if reserves != deposits_kzt:
        out.add("conservation",
                f"tenge: the banks' reserves hold {reserves}, deposits from outside were {deposits_kzt}")
    exchange = next((accts for accts in books.values() if any(a.startswith("custody:") for a in accts)), {})
    for aid, r in sorted(exchange.items()):
        if not aid.startswith("custody:"):
            continue
        asset = r[0]
        owed = sum(o[5] - o[3] for oid, o in exchange.items() if o[0] == asset and oid != aid)
        held = r[3] - r[5]
        if held != owed:
            out.add("conservation", f"{asset}: custody holds {held}, wallets and house are owed {owed}")


def _halves(kind: str, t: _T) -> Iterator[tuple[str, str, str, int]]:
    """(message id, purpose, side, amount) for each side of a message this transfer books."""
    tid, code, amount, user = t.tid, t.code, t.amount, t.user
    role = tid.rpartition(":")[2]
    if kind == "exchange":
        if code == "payout" and role == "payout":
            message = tid.removesuffix(":payout")
            yield message, "conversion" if message.startswith("conv:") else "proceeds", "payer", amount
        elif code == "rebuy" and role == "return":
            yield tid.removesuffix(":return"), "rebuy", "payee", amount
        elif code in ("direct_payment", "direct_refund") and role == "direct":
            yield tid.removesuffix(":direct"), code, "exchange", amount
        return
    if kind == "merchants":  # the zone merchants' books (the direct rail)
        if code == "conversion" and role == "recv":
            yield user, code, "payee", amount
        elif (code, role) in (("direct_payment", "recv"), ("direct_refund", "pay")):
            yield user, code, "merchant", amount
        return
    if kind == "bank":
        if code in _SIDES:
            sides = {"out": ("payer_bank",), "in": ("payee_bank",), "int": ("payer_bank", "payee_bank")}.get(role, ())
            for side in sides:
                yield user, code, side, amount
        return
    if code in _SIDES and role in ("pay", "recv"):
        yield user, code, "payer" if role == "pay" else "payee", amount
    elif code in _PRESENTMENT_CODES and role in ("present", "post"):
        yield user, code, kind, amount


def replay_ledgers(conn: sqlite3.Connection) -> LedgerReplay:
    """Replay every journal in ``conn`` (a results.db); see the module docstring for the checks."""
    out = LedgerReplay()
    books = _accounts(conn)
    parties: dict[str, _Party] = {}
    kinds = {p: _kind(p, accts) for p, accts in books.items()}
    halves: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    purposes: dict[str, str] = {}
    deposits = 0
    for t in _journal(conn):
        out.transfers += 1
        book = parties.get(t.party)
        if book is None:
            book = parties[t.party] = _Party(t.party, books.get(t.party, {}), out)
        book.apply(t)
        if kinds.get(t.party) == "bank" and t.dr == "reserve:KZT" and t.tid.endswith(":deposit"):
            deposits += t.amount
        for message, purpose, side, value in _halves(kinds.get(t.party, ""), t):
            halves[message][side].append(value)
            purposes.setdefault(message, purpose)
    for party, book in parties.items():
        book.finish(books.get(party, {}))
    _conservation(books, deposits, out)
    for message, by_side in halves.items():
        purpose = purposes[message]
        expected = _SIDES.get(purpose, _PRESENTMENT if purpose in _PRESENTMENT_CODES else frozenset())
        missing = sorted(expected - by_side.keys())
        if missing and purpose not in _PRESENTMENT_CODES:  # a presentment may be in an open batch
            out.add("reconciliation", f"{purpose} {message}: not booked by {', '.join(missing)}")
        totals = {side: sum(v) for side, v in by_side.items()}
        if len(set(totals.values())) > 1:
            out.add("reconciliation", f"{purpose} {message}: amounts differ {dict(sorted(totals.items()))}")
    out.checked = ["balances", "debits = credits", "holds", "limits", "conservation", "reconciliation"]
    return out


def _kind(party: str, accts: dict[str, tuple[str, int, int, int, int, int, str]]) -> str:
    """The role a party plays, read from its books: a bank has a reserve, the exchange custody."""
    if "reserve:KZT" in accts:
        return "bank"
    if any(a.startswith("custody:") for a in accts):
        return "exchange"
    role = party.split("-", maxsplit=1)[0]  # issuer, network, acq-N: the presentment side is the party's role
    return "acquirer" if role == "acq" else role
