"""The authorization path of one payment, leg by leg, with the network's deadline.

POS → acquirer → network → issuer (screen) → [exchange (sell) → custody → bank (proceeds) →
issuer (finalize)] → network → acquirer → POS. Each leg holds a worker of its station; the domain
step the leg stands for (:class:`services.contracts.PaymentChain`) is called at the virtual time the
leg finishes, so prices, balances and limits are read when they would be in the real chain.

The network waits ``deadline_ms`` for the issuer. Past it the network stands in
(:meth:`PaymentChain.stand_in`) and answers the POS; the issuer keeps working, unaware. When its
work ends it does not answer: the stand-in decision reaches it as an advice
(:meth:`PaymentChain.apply_advice`), and a sale it completed meanwhile is an orphaned sale
(:meth:`PaymentChain.orphaned_sale`). A station that fails every attempt makes the issuer decline
with 91 (the exchange leg) or the payment fail with 96 (the acquirer or network legs).

The authorization leg of a payment is over when the POS has its answer, the issuer has finished and
every delivery that waited for the banks has been made; ``on_closed`` (optional) is then called once
(a bounded run tells the chain, which forgets what only that leg needed).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import simpy

from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    PaymentChain,
    ReasonCode,
    SaleReason,
    SaleResult,
)
from sim.components.station import LegLog, Station

__all__ = ["AuthorizationPath", "Payment"]


class Payment:
    """One payment in flight and what happened to it."""

    __slots__ = (
        "after",
        "answered",
        "card_index",
        "closed",
        "deadline_missed",
        "deliveries",
        "issuer_done",
        "legs",
        "measured",
        "merchant_index",
        "orphaned",
        "pid",
        "proceeds_paid",
        "req",
        "response",
        "sale",
        "stand_in",
        "t_arrival_s",
        "t_done_s",
    )

    def __init__(self, pid: int, req: AuthorizationRequest, *, card_index: int, merchant_index: int,
                 t_arrival_s: float, measured: bool) -> None:
        self.pid = pid
        self.req = req
        self.card_index = card_index
        self.merchant_index = merchant_index
        self.t_arrival_s = t_arrival_s
        self.measured = measured
        self.legs: LegLog = []
        self.response: AuthorizationResponse | None = None  # what the POS was told
        self.sale: SaleResult | None = None
        self.stand_in = False
        self.deadline_missed = False
        self.orphaned = False
        self.proceeds_paid = False  # the sale's tenge has been moved to the card
        self.issuer_done = False
        self.t_done_s = -1.0  # when the POS got its answer
        self.answered = False  # the row is written: the POS has its answer and the issuer is done
        self.deliveries = 0  # proceeds or orphaned sales waiting for the banks
        self.closed = False  # the authorization leg is over (answered, nothing waiting)
        self.after = 0  # clearing events still scheduled (capture, reversal, refund, chargeback)


def _failed_sale(req: AuthorizationRequest, reason: SaleReason) -> SaleResult:
    return SaleResult(f"{req.auth_id}:sale", req.auth_id, "", False, reason)


_NO_LEGS: LegLog = []  # what a payment's leg log becomes once its rows are written (never appended to)


class AuthorizationPath:
    """Runs payments through the stations and the chain; calls ``on_complete`` once per payment,
    when the POS has its answer and the issuer has finished (the row is then final)."""

    def __init__(self, env: simpy.Environment, chain: PaymentChain, stations: dict[str, Station],
                 deadline_s: float, on_complete: Callable[[Payment], None], *,
                 on_closed: Callable[[Payment], None] | None = None) -> None:
        self.env = env
        self.chain = chain
        self.acquirer = stations["acquirer"]
        self.network = stations["network"]
        self.issuer = stations["issuer"]
        self.exchange = stations["exchange"]
        self.custody = stations["custody"]
        self.bank = stations["bank"]
        self.deadline_s = deadline_s
        self.on_complete = on_complete
        self.on_closed = on_closed
        self._returning = (self.network.sample_return is not None or self.acquirer.sample_return is not None)
        self.in_flight = 0
        self.advices_applied = 0  # stand-in decisions the issuer applied (once each)
        self._deferred: dict[int, tuple[Payment, Callable[[], object]]] = {}  # waiting for the banks
        self._deferred_seq = 0

    def start(self, p: Payment) -> None:
        self.in_flight += 1
        self.env.process(self._run(p))

    # -- the forward path --------------------------------------------------------------------
    def _run(self, p: Payment) -> Generator[simpy.Event, Any, None]:
        if not (yield from self.acquirer.call(p.legs, p.measured)) or not (
            yield from self.network.call(p.legs, p.measured)
        ):
            # The POS hears nothing useful: the payment fails before reaching the issuer.
            p.response = AuthorizationResponse(p.req.auth_id, ReasonCode.SYSTEM_MALFUNCTION)
            p.issuer_done = True
            self._answer(p)
            return
        deadline = self.env.timeout(self.deadline_s)
        deadline.callbacks.append(lambda _ev: self._deadline(p))
        response = yield from self._issuer(p)
        p.issuer_done = True
        if p.response is None:  # in time: the issuer's answer goes back
            p.response = response
            yield from self._return_trip(p)
            self._answer(p)
        elif p.t_done_s >= 0.0:  # late, and the POS already has the stand-in answer
            self._complete(p)

    def _issuer(self, p: Payment) -> Generator[simpy.Event, Any, AuthorizationResponse]:
        chain, req = self.chain, p.req
        if not (yield from self.issuer.call(p.legs, p.measured)):
            return self._conclude(p, None, ReasonCode.ISSUER_UNAVAILABLE)
        order = chain.screen(req).sell
        if order is None:  # a decline, or the card's tenge covers it: decided in this leg
            return self._conclude(p, None)
        sale: SaleResult
        # The exchange quotes when it starts on the order and executes at the leg's end: a quote
        # whose time-to-live ran out over the leg is refused (05), one the market moved is re-priced.
        if not (yield from self.exchange.call(p.legs, p.measured, on_service=lambda: chain.quote(order))):
            chain.drop_quote(order.id)
            sale = _failed_sale(req, SaleReason.EXCHANGE_UNAVAILABLE)
        else:
            sale = chain.sell(order)
            if sale.ok:
                p.sale = sale
                if not (yield from self.custody.call(p.legs, p.measured)):
                    sale = _failed_sale(req, SaleReason.CUSTODY_UNAVAILABLE)
                elif (yield from self.bank.call(p.legs, p.measured)):
                    chain.pay_proceeds(sale)
                    p.proceeds_paid = True
                else:
                    sale = _failed_sale(req, SaleReason.BANK_UNAVAILABLE)
        if not (yield from self.issuer.call(p.legs, p.measured)):
            return self._conclude(p, sale, ReasonCode.ISSUER_UNAVAILABLE)
        return self._conclude(p, sale)

    def _conclude(self, p: Payment, sale: SaleResult | None,
                  failed: ReasonCode | None = None) -> AuthorizationResponse:
        """The issuer's work ends. In time: finalize (or the failure code). Late: the network has
        answered already, so the stand-in decision is applied as an advice instead. Either way a
        completed sale without an approval behind it is an orphaned sale."""
        chain, req = self.chain, p.req
        if p.stand_in and p.response is not None:
            if chain.apply_advice(req, p.response):
                self.advices_applied += 1
            approved = False  # the issuer's own answer is never used
        else:
            response = (AuthorizationResponse(req.auth_id, failed) if failed is not None
                        else chain.finalize(req, sale))
            approved = response.approved
        sale_done = p.sale
        if sale_done is not None and sale_done.ok:
            if not approved:
                p.orphaned = True
                self._when_bank_up(p, lambda: chain.orphaned_sale(req, sale_done))
            elif not p.proceeds_paid:  # approved from tenge already on the card; the sale's still due
                self._when_bank_up(p, lambda: chain.pay_proceeds(sale_done))
        return p.response if p.response is not None else response

    # -- proceeds that could not move at once --------------------------------------------------
    def _when_bank_up(self, p: Payment, deliver: Callable[[], object]) -> None:
        """Deliver a sale's proceeds now, or when the banks are back (the sender retries)."""
        now = self.env.now
        up = self.bank.up_at(now)
        if up <= now:
            deliver()
            return
        key = self._deferred_seq
        self._deferred_seq += 1
        self._deferred[key] = (p, deliver)
        p.deliveries += 1
        self.env.timeout(up - now).callbacks.append(lambda _ev: self._run_deferred(key))

    def _run_deferred(self, key: int) -> None:
        entry = self._deferred.pop(key, None)
        if entry is not None:
            p, deliver = entry
            deliver()
            p.deliveries -= 1
            if p.answered and not p.deliveries:
                self._close(p)

    def flush_deferred(self) -> None:
        """Recovery at the end of a run: deliver whatever still waits for the banks."""
        for key in sorted(self._deferred):
            self._run_deferred(key)

    # -- the deadline ------------------------------------------------------------------------
    def _deadline(self, p: Payment) -> None:
        if p.issuer_done or p.response is not None:
            return
        p.deadline_missed = True
        p.stand_in = True
        p.response = self.chain.stand_in(p.req)
        if self._returning:
            self.env.process(self._late_return(p))
        else:
            self._answer(p)

    def _late_return(self, p: Payment) -> Generator[simpy.Event, Any, None]:
        yield from self._return_trip(p)
        self._answer(p)

    # -- the way back ------------------------------------------------------------------------
    def _return_trip(self, p: Payment) -> Generator[simpy.Event, Any, None]:
        if self.network.sample_return is not None:
            yield from self.network.call(p.legs, p.measured, returning=True)
        if self.acquirer.sample_return is not None:
            yield from self.acquirer.call(p.legs, p.measured, returning=True)

    def _answer(self, p: Payment) -> None:
        p.t_done_s = self.env.now
        if p.issuer_done:
            self._complete(p)

    def _complete(self, p: Payment) -> None:
        self.in_flight -= 1
        self.on_complete(p)
        p.answered = True
        p.legs = _NO_LEGS  # written; nothing reads them again
        if not p.deliveries:
            self._close(p)

    def _close(self, p: Payment) -> None:
        p.closed = True
        if self.on_closed is not None:
            self.on_closed(p)
