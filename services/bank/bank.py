"""A commercial bank with its own books: a reserve and one deposit account per customer.

The customers are the parties of the chain (the exchange, the issuer, the network, the acquirers),
the merchants and the cardholders (the card's linked account). A payment between customers of two
banks is booked as two halves on two ledgers under one message id: the payer's bank debits the
payer's deposit and pays out of its reserve, the payee's bank takes it into its reserve and credits
the payee's deposit. The central bank's books between the two reserves are not modelled; the
reconciliation matches the halves instead.
"""

from __future__ import annotations

from enum import IntEnum

from services.clock import Clock
from services.ids import Step, transfer_id
from services.ledger import Account, AccountFlags, InMemoryLedger, LedgerRepository, Transfer, TransferResult
from services.messaging import PaymentMessage, Transport
from services.money import AssetRegistry

__all__ = ["RESERVE", "Bank", "BankResult", "deposit_account"]

RESERVE = "reserve:KZT"  # the bank's money at the central bank: an asset, never below zero
_KZT = "KZT"


def deposit_account(party: str) -> str:
    return f"customer:{party}:KZT"


class BankResult(IntEnum):
    """Result of one booking at a bank; ``OK`` and ``EXISTS`` (an identical replay) are success."""

    OK = 0
    EXISTS = 1
    UNKNOWN_CUSTOMER = 2
    INVALID_AMOUNT = 3
    INSUFFICIENT_FUNDS = 4
    EXISTS_WITH_DIFFERENT_FIELDS = 5
    NOT_THIS_BANK = 6

    @property
    def ok(self) -> bool:
        return self in (BankResult.OK, BankResult.EXISTS)


class Bank:
    """One bank's books and its message handler; deposits are the bank's liabilities."""

    def __init__(self, bank_id: str, clock: Clock, transport: Transport, assets: AssetRegistry | None = None,
                 *, ledger: LedgerRepository | None = None) -> None:
        self.id = bank_id
        # Live services pass a SqlLedger; simulations and tests get an in-memory one.
        self.ledger: LedgerRepository = ledger if ledger is not None else InMemoryLedger(assets, clock, name=bank_id)
        self.transport = transport
        self.ledger.create_accounts(
            [
                Account(
                    RESERVE,
                    _KZT,
                    owner=bank_id,
                    kind="reserve",
                    flags=AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
                ),
            ]
        )

    # -- customers ---------------------------------------------------------------------------
    def open_account(self, party: str) -> str:
        account_id = deposit_account(party)
        self.ledger.create_accounts(
            [
                Account(
                    account_id,
                    _KZT,
                    owner=party,
                    kind="deposit",
                    flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
                ),
            ]
        )
        return account_id

    def has_customer(self, party: str) -> bool:
        return self.ledger.account(deposit_account(party)) is not None

    def balance_kzt(self, party: str) -> int:
        acc = self.ledger.account(deposit_account(party))
        return 0 if acc is None else acc.available_credit_balance

    def reserve_kzt(self) -> int:
        acc = self.ledger.account(RESERVE)
        return 0 if acc is None else acc.debit_balance

    def deposit(self, deposit_id: str, party: str, amount_kzt: int) -> BankResult:
        """Cash from outside the modelled system (an opening balance): reserve up, deposit up."""
        return self._book(
            Transfer(
                f"{deposit_id}:deposit",
                RESERVE,
                deposit_account(party),
                amount_kzt,
                _KZT,
                code="deposit",
                user_data=deposit_id,
            )
        )

    # -- payments ----------------------------------------------------------------------------
    def book(self, msg: PaymentMessage) -> BankResult:
        """Book this bank's half (or, when both customers bank here, the whole) of a payment."""
        if msg.payer_bank == self.id and msg.payee_bank == self.id:
            return self._book(
                Transfer(
                    transfer_id(msg.id, Step.INTERNAL),
                    deposit_account(msg.payer),
                    deposit_account(msg.payee),
                    msg.amount_kzt,
                    _KZT,
                    code=msg.purpose.value,
                    user_data=msg.id,
                )
            )
        if msg.payer_bank == self.id:
            return self._book(
                Transfer(
                    transfer_id(msg.id, Step.OUT),
                    deposit_account(msg.payer),
                    RESERVE,
                    msg.amount_kzt,
                    _KZT,
                    code=msg.purpose.value,
                    user_data=msg.id,
                )
            )
        if msg.payee_bank == self.id:
            return self._book(
                Transfer(
                    transfer_id(msg.id, Step.IN),
                    RESERVE,
                    deposit_account(msg.payee),
                    msg.amount_kzt,
                    _KZT,
                    code=msg.purpose.value,
                    user_data=msg.id,
                )
            )
        return BankResult.NOT_THIS_BANK

    def handle(self, msg: PaymentMessage) -> bool:
        """Transport handler: book, then pass the message on (to the payee's bank or the payee)."""
        if not self.book(msg).ok:
            return False
        if msg.payer_bank == self.id and msg.payee_bank != self.id:
            return self.transport.send(msg.payee_bank, msg)
        return self.transport.send(msg.payee, msg)

    def _book(self, t: Transfer) -> BankResult:
        if t.amount <= 0:
            return BankResult.INVALID_AMOUNT
        result = self.ledger.create_transfers([t])[0]
        if result is TransferResult.OK:
            return BankResult.OK
        if result is TransferResult.EXISTS:
            return BankResult.EXISTS
        if result in (
            TransferResult.DEBIT_ACCOUNT_NOT_FOUND,
            TransferResult.CREDIT_ACCOUNT_NOT_FOUND,
        ):
            return BankResult.UNKNOWN_CUSTOMER
        if result in (TransferResult.EXCEEDS_CREDITS, TransferResult.EXCEEDS_DEBITS):
            return BankResult.INSUFFICIENT_FUNDS
        if result.name.startswith("EXISTS_WITH_DIFFERENT"):
            return BankResult.EXISTS_WITH_DIFFERENT_FIELDS
        raise AssertionError(f"bank {self.id}: unexpected ledger result {result.name} for {t.id}")
