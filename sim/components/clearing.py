"""After authorization: clearing, reversals, hold expiry, refunds, chargebacks and settlement windows.

Each approved payment is presented for capture after a delay (uniform between the scenario's
bounds), in full, partially (the remainder is released) or above the amount within the hold's
padding; a share is reversed instead, and a share is never presented (its hold expires). Captured
payments are refunded or charged back at the configured rates. Settlement windows close on a
schedule; a window that falls in a bank outage waits for the bank. All of it is decided by the chain;
this module only chooses *when* and *how much*, on its own rng stream (``clearing``).

These are callbacks on SimPy timeouts, not processes: a day has tens of thousands of them.

``on_done`` (optional) is called when the last clearing event scheduled for an approved payment has
run (at once when none is: a payment never presented); a bounded run then retires the payment.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from services.chain import InProcessChain
from services.contracts import SettlementReport
from sim.components.authorization import Payment
from sim.components.station import Station
from sim.distributions import BlockSampler
from sim.scenario import Scenario

__all__ = ["AfterAuthorization", "ClearingCounts"]


class ClearingCounts:
    """How the after-authorization steps went (for the summary and the integrity table)."""

    __slots__ = (
        "capture_failed",
        "captured",
        "chargebacks",
        "refund_failed",
        "refunds",
        "reversals",
        "windows",
    )

    def __init__(self) -> None:
        self.captured = 0
        self.capture_failed = 0
        self.reversals = 0
        self.refunds = 0
        self.refund_failed = 0
        self.chargebacks = 0
        self.windows = 0


class AfterAuthorization:
    def __init__(
        self,
        env: simpy.Environment,
        chain: InProcessChain,
        *,
        scenario: Scenario,
        rng: np.random.Generator,
        bank: Station,
        on_captured: Callable[[int, float], None],
        on_settled: Callable[[list[tuple[int, float]], float, SettlementReport], None],
        on_done: Callable[[Payment], None] | None = None,
    ) -> None:
        self.env = env
        self.chain = chain
        self.clearing = scenario.clearing
        self.disputes = scenario.disputes
        self.settlement = scenario.settlement
        self.padding_bps = scenario.issuer.hold_padding_bps
        self.bank = bank
        self.on_captured = on_captured
        self.on_settled = on_settled
        self.on_done = on_done
        self.u = BlockSampler(rng, lambda g, n: g.random(n))
        self.counts = ClearingCounts()
        self._unsettled: list[tuple[int, float]] = []  # (payment id, authorized at) captured since the last window
        self._window_seq = 0

    def start(self) -> None:
        self.env.process(self._expiry())
        self.env.process(self._windows())

    # -- per payment -------------------------------------------------------------------------
    def approved(self, p: Payment) -> None:
        """Schedule what the merchant does with an approval."""
        c = self.clearing
        delay_s = c.delay_min_s + (c.delay_max_s - c.delay_min_s) * self.u()
        if self.u() < c.reversal_rate:
            self._at(p, delay_s, lambda: self._reverse(p))
        elif self.u() < c.capture_rate:
            self._at(p, delay_s, lambda: self._capture(p))
        elif self.on_done is not None:
            self.on_done(p)  # never presented: only the ledger's expiry will touch its hold

    def _at(self, p: Payment, delay_s: float, fn: Callable[[], None]) -> None:
        p.after += 1
        self.env.timeout(delay_s).callbacks.append(lambda _ev: self._run(p, fn))

    def _run(self, p: Payment, fn: Callable[[], None]) -> None:
        fn()
        p.after -= 1
        if not p.after and self.on_done is not None:
            self.on_done(p)

    def _reverse(self, p: Payment) -> None:
        if self.chain.reverse(p.req.auth_id).ok:
            self.counts.reversals += 1

    def _capture(self, p: Payment) -> None:
        c = self.clearing
        amount = p.req.amount_kzt
        u = self.u()
        if u < c.partial_rate:
            share = c.partial_min_pct / 100.0 + (1.0 - c.partial_min_pct / 100.0) * self.u()
            amount = max(1, int(amount * share))
        elif u < c.partial_rate + c.over_capture_rate:
            held = p.response.held_kzt if p.response is not None else amount
            room = min(amount * self.padding_bps // 10_000, held - amount)
            if room > 0:
                amount += int(room * self.u())
        result = self.chain.capture(p.req.auth_id, amount)
        if not result.ok:
            self.counts.capture_failed += 1
            return
        self.counts.captured += 1
        now = self.env.now
        self.on_captured(p.pid, now)
        self._unsettled.append((p.pid, p.t_arrival_s))
        d = self.disputes
        if self.u() < d.refund_rate:
            self._at(p, d.refund_delay_s, lambda: self._refund(p, result.captured_kzt, chargeback=False))
        elif self.u() < d.chargeback_rate:
            self._at(p, d.chargeback_delay_s, lambda: self._refund(p, result.captured_kzt, chargeback=True))

    def _refund(self, p: Payment, captured_kzt: int, *, chargeback: bool) -> None:
        """A refund gives back part or all of the capture; a chargeback all of it."""
        if chargeback:
            result = self.chain.chargeback(p.req.auth_id, captured_kzt)
        else:
            result = self.chain.refund(p.req.auth_id, max(1, int(captured_kzt * (0.2 + 0.8 * self.u()))))
        if result.ok:
            if chargeback:
                self.counts.chargebacks += 1
            else:
                self.counts.refunds += 1
        else:
            self.counts.refund_failed += 1

    # -- periodic ----------------------------------------------------------------------------
    def _expiry(self) -> Generator[simpy.Event, Any, None]:
        while True:
            yield self.env.timeout(self.clearing.expiry_check_s)
            self.chain.expire_holds()

    def _windows(self) -> Generator[simpy.Event, Any, None]:
        s = self.settlement
        next_s = s.offset_s + s.every_s
        while True:
            yield self.env.timeout(max(0.0, next_s - self.env.now))
            up = self.bank.up_at(self.env.now)  # the banks cannot settle while they are down
            if up > self.env.now:
                yield self.env.timeout(up - self.env.now)
            self.settle()
            while next_s <= self.env.now:
                next_s += s.every_s

    def settle(self) -> SettlementReport:
        """Close a settlement window now: everything captured since the last one is settled."""
        self._window_seq += 1
        window_id = f"w{self._window_seq:04d}"
        report = self.chain.settle(window_id)
        self.counts.windows += 1
        settled, self._unsettled = self._unsettled, []
        self.on_settled(settled, self.env.now, report)
        return report
