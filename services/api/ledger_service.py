"""A party's ledger over HTTP: accounts, transfers, holds, statements and invariants.

This is the generic service every party's books can be served by, and what the bank party serves.
Routers parse and validate, :class:`LedgerService` turns API bodies into ledger commands and ledger
results into HTTP through the one table in :mod:`services.api.ledger_results`, and ``SqlLedger``
does the booking. A rejected request writes no row: the ledger's batches are atomic, and the
idempotency key of a rejected request is released.

Endpoints (``Idempotency-Key`` required on the POSTs that move money)::

    POST /v1/accounts                       create an account (idempotent by id)
    GET  /v1/snapshot/accounts?ids=a,b,c     several accounts' balances, read in one snapshot
    GET  /v1/accounts/{account_id}          balances as decimal strings
    GET  /v1/accounts/{account_id}/statement?after_seq=&limit=
    POST /v1/transfers                      one transfer or a linked batch        (Idempotency-Key)
    POST /v1/transfers/{pending_id}/post    post a hold, all or part              (Idempotency-Key)
    POST /v1/transfers/{pending_id}/void    release a hold                        (Idempotency-Key)
    GET  /v1/transfers/{transfer_id}
    GET  /v1/ledger/invariants
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, MetaData, Table, create_engine, select
from sqlalchemy.engine import make_url

from services.api.common import create_base_app, on_shutdown
from services.api.fields import API_MODEL_CONFIG, IdentifierRef, parse_amount_field, resolve_asset
from services.api.idempotency import IdempotencyKey, IdempotencyStore, run_idempotent
from services.api.ledger_results import ACCOUNT_OUTCOMES, TRANSFER_OUTCOMES
from services.api.ledger_schemas import (
    AccountIn,
    AccountOut,
    InvariantsOut,
    PostPendingIn,
    StatementLine,
    StatementOut,
    TransferIn,
    TransferOut,
    TransfersIn,
    TransfersOut,
    ViolationOut,
    VoidPendingIn,
    flag_names,
)
from services.api.metrics import ApiMetrics
from services.api.problems import FieldError, ProblemError, problem_responses
from services.api.routing import StrictJsonRoute
from services.api.settings import ApiSettings
from services.api.statement import StatementReader
from services.clock import Clock
from services.ledger import Account, AccountFlags, Transfer, TransferFlags, TransferResult, linked
from services.ledger.sql import SqlLedger
from services.money import AssetRegistry

__all__ = ["ACCOUNTS_PER_READ_MAX", "STATEMENT_PAGE_MAX", "AccountSnapshotReader", "AccountsOut", "LedgerService",
           "create_ledger_app", "create_ledger_app_from_env", "ledger_router"]

STATEMENT_PAGE_MAX = 10_000  # the schema's bound; ApiSettings.statement_page_max may cap lower
ACCOUNTS_PER_READ_MAX: Final = 100
_ID: Final = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_IDS_PATTERN: Final = rf"^{_ID}(,{_ID}){{0,{ACCOUNTS_PER_READ_MAX - 1}}}$"


class AccountsOut(BaseModel):
    model_config = API_MODEL_CONFIG
    accounts: list[AccountOut]


def _minor(value: Any) -> int:
    """Exact text on SQLite, NUMERIC on PostgreSQL (as ``SqlLedger`` stores them); never a float."""
    if isinstance(value, float):
        raise TypeError("the database returned a float amount; the column type is wrong")
    return int(value) if isinstance(value, Decimal) else int(str(value))


class AccountSnapshotReader:
    """Several accounts read by ONE ``SELECT``: one snapshot, so their balances are from one instant.

    Reading accounts one request at a time while transfers run would see a transfer's debit and
    miss its credit (sums that are wrong for a moment); a single statement cannot, on SQLite (WAL)
    or PostgreSQL (READ COMMITTED takes one snapshot per statement). The bank check of
    docs/reliability.md relies on it. The table is reflected from the one ``SqlLedger`` created.
    """

    def __init__(self, url: str, *, table_prefix: str = "") -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
        self._engine: Engine = create_engine(parsed, connect_args=connect_args)
        self._a = Table(f"{table_prefix}accounts", MetaData(), autoload_with=self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def accounts(self, ids: list[str]) -> dict[str, Account]:
        a = self._a
        with self._engine.connect() as conn:
            rows = conn.execute(select(a).where(a.c.id.in_(ids))).all()
        return {r.id: Account(
            id=r.id, asset=r.asset, owner=r.owner, kind=r.kind, flags=AccountFlags(int(r.flags)),
            debits_pending=_minor(r.debits_pending), debits_posted=_minor(r.debits_posted),
            credits_pending=_minor(r.credits_pending), credits_posted=_minor(r.credits_posted),
            timestamp=float(r.timestamp)) for r in rows}


def _slug(result: TransferResult | Any) -> str:
    return str(result.name).lower().replace("_", "-")


class LedgerService:
    """Ledger commands and queries in API terms; raises :class:`ProblemError` for every rejection."""

    def __init__(self, ledger: SqlLedger, statements: StatementReader, keys: IdempotencyStore,
                 party: str, metrics: ApiMetrics, *, snapshots: AccountSnapshotReader | None = None) -> None:
        self.ledger = ledger
        # The owner closes it (create_ledger_app registers it on shutdown).
        self.snapshots = snapshots or AccountSnapshotReader(ledger.url, table_prefix=ledger.table_prefix)
        self._results = metrics.counter("ledger_transfer_results", "Transfers submitted, by ledger result",
                                        ("result",))
        self.assets: AssetRegistry = ledger.assets
        self.statements = statements
        self.keys = keys
        self.party = party

    # -- accounts ----------------------------------------------------------------------------
    def create_account(self, body: AccountIn) -> tuple[int, AccountOut]:
        result = self.ledger.create_accounts([body.to_account()])[0]
        outcome = ACCOUNT_OUTCOMES[result]
        if not outcome.ok:
            raise ProblemError(outcome.status, f"account {body.id}: {result.name.lower()}",
                               [FieldError(field=outcome.field, reason=result.name.lower())],
                               slug=_slug(result))
        return outcome.status, self.account(body.id)

    def account(self, account_id: str) -> AccountOut:
        found = self.ledger.account(account_id)
        if found is None:
            raise ProblemError(404, f"no account {account_id}",
                               [FieldError(field="account_id", reason="not found")])
        return AccountOut.of(found, self.assets)

    def accounts_snapshot(self, ids: list[str]) -> AccountsOut:
        """The accounts in the order asked (each once), all from one snapshot; 404 if any is unknown."""
        wanted = list(dict.fromkeys(ids))
        found = self.snapshots.accounts(wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise ProblemError(404, f"no account {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                  if len(missing) > 1 else ""),
                               [FieldError(field="ids", reason=f"not found: {i}") for i in missing])
        return AccountsOut(accounts=[AccountOut.of(found[i], self.assets) for i in wanted])

    # -- transfers ---------------------------------------------------------------------------
    def _to_transfer(self, t: TransferIn, prefix: str, errors: list[FieldError]) -> Transfer | None:
        asset = resolve_asset(self.assets, t.asset, f"{prefix}asset", errors)
        if asset is None:
            return None
        amount = parse_amount_field(t.amount, asset, f"{prefix}amount", errors)
        if amount is None:
            return None
        return Transfer(
            id=t.id, debit_account_id=t.debit_account_id, credit_account_id=t.credit_account_id,
            amount=amount, asset=t.asset, code=t.code, user_data=t.user_data,
            flags=TransferFlags.PENDING if t.pending else TransferFlags.NONE,
            timeout_s=float(t.timeout_s),
        )

    def create_transfers(self, body: TransfersIn) -> tuple[int, TransfersOut]:
        """All of the batch or none of it: the API always links a batch."""
        errors: list[FieldError] = []
        parsed = [self._to_transfer(t, f"transfers[{i}].", errors) for i, t in enumerate(body.transfers)]
        if errors:
            raise ProblemError(422, "an amount or asset is invalid", errors)
        transfers = linked([t for t in parsed if t is not None])
        results = self.ledger.create_transfers(transfers)
        self._count(results)
        self._reject_failed(results, transfers)
        status = 201 if any(r is TransferResult.OK for r in results) else 200
        return status, TransfersOut(transfers=[self.transfer(t.id) for t in transfers])

    def _count(self, results: list[TransferResult]) -> None:
        for r in results:
            self._results.labels(self.party, r.name.lower()).inc()

    def _reject_failed(self, results: list[TransferResult], transfers: list[Transfer]) -> None:
        causes: list[tuple[int, TransferResult]] = [
            (i, r) for i, r in enumerate(results) if not r.ok and r is not TransferResult.LINKED_EVENT_FAILED]
        if not causes and all(r.ok for r in results):
            return
        if not causes:  # cannot happen with linked(): a chain fails only through one member
            causes = [(i, r) for i, r in enumerate(results) if not r.ok]
        first_i, first = causes[0]
        outcome = TRANSFER_OUTCOMES[first]
        errors = [FieldError(field=f"transfers[{i}].{TRANSFER_OUTCOMES[r].field}", reason=r.name.lower())
                  for i, r in causes]
        raise ProblemError(outcome.status, f"transfer {transfers[first_i].id}: {first.name.lower()}"
                           + ("; nothing in the batch was written" if len(transfers) > 1 else ""),
                           errors, slug=_slug(first))

    def resolve(self, pending_id: str, body: PostPendingIn | VoidPendingIn) -> tuple[int, TransferOut]:
        """Post (all or part) or void a hold."""
        hold = self.ledger.transfer(pending_id)
        if hold is None:
            raise ProblemError(404, f"no transfer {pending_id}",
                               [FieldError(field="pending_id", reason="not found")])
        amount = 0
        errors: list[FieldError] = []
        if isinstance(body, PostPendingIn) and body.amount is not None:
            amount = parse_amount_field(body.amount, self.assets.get(hold.asset), "amount", errors) or 0
        if errors:
            raise ProblemError(422, "the amount is invalid", errors)
        flags = TransferFlags.POST_PENDING if isinstance(body, PostPendingIn) else TransferFlags.VOID_PENDING
        t = Transfer(id=body.id, debit_account_id="", credit_account_id="", amount=amount, asset="",
                     code=body.code, user_data=body.user_data, flags=flags, pending_id=pending_id)
        result = self.ledger.create_transfers([t])[0]
        self._count([result])
        outcome = TRANSFER_OUTCOMES[result]
        if not outcome.ok:
            raise ProblemError(outcome.status, f"transfer {body.id}: {result.name.lower()}",
                               [FieldError(field=outcome.field, reason=result.name.lower())],
                               slug=_slug(result))
        return outcome.status, self.transfer(body.id)

    def transfer(self, transfer_id: str) -> TransferOut:
        found = self.ledger.transfer(transfer_id)
        if found is None:
            raise ProblemError(404, f"no transfer {transfer_id}",
                               [FieldError(field="transfer_id", reason="not found")])
        return TransferOut.of(found, self.ledger.pending_state(transfer_id), self.assets)

    # -- statements and invariants -----------------------------------------------------------
    def statement(self, account_id: str, after_seq: int, limit: int) -> StatementOut:
        account = self.account(account_id)
        lines = self.statements.lines(account_id, after_seq, limit + 1)
        more = len(lines) > limit
        lines = lines[:limit]
        return StatementOut(
            account_id=account_id, asset=account.asset,
            lines=[StatementLine(
                seq=x.seq, transfer_id=x.transfer_id,
                side="debit" if x.debit_account_id == account_id else "credit",
                counterparty_account_id=(x.credit_account_id if x.debit_account_id == account_id
                                         else x.debit_account_id),
                amount=self.assets.format(x.amount_minor, x.asset), asset=x.asset,
                flags=flag_names(int(x.flags), TransferFlags),
                pending_id=x.pending_id, code=x.code, user_data=x.user_data, timestamp=x.timestamp,
            ) for x in lines],
            next_after_seq=lines[-1].seq if more and lines else None,
        )

    def invariants(self) -> InvariantsOut:
        violations = self.ledger.check_invariants()
        return InvariantsOut(party=self.party, ok=not violations,
                             violations=[ViolationOut.of(v) for v in violations])


def _json(status: int, body: BaseModel) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


async def _service(request: Request) -> LedgerService:  # async: a sync dependency costs a worker-thread hop
    return cast(LedgerService, request.app.state.ledger_service)


Service = Annotated[LedgerService, Depends(_service)]
AccountId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
TransferId = Annotated[IdentifierRef, Path()]


def _replay(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": "an identical request again: nothing new written"}}


def ledger_router(settings: ApiSettings) -> APIRouter:
    """The ledger routes; limits come from ``settings``."""
    router = APIRouter(route_class=StrictJsonRoute, tags=["ledger"])

    @router.post("/v1/accounts", status_code=201, response_model=AccountOut,
                 responses=_replay(AccountOut) | problem_responses(409))
    def create_account(body: AccountIn, svc: Service) -> Response:
        return _json(*svc.create_account(body))

    # Its own path, not GET /v1/accounts: Starlette answers a 405 with the Allow header of the first
    # route that matched the path only, so two routes on one path would list one method each.
    @router.get("/v1/snapshot/accounts", responses=problem_responses(404))
    def get_accounts_snapshot(
        ids: Annotated[str, Query(pattern=_IDS_PATTERN, max_length=129 * ACCOUNTS_PER_READ_MAX,
                                  description=f"comma-separated account ids, 1 to {ACCOUNTS_PER_READ_MAX}")],
        svc: Service,
    ) -> AccountsOut:
        return svc.accounts_snapshot(ids.split(","))

    @router.get("/v1/accounts/{account_id}", responses=problem_responses(404))
    def get_account(account_id: AccountId, svc: Service) -> AccountOut:
        return svc.account(account_id)

    @router.get("/v1/accounts/{account_id}/statement", responses=problem_responses(404))
    def get_statement(
        account_id: AccountId, svc: Service,
        after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=STATEMENT_PAGE_MAX)] = 100,
    ) -> StatementOut:
        # A deployment may cap pages lower; the cursor still pages through everything.
        return svc.statement(account_id, after_seq, min(limit, settings.statement_page_max))

    @router.post("/v1/transfers", status_code=201, response_model=TransfersOut,
                 responses=_replay(TransfersOut) | problem_responses(404, 409))
    def create_transfers(body: TransfersIn, key: IdempotencyKey, request: Request,
                         svc: Service) -> Response:
        return run_idempotent(svc.keys, key, request, body.model_dump(mode="json"),
                              lambda: _json(*svc.create_transfers(body)))

    @router.post("/v1/transfers/{pending_id}/post", status_code=201, response_model=TransferOut,
                 responses=_replay(TransferOut) | problem_responses(404, 409))
    def post_pending(pending_id: TransferId, body: PostPendingIn, key: IdempotencyKey,
                     request: Request, svc: Service) -> Response:
        return run_idempotent(svc.keys, key, request, body.model_dump(mode="json"),
                              lambda: _json(*svc.resolve(pending_id, body)))

    @router.post("/v1/transfers/{pending_id}/void", status_code=201, response_model=TransferOut,
                 responses=_replay(TransferOut) | problem_responses(404, 409))
    def void_pending(pending_id: TransferId, body: VoidPendingIn, key: IdempotencyKey,
                     request: Request, svc: Service) -> Response:
        return run_idempotent(svc.keys, key, request, body.model_dump(mode="json"),
                              lambda: _json(*svc.resolve(pending_id, body)))

    @router.get("/v1/transfers/{transfer_id}", responses=problem_responses(404))
    def get_transfer(transfer_id: TransferId, svc: Service) -> TransferOut:
        return svc.transfer(transfer_id)

    @router.get("/v1/ledger/invariants")
    def get_invariants(svc: Service) -> InvariantsOut:
        return svc.invariants()

    return router


def create_ledger_app(
    settings: ApiSettings, *, assets: AssetRegistry | None = None, clock: Clock | None = None,
) -> FastAPI:
    """The party-ledger service: its own database (``settings.database_url``), its own tables."""
    settings.ensure_data_dir()
    app = create_base_app(settings, title=f"ccsim {settings.party} ledger")
    ledger = SqlLedger(settings.database_url, assets=assets, clock=clock, name=settings.party,
                       table_prefix=settings.table_prefix)
    on_shutdown(app, ledger.close)
    statements = StatementReader(settings.database_url, table_prefix=settings.table_prefix)
    on_shutdown(app, statements.close)
    keys = IdempotencyStore(settings.database_url, table_prefix=settings.table_prefix, clock=clock,
                            lease_s=settings.idempotency_lease_s)
    on_shutdown(app, keys.close)
    snapshots = AccountSnapshotReader(settings.database_url, table_prefix=settings.table_prefix)
    on_shutdown(app, snapshots.close)
    app.state.ledger = ledger
    app.state.ledger_service = LedgerService(ledger, statements, keys, settings.party,
                                                 app.state.metrics, snapshots=snapshots)
    app.include_router(ledger_router(settings))
    return app


def create_ledger_app_from_env() -> FastAPI:
    """For ``uvicorn --factory``: settings from ``CCSIM_*`` environment variables (docs/api.md)."""
    return create_ledger_app(ApiSettings())
