"""What the four party services share: their start-up, their locks, the message inbox and the
integrity endpoints.

- :class:`PartyContext` holds one service's settings, seed, topology, clock, outbound transport,
  idempotency store and a *domain lock*. The domain objects (``Issuer``, ``Exchange``, …) keep
  state in memory besides their ledger and are written for one driver, so every call into them
  runs under that lock; the lock is never held while waiting for another service, which may be
  calling back (the exchange's proceeds reach the issuer while the issuer waits for the sale).
- :func:`open_ledger` gives the party a ``SqlLedger`` on its own database (or its own table
  prefix in a shared PostgreSQL database), joined to the party's unit of work. On books an
  earlier run left behind it starts only when ``resume`` is set; the parties with state besides
  their books (exchange, issuer, network) then rebuild that state from their command log
  (:mod:`services.api.parties.durable`; ``PartyContext.command`` runs a logged command).
- :func:`open_outbox` gives the party its durable outbox, the relay that delivers it and the
  start-up recovery report (``GET /v1/recovery``); :func:`staging_hook` stages a message in the
  transaction of the booking that owes it (:mod:`services.api.outbox`).
- ``POST /v1/inbox/{receiver}`` takes a :class:`~services.messaging.PaymentMessage` for a receiver
  this service hosts; ``GET /v1/ledger/invariants`` and ``GET /v1/ledger/halves`` are what
  :mod:`services.api.parties.integrity` reads to check the whole system. Both read the books on a
  snapshot pinned under the domain lock and read after it is released
  (:meth:`PartyContext.on_snapshot`): a check never stalls a payment.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, cast

import anyio
import anyio.to_thread
from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.middleware import Middleware

from services.api.auth import AuthError, SigningAuth, load_credentials
from services.api.auth_middleware import AuthMiddleware
from services.api.common import create_base_app, on_shutdown
from services.api.fields import API_MODEL_CONFIG, AmountText, Identifier, Text, amount_in
from services.api.idempotency import (
    IdempotencyKey,
    IdempotencyStore,
    answer_hook,
    run_idempotent,
    run_idempotent_async,
)
from services.api.ledger_schemas import InvariantsOut, ViolationOut
from services.api.metrics import ApiMetrics
from services.api.outbox import PENDING, Outbox, RecoveryReport, Relay, transport_deliverer
from services.api.parties.durable import (
    CommandClock,
    DurabilityError,
    Durable,
    SnapshotReads,
    seed_digest,
    snapshot_copy,
)
from services.api.parties.seed import PartySeed, read_seed, seed_json, seed_topology
from services.api.parties.settings import PartySettings
from services.api.problems import FieldError, ProblemError, problem_response, problem_responses
from services.api.routing import Routes
from services.api.transport_http import HttpTransport
from services.clock import Clock, SystemClock
from services.errors import CcsimError
from services.flows import Topology
from services.ledger import Violation
from services.ledger.engine import Staging
from services.ledger.sql import SqlLedger, TransactionHook, UnitOfWork
from services.logging import get_logger
from services.messaging import Handler, PaymentMessage, Purpose
from services.money import AssetRegistry
from services.reconciliation import Half

__all__ = [
    "AckOut",
    "HalfOut",
    "HalvesOut",
    "MessageIn",
    "PartyContext",
    "RetryOut",
    "ServiceInvariantsOut",
    "StartupError",
    "create_party_base",
    "integrity_routes",
    "json_response",
    "open_ledger",
    "open_outbox",
    "outbox_routes",
    "problem",
    "recovery_routes",
    "replayed",
    "run_idempotent_async",
    "send_staged",
    "staging_hook",
]

T = TypeVar("T")
U = TypeVar("U")
_log = get_logger(__name__)


class StartupError(CcsimError, RuntimeError):
    """The service cannot start as configured; the message says what to change."""


@dataclass
class PartyContext:
    """One service's shared parts (see the module docstring)."""

    settings: PartySettings
    seed: PartySeed
    topology: Topology
    assets: AssetRegistry
    clock: CommandClock
    transport: HttpTransport
    keys: IdempotencyStore
    metrics: ApiMetrics
    unit: UnitOfWork
    durable: Durable
    snapshots: SnapshotReads

    @property
    def seed_digest(self) -> str:
        """What the seeding depends on; a replay refuses books written under another seed."""
        return seed_digest(seed_json(self.seed))

    @property
    def lock(self) -> threading.RLock:
        return self.durable.lock

    def locked(self, fn: Callable[..., T], *args: Any) -> T:
        """A read of the domain state under the domain lock (changes go through :meth:`command`);
        after a database failure the state is rebuilt first, so no read sees what was lost."""
        with self.lock:
            self.durable.ensure_sound()
            return fn(*args)

    def on_snapshot(self, fn: Callable[[], T], at_pin: Callable[[], U]) -> tuple[T, U]:
        """``fn()`` with every ledger read on one snapshot of the books, pinned under the domain
        lock together with ``at_pin()`` (a quick read of the memory, e.g. what is in transit),
        but run after the lock is released: a long read of the books never stalls a payment."""
        with self.lock:
            self.durable.ensure_sound()
            conn = self.snapshots.pin()
            try:
                taken = at_pin()
            except BaseException:
                conn.close()
                raise
        with self.snapshots.reading(conn):
            return fn(), taken

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`locked` in a worker thread (the loop stays free)."""
        return await anyio.to_thread.run_sync(self.locked, fn, *args)

    def command(self, fn: Callable[..., T], *args: Any, refused: Callable[[T], bool] | None = None,
                answers: bool = False) -> T:
        """A change of the domain state: a logged, atomic command (:class:`Durable`). With
        ``answers``, the command decides the answer of the idempotent request running here, and
        commits it in its own transaction (:func:`services.api.idempotency.answer_hook`)."""
        pending = answer_hook(self.keys) if answers else None
        committed = False
        try:
            result = self.durable.command(fn, *args, refused=refused,
                                          also=pending.hook() if pending is not None else None)
            committed = True
            return result
        except (SQLAlchemyError, DurabilityError) as exc:
            raise ProblemError(503, "this service's database is unavailable; retry with the same Idempotency-Key",
                               [FieldError(field="database", reason=str(exc).splitlines()[0][:200])],
                               slug="database-unavailable") from exc
        finally:
            if pending is not None:
                pending.ended(committed)

    async def run_command(self, fn: Callable[..., T], *args: Any, refused: Callable[[T], bool] | None = None,
                          answers: bool = False) -> T:
        """:meth:`command` in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: self.command(fn, *args, refused=refused, answers=answers))

    def url(self, party: Literal["exchange", "issuer", "network", "bank"]) -> str:
        url = str(getattr(self.settings, f"{party}_url"))
        if not url:
            raise ProblemError(503, f"this service was started without the {party} service's URL",
                               [FieldError(field=f"{party}_url", reason="not configured")], slug="peer-unknown")
        return url.rstrip("/")

    @property
    def deadline_s(self) -> float:
        return (self.settings.deadline_ms or self.seed.deadline_ms) / 1000.0


