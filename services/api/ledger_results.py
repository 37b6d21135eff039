"""The one table from ledger results to HTTP: status, the field at fault, and the problem type.

Success is 201 (created) or 200 (an identical replay: ``exists``). A different request under an
existing id, or a hold that was already resolved, is a conflict with the state of the server (409).
A reference to something that does not exist is 404. Everything else is a request that cannot be
carried out as written (422). Every result of the engine is in the table; a test checks that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from services.ledger import AccountResult, TransferResult

__all__ = ["ACCOUNT_OUTCOMES", "TRANSFER_OUTCOMES", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    field: str  # the request field at fault, relative to one transfer or account ("" on success)

    @property
    def ok(self) -> bool:
        return self.status < 300


R = TransferResult
TRANSFER_OUTCOMES: Final[dict[TransferResult, Outcome]] = {
    R.OK: Outcome(201, ""),
    R.EXISTS: Outcome(200, ""),
    R.LINKED_EVENT_FAILED: Outcome(422, "id"),
    R.LINKED_EVENT_CHAIN_OPEN: Outcome(422, "id"),
    R.ID_MUST_NOT_BE_EMPTY: Outcome(422, "id"),
    R.ID_TOO_LONG: Outcome(422, "id"),
    R.FLAGS_ARE_MUTUALLY_EXCLUSIVE: Outcome(422, "pending"),
    R.EXPIRE_IS_RESERVED_FOR_THE_LEDGER: Outcome(422, "pending"),
    R.PENDING_ID_MUST_BE_EMPTY: Outcome(422, "pending_id"),
    R.PENDING_ID_REQUIRED: Outcome(422, "pending_id"),
    R.PENDING_ID_MUST_BE_DIFFERENT: Outcome(422, "id"),
    R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER: Outcome(422, "timeout_s"),
    R.TIMEOUT_MUST_NOT_BE_NEGATIVE: Outcome(422, "timeout_s"),
    R.AMOUNT_MUST_NOT_BE_ZERO: Outcome(422, "amount"),
    R.AMOUNT_MUST_NOT_BE_NEGATIVE: Outcome(422, "amount"),
    R.AMOUNT_EXCEEDS_MAXIMUM: Outcome(422, "amount"),
    R.ACCOUNTS_MUST_BE_DIFFERENT: Outcome(422, "credit_account_id"),
    R.ASSET_UNKNOWN: Outcome(422, "asset"),
    R.DEBIT_ACCOUNT_NOT_FOUND: Outcome(404, "debit_account_id"),
    R.CREDIT_ACCOUNT_NOT_FOUND: Outcome(404, "credit_account_id"),
    R.ACCOUNTS_MUST_HAVE_THE_SAME_ASSET: Outcome(422, "credit_account_id"),
    R.TRANSFER_MUST_HAVE_THE_SAME_ASSET_AS_ACCOUNTS: Outcome(422, "asset"),
    R.PENDING_TRANSFER_NOT_FOUND: Outcome(404, "pending_id"),
    R.PENDING_TRANSFER_NOT_PENDING: Outcome(422, "pending_id"),
    R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID: Outcome(422, "debit_account_id"),
    R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID: Outcome(422, "credit_account_id"),
    R.PENDING_TRANSFER_HAS_DIFFERENT_ASSET: Outcome(422, "asset"),
    R.EXISTS_WITH_DIFFERENT_FLAGS: Outcome(409, "pending"),
    R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID: Outcome(409, "debit_account_id"),
    R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID: Outcome(409, "credit_account_id"),
    R.EXISTS_WITH_DIFFERENT_AMOUNT: Outcome(409, "amount"),
    R.EXISTS_WITH_DIFFERENT_ASSET: Outcome(409, "asset"),
    R.EXISTS_WITH_DIFFERENT_PENDING_ID: Outcome(409, "pending_id"),
    R.EXISTS_WITH_DIFFERENT_TIMEOUT: Outcome(409, "timeout_s"),
    R.EXISTS_WITH_DIFFERENT_CODE: Outcome(409, "code"),
    R.EXISTS_WITH_DIFFERENT_USER_DATA: Outcome(409, "user_data"),
    R.PENDING_TRANSFER_ALREADY_POSTED: Outcome(409, "pending_id"),
    R.PENDING_TRANSFER_ALREADY_VOIDED: Outcome(409, "pending_id"),
    R.PENDING_TRANSFER_EXPIRED: Outcome(409, "pending_id"),
    R.EXCEEDS_PENDING_TRANSFER_AMOUNT: Outcome(422, "amount"),
    R.EXCEEDS_CREDITS: Outcome(422, "amount"),
    R.EXCEEDS_DEBITS: Outcome(422, "amount"),
}

A = AccountResult
ACCOUNT_OUTCOMES: Final[dict[AccountResult, Outcome]] = {
    A.OK: Outcome(201, ""),
    A.EXISTS: Outcome(200, ""),
    A.LINKED_EVENT_FAILED: Outcome(422, "id"),
    A.ID_MUST_NOT_BE_EMPTY: Outcome(422, "id"),
    A.ID_TOO_LONG: Outcome(422, "id"),
    A.FLAGS_ARE_MUTUALLY_EXCLUSIVE: Outcome(422, "flags"),
    A.ASSET_UNKNOWN: Outcome(422, "asset"),
    A.EXISTS_WITH_DIFFERENT_FLAGS: Outcome(409, "flags"),
    A.EXISTS_WITH_DIFFERENT_ASSET: Outcome(409, "asset"),
    A.EXISTS_WITH_DIFFERENT_OWNER: Outcome(409, "owner"),
    A.EXISTS_WITH_DIFFERENT_KIND: Outcome(409, "kind"),
}
