"""CryptoCity's direct rail in the simulation: payments leg by leg, and the merchants' conversions.

A payment to a zone merchant takes the direct rail with probability ``direct.share`` (its own rng
stream, ``direct.choice``; the asset, crypto or stablecoin, on ``direct.asset``). Leg by leg:

exchange (the quote, made when a worker starts on it) → the holder confirms on the phone
(``direct.confirm_time``) → exchange (the acceptance: the on-exchange transfer) → the merchant has
the crypto.

The steps are :class:`services.chain_direct.DirectRail`'s, so the domain decides exactly as it would
live. A failed exchange leg is an outage (``exchange_unavailable``); with ``direct.fallback: card``
the payment then goes to the card path from authorization on (the same payment id; its row in
``payments`` is the card's). After a receipt, the merchant segment's conversion policy decides when
the crypto is sold (an exchange leg, then the bank leg that brings the tenge to the merchant's bank
account).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import simpy

from services.chain import InProcessChain
from services.contracts import CardholderSpec, SaleResult
from services.exchange import DirectPayment, Invoice
from services.flows.conversion import ConversionPolicy, ConversionRule
from services.flows.direct import DirectDecline, falls_back
from sim.components.authorization import Payment
from sim.components.population import Population
from sim.components.station import LegLog, Station
from sim.distributions import BlockSampler, amount_sampler, time_sampler
from sim.rng import Streams
from sim.scenario import Scenario, kzt_minor

__all__ = ["Conversion", "DirectPath", "DirectRecord", "stable_wallets"]

_DAY_S = 86_400.0
_HOUR_S = 3_600.0


class DirectRecord:
    """One direct payment and what became of it (a row of ``direct_payments``)."""

    __slots__ = ("amount_kzt", "asset", "basis_kzt", "card_pid", "category", "decline", "fee_kzt", "gain_kzt",
                 "measured", "merchant_id", "outcome", "pid", "pit_due_kzt", "pit_withheld_kzt", "proceeds_kzt",
                 "quantity_minor", "refund", "stablecoin", "t_arrival_s", "t_done_s", "tenge_at_s")

    def __init__(self, p: Payment, category: str, stablecoin: bool) -> None:
        self.pid = p.pid
        self.t_arrival_s = p.t_arrival_s
        self.t_done_s = -1.0
        self.measured = p.measured
        self.merchant_id = p.req.merchant_id
        self.category = category
        self.stablecoin = stablecoin
        self.amount_kzt = p.req.amount_kzt
        self.outcome = "declined"  # 'paid' | 'declined' | 'card' (fell back to the card)
        self.decline = ""
        self.asset = ""
        self.quantity_minor = 0
        self.fee_kzt = 0  # the direct fee's value at the quote's price
        self.pit_due_kzt = 0
        self.pit_withheld_kzt = 0
        self.proceeds_kzt = 0  # the holder's disposal, as the tax book has it
        self.gain_kzt = 0
        self.basis_kzt = 0  # the value the merchant received (net of the fee): its cost basis
        self.tenge_at_s = -1.0  # when the tenge of its conversion reached the merchant's bank
        self.card_pid = -1
        self.refund = ""  # '' none; 'refunded'; or why the refund was refused


class Conversion:
    """One conversion of a merchant's holding (a row of ``direct_conversions``)."""

    __slots__ = ("asset", "basis_kzt", "category", "fee_kzt", "gain_kzt", "gross_kzt", "merchant_id", "mid_value_kzt",
                 "net_kzt", "ok", "quantity_minor", "reason", "t_s")

    def __init__(self, merchant_id: str, category: str, asset: str, t_s: float) -> None:
        self.merchant_id, self.category, self.asset, self.t_s = merchant_id, category, asset, t_s
        self.ok = False
        self.reason = ""
        self.quantity_minor = self.gross_kzt = self.fee_kzt = self.net_kzt = 0
        self.mid_value_kzt = self.basis_kzt = self.gain_kzt = 0


