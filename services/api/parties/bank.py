"""The banks as one live service: every bank's books, and the interbank payment messages.

Endpoints::

    POST /v1/inbox/{bank_id}                                  a payment message for this bank   (key)
    GET  /v1/banks/{bank_id}/customers/{party}                a customer's deposit balance
    GET  /v1/banks/{bank_id}/customers/{party}/statement      its journal lines, a page at a time
    GET  /v1/ledger/invariants                                every bank's ledger, plus: the reserves
                                                              add up to the tenge deposited from outside
    GET  /v1/ledger/halves

A message for the payer's bank is booked there (``{id}:out``, or ``{id}:int`` when both customers
bank here), passed to the payee's bank (``{id}:in``, in this process), then to the payee's service
over HTTP; merchants and cardholders keep no books, so a bank's credit ends their chain. The
``Bank`` domain keeps no state besides its ledger, so messages are handled concurrently; the
ledger serialises what must be.

Each bank has its own ledger: its own tables in the bank service's database
(``<prefix>bank_1_accounts``…). The service keeps nothing else (the reserves' expected total is
the seed's), so it may restart on its own books (``resume``): seeding again books nothing new
(every opening id exists). It owns no outbox: a message it cannot pass on is answered 502 and
stays in the *sender's* outbox. ``GET /v1/recovery`` says what the start found.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from pydantic import BaseModel, Field

from services.api.common import on_shutdown
from services.api.fields import API_MODEL_CONFIG
from services.api.ledger_schemas import StatementLine, StatementOut, flag_names
from services.api.parties.base import (
    PartyContext,
    create_party_base,
    inbox_router,
    integrity_router,
    open_ledger,
    problem,
    recovery_router,
)
from services.api.parties.settings import PartySettings
from services.api.problems import problem_responses
from services.api.routing import StrictJsonRoute
from services.api.statement import StatementReader
from services.bank import Bank, BankResult, deposit_account
from services.clock import Clock
from services.flows import tenge_conserved
from services.flows.opening import open_banks
from services.ledger import TransferFlags, Violation
from services.ledger.sql import SqlLedger
from services.messaging import Handler, PaymentMessage
from services.reconciliation import Half, bank_halves

__all__ = ["BankService", "create_bank_app", "create_bank_app_from_env"]

PartyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class BalanceOut(BaseModel):
    model_config = API_MODEL_CONFIG
    bank_id: str
    party: str
    balance: str = Field(description="KZT on deposit, less holds")


class _Gate:
    """Many messages at once, or one conservation check alone: the reserves are summed over
    several ledgers, which is only meaningful while no message is half way between two banks."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._checking = False

    @contextmanager
    def message(self) -> Iterator[None]:
        with self._cond:
            while self._checking:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def check(self) -> Iterator[None]:
        with self._cond:
            while self._checking or self._active:
                self._cond.wait()
            self._checking = True
        try:
            yield
        finally:
            with self._cond:
                self._checking = False
                self._cond.notify_all()


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
        self._gate = _Gate()
        self.resumed_transfers = sum(len(ledger) for ledger in self.ledgers.values())
        # Receivers inside this service are called in-process, the others over HTTP.
        ctx.transport.local.update({bank_id: bank.handle for bank_id, bank in self.banks.items()})
        ctx.transport.local.update({"merchant:": _no_books, "holder:": _no_books})
        self.deposited_kzt = open_banks(self.banks, ctx.topology, ctx.seed.cardholders)

    def handler(self, bank: Bank) -> Handler:
        def handle(msg: PaymentMessage) -> bool:
            with self._gate.message():
                self._book_here(bank, msg)
                return bank.handle(msg)  # finds its half booked; passes the message on

        return handle

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
        out: dict[str, list[Violation]] = {}
        with self._gate.check():
            for bank_id, ledger in self.ledgers.items():
                out[bank_id] = ledger.check_invariants()
            reserves = sum(bank.reserve_kzt() for bank in self.banks.values())
        out["banks"] = tenge_conserved(reserves, self.deposited_kzt)
        return out

    def halves(self) -> list[Half]:
        return [h for bank_id, ledger in self.ledgers.items() for h in bank_halves(bank_id, ledger.journal())]


def bank_router(svc: BankService) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute, tags=["banks"])
    assets = svc.ctx.assets

    @router.get("/v1/banks/{bank_id}/customers/{party}", responses=problem_responses(404))
    def get_balance(bank_id: PartyName, party: PartyName) -> BalanceOut:
        bank = svc.bank(bank_id)
        if not bank.has_customer(party):
            raise problem(404, f"{party} has no account at {bank_id}", "party", "not found")
        return BalanceOut(bank_id=bank_id, party=party, balance=assets.format(bank.balance_kzt(party), "KZT"))

    @router.get("/v1/banks/{bank_id}/customers/{party}/statement", responses=problem_responses(404))
    def get_statement(
        bank_id: PartyName, party: PartyName,
        after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> StatementOut:
        bank = svc.bank(bank_id)
        if not bank.has_customer(party):
            raise problem(404, f"{party} has no account at {bank_id}", "party", "not found")
        account_id = deposit_account(party)
        lines = svc.readers[bank_id].lines(account_id, after_seq, limit + 1)
        more = len(lines) > limit
        lines = lines[:limit]
        next_seq = lines[-1].seq if more and lines else None
        return StatementOut(account_id=account_id, asset="KZT", next_after_seq=next_seq,
                            lines=[StatementLine(
                                seq=x.seq, transfer_id=x.transfer_id,
                                side="debit" if x.debit_account_id == account_id else "credit",
                                counterparty_account_id=(x.credit_account_id if x.debit_account_id == account_id
                                                         else x.debit_account_id),
                                amount=assets.format(x.amount_minor, x.asset), asset=x.asset,
                                flags=flag_names(int(x.flags), TransferFlags), pending_id=x.pending_id, code=x.code,
                                user_data=x.user_data, timestamp=x.timestamp) for x in lines])

    return router


def create_bank_app(settings: PartySettings, *, clock: Clock | None = None, http_client: Any | None = None) -> FastAPI:
    """The bank service: every bank of the seed, each with its own ledger tables."""
    app, ctx = create_party_base(settings, title="ccsim banks", clock=clock, http_client=http_client)
    svc = BankService(ctx)
    for bank_id, ledger in svc.ledgers.items():
        on_shutdown(app, ledger.close)
        on_shutdown(app, svc.readers[bank_id].close)
    app.state.bank_service = svc
    app.include_router(bank_router(svc))
    app.include_router(inbox_router(ctx, {b: svc.handler(bank) for b, bank in svc.banks.items()}))
    app.include_router(integrity_router(ctx, svc.invariants, svc.halves))
    resumed = svc.resumed_transfers
    app.include_router(recovery_router(ctx, lambda: {
        "service": ctx.settings.party, "in_doubt_found": 0, "in_doubt_resolved": 0, "in_doubt_left": 0,
        "outbox_pending": 0, "outbox_delivered": 0, "found": [], "resolved": [],
        "notes": [f"started on {resumed} transfers an earlier run booked" if resumed else "started on empty books",
                  "no outbox: a message not passed on is answered 502 and stays in its sender's outbox"]}))
    return app


def create_bank_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables."""
    return create_bank_app(PartySettings(party="bank"))
