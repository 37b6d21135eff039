"""Ledger entities and result values, in TigerBeetle's model and words.

Two entities: accounts and transfers. Every transfer debits one account and credits another of the
same asset by the same amount, so per asset the sum of debits equals the sum of credits. A pending
transfer reserves the amount (``debits_pending`` / ``credits_pending``) until it is posted (all or
part), voided or expired, exactly once. Transfers are immutable; a correction is another transfer.

Operating errors are result values (ordered enums, the first failing check wins), never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum

from services.frozen import quick_init

__all__ = [
    "Account",
    "AccountFlags",
    "AccountResult",
    "PendingState",
    "Transfer",
    "TransferFlags",
    "TransferResult",
    "Violation",
]


class AccountFlags(IntFlag):
    NONE = 0
    # A liability-style account (a wallet, a card balance): debits incl. pending never exceed credits.
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    # An asset-style account (house custody, a bank's cash): credits never exceed debits.
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class TransferFlags(IntFlag):
    NONE = 0
    LINKED = 1  # this transfer and the next commit together or not at all
    PENDING = 2  # reserve the amount; resolve later with POST_PENDING, VOID_PENDING or expiry
    POST_PENDING = 4  # move (part of) a pending transfer to posted; the rest is released
    VOID_PENDING = 8  # release a pending transfer
    EXPIRE_PENDING = 16  # written by the ledger itself when a pending transfer's timeout passes


_RESOLVING = TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING | TransferFlags.EXPIRE_PENDING


class PendingState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class AccountResult(IntEnum):
    """Result of creating one account; lower values are checked first."""

    OK = 0
    LINKED_EVENT_FAILED = 1
    ID_MUST_NOT_BE_EMPTY = 2
    ID_TOO_LONG = 3
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 4
    ASSET_UNKNOWN = 5
    EXISTS_WITH_DIFFERENT_FLAGS = 6
    EXISTS_WITH_DIFFERENT_ASSET = 7
    EXISTS_WITH_DIFFERENT_OWNER = 8
    EXISTS_WITH_DIFFERENT_KIND = 9
    EXISTS = 10


class TransferResult(IntEnum):
    """Result of creating one transfer; lower values are checked first.

    ``OK`` and ``EXISTS`` (an identical replay) are both success: :meth:`ok` says so.
    """

    OK = 0
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    ID_MUST_NOT_BE_EMPTY = 3
    ID_TOO_LONG = 4
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 5
    EXPIRE_IS_RESERVED_FOR_THE_LEDGER = 6
    PENDING_ID_MUST_BE_EMPTY = 7
    PENDING_ID_REQUIRED = 8
    PENDING_ID_MUST_BE_DIFFERENT = 9
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 10
    TIMEOUT_MUST_NOT_BE_NEGATIVE = 11
    AMOUNT_MUST_NOT_BE_ZERO = 12
    AMOUNT_MUST_NOT_BE_NEGATIVE = 13
    AMOUNT_EXCEEDS_MAXIMUM = 14
    ACCOUNTS_MUST_BE_DIFFERENT = 15
    ASSET_UNKNOWN = 16
    DEBIT_ACCOUNT_NOT_FOUND = 17
    CREDIT_ACCOUNT_NOT_FOUND = 18
    ACCOUNTS_MUST_HAVE_THE_SAME_ASSET = 19
    TRANSFER_MUST_HAVE_THE_SAME_ASSET_AS_ACCOUNTS = 20
    PENDING_TRANSFER_NOT_FOUND = 21
    PENDING_TRANSFER_NOT_PENDING = 22
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 23
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 24
    PENDING_TRANSFER_HAS_DIFFERENT_ASSET = 25
    EXISTS_WITH_DIFFERENT_FLAGS = 26
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 27
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 28
    EXISTS_WITH_DIFFERENT_AMOUNT = 29
    EXISTS_WITH_DIFFERENT_ASSET = 30
    EXISTS_WITH_DIFFERENT_PENDING_ID = 31
    EXISTS_WITH_DIFFERENT_TIMEOUT = 32
    EXISTS_WITH_DIFFERENT_CODE = 33
    EXISTS_WITH_DIFFERENT_USER_DATA = 34
    EXISTS = 35
    PENDING_TRANSFER_ALREADY_POSTED = 36
    PENDING_TRANSFER_ALREADY_VOIDED = 37
    PENDING_TRANSFER_EXPIRED = 38
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 39
    EXCEEDS_CREDITS = 40
    EXCEEDS_DEBITS = 41

    @property
    def ok(self) -> bool:
        return self in (TransferResult.OK, TransferResult.EXISTS)


@dataclass(slots=True)
class Account:
    """An account and its four balances (minor units of ``asset``).

    Balances change only through transfers; the repository owns them. Compare identity fields with
    :meth:`same_definition`.
    """

    id: str
    asset: str
    owner: str = ""
    kind: str = ""
    flags: AccountFlags = AccountFlags.NONE
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    timestamp: float = 0.0

    def copy(self) -> Account:
        # Positional construction: dataclasses.replace() costs several times more on the hot path.
        return Account(self.id, self.asset, self.owner, self.kind, self.flags, self.debits_pending,
                       self.debits_posted, self.credits_pending, self.credits_posted, self.timestamp)

    @property
    def debit_balance(self) -> int:
        """Posted debits minus posted credits (an asset account's balance)."""
        return self.debits_posted - self.credits_posted

    @property
    def credit_balance(self) -> int:
        """Posted credits minus posted debits (a liability account's balance, e.g. a wallet)."""
        return self.credits_posted - self.debits_posted

    @property
    def available_credit_balance(self) -> int:
        """What a liability account can still pay out: credits posted − debits posted − debits pending."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    @property
    def available_debit_balance(self) -> int:
        return self.debits_posted - self.credits_posted - self.credits_pending


@quick_init  # about a million per simulated day: the generated frozen __init__ is the slow part
@dataclass(frozen=True, slots=True)
class Transfer:
    """One immutable transfer. ``id`` is the client's idempotency key.

    For ``POST_PENDING`` an ``amount`` of 0 means "the full pending amount"; for ``VOID_PENDING``
    the amount is ignored (the whole remainder is released). The ledger stores the resolved amount.
    """

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    asset: str
    code: str = ""
    flags: TransferFlags = TransferFlags.NONE
    pending_id: str = ""
    timeout_s: float = 0.0
    user_data: str = ""
    timestamp: float = 0.0

    @property
    def is_resolution(self) -> bool:
        return bool(self.flags & _RESOLVING)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant, found by ``check_invariants()``."""

    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"