def create_party_base(
    settings: PartySettings, *, title: str, clock: Clock | None, http_client: Any | None,
) -> tuple[FastAPI, PartyContext]:
    """The base app (problem+json, limits, credentials, /healthz, /metrics) and the party's context.

    Every caller proves who it is (:mod:`services.api.auth_middleware`), and so does this service
    when it calls another (its transport signs as ``settings.party``): without a readable
    credentials file naming this party the service does not start (:class:`StartupError`)."""
    settings.ensure_data_dir()
    try:
        credentials = load_credentials(settings.credentials_path())
        own = credentials.principal(settings.party)
    except AuthError as exc:
        raise StartupError(f"{settings.party}: {exc}") from None
    seed = read_seed(settings.seed_file) if settings.seed_file is not None else PartySeed()
    topology = seed_topology(seed)
    assets = seed.registry()
    guard = Middleware(AuthMiddleware, credentials=credentials, allowed_hosts=settings.host_names(),
                       window_s=settings.auth_window_s)
    app = create_base_app(settings, title=title, guard=guard)
    party_clock = CommandClock(clock or SystemClock())
    keys = IdempotencyStore(settings.database_url, table_prefix=settings.table_prefix, clock=party_clock,
                            lease_s=settings.idempotency_lease_s, local_claims=True)
    if settings.reset:
        keys.drop_table()
        keys.close()
        keys = IdempotencyStore(settings.database_url, table_prefix=settings.table_prefix, clock=party_clock,
                                lease_s=settings.idempotency_lease_s, local_claims=True)
    on_shutdown(app, keys.close)
    unit = UnitOfWork(settings.database_url)
    on_shutdown(app, unit.close)
    durable = Durable(unit, party_clock, settings.table_prefix, threading.RLock())
    if settings.reset:
        durable.reset()
    durable.snapshot_every_commands = settings.snapshot_every_commands
    on_shutdown(app, durable.close)
    snapshots = SnapshotReads(unit)
    on_shutdown(app, snapshots.close)

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        return problem_response(request, 503, "this service's database is unavailable; retry later",
                                [FieldError(field="database", reason=str(exc).splitlines()[0][:200])],
                                slug="database-unavailable")

    app.add_exception_handler(SQLAlchemyError, database_unavailable)
    app.add_exception_handler(DurabilityError, database_unavailable)
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        # A served party is one process: keys a killed predecessor still claims are released, so
        # their retries run now instead of waiting out the lease (in-process tests run no lifespan).
        released = await anyio.to_thread.run_sync(keys.release_in_flight)
        if released:
            _log.warning("idempotency_keys_released", service=settings.party, count=released)
        async with original(a) as state:
            yield state

    app.router.lifespan_context = lifespan
    routes = {
        party: url.rstrip("/") for party, url in (
            (seed.config.exchange_id, settings.exchange_url), (seed.config.issuer_id, settings.issuer_url),
            (seed.config.network_id, settings.network_url),
            *((a, settings.network_url) for a in seed.config.acquirer_ids),
            *((b, settings.bank_url) for b in topology.bank_ids),
        ) if url
    }
    transport = HttpTransport(routes, assets=assets, client=http_client, timeout_s=settings.outbound_timeout_s,
                              connect_timeout_s=settings.outbound_connect_timeout_s,
                              retries_max=settings.outbound_retries_max, auth=SigningAuth(own))
    on_shutdown(app, transport.close_sync)  # the async pool closes with the process (or the test's client)
    ctx = PartyContext(settings, seed, topology, assets, party_clock, transport, keys, app.state.metrics, unit, durable,
                       snapshots)
    app.state.party = ctx
    return app, ctx


