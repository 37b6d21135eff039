"""The acquirer: the merchants' side of the card network.

Its ledger:

* ``receivable:network:KZT`` — what the network owes it (debit balance) for presented payments;
* ``payable:{merchant}:KZT`` — what it owes each merchant (credit balance; a refund larger than
  the merchant's sales makes it a debit, carried to later windows);
* ``mdr_income:KZT``, ``interchange_expense:KZT``, ``scheme_fee_expense:KZT``;
* ``bank:KZT`` — its money at its bank (mirrors its deposit); ``equity:KZT`` — its opening float.

A capture of P books the merchant owed P - MDR and the acquirer owed P - interchange - scheme fee;
the MDR pays for both fees and leaves the acquirer's margin. Presentments collect in an open batch
that the network clears at the next settlement window; the merchants are paid after the network
has paid the acquirer.
"""

from __future__ import annotations

from services.clock import Clock
from services.ids import Step, transfer_id
from services.ledger import Account, AccountFlags, InMemoryLedger, LedgerRepository, Transfer, TransferResult
from services.messaging import PaymentMessage, Purpose, book_half
from services.money import AssetRegistry
from services.network import FeeSchedule, Presentment
from services.network.presentment import Leg, linked_legs

__all__ = ["BANK", "MDR_INCOME", "RECEIVABLE", "Acquirer", "merchant_party", "payable_account"]

BANK = "bank:KZT"
RECEIVABLE = "receivable:network:KZT"
MDR_INCOME = "mdr_income:KZT"
INTERCHANGE_EXPENSE = "interchange_expense:KZT"
SCHEME_FEE_EXPENSE = "scheme_fee_expense:KZT"
EQUITY = "equity:KZT"
_KZT = "KZT"


def merchant_party(merchant_id: str) -> str:
    """A merchant's name as a party (bank customer, message payee)."""
    return f"merchant:{merchant_id}"


def payable_account(merchant_id: str) -> str:
    return f"payable:{merchant_id}:KZT"


class Acquirer:
    """One acquirer's books, its merchants and its open presentment batch."""

    def __init__(self, acquirer_id: str, fees: FeeSchedule, clock: Clock, assets: AssetRegistry | None = None,
                 *, ledger: LedgerRepository | None = None) -> None:
        self.id = acquirer_id
        self.fees = fees
        # Live services pass a SqlLedger; simulations and tests get an in-memory one.
        self.ledger: LedgerRepository = ledger if ledger is not None else InMemoryLedger(
            assets, clock, name=acquirer_id)
        self.ledger.create_accounts(
            [
                Account(BANK, _KZT, acquirer_id, "bank", AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
                Account(RECEIVABLE, _KZT, acquirer_id, "receivable"),
                Account(MDR_INCOME, _KZT, acquirer_id, "income"),
                Account(INTERCHANGE_EXPENSE, _KZT, acquirer_id, "expense"),
                Account(SCHEME_FEE_EXPENSE, _KZT, acquirer_id, "expense"),
                Account(EQUITY, _KZT, acquirer_id, "equity"),
            ]
        )
        self.merchants: set[str] = set()
        self._batch: list[Presentment] = []
        self._owed: set[str] = set()  # merchants with presentments since their last payout

    def fund(self, deposit_id: str, amount_kzt: int) -> bool:
        t = Transfer(f"{deposit_id}:float", BANK, EQUITY, amount_kzt, _KZT, code="float")
        return self.ledger.create_transfers([t])[0].ok

    def open_merchant(self, merchant_id: str) -> None:
        if merchant_id in self.merchants:
            return
        self.ledger.create_accounts(
            [Account(payable_account(merchant_id), _KZT, merchant_party(merchant_id), "payable")]
        )
        self.merchants.add(merchant_id)

    # -- clearing ----------------------------------------------------------------------------
    def present(self, p: Presentment) -> bool:
        """Book a capture or return for one of this acquirer's merchants; add it to the open batch.

        A replay books nothing and is not batched twice; ``False`` for an unknown merchant.
        """
        if p.merchant_id not in self.merchants or p.acquirer_id != self.id:
            return False
        results = self.ledger.create_transfers(self._transfers(p))
        if results[0] is TransferResult.EXISTS:
            return True
        if any(r is not TransferResult.OK for r in results):
            raise AssertionError(f"acquirer {self.id} refused presentment {p.id}: {results}")
        self._batch.append(p)
        self._owed.add(p.merchant_id)
        return True

    def _transfers(self, p: Presentment) -> list[Transfer]:
        payable = payable_account(p.merchant_id)
        if not p.is_capture:
            leg = (transfer_id(p.id, Step.PRESENT), payable, RECEIVABLE, p.amount_kzt, p.kind.value)
            return linked_legs([leg], p.id)
        legs: list[Leg] = [(transfer_id(p.id, Step.PRESENT), RECEIVABLE, payable, p.amount_kzt, p.kind.value)]
        for suffix, debit, credit, amount in (
            ("mdr", payable, MDR_INCOME, self.fees.mdr_kzt(p.amount_kzt)),
            ("ic", INTERCHANGE_EXPENSE, RECEIVABLE, self.fees.interchange_kzt(p.amount_kzt)),
            ("sf", SCHEME_FEE_EXPENSE, RECEIVABLE, self.fees.scheme_fee_kzt(p.amount_kzt)),
        ):
            if amount:
                legs.append((f"{p.id}:{suffix}", debit, credit, amount, suffix))
        return linked_legs(legs, p.id)

    def submit_batch(self) -> list[Presentment]:
        """Hand the open batch to the network (the caller clears it) and start a new one."""
        batch, self._batch = self._batch, []
        return batch

    def open_batch(self) -> list[Presentment]:
        return list(self._batch)

    # -- money -------------------------------------------------------------------------------
    def merchants_owed(self) -> list[tuple[str, int]]:
        """Merchants touched since their last payout that are owed money, with the amount."""
        out = []
        for merchant_id in sorted(self._owed):
            acc = self.ledger.account(payable_account(merchant_id))
            if acc is not None and acc.credit_balance > 0:
                out.append((merchant_id, acc.credit_balance))
        return out

    def book_payment(self, msg: PaymentMessage) -> bool:
        """The acquirer's half of a payment it makes: to the network, or to a merchant."""
        if msg.purpose is Purpose.SETTLEMENT_IN:
            return book_half(self.ledger, transfer_id(msg.id, Step.PAY), RECEIVABLE, BANK, msg)
        if msg.purpose is Purpose.MERCHANT_PAYOUT:
            ok = book_half(self.ledger, transfer_id(msg.id, Step.PAY), payable_account(msg.ref), BANK, msg)
            if ok:
                self._owed.discard(msg.ref)
            return ok
        return False

    def handle(self, msg: PaymentMessage) -> bool:
        """The network's settlement payment has arrived at the acquirer's bank."""
        if msg.purpose is not Purpose.SETTLEMENT_OUT:
            return False
        return book_half(self.ledger, transfer_id(msg.id, Step.RECV), BANK, RECEIVABLE, msg)

    def bank_kzt(self) -> int:
        acc = self.ledger.account(BANK)
        return 0 if acc is None else acc.debit_balance

    def payable_kzt(self, merchant_id: str) -> int:
        acc = self.ledger.account(payable_account(merchant_id))
        return 0 if acc is None else acc.credit_balance

