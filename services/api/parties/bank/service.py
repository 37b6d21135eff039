"""The bank service: its domain objects behind the routes."""

from __future__ import annotations

from services.api.parties.base import (
    PartyContext,
    open_ledger,
    problem,
)
from services.api.statement import StatementReader
from services.bank import Bank, BankResult
from services.flows import tenge_conserved
from services.flows.opening import open_banks
from services.ledger import Violation
from services.ledger.sql import SqlLedger
from services.messaging import Handler, PaymentMessage
from services.reconciliation import Half, bank_halves


def _accept(bank: Bank, msg: PaymentMessage, result: BankResult) -> None:
    """A bank's answer to a booking as the inbox's answer: nothing, or a 4xx problem naming the field."""
    if result.ok:
        return
    if result is BankResult.UNKNOWN_CUSTOMER:
        side = "payer" if msg.payer_bank == bank.id and not bank.has_customer(msg.payer) else "payee"
        raise problem(404, f"{getattr(msg, side)} has no account at {bank.id}", side, "no account at this bank")
    if result is BankResult.INSUFFICIENT_FUNDS:
        raise problem(422, f"{msg.payer} has less than the amount at {bank.id}", "amount", "insufficient funds")
    if result is BankResult.INVALID_AMOUNT:
        raise problem(422, "the amount must be greater than zero", "amount", "not > 0")
    if result is BankResult.EXISTS_WITH_DIFFERENT_FIELDS:
        raise problem(409, f"message {msg.id} was booked before with other fields", "id", "exists with other fields")
    raise problem(422, f"{bank.id} is neither the payer's nor the payee's bank", "payee_bank", "not this bank")


def _no_books(_msg: PaymentMessage) -> bool:
    """Merchants and cardholders keep no books in the model: their bank's credit ends the chain."""
    return True


class BankService:
    def __init__(self, ctx: PartyContext) -> None:
        self.ctx = ctx
        self.ledgers: dict[str, SqlLedger] = {}
        self.banks: dict[str, Bank] = {}
        self.readers: dict[str, StatementReader] = {}
        for bank_id in ctx.topology.bank_ids:
            suffix = bank_id.replace("-", "_") + "_"
            ledger = open_ledger(ctx, bank_id, suffix)
            self.ledgers[bank_id] = ledger
            self.banks[bank_id] = Bank(bank_id, ctx.clock, ctx.transport, ctx.assets, ledger=ledger)
            self.readers[bank_id] = StatementReader(ctx.settings.database_url,
                                                    table_prefix=ctx.settings.table_prefix + suffix)
        self.resumed_transfers = sum(len(ledger) for ledger in self.ledgers.values())
        # Receivers inside this service are called in-process, the others over HTTP.
        ctx.transport.local.update({bank_id: bank.handle for bank_id, bank in self.banks.items()})
        ctx.transport.local.update({"merchant:": _no_books, "holder:": _no_books})
        self.deposited_kzt = open_banks(self.banks, ctx.topology, ctx.seed.cardholders)

    def handler(self, bank: Bank) -> Handler:
        def handle(msg: PaymentMessage) -> bool:
            self._book_here(bank, msg)
            return self._pass_on(bank, msg)

        return handle

    def _pass_on(self, bank: Bank, msg: PaymentMessage) -> bool:
        """What :meth:`Bank.handle` does after its booking, without booking again: every half this
        service holds was booked by :meth:`_book_here` (each booking is a write transaction, and
        one that finds its transfer already there costs as much as one that writes it). The
        message goes to the payee's bank when that is another service's, else to the payee."""
        if msg.payer_bank == bank.id and msg.payee_bank != bank.id and msg.payee_bank not in self.banks:
            return self.ctx.transport.send(msg.payee_bank, msg)
        return self.ctx.transport.send(msg.payee, msg)

    def _book_here(self, bank: Bank, msg: PaymentMessage) -> None:
        """Book ``bank``'s half of a message from the inbox, and, when the payee's bank also lives
        in this service, the payee's half in the same transaction (the party's unit of work): a
        kill between them would leave the tenge out of one bank and not yet in the other. A half
        the bank refuses is a 4xx naming the field, and nothing is booked."""
        payee_bank = self.banks.get(msg.payee_bank)
        with self.ctx.unit.scope():
            _accept(bank, msg, bank.book(msg))
            if msg.payer_bank == bank.id and payee_bank is not None and payee_bank is not bank:
                _accept(payee_bank, msg, payee_bank.book(msg))

    def bank(self, bank_id: str) -> Bank:
        bank = self.banks.get(bank_id)
        if bank is None:
            raise problem(404, f"no bank {bank_id}", "bank_id", "not found")
        return bank

    def invariants(self) -> dict[str, list[Violation]]:
        """Each bank's books and the conservation of tenge across all of them.

        The reserves are summed over several ledgers, which is meaningful only at an instant when
        no message is half way between two banks. Every bank lives in this service and both halves
        of a message are booked in one transaction (:meth:`_book_here`), so any committed state is
        such an instant: the integrity route reads this on one snapshot of the books
        (:meth:`PartyContext.on_snapshot`), and deliveries go on meanwhile (F3)."""
        out: dict[str, list[Violation]] = {}
        for bank_id, ledger in self.ledgers.items():
            out[bank_id] = ledger.check_invariants()
        reserves = sum(bank.reserve_kzt() for bank in self.banks.values())
        out["banks"] = tenge_conserved(reserves, self.deposited_kzt)
        return out

    def halves(self) -> list[Half]:
        return [h for bank_id, ledger in self.ledgers.items() for h in bank_halves(bank_id, ledger.journal())]