def open_ledger(ctx: PartyContext, name: str, suffix: str = "") -> SqlLedger:
    """The ledger ``name`` of this party (tables ``<prefix><suffix>accounts``/``transfers``), joined
    to the party's unit of work.

    With ``reset`` its tables are dropped first. Books left by an earlier run are used only when
    ``resume`` is set (the party then rebuilds its state from its command log and checks it
    against them); otherwise they stop the start-up (:class:`StartupError`) rather than being
    silently mixed with a fresh state.
    """
    s = ctx.settings
    prefix = s.table_prefix + suffix

    def make() -> SqlLedger:
        return SqlLedger(s.database_url, assets=ctx.assets, clock=ctx.clock, name=name, table_prefix=prefix,
                         unit=ctx.unit)

    ledger = make()
    if s.reset:
        ledger.drop_tables()
        ledger.close()
        ledger = make()
    elif len(ledger) > 0 and not s.resume:
        ledger.close()
        raise StartupError(
            f"{name}: the database {ledger.url.split('@')[-1]} (tables {prefix}*) holds books from an earlier "
            f"run; start with --resume (CCSIM_RESUME=1) to continue on them, or with --reset (CCSIM_RESET=1) "
            "to drop them, or use another data directory.")
    return ledger


def open_outbox(app: FastAPI, ctx: PartyContext) -> tuple[Outbox, Relay, RecoveryReport]:
    """This service's durable outbox (``<prefix>outbox``, in its own database), the relay that
    delivers it (started with the app's lifespan; tests run passes themselves) and the start-up
    recovery report, served on ``GET /v1/recovery``.

    The recovery pass: rows left pending by an earlier run are the in-doubt operations (booked
    here, not known to be acknowledged there); they are counted and logged now, re-sent with
    their own ids by the relay, and counted as resolved when acknowledged.
    """
    s = ctx.settings
    outbox = Outbox(s.database_url, table_prefix=s.table_prefix, assets=ctx.assets, clock=ctx.clock)
    if s.reset:
        outbox.drop_table()
        outbox.close()
        outbox = Outbox(s.database_url, table_prefix=s.table_prefix, assets=ctx.assets, clock=ctx.clock)
    on_shutdown(app, outbox.close)
    report = RecoveryReport(service=s.party, outbox_found=outbox.undelivered())
    if report.outbox_found:  # nothing in doubt is the normal start: the report says so, the log stays quiet
        _log.warning("recovery_pass", service=s.party, in_doubt_found=len(report.outbox_found),
                     ids=report.outbox_found[:20])
    relay = Relay(outbox, transport_deliverer(ctx.transport, lambda peer: ctx.url(cast(Any, peer))),
                  report=report,
                  interval_s=s.relay_interval_s)
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with original(a) as state:
            relay.start()
            try:
                yield state
            finally:
                await relay.stop()

    app.router.lifespan_context = lifespan
    app.state.outbox, app.state.relay, app.state.recovery = outbox, relay, report
    return outbox, relay, report


