"""The network service: its domain objects behind the routes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio.to_thread

from services.acquirer import Acquirer
from services.api.outbox import PENDING, Outbox, OutboxEntry, Relay
from services.api.parties.admission import AdmissionGate
from services.api.parties.base import (
    PartyContext,
    open_ledger,
    send_staged,
    staging_hook,
)
from services.api.parties.durable import StatefulService, SwitchLedger
from services.api.parties.network.ports import ClearingPortsHttp, SettlementPortsHttp
from services.api.parties.network.schemas import PaymentIn, PaymentOut, PresentmentIn, PresentmentOut, SettlementOut
from services.api.parties.schemas import AuthorizationIn, AuthorizationOut, ClearingOut, clearing_or_problem, kzt_in
from services.api.problems import FieldError, ProblemError
from services.api.transport_http import idempotency_key, message_to_json
from services.contracts import AuthorizationRequest, AuthorizationResponse, MerchantSpec, ReasonCode, SettlementReport
from services.flows import run_now, settle_window
from services.flows.clearing import present
from services.flows.opening import open_network
from services.ids import Step, transfer_id
from services.ledger import Violation
from services.ledger.sql import SqlLedger
from services.logging import get_logger
from services.messaging import PaymentMessage, Purpose
from services.network import Network, Presentment, PresentmentKind, WindowSummary
from services.reconciliation import Half, party_halves

_log = get_logger(__name__)

_ADVICE_ROUNDS_MAX = 8  # background rounds per advice (each with the transport's own retries)
_ADVICE_PAUSE_S = 0.5
# Stand-in advices sent in line at once; the rest wait their turn. Stand-ins come in bursts (the
# issuer down or too slow), and a burst of advices all sent at once to an issuer that is just back
# made each one miss its timeout and be sent again, so the issuer spent its time on advices and the
# network stood in for ever more payments (a fault run: 162,409 advice attempts in 25 minutes).
ADVICES_IN_FLIGHT_MAX = 4
# Advices the operator's retry (``POST /v1/advices/retry``) attempts per call: each waits for a slot,
# so a backlog of thousands would hold the request for as long; the answer lists what is left.
ADVICE_RETRIES_PER_CALL = 32


PRESENT_STEP = "presentment"  # the outbox's local step that completes a presentment (complete_presentment)
_BOUND_MAX = 1_000_000  # payment ids remembered with their first body


def _signed(ctx: PartyContext, minor: int) -> str:
    return ("-" if minor < 0 else "") + ctx.assets.format(abs(minor), "KZT")


class NetworkService(StatefulService):
    """The network and acquirer domains behind the routes."""

    def __init__(self, ctx: PartyContext, outbox: Outbox, relay: Relay) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.relay = relay
        self.admission = AdmissionGate(ctx.settings.admission_in_flight_max, ctx.deadline_s / 4)
        cfg = ctx.seed.config
        # The SQL ledger of each party here, and the switch its domain object books through.
        self.sql_ledgers = {cfg.network_id: open_ledger(ctx, cfg.network_id, "network_")}
        for acquirer_id in cfg.acquirer_ids:
            self.sql_ledgers[acquirer_id] = open_ledger(ctx, acquirer_id, _prefix(acquirer_id))
        self.ledgers = list(self.sql_ledgers.values())
        self.ledger_of = {party: SwitchLedger(sql) for party, sql in self.sql_ledgers.items()}
        self.network_ledger = self.ledger_of[cfg.network_id]
        self.merchants: dict[str, MerchantSpec] = {m.merchant_id: m for m in ctx.seed.merchants}
        self._advices: dict[str, tuple[AuthorizationRequest, AuthorizationResponse]] = {}
        self._advice_tasks: set[asyncio.Task[None]] = set()
        self._advice_slots = asyncio.Semaphore(ADVICES_IN_FLIGHT_MAX)
        self._settle_lock = threading.Lock()
        self._bound: dict[str, tuple[str, str, int, str]] = {}  # payment id → its first body's fields
        self._bound_lock = threading.Lock()
        self.durable, self.seed_digest, self.assets = ctx.durable, ctx.seed_digest, ctx.assets
        ctx.durable.on_rebuild(self._start)
        self._start()
        self.payments_total = ctx.metrics.counter("payments", "POS payments answered by the network, by outcome",
                                                  ("outcome",))

    # -- state -------------------------------------------------------------------------------
    def _build(self) -> None:
        """Fresh domain objects on the switch ledgers; this service is the command target."""
        cfg = self.ctx.seed.config
        fees = cfg.fee_schedule()
        self.network = Network(cfg.network_id, fees, self.ctx.clock, self.ctx.assets,
                               stand_in_enabled=cfg.stand_in_enabled, stand_in_limit_kzt=cfg.stand_in_limit_kzt,
                               ledger=self.ledger_of[cfg.network_id])
        self.acquirers: dict[str, Acquirer] = {
            a: Acquirer(a, fees, self.ctx.clock, self.ctx.assets, ledger=self.ledger_of[a]) for a in cfg.acquirer_ids}
        self._settled: dict[str, SettlementReport] = {}
        self.ctx.durable.register("service", self)

    def _seed(self) -> None:
        open_network(self.network, self.acquirers, self.ctx.seed.config, self.ctx.seed.merchants)

    def _ledger_pairs(self) -> list[tuple[SwitchLedger, SqlLedger]]:
        return [(self.ledger_of[p], sql) for p, sql in self.sql_ledgers.items()]

    # The domain calls that change state, as commands of this service.
    def _stand_in(self, req: AuthorizationRequest) -> AuthorizationResponse:
        """The stand-in decision and its advice to the issuer commit together: the advice is an
        outbox row written in the decision's transaction (not during a replay, whose rows exist)."""
        response = self.network.stand_in(req)
        if self.ctx.unit.active():
            row = (f"advice:{req.auth_id}", "issuer", "/v1/advices", idempotency_key("advice", req.auth_id),
                   self._advice_body(req, response))

            def stage(conn: Any) -> None:
                self.outbox.stage_post(conn, *row)

            self.ctx.unit.before_commit(stage)
        return response

    def _present(self, acquirer_id: str, p: Presentment) -> bool:
        return self.acquirers[acquirer_id].present(p)

    def _handle(self, receiver: str, msg: PaymentMessage) -> bool:
        """Settlement money arriving: the network takes participants' payments in, an acquirer the
        network's payment out; another purpose is refused (422) before anything is booked."""
        wanted = Purpose.SETTLEMENT_IN if receiver == self.network.id else Purpose.SETTLEMENT_OUT
        if msg.purpose is not wanted:
            raise ProblemError(422, f"{receiver} does not receive {msg.purpose.value} messages",
                               [FieldError(field="purpose", reason="not received here")])
        party = self.network if receiver == self.network.id else self.acquirers[receiver]
        return party.handle(msg)

    def _record_settlement(self, report: SettlementReport) -> None:
        self._settled[report.window_id] = report

    def _book_payment(self, payer: str, msg: PaymentMessage) -> bool:
        party = self.network if payer == self.network.id else self.acquirers[payer]
        with self.ledger_of[payer].also_in_transaction(staging_hook(self.outbox, msg, transfer_id(msg.id, Step.PAY))):
            return party.book_payment(msg)

    # -- payments ----------------------------------------------------------------------------
    async def pay(self, body: PaymentIn, *, waited_s: float = 0.0) -> PaymentOut:
        merchant = self.merchants.get(body.merchant_id)
        if merchant is None:
            raise ProblemError(404, f"no merchant {body.merchant_id} at any acquirer of this network",
                               [FieldError(field="merchant_id", reason="not found")])
        amount_kzt = kzt_in(body.amount, self.ctx.assets)
        self._bind(body, amount_kzt)
        req = AuthorizationRequest(body.id, body.card_id, merchant.merchant_id, merchant.acquirer_id,
                                   amount_kzt, body.category, self.ctx.clock.now())
        transport = self.ctx.transport
        answer = await transport.apost(self.ctx.url("issuer"), "/v1/authorizations",
                                       AuthorizationIn.of(req, self.ctx.assets).model_dump(mode="json"),
                                       key=idempotency_key("auth", req.auth_id),
                                       deadline_s=max(self.ctx.deadline_s - waited_s, 0.0))
        if answer is not None and answer.status_code == 200:
            response = AuthorizationOut.model_validate_json(answer.content).to_response(self.ctx.assets)
            outcome = "approved" if response.approved else f"declined_{response.code.value}"
        elif answer is not None and not _unavailable(answer.status_code):
            # The issuer answered, and refused: its answer stands (a decline), never a stand-in.
            response = AuthorizationResponse(req.auth_id, ReasonCode.INVALID_TRANSACTION)
            outcome = f"refused_{answer.status_code}"
            _log.warning("issuer_refused", auth_id=req.auth_id, status=answer.status_code)
        else:
            response = await self.ctx.run_command(self._stand_in, req)
            outcome = "stand_in_approved" if response.approved else "stand_in_declined"
            await self._advise(req, response)
        self.payments_total.labels(self.ctx.settings.party, outcome).inc()
        return PaymentOut(id=req.auth_id, code=response.code.value, approved=response.approved,
                          approval_code=response.approval_code, stand_in=response.stand_in,
                          merchant_id=merchant.merchant_id, acquirer_id=merchant.acquirer_id)

    def _bind(self, body: PaymentIn, amount_kzt: int) -> None:
        """A payment id is bound to its first body, whatever key carries it: the same id with
        another card, merchant, amount or category is refused here (409), never sent on — and so
        never stood in for. (The issuer, which keeps its authorizations durably, refuses an advice
        whose request differs from the authorization it knows.)"""
        fields = (body.card_id, body.merchant_id, amount_kzt, body.category)
        with self._bound_lock:
            first = self._bound.setdefault(body.id, fields)
            if len(self._bound) > _BOUND_MAX:  # the oldest ids go first (the issuer still refuses them)
                del self._bound[next(iter(self._bound))]
        if first != fields:
            raise ProblemError(409, f"payment {body.id} was sent before with other fields; use a new id",
                               [FieldError(field="id", reason="already used for another payment")],
                               slug="payment-id-reused")

    def _advice_body(self, req: AuthorizationRequest, response: AuthorizationResponse) -> dict[str, Any]:
        return {"request": AuthorizationIn.of(req, self.ctx.assets).model_dump(mode="json"),
                "response": {"code": response.code.value, "approval_code": response.approval_code}}

    async def _advise(self, req: AuthorizationRequest, response: AuthorizationResponse) -> None:
        """Record the advice durably (the relay delivers it even if this process dies), then try
        it in the background now."""
        if req.auth_id in self._advices:
            return
        self._advices[req.auth_id] = (req, response)  # its outbox row was written with the decision
        task = asyncio.get_running_loop().create_task(self._send_advice(req.auth_id))
        self._advice_tasks.add(task)
        task.add_done_callback(self._advice_tasks.discard)

    async def _send_advice(self, auth_id: str) -> None:
        for _ in range(_ADVICE_ROUNDS_MAX):
            if await self.advise_in_slot(auth_id, wait=True):  # waiting for a slot is not a round
                return
            await asyncio.sleep(_ADVICE_PAUSE_S)
        _log.warning("advice_pending", auth_id=auth_id)

    async def advise_in_slot(self, auth_id: str, *, wait: bool) -> bool:
        """One attempt to deliver ``auth_id``'s advice, in one of the ``ADVICES_IN_FLIGHT_MAX``
        slots. Every sender comes here: the advice's own background task, a capture of the
        stood-in payment, the operator's retry (and the relay, one row at a time, beside them).
        ``wait`` waits for a free slot; without it no attempt is made while every slot is taken.
        No attempt is made while another sender has the advice in line: the issuer would get it
        twice at once. ``True`` once the issuer has applied it."""
        row = f"advice:{auth_id}"
        if self.outbox.is_in_line(row) or (not wait and self._advice_slots.locked()):
            return False
        async with self._advice_slots:
            if self.outbox.is_in_line(row):  # taken by another sender while this one waited
                return False
            if auth_id in self._advices:
                return await self._advise_once(auth_id)
            # Advised before a restart: the outbox row is the advice (this may run inside a relay pass).
            with self.outbox.sending_in_line(row):
                return await self.relay.deliver_now(row)

    async def _advise_once(self, auth_id: str) -> bool:
        pending = self._advices.get(auth_id)
        if pending is None:
            return True
        req, response = pending
        with self.outbox.sending_in_line(f"advice:{auth_id}"):  # the relay does not send it meanwhile
            answer = await self.ctx.transport.apost(self.ctx.url("issuer"), "/v1/advices",
                                                    self._advice_body(req, response),
                                                    key=idempotency_key("advice", auth_id))
            if answer is not None and answer.status_code == 200:
                self._advices.pop(auth_id, None)
                await anyio.to_thread.run_sync(lambda: self.outbox.mark(f"advice:{auth_id}", delivered=True))
                return True
        return False

    async def retry_advices(self) -> list[str]:
        """The operator's retry: up to ``ADVICE_RETRIES_PER_CALL`` pending advices, each in its turn
        for a slot (advices being sent already are left to their sender); what is still pending."""
        for auth_id in sorted(self._advices)[:ADVICE_RETRIES_PER_CALL]:
            await self.advise_in_slot(auth_id, wait=True)
        return sorted(self._advices)

    async def reverse(self, auth_id: str, key: str) -> ClearingOut:
        """The POS cancels an approved payment. Of a payment the network stood in for, only once the
        issuer has applied the advice (:meth:`_advice_applied`, as a capture): before that the
        issuer holds its own late decline and would refuse the reversal for good (409), then apply
        the advice and hold the card's tenge with no one left to release it."""
        await self._advice_applied(auth_id)
        answer = await self.ctx.transport.apost(self.ctx.url("issuer"), f"/v1/authorizations/{auth_id}/reverse", {},
                                                key=idempotency_key("reverse", key))
        return clearing_or_problem(answer)

    # -- presentments ------------------------------------------------------------------------
    async def present(self, body: PresentmentIn, key: str) -> PresentmentOut:
        """:func:`services.flows.clearing.present`: the issuer resolves first (a capture beyond the
        padding is refused there, nothing booked here); then the acquirer books the presentment
        into its open batch.

        The presentment is recorded first (an outbox row of its own, ``presentment:<key>``): once
        the issuer has captured, the acquirer's half must follow even if this process dies or the
        presenter stops retrying, or the issuer's capture stands alone (a reconciliation break,
        a merchant never paid). The relay completes a row left pending
        (:meth:`complete_presentment`); a definite answer, success or refusal, ends it."""
        row = f"presentment:{key}"
        await anyio.to_thread.run_sync(self.outbox.stage_local, row, PRESENT_STEP, key, body.model_dump(mode="json"))
        with self.outbox.sending_in_line(row):  # the relay leaves it to this request meanwhile
            try:
                out = await self._present_once(body, key)
            except ProblemError as exc:
                if exc.status_code < 500:  # refused for good: nothing is owed, and no row changed
                    await anyio.to_thread.run_sync(self.outbox.drop_pending, row)
                raise
        await anyio.to_thread.run_sync(lambda: self.outbox.mark(row, delivered=True))
        return out

    async def complete_presentment(self, entry: OutboxEntry) -> bool:
        """The relay's step for a presentment whose request did not finish: the same resolution
        (the issuer answers a capture it made with its first answer) and the acquirer's booking
        (a replay books nothing). ``True`` once it is done or refused for good."""
        try:
            await self._present_once(PresentmentIn.model_validate(entry.body), entry.key)
        except ProblemError as exc:
            return exc.status_code < 500
        _log.info("presentment_completed", id=entry.id)
        return True

    async def _present_once(self, body: PresentmentIn, key: str) -> PresentmentOut:
        amount_kzt = kzt_in(body.amount, self.ctx.assets)
        resolution, p = await present(PresentmentKind(body.kind), body.auth_id, amount_kzt,
                                      self.ctx.seed.config.issuer_id, ClearingPortsHttp(self, key))
        if p is None:
            raise ProblemError(409, f"acquirer {resolution.acquirer_id} does not serve merchant "
                               f"{resolution.merchant_id}",
                               [FieldError(field="auth_id", reason="merchant unknown to its acquirer")])
        return PresentmentOut(presentment_id=p.id, kind=p.kind.value, auth_id=p.auth_id, amount=body.amount,
                              acquirer_id=p.acquirer_id, merchant_id=p.merchant_id)

    async def _advice_applied(self, auth_id: str) -> None:
        """A presentment or reversal of a payment the network stood in for waits until the issuer
        has applied the advice: before that, the issuer holds nothing for it (or its own decline)
        and would refuse it for good. One delivery attempt now (none while the advice is being sent
        or all ``ADVICES_IN_FLIGHT_MAX`` are in flight); if the issuer still has not applied it, a
        retryable 503 (the presenter or the POS retries with the same key)."""
        row = f"advice:{auth_id}"
        if await anyio.to_thread.run_sync(self.outbox.state, row) != PENDING:
            return
        # No wait for a slot: the presenter's retries must not add advices to a burst the issuer is
        # already behind on (a loaded fault run: tens of thousands of advice sends, most of them
        # from presentments, each missing its timeout).
        await self.advise_in_slot(auth_id, wait=False)
        if await anyio.to_thread.run_sync(self.outbox.state, row) == PENDING:
            raise ProblemError(503, f"the issuer has not yet applied the network's stand-in advice for {auth_id}; "
                               "retry with the same Idempotency-Key",
                               [FieldError(field="auth_id", reason="stand-in advice pending")], slug="advice-pending")

    # -- settlement --------------------------------------------------------------------------
    def settle(self, window_id: str) -> SettlementReport:
        """:func:`services.flows.settle_window`, with the issuer over HTTP. One window at a time;
        the domain lock only around each domain call (the money comes back through the banks to
        this service's inbox while the settlement runs)."""
        with self._settle_lock:
            known = self._settled.get(window_id)
            if known is not None:
                return known
            report = run_now(settle_window(window_id, self.ctx.topology, SettlementPortsHttp(self)))
            self.ctx.command(self._record_settlement, report)
            return report

    def _close(self, window_id: str) -> WindowSummary:
        for acquirer in self.acquirers.values():
            self.network.clear(acquirer.submit_batch())
        return self.network.close_window(window_id)

    def _issuer_post(self, path: str, body: dict[str, Any], key: str) -> bool:
        answer = self.ctx.transport.post(self.ctx.url("issuer"), path, body, key=key)
        return answer is not None and answer.status_code == 200

    def _pay(self, payer: str, msg: PaymentMessage) -> bool:
        """The payer books its half (with the message staged in the same transaction), then the
        message goes to the payer's bank. The issuer's half is booked by the issuer service: the
        request is recorded in the outbox first, so the relay repeats it if this call fails."""
        if payer == self.ctx.seed.config.issuer_id:
            body, key = message_to_json(msg, self.ctx.assets), idempotency_key("pay", msg.id)
            self.outbox.stage_post(None, msg.id, "issuer", "/v1/outgoing-payments", key, body)
            with self.outbox.sending_in_line(msg.id):
                delivered = self._issuer_post("/v1/outgoing-payments", body, key)
                if delivered:
                    self.outbox.mark(msg.id, delivered=True)
            return delivered
        if not self.ctx.command(self._book_payment, payer, msg):
            _log.error("settlement_not_booked", message_id=msg.id, payer=payer)
            return False
        return send_staged(self.ctx, self.outbox, msg)

    def undelivered(self) -> list[str]:
        return [i for i in self.outbox.undelivered() if not i.startswith("advice:")]

    def settlement_out(self, report: SettlementReport) -> SettlementOut:
        return SettlementOut(
            window_id=report.window_id, presentments=report.payments,
            net_positions={p: _signed(self.ctx, n) for p, n in sorted(report.net_positions_kzt.items())},
            merchant_credits={m: self.ctx.assets.format(n, "KZT")
                              for m, n in sorted(report.merchant_credits_kzt.items())},
            undelivered=[m for m in self.undelivered() if m.startswith(f"{report.window_id}:")])

    # -- messages and integrity --------------------------------------------------------------
    def receive_network(self, msg: PaymentMessage) -> bool:
        return self.ctx.command(self._handle, self.network.id, msg, answers=True)  # the acknowledgement with it

    def receiver(self, acquirer_id: str) -> Any:
        return lambda msg: self.ctx.command(self._handle, acquirer_id, msg, answers=True)

    def invariants(self) -> dict[str, list[Violation]]:
        out = {self.network.id: self.network_ledger.check_invariants()}
        for acquirer in self.acquirers.values():
            out[acquirer.id] = acquirer.ledger.check_invariants()
        return out

    def halves(self) -> list[Half]:
        out = list(party_halves(self.network.id, "network", self.network_ledger.journal()))
        for acquirer in self.acquirers.values():
            out.extend(party_halves(acquirer.id, "acquirer", acquirer.ledger.journal()))
        return out

    def in_transit(self) -> list[str]:
        return [p.id for acquirer in self.acquirers.values() for p in acquirer.open_batch()]


def _unavailable(status: int) -> bool:
    """The issuer could not answer (overloaded or failing): the network may stand in. Any other
    4xx is the issuer's answer to this request."""
    return status >= 500 or status == 429


def _prefix(party: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in party.lower()) + "_"


