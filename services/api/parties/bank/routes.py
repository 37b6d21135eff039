"""The bank service's routes: parse, call the service, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query

from services.api.ledger_schemas import StatementLine, StatementOut, flag_names
from services.api.parties.bank.schemas import BalanceOut, PartyName
from services.api.parties.bank.service import BankService
from services.api.parties.base import (
    problem,
)
from services.api.problems import problem_responses
from services.api.routing import Routes
from services.bank import deposit_account
from services.ledger import TransferFlags


def bank_routes(app: FastAPI, svc: BankService) -> None:
    routes = Routes(app, "banks")
    assets = svc.ctx.assets

    @routes.get("/v1/banks/{bank_id}/customers/{party}", responses=problem_responses(404))
    def get_balance(bank_id: PartyName, party: PartyName) -> BalanceOut:
        bank = svc.bank(bank_id)
        if not bank.has_customer(party):
            raise problem(404, f"{party} has no account at {bank_id}", "party", "not found")
        return BalanceOut(bank_id=bank_id, party=party, balance=assets.format(bank.balance_kzt(party), "KZT"))

    @routes.get("/v1/banks/{bank_id}/customers/{party}/statement", responses=problem_responses(404))
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