def staging_hook(outbox: Outbox, msg: PaymentMessage, booking_id: str) -> TransactionHook:
    """A ledger hook that stages ``msg`` in the transaction that writes transfer ``booking_id``
    (the payer's half): booked and owed commit together, or neither does."""

    def hook(conn: Any, staging: Staging) -> None:
        if booking_id in staging.transfers:
            outbox.stage_message(conn, msg.payer_bank, msg)

    return hook


def send_staged(ctx: PartyContext, outbox: Outbox, msg: PaymentMessage) -> bool:
    """Try a staged message now (never under the domain lock); the relay keeps trying if this
    fails. ``True`` when nothing is owed any more (delivered now or before)."""
    if outbox.state(msg.id) != PENDING:
        return True
    with outbox.sending_in_line(msg.id):
        ok = ctx.transport.send(msg.payer_bank, msg)
        outbox.mark(msg.id, delivered=ok)
    return ok


class RetryOut(BaseModel):
    model_config = API_MODEL_CONFIG
    undelivered: list[str]


def outbox_routes(app: FastAPI, relay: Relay, undelivered: Callable[[], list[str]] | None = None) -> None:
    """``POST /v1/outbox/retry``: one relay pass now, ignoring the backoff. ``undelivered`` says
    what is still owed (default: what the pass left)."""
    routes = Routes(app, "integrity")

    @routes.post("/v1/outbox/retry")
    async def retry_outbox() -> RetryOut:
        """One relay pass now, ignoring the backoff; what is still undelivered."""
        left = await relay.run_once(force=True)
        return RetryOut(undelivered=left if undelivered is None else await anyio.to_thread.run_sync(undelivered))


