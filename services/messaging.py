"""Money messages between parties, and the transport that carries them.

Between parties money moves only as messages with an id (design.md §3): "pay 12,345.67 KZT from the
exchange to the issuer for sale S". Each receiver books its own half and forwards the message to the
next hop (payer's bank → payee's bank → payee); a message it has already booked books nothing, but
is forwarded again, so a retry from the start repairs a chain that broke half way.

:class:`Transport` is the seam between the in-process chain (tests, simulation) and live mode, where
an HTTP transport posts the same message to the receiving party's service. The in-process one can be
told to lose or duplicate messages, which is how the tests produce the failures the reconciliation
must find.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.frozen import quick_init
from services.ledger import LedgerRepository, Transfer

__all__ = [
    "Handler",
    "InProcessTransport",
    "PaymentMessage",
    "Purpose",
    "Transport",
    "book_half",
]


class Purpose(StrEnum):
    """Why money moves; the ``code`` of every transfer that books a half of the message."""

    PROCEEDS = "proceeds"  # exchange → issuer: tenge from a sale, credited to the card
    REBUY = "rebuy"  # issuer → exchange: an orphaned sale's tenge goes back to buy the crypto
    CARD_LOAD = "card_load"  # cardholder's bank account → issuer: tenge put on the card
    SETTLEMENT_IN = "settlement_in"  # a participant with a negative net position → network
    SETTLEMENT_OUT = "settlement_out"  # network → a participant with a positive net position
    MERCHANT_PAYOUT = "merchant_payout"  # acquirer → merchant's bank account
    CONVERSION = "conversion"  # exchange → merchant's bank account: a direct merchant's crypto sold
    DIRECT_PAYMENT = "direct_payment"  # holder's wallet → merchant's wallet, on the exchange's books
    DIRECT_REFUND = "direct_refund"  # merchant's wallet → holder's wallet: a direct payment refunded


@quick_init
@dataclass(frozen=True, slots=True)
class PaymentMessage:
    """One payment order; ``id`` is the idempotency key at every hop, ``ref`` what it pays for."""

    id: str
    purpose: Purpose
    payer: str  # party id, e.g. "exchange", "issuer", "merchant:m-17"
    payee: str
    payer_bank: str
    payee_bank: str
    amount_kzt: int
    ref: str = ""


Handler = Callable[[PaymentMessage], bool]


def book_half(ledger: LedgerRepository, transfer_id: str, debit: str, credit: str, msg: PaymentMessage) -> bool:
    """Book one party's half of ``msg``: a KZT transfer coded with the message's purpose and carrying
    its id, which is how reconciliation finds the halves in every journal. ``True`` when booked now
    or already (a replayed message books nothing)."""
    t = Transfer(transfer_id, debit, credit, msg.amount_kzt, "KZT", code=msg.purpose.value, user_data=msg.id)
    return ledger.create_transfers([t])[0].ok


class Transport(Protocol):
    """Delivers a message to a named receiver; ``True`` when the receiver (and every later hop)
    acknowledged it. ``False`` means the sender does not know what happened and may retry."""

    def send(self, receiver: str, message: PaymentMessage) -> bool: ...


class InProcessTransport:
    """Delivers by calling the receiver's handler; can lose or duplicate the next messages.

    ``drop(n)`` loses the next ``n`` deliveries (to ``receiver`` if given): the handler is not
    called and ``send`` returns ``False``. ``duplicate(n)`` delivers the next ``n`` twice.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._drop: dict[str | None, int] = {}
        self._duplicate: dict[str | None, int] = {}
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0

    def register(self, receiver: str, handler: Handler) -> None:
        if receiver in self._handlers:
            raise ValueError(f"receiver {receiver!r} registered twice")
        self._handlers[receiver] = handler

    def drop(self, count: int = 1, receiver: str | None = None) -> None:
        self._drop[receiver] = self._drop.get(receiver, 0) + count

    def duplicate(self, count: int = 1, receiver: str | None = None) -> None:
        self._duplicate[receiver] = self._duplicate.get(receiver, 0) + count

    def send(self, receiver: str, message: PaymentMessage) -> bool:
        handler = self._handlers.get(receiver)
        if handler is None:
            raise KeyError(f"no receiver {receiver!r} for message {message.id}")
        if self._drop and (self._take(self._drop, receiver) or self._take(self._drop, None)):
            self.dropped += 1
            return False
        twice = bool(self._duplicate) and (self._take(self._duplicate, receiver) or self._take(self._duplicate, None))
        self.delivered += 1
        ok = handler(message)
        if twice:
            self.duplicated += 1
            ok = handler(message) and ok
        return ok

    @staticmethod
    def _take(counts: dict[str | None, int], key: str | None) -> bool:
        left = counts.get(key, 0)
        if left <= 0:
            return False
        if left == 1:
            del counts[key]
        else:
            counts[key] = left - 1
        return True
