"""The id protocol: how a transfer's id names the message and the step it books.

Every money message carries an id chosen by its sender (a sale id, ``<window>:<party>:in`` …), and
each party books its half of it under that id plus one last segment — the :class:`Step` — so a
replay finds the same transfer, and the reconciliation reads from a journal which half of which
message each transfer is (:mod:`services.reconciliation`). Ids of the payment's own steps (its sale,
its hold, a re-buy) derive from the authorization id. Build and read ids only here.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Step",
    "advice_sale_id",
    "conversion_id",
    "direct_refund_id",
    "hold_id",
    "increment_sale_id",
    "is_conversion",
    "message_of",
    "rebuy_id",
    "sale_id",
    "step_of",
    "transfer_id",
]


class Step(StrEnum):
    """The last segment of a transfer id."""

    PAY = "pay"  # issuer, network or acquirer: its half of a message it pays
    RECV = "recv"  # issuer, network or acquirer: its half of a message it receives
    OUT = "out"  # the payer's bank: the payer's deposit out to the reserve
    IN = "in"  # the payee's bank: the reserve into the payee's deposit
    INTERNAL = "int"  # one bank for both: deposit to deposit
    PAYOUT = "payout"  # the exchange pays a sale's net proceeds out of its bank account
    RETURN = "return"  # the exchange takes a re-buy's tenge back in
    PRESENT = "present"  # a presentment booked by the network or an acquirer (or a refund at the issuer)
    POST = "post"  # the issuer posts (captures) a hold
    VOID = "void"  # the issuer releases a hold
    DIRECT = "direct"  # the exchange moves a direct payment (or its refund) between two wallets


def transfer_id(message_id: str, step: Step) -> str:
    """The id under which one party books ``step`` of ``message_id``."""
    return f"{message_id}:{step.value}"


def step_of(transfer: str) -> str:
    """The last segment of a transfer id (a :class:`Step` value, or another suffix)."""
    return transfer.rpartition(":")[2]


def message_of(transfer: str, step: Step) -> str:
    """The message id a transfer booked under ``step`` belongs to."""
    return transfer.removesuffix(f":{step.value}")


def sale_id(auth_id: str) -> str:
    """The sale an authorization asks the exchange for (its proceeds message has the same id)."""
    return f"{auth_id}:sale"


def advice_sale_id(auth_id: str) -> str:
    """The sale that covers a stand-in approval's shortfall when the advice is applied."""
    return f"{auth_id}:advice-sale"


def increment_sale_id(auth_id: str, increment: int) -> str:
    """The sale behind the ``increment``-th incremental authorization."""
    return f"{auth_id}:inc{increment}:sale"


def rebuy_id(sale: str) -> str:
    """The message that sends an orphaned sale's tenge back to the exchange."""
    return f"{sale}:rebuy"


def hold_id(auth_id: str) -> str:
    """The card's pending hold for an approval."""
    return f"{auth_id}:hold"


def conversion_id(merchant_id: str, seq: int) -> str:
    """A merchant's ``seq``-th conversion of received crypto into tenge (a sale at the exchange whose
    proceeds message to the merchant's bank account has the same id)."""
    return f"conv:{merchant_id}:{seq}"


def is_conversion(message_id: str) -> bool:
    """Whether a sale's proceeds go to a merchant (a conversion) rather than to a card."""
    return message_id.startswith("conv:")


def direct_refund_id(invoice_id: str, seq: int) -> str:
    """The ``seq``-th refund of a direct payment."""
    return f"{invoice_id}:refund{seq}"