def recovery_routes(app: FastAPI, ctx: PartyContext, report: Callable[[], dict[str, Any]]) -> None:
    routes = Routes(app, "integrity")

    @routes.get("/v1/recovery")
    def get_recovery() -> dict[str, Any]:
        """What the start-up recovery pass found in doubt (left by an earlier run) and has resolved."""
        return {**report(), "state": ctx.durable.report.as_dict()}


def replayed(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: the 200 a creating POST answers when what it would create exists, identical."""
    return {200: {"model": model, "description": "it existed already, identical: the existing one"}}


def problem(status: int, detail: str, field: str, reason: str) -> ProblemError:
    """A problem about one field (the common case)."""
    return ProblemError(status, detail, [FieldError(field=field, reason=reason)])


def json_response(status: int, body: BaseModel) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


# -- messages ------------------------------------------------------------------------------------

PurposeName = Literal["proceeds", "rebuy", "card_load", "settlement_in", "settlement_out", "merchant_payout",
                      "conversion"]


class MessageIn(BaseModel):
    """A payment order between parties; ``id`` is the idempotency key at every hop."""

    model_config = API_MODEL_CONFIG
    id: Identifier
    purpose: PurposeName
    payer: Identifier
    payee: Identifier
    payer_bank: Identifier
    payee_bank: Identifier
    amount: AmountText = Field(description="KZT, at most 2 decimals")
    ref: Text = ""

    def to_message(self, assets: AssetRegistry) -> PaymentMessage:
        amount = amount_in(self.amount, assets.get("KZT"), "amount")
        return PaymentMessage(self.id, Purpose(self.purpose), self.payer, self.payee, self.payer_bank,
                              self.payee_bank, amount, self.ref)


class AckOut(BaseModel):
    model_config = API_MODEL_CONFIG
    message_id: str
    receiver: str
    acknowledged: bool


ReceiverName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


def inbox_routes(app: FastAPI, ctx: PartyContext, handlers: Mapping[str, Handler]) -> None:
    """``POST /v1/inbox/{receiver}``: book this receiver's half and pass the message on.

    200 when the receiver and every later hop acknowledged it; 502 when not (the key is released,
    so the sender's retry runs again and books only what is missing); 404 for a receiver this
    service does not host.
    """
    routes = Routes(app, "messages")

    @routes.post("/v1/inbox/{receiver}", response_model=AckOut, responses=problem_responses(404, 409, 502))
    def inbox(receiver: ReceiverName, body: MessageIn, key: IdempotencyKey, request: Request) -> Response:
        handler = handlers.get(receiver)
        if handler is None:
            raise ProblemError(404, f"this service does not receive messages for {receiver!r}",
                               [FieldError(field="receiver", reason="not hosted here")])
        _check_sender(ctx, receiver, body, str(getattr(request.state, "role", "")))
        msg = body.to_message(ctx.assets)

        def answer(acknowledged: bool) -> Response | None:
            return json_response(200, AckOut(message_id=msg.id, receiver=receiver, acknowledged=True)) \
                if acknowledged else None

        def work() -> Response:
            response = answer(handler(msg))
            if response is None:
                raise ProblemError(502, f"message {msg.id} was not acknowledged by {receiver} or a later hop",
                                   [FieldError(field="id", reason="not acknowledged")], slug="not-acknowledged")
            return response

        # A handler that is one command (``answers=True``) commits the acknowledgement with it.
        return run_idempotent(ctx.keys, key, request, body.model_dump(mode="json"), work, answer=answer)


def _service_of(ctx: PartyContext, party: str) -> str:
    """The service that speaks for ``party`` (``""`` for cardholders and merchants: they keep no
    books and send nothing)."""
    cfg = ctx.topology.config
    if party == cfg.exchange_id:
        return "exchange"
    if party == cfg.issuer_id:
        return "issuer"
    if party == cfg.network_id or party in cfg.acquirer_ids:
        return "network"
    return "bank" if party in ctx.topology.bank_ids else ""


def _check_sender(ctx: PartyContext, receiver: str, body: MessageIn, role: str) -> None:
    """A message enters the payer's bank only from the payer's own service, and every later hop
    only from the bank service (which holds the payer's bank): no one else can make a party pay."""
    first_hop = receiver == body.payer_bank
    expected = _service_of(ctx, body.payer if first_hop else body.payer_bank)
    if not expected or role != expected:
        who = body.payer if first_hop else body.payer_bank
        raise ProblemError(403, f"a message paid by {body.payer} enters {receiver} only from {who}'s service",
                           [FieldError(field="payer" if first_hop else "payer_bank",
                                       reason=f"sent by the {role or 'unknown'} role, not {expected or 'any'}")],
                           slug="forbidden")


# -- integrity -----------------------------------------------------------------------------------


class ServiceInvariantsOut(BaseModel):
    model_config = API_MODEL_CONFIG
    service: str
    ok: bool
    parties: list[InvariantsOut]


class HalfOut(BaseModel):
    model_config = API_MODEL_CONFIG
    message_id: str
    purpose: str
    side: str
    party: str
    amount: str = Field(description="KZT")


class HalvesOut(BaseModel):
    """Every message half this service's parties booked, and the messages legitimately in transit."""

    model_config = API_MODEL_CONFIG
    service: str
    halves: list[HalfOut]
    in_transit: list[str]


def integrity_routes(
    app: FastAPI,
    ctx: PartyContext,
    invariants: Callable[..., Mapping[str, list[Violation]]],
    halves: Callable[[], Iterable[Half]],
    in_transit: Callable[[], Iterable[str]] = tuple,
    *,
    state: Callable[[], object] | None = None,
) -> None:
    """``GET /v1/ledger/invariants`` and ``/v1/ledger/halves``, read on a snapshot of the books.

    ``state`` names the domain object whose memory the party's own rules compare with its books
    (the exchange's running totals): it is copied at the pin (:func:`snapshot_copy`) and
    ``invariants(copy)`` is called, so books and memory are of one instant. Without it,
    ``invariants()`` reads the books only."""
    routes = Routes(app, "integrity")
    service = ctx.settings.party

    def check() -> Mapping[str, list[Violation]]:
        if state is None:
            return ctx.on_snapshot(invariants, lambda: None)[0]
        frozen: list[object] = []  # taken at the pin, under the lock
        found, _ = ctx.on_snapshot(lambda: invariants(frozen[0]), lambda: frozen.append(snapshot_copy(state())))
        return found

    @routes.get("/v1/ledger/invariants")
    def get_invariants() -> ServiceInvariantsOut:
        """Each of this service's ledgers checked over a consistent snapshot, plus the party's own rules."""
        try:
            found = check()
        except RuntimeError:  # the party's memory changed shape under the read: read it locked
            found = {"": [Violation("snapshot", "", "retry under the lock")]}
        if any(found.values()):
            # What the snapshot check found is confirmed under the lock before it is reported.
            found = ctx.locked(lambda: invariants(state()) if state is not None else invariants())
        parties = [InvariantsOut(party=p, ok=not v, violations=[ViolationOut.of(x) for x in v])
                   for p, v in found.items()]
        return ServiceInvariantsOut(service=service, ok=all(p.ok for p in parties), parties=parties)

    @routes.get("/v1/ledger/halves")
    def get_halves() -> HalvesOut:
        """The halves of cross-party messages, read from the journals (the books, not a side list)."""
        got, transit = ctx.on_snapshot(lambda: list(halves()), lambda: list(in_transit()))
        return HalvesOut(service=service, in_transit=transit, halves=[
            HalfOut(message_id=h.message_id, purpose=h.purpose, side=h.side, party=h.party,
                    amount=ctx.assets.format(h.amount_kzt, "KZT")) for h in got])

