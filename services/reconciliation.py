"""Cross-party reconciliation: every message booked by every party that should book it, for the
same amount.

Each party books its own half of a message on its own ledger (design.md §3), tagging the transfer
with the message id (``user_data``), the purpose (``code``) and its role in the transfer id's last
segment. The reconciliation reads the halves back out of each party's journal — the books, not a
side list of what was meant to happen — groups them by message id, and reports each break as a
:class:`~services.contracts.ReconciliationBreak`:

* ``one_side_only`` — some of the expected sides booked the message, others did not (a lost
  message, a crash between two halves, a sale whose proceeds never arrived);
* ``amount_differs`` — the sides booked different amounts.

Expected sides by purpose: a payment is booked by the payer, the payer's bank, the payee's bank and
the payee (cardholders keep no books, nor do merchants on the card rail, so their side is not
expected); a presentment (capture, refund, chargeback) by the issuer, the network and the acquirer.
On the direct rail a zone merchant keeps books: a conversion's tenge is a payment booked by all four
sides, and an on-exchange transfer (a direct payment or its refund) by the exchange and the merchant.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import NamedTuple

from services.contracts import ReconciliationBreak
from services.ids import Step, is_conversion, message_of, step_of
from services.ledger import Transfer
from services.messaging import Purpose
from services.network.presentment import PresentmentKind

__all__ = [
    "EXPECTED_SIDES",
    "Half",
    "bank_halves",
    "exchange_halves",
    "merchant_halves",
    "party_halves",
    "reconcile",
]

_PAYMENT = frozenset({"payer", "payer_bank", "payee_bank", "payee"})
_PRESENTMENT = frozenset({"issuer", "network", "acquirer"})

EXPECTED_SIDES: Mapping[str, frozenset[str]] = {
    Purpose.PROCEEDS.value: _PAYMENT,
    Purpose.REBUY.value: _PAYMENT,
    Purpose.SETTLEMENT_IN.value: _PAYMENT,
    Purpose.SETTLEMENT_OUT.value: _PAYMENT,
    Purpose.CARD_LOAD.value: _PAYMENT - {"payer"},  # the cardholder keeps no books
    Purpose.MERCHANT_PAYOUT.value: _PAYMENT - {"payee"},  # nor does the merchant (on the card rail)
    # The direct rail: a zone merchant keeps books of its wallets and conversions (services.merchant).
    Purpose.CONVERSION.value: _PAYMENT,
    # On-exchange transfers: the exchange books both wallets (the holder keeps no books), the
    # merchant its half.
    Purpose.DIRECT_PAYMENT.value: frozenset({"exchange", "merchant"}),
    Purpose.DIRECT_REFUND.value: frozenset({"exchange", "merchant"}),
    **{kind.value: _PRESENTMENT for kind in PresentmentKind},
}


class Half(NamedTuple):
    """One party's booking of one message (a named tuple: a run reads one per booked transfer)."""

    message_id: str
    purpose: str
    side: str
    party: str
    amount_kzt: int


def _halves(
    party: str,
    journal: Iterable[Transfer],
    codes: Collection[str],
    roles: Mapping[str, tuple[str, ...]],
) -> Iterator[Half]:
    """The halves ``party`` booked: the transfer id's last segment names the role(s), the
    ``user_data`` the message."""
    no_role: tuple[str, ...] = ()
    for t in journal:
        if t.code not in codes:
            continue
        for side in roles.get(t.id.rpartition(":")[2], no_role):  # the step (services.ids), inline: per transfer
            yield Half(t.user_data, t.code, side, party, t.amount)


def bank_halves(bank_id: str, journal: Iterable[Transfer]) -> Iterator[Half]:
    """A bank books ``{id}:out`` (payer's bank), ``{id}:in`` (payee's) or ``{id}:int`` (both)."""
    return _halves(bank_id, journal, _PAYMENT_CODES, _BANK_ROLES)


def party_halves(party: str, role: str, journal: Iterable[Transfer]) -> Iterator[Half]:
    """Issuer, network, acquirer: ``{id}:pay`` (payer), ``{id}:recv`` (payee); presentments are
    booked under ``role`` (the issuer's capture is its post of the hold, ``{hold}:post``)."""
    roles: dict[str, tuple[str, ...]] = {
        Step.PAY: ("payer",), Step.RECV: ("payee",), Step.PRESENT: (role,), Step.POST: (role,)}
    return _halves(party, journal, _EXPECTED_CODES, roles)