class DirectPath:
    """Runs direct payments and the merchants' conversions."""

    def __init__(self, env: simpy.Environment, chain: InProcessChain, scenario: Scenario, population: Population,
                 *, stations: dict[str, Station], streams: Streams, start_card: Callable[[Payment], None],
                 write_legs: Callable[[int, LegLog], None]) -> None:
        self.env = env
        self.chain = chain
        self.spec = scenario.direct
        self.scenario = scenario
        self.population = population
        self.exchange = stations["exchange"]
        self.bank = stations["bank"]
        self.start_card = start_card
        self.write_legs = write_legs  # a direct payment's legs go to ``legs`` under −(payment id + 1)
        self.choose = BlockSampler(streams["direct.choice"], lambda g, n: g.random(n))
        self.pick_asset = BlockSampler(streams["direct.asset"], lambda g, n: g.random(n))
        self.refund_draw = BlockSampler(streams["direct.refund"], lambda g, n: g.random(n))
        self.refund_rate = scenario.disputes.refund_rate
        self.refund_delay_s = scenario.disputes.refund_delay_s
        self.confirm = time_sampler(self.spec.confirm_time, streams["direct.confirm"])
        self.stable_code = scenario.exchange.stablecoin_asset
        self.records: list[DirectRecord] = []
        self.conversions: list[Conversion] = []
        self.in_flight = 0
        self._held: dict[tuple[str, str], list[DirectRecord]] = {}  # receipts not yet converted
        self._converting: set[tuple[str, str]] = set()
        self._rules = {c: _rule(self.spec.policy_of(c)) for c in scenario.population.merchants.categories}
        self._category = {m.merchant_id: m.category for m in population.merchants}

    # -- the rail's choice ----------------------------------------------------------------------
    def takes(self, p: Payment) -> bool:
        """Whether this payment goes direct (a zone merchant, and the draw says so)."""
        merchant = self.population.merchants[p.merchant_index]
        return merchant.cryptocity and self.choose() < self.spec.share

    def start(self, p: Payment) -> None:
        self.in_flight += 1
        self.env.process(self._run(p))

    # -- the payment ----------------------------------------------------------------------------
    def _run(self, p: Payment) -> Generator[simpy.Event, Any, None]:
        env, direct = self.env, self.chain.direct
        holder = self.population.cardholders[p.card_index]
        stable = self.pick_asset() < self.spec.assets.stablecoin
        rec = DirectRecord(p, self._category[p.req.merchant_id], stable)
        priority = (self.stable_code,) if stable else holder.asset_priority
        invoice = Invoice(f"d{p.pid}", holder.holder_id, p.req.merchant_id, p.req.amount_kzt, priority)
        legs: LegLog = []
        quoted: list[object] = []
        decline: DirectDecline | None = None
        payment: DirectPayment | None = None
        if not (yield from self.exchange.call(legs, False, on_service=lambda: quoted.append(direct.quote(invoice)))):
            decline = DirectDecline.EXCHANGE_UNAVAILABLE
        elif isinstance(quoted[-1], DirectDecline):
            decline = quoted[-1]
        else:
            yield env.timeout(self.confirm())
            if not (yield from self.exchange.call(legs, False)):
                decline = DirectDecline.EXCHANGE_UNAVAILABLE
            else:
                outcome = direct.accept(invoice)
                payment = outcome.payment if outcome.paid_direct else None
                decline = None if payment is not None else outcome.decline
        if decline is DirectDecline.EXCHANGE_UNAVAILABLE:
            direct.drop_quote(invoice.invoice_id)
        rec.t_done_s = env.now
        self.write_legs(_leg_id(p.pid), legs)
        if payment is not None:
            self._paid(rec, payment)
        else:
            assert decline is not None
            rec.decline = decline.value
            if falls_back(decline, self.spec.fallback):
                rec.outcome, rec.card_pid = "card", p.pid
                self.start_card(p)  # the card path from authorization on, arrival time unchanged
        self.records.append(rec)
        self.in_flight -= 1

    def _paid(self, rec: DirectRecord, payment: DirectPayment) -> None:
        rec.outcome = "paid"
        rec.asset, rec.quantity_minor = payment.asset, payment.quantity_minor
        rec.fee_kzt, rec.pit_withheld_kzt, rec.gain_kzt = payment.fee_kzt, payment.pit_kzt, payment.gain_kzt
        rec.pit_due_kzt, rec.proceeds_kzt = payment.pit_due_kzt, payment.proceeds_kzt
        rec.basis_kzt = payment.amount_kzt - payment.fee_kzt
        key = (rec.merchant_id, rec.asset)
        self._held.setdefault(key, []).append(rec)
        rule = self._rules[rec.category]
        if rule.on_receipt(self._value_kzt(key)):
            self._convert_later(key)
        share = self.refund_draw()
        if share < self.refund_rate:  # the same draw, scaled, sets how much: 20–100 % of the amount
            amount = max(1, rec.amount_kzt * (20 + int(80 * share / self.refund_rate)) // 100)
            self.in_flight += 1
            self.env.process(self._refund(rec, amount))

    def _refund(self, rec: DirectRecord, amount_kzt: int) -> Generator[simpy.Event, Any, None]:
        """The merchant refunds in crypto at the original quantity, out of its wallet (the rule of
        ``services.exchange.direct``); a merchant that converted already cannot."""
        yield self.env.timeout(self.refund_delay_s)
        legs: LegLog = []
        served = yield from self.exchange.call(legs, False)
        self.write_legs(_leg_id(rec.pid), legs)
        if served:
            refund = self.chain.direct.refund(f"d{rec.pid}:refund1", f"d{rec.pid}", amount_kzt)
            rec.refund = "refunded" if refund.ok else refund.reason.value
            if refund.ok:  # the crypto left the merchant's wallet: so did its value at the payment's price
                unit = self.chain.assets.get(refund.asset).unit
                rec.basis_kzt = max(0, rec.basis_kzt - _value(refund.quantity_minor, refund.price_kzt, unit))
        else:
            rec.refund = "exchange_unavailable"
        self.in_flight -= 1

    # -- conversions ----------------------------------------------------------------------------
    def _value_kzt(self, key: tuple[str, str]) -> int:
        merchant_id, asset = key
        held = self.chain.direct.desk.wallet_minor(merchant_id, asset)
        return _value(held, self.chain.exchange.mid_price(asset), self.chain.assets.get(asset).unit)

    def _convert_later(self, key: tuple[str, str]) -> None:
        if key in self._converting:
            return  # one conversion of a holding at a time; it takes everything held when it runs
        self._converting.add(key)
        self.in_flight += 1
        self.env.process(self._convert(key))

    def _convert(self, key: tuple[str, str]) -> Generator[simpy.Event, Any, None]:
        merchant_id, asset = key
        legs: LegLog = []
        try:
            if not (yield from self.exchange.call(legs, False)):
                return  # the exchange is out: the holding waits for the next chance
            quantity = self.chain.direct.desk.wallet_minor(merchant_id, asset)
            if quantity <= 0:
                return
            conv = Conversion(merchant_id, self._category[merchant_id], asset, self.env.now)
            price = self.chain.exchange.mid_price(asset)
            conv.quantity_minor = quantity
            conv.mid_value_kzt = _value(quantity, price, self.chain.assets.get(asset).unit)
            sale = self.chain.direct.convert(merchant_id, asset, quantity)
            self.conversions.append(conv)
            if not sale.ok:
                conv.reason = sale.reason.value
                return
            receipts = self._held.pop(key, [])
            _sold(conv, sale, receipts)
            yield from self.bank.call(legs, False)  # the tenge's way to the merchant's bank account
            for rec in receipts:
                rec.tenge_at_s = self.env.now
        finally:
            self.write_legs(-1, legs)  # a conversion is no payment's
            self._converting.discard(key)
            self.in_flight -= 1

    def end_of_day(self) -> Generator[simpy.Event, Any, None]:
        """At each local midnight inside the run (and at its last second if it ends at one),
        segments with the ``end_of_day`` policy sell what they hold."""
        for t in _midnights(self.scenario.arrivals.start_hour, self.scenario.duration_s):
            yield self.env.timeout(t - self.env.now)
            for key in list(self._held):
                if self._rules[self._category[key[0]]].at_end_of_day:
                    self._convert_later(key)

    # -- readings -------------------------------------------------------------------------------
    def unrealized_kzt(self) -> int:
        """The merchants' price gain (or loss) on what they still hold: value at mid − basis."""
        total = 0
        for key, receipts in self._held.items():
            if receipts:
                total += self._value_kzt(key) - sum(r.basis_kzt for r in receipts)
        return total

    def held(self) -> list[tuple[str, str, int, int]]:
        """(merchant, asset, value at mid, basis) of every holding not converted by the end."""
        return [(m, a, self._value_kzt((m, a)), sum(r.basis_kzt for r in receipts))
                for (m, a), receipts in sorted(self._held.items()) if receipts]


def _leg_id(pid: int) -> int:
    """A direct payment's legs in ``legs``: never a card payment's id (those are ≥ 0)."""
    return -(pid + 1)


def _rule(spec: Any) -> ConversionRule:
    return ConversionRule(ConversionPolicy(spec.policy), kzt_minor(spec.threshold_kzt))


def _value(quantity_minor: int, price_kzt: Decimal, unit: int) -> int:
    """``quantity_minor`` at ``price_kzt`` per major unit, in tiyn, rounded down."""
    num, den = price_kzt.as_integer_ratio()
    return quantity_minor * num * 100 // (den * unit)


def _sold(conv: Conversion, sale: SaleResult, receipts: list[DirectRecord]) -> None:
    conv.ok = True
    leg = sale.legs[0]
    conv.gross_kzt, conv.fee_kzt, conv.net_kzt = leg.gross_kzt, leg.fee_kzt, sale.net_kzt
    conv.gain_kzt = leg.realized_gain_kzt
    conv.basis_kzt = sum(r.basis_kzt for r in receipts)


def _midnights(start_hour: int, duration_s: float) -> list[float]:
    first = ((24 - start_hour) % 24) * _HOUR_S or _DAY_S
    out = []
    t = first
    while t < duration_s:
        out.append(t)
        t += _DAY_S
    if t == duration_s:
        out.append(duration_s - 1.0)
    return out


def stable_wallets(scenario: Scenario, streams: Streams, cardholders: list[CardholderSpec]) -> None:
    """Give each cardholder the tenge stablecoin it keeps for direct payments (stream
    ``direct.stablecoin``), in place, before the wallets open."""
    draw = amount_sampler(scenario.direct.stablecoin_wallet_kzt, streams["direct.stablecoin"])
    for i, holder in enumerate(cardholders):
        cardholders[i] = replace(holder, stablecoin_minor=holder.stablecoin_minor + draw())
