"""Request and response bodies of the party-ledger API (amounts as decimal strings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.api.fields import API_MODEL_CONFIG, AmountText, AssetCode, Identifier, Text
from services.ledger import Account, AccountFlags, PendingState, Transfer, TransferFlags, Violation
from services.money import AssetRegistry

__all__ = [
    "AccountIn",
    "AccountOut",
    "InvariantsOut",
    "PostPendingIn",
    "StatementLine",
    "StatementOut",
    "TransferIn",
    "TransferOut",
    "TransfersIn",
    "TransfersOut",
    "ViolationOut",
    "VoidPendingIn",
]

TRANSFERS_PER_REQUEST_MAX = 64
TIMEOUT_S_MAX = 30 * 24 * 3600  # a hold lives at most 30 days (card authorizations: 7-30)

AccountFlagName = Literal["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
TransferFlagName = Literal["linked", "pending", "post_pending", "void_pending", "expire_pending"]


def flag_names(flags: int, kind: type[AccountFlags] | type[TransferFlags]) -> list[str]:
    return [str(f.name).lower() for f in kind if f.value and flags & f.value]


class AccountIn(BaseModel):
    """A new account. Creating it again with the same fields answers 200 and writes nothing."""

    model_config = API_MODEL_CONFIG
    id: Identifier
    asset: AssetCode
    owner: Text = ""
    kind: Text = ""
    flags: list[AccountFlagName] = Field(default=[], max_length=2)

    def to_account(self) -> Account:
        flags = AccountFlags.NONE
        for name in self.flags:
            flags |= AccountFlags[name.upper()]
        return Account(id=self.id, asset=self.asset, owner=self.owner, kind=self.kind, flags=flags)


class AccountOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    asset: str
    owner: str
    kind: str
    flags: list[AccountFlagName]
    debits_pending: str
    debits_posted: str
    credits_pending: str
    credits_posted: str
    credit_balance: str = Field(description="credits posted − debits posted (a wallet's balance)")
    debit_balance: str = Field(description="debits posted − credits posted (a cash account's balance)")
    available_credit_balance: str = Field(description="credit balance less pending debits (holds)")
    timestamp: float = Field(description="creation time, seconds since the epoch (not money)")

    @classmethod
    def of(cls, a: Account, assets: AssetRegistry) -> AccountOut:
        def fmt(minor: int) -> str:
            return assets.format(minor, a.asset)

        return cls(
            id=a.id, asset=a.asset, owner=a.owner, kind=a.kind,
            flags=flag_names(int(a.flags), AccountFlags),
            debits_pending=fmt(a.debits_pending), debits_posted=fmt(a.debits_posted),
            credits_pending=fmt(a.credits_pending), credits_posted=fmt(a.credits_posted),
            credit_balance=fmt(a.credit_balance), debit_balance=fmt(a.debit_balance),
            available_credit_balance=fmt(a.available_credit_balance), timestamp=a.timestamp,
        )


class TransferIn(BaseModel):
    """One transfer. ``pending`` makes it a hold, released after ``timeout_s`` unless resolved."""

    model_config = API_MODEL_CONFIG
    id: Identifier
    debit_account_id: Identifier
    credit_account_id: Identifier
    amount: AmountText
    asset: AssetCode
    code: Text = ""
    user_data: Text = ""
    pending: bool = False
    timeout_s: int = Field(default=0, ge=0, le=TIMEOUT_S_MAX)


class TransfersIn(BaseModel):
    """One transfer, or several that commit together or not at all (a linked batch)."""

    model_config = API_MODEL_CONFIG
    transfers: list[TransferIn] = Field(min_length=1, max_length=TRANSFERS_PER_REQUEST_MAX)


class PostPendingIn(BaseModel):
    """Post a hold: all of it, or ``amount`` of it (the rest is released)."""

    model_config = API_MODEL_CONFIG
    id: Identifier = Field(description="the id of the posting transfer (not the hold's)")
    amount: AmountText | None = None
    code: Text = ""
    user_data: Text = ""


class VoidPendingIn(BaseModel):
    """Release a hold."""

    model_config = API_MODEL_CONFIG
    id: Identifier = Field(description="the id of the voiding transfer (not the hold's)")
    code: Text = ""
    user_data: Text = ""


class TransferOut(BaseModel):
    model_config = API_MODEL_CONFIG
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: str
    asset: str
    code: str
    user_data: str
    flags: list[TransferFlagName]
    pending_id: str
    timeout_s: float
    timestamp: float
    pending_state: Literal["pending", "posted", "voided", "expired"] | None = Field(
        default=None, description="holds only: what became of the hold")

    @classmethod
    def of(cls, t: Transfer, state: PendingState | None, assets: AssetRegistry) -> TransferOut:
        return cls(
            id=t.id, debit_account_id=t.debit_account_id, credit_account_id=t.credit_account_id,
            amount=assets.format(t.amount, t.asset), asset=t.asset, code=t.code,
            user_data=t.user_data,
            flags=flag_names(int(t.flags), TransferFlags),
            pending_id=t.pending_id, timeout_s=t.timeout_s, timestamp=t.timestamp,
            pending_state=state.value if state is not None else None,
        )


class TransfersOut(BaseModel):
    model_config = API_MODEL_CONFIG
    transfers: list[TransferOut]


class StatementLine(BaseModel):
    """One journal line of an account: a transfer seen from that account's side."""

    model_config = API_MODEL_CONFIG
    seq: int = Field(description="journal order; pass the last one as after_seq for the next page")
    transfer_id: str
    side: Literal["debit", "credit"]
    counterparty_account_id: str
    amount: str
    asset: str
    flags: list[TransferFlagName]
    pending_id: str
    code: str
    user_data: str
    timestamp: float


class StatementOut(BaseModel):
    model_config = API_MODEL_CONFIG
    account_id: str
    asset: str
    lines: list[StatementLine]
    next_after_seq: int | None = Field(description="null when this is the last page")


class ViolationOut(BaseModel):
    model_config = API_MODEL_CONFIG
    invariant: str
    subject: str
    detail: str

    @classmethod
    def of(cls, v: Violation) -> ViolationOut:
        return cls(invariant=v.invariant, subject=v.subject, detail=v.detail)


class InvariantsOut(BaseModel):
    model_config = API_MODEL_CONFIG
    party: str
    ok: bool
    violations: list[ViolationOut]