def exchange_halves(party: str, journal: Iterable[Transfer]) -> Iterator[Half]:
    """The exchange pays proceeds out as ``{sale}:payout`` and takes a re-buy's tenge back in as
    ``{rebuy}:return``; the message id is the transfer id without that suffix."""
    for t in journal:
        step = step_of(t.id)
        if t.code == "payout" and step == Step.PAYOUT:
            message = message_of(t.id, Step.PAYOUT)
            purpose = Purpose.CONVERSION if is_conversion(message) else Purpose.PROCEEDS
            yield Half(message, purpose.value, "payer", party, t.amount)
        elif t.code == "rebuy" and step == Step.RETURN:
            yield Half(message_of(t.id, Step.RETURN), Purpose.REBUY.value, "payee", party, t.amount)
        elif step == Step.DIRECT and t.code in _DIRECT_CODES:
            yield Half(message_of(t.id, Step.DIRECT), t.code, "exchange", party, t.amount)


def merchant_halves(party: str, journal: Iterable[Transfer]) -> Iterator[Half]:
    """The zone merchants' books: ``{id}:recv`` for a direct payment or a conversion's tenge,
    ``{id}:pay`` for a refund paid back (services.merchant)."""
    for t in journal:
        if t.code not in _MERCHANT_CODES:
            continue
        step = step_of(t.id)
        if step == Step.RECV or (step == Step.PAY and t.code == Purpose.DIRECT_REFUND.value):
            side = "payee" if t.code == Purpose.CONVERSION.value else "merchant"
            yield Half(t.user_data, t.code, side, party, t.amount)


def reconcile(halves: Iterable[Half], in_transit: Collection[str] = ()) -> list[ReconciliationBreak]:
    """Every break among ``halves``; an empty list means every message is booked on every side.

    ``in_transit`` names messages legitimately still on their way (a presentment in an acquirer's
    open batch): their missing sides are not reported, their amounts still must agree.
    """
    grouped: dict[str, dict[str, list[Half]]] = {}
    for half in halves:
        by_side = grouped.get(half.message_id)
        if by_side is None:
            grouped[half.message_id] = {half.side: [half]}
            continue
        same_side = by_side.get(half.side)
        if same_side is None:
            by_side[half.side] = [half]
        else:
            same_side.append(half)
    breaks: list[ReconciliationBreak] = []
    for message_id, by_side in grouped.items():
        purpose = next(iter(by_side.values()))[0].purpose
        expected = EXPECTED_SIDES.get(purpose, frozenset())
        if expected <= by_side.keys() and _one_amount(by_side.values()):
            continue  # the common case: every side booked it, for the same amount
        amounts = {side: sum(h.amount_kzt for h in hs) for side, hs in by_side.items()}
        parties = {side: hs[0].party for side, hs in by_side.items()}
        missing = sorted(expected - by_side.keys())
        if missing and message_id not in in_transit:
            booked = ", ".join(f"{side} ({parties[side]})" for side in sorted(by_side))
            breaks.append(
                ReconciliationBreak(
                    message_id,
                    "one_side_only",
                    f"{purpose}: booked by {booked}; not by {', '.join(missing)}",
                )
            )
        if len(set(amounts.values())) > 1:
            detail = ", ".join(f"{side} ({parties[side]}) {amounts[side]}" for side in sorted(amounts))
            breaks.append(ReconciliationBreak(message_id, "amount_differs", f"{purpose}: {detail}"))
    return breaks


_PAYMENT_CODES = frozenset(p.value for p in Purpose)
_DIRECT_CODES = frozenset({Purpose.DIRECT_PAYMENT.value, Purpose.DIRECT_REFUND.value})
_MERCHANT_CODES = frozenset({Purpose.CONVERSION.value, *_DIRECT_CODES})
_EXPECTED_CODES = frozenset(EXPECTED_SIDES)
_BANK_ROLES: dict[str, tuple[str, ...]] = {
    Step.OUT: ("payer_bank",), Step.IN: ("payee_bank",), Step.INTERNAL: ("payer_bank", "payee_bank")}


def _one_amount(sides: Iterable[list[Half]]) -> bool:
    """Whether every side booked the same total."""
    first: int | None = None
    for hs in sides:
        total = hs[0].amount_kzt if len(hs) == 1 else sum(h.amount_kzt for h in hs)
        if first is None:
            first = total
        elif total != first:
            return False
    return True
