"""Open-loop arrivals: payments arrive on their own schedule, whatever the chain's backlog.

A non-homogeneous Poisson process whose rate is ``rate_per_s × rate_scale × hourly_profile[hour]``
(× a burst's multiplier inside a burst). Arrival times come from one exponential variate each on
the ``arrivals`` stream by time rescaling (a unit-rate budget spent across the piecewise-constant
rate), so they depend on nothing else in the scenario: who pays where and how much are drawn on
other streams (``arrivals.cardholder``, ``arrivals.category``, ``arrivals.merchant``,
``amounts.<category>``). Coordinated omission cannot happen: the next arrival never waits for the
last answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from services.contracts import AuthorizationRequest
from sim.components.authorization import Payment
from sim.components.population import Population
from sim.distributions import BlockSampler, amount_sampler
from sim.rng import Streams
from sim.scenario import ArrivalsSpec, Scenario

__all__ = ["ArrivalSchedule", "Arrivals"]

_HOUR_S = 3_600.0


class ArrivalSchedule:
    """The piecewise-constant arrival rate and the next arrival time after ``t``."""

    def __init__(self, spec: ArrivalsSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.base = spec.rate_per_s * spec.rate_scale
        self.offset_s = spec.start_hour * _HOUR_S
        self.bursts = sorted((b.start_s, b.start_s + b.duration_s, b.multiplier) for b in spec.bursts)
        self.exp = BlockSampler(rng, lambda g, n: g.exponential(1.0, n))

    def rate_at(self, t: float) -> float:
        hour = int(((t + self.offset_s) // _HOUR_S) % 24)
        rate = self.base * self.spec.hourly_profile[hour]
        for start, end, mult in self.bursts:
            if start <= t < end:
                rate *= mult
        return rate

    def next_break(self, t: float) -> float:
        """The next time after ``t`` at which the rate may change."""
        nxt = (math.floor((t + self.offset_s) / _HOUR_S) + 1) * _HOUR_S - self.offset_s
        for start, end, _ in self.bursts:
            if t < start < nxt:
                nxt = start
            if t < end < nxt:
                nxt = end
        return nxt

    def next_after(self, t: float, until: float) -> float:
        """The next arrival after ``t``, or ``inf`` if none falls before ``until``."""
        budget = self.exp()
        while t < until:
            rate = self.rate_at(t)
            brk = min(self.next_break(t), until)
            if rate > 0.0 and budget <= rate * (brk - t):
                return t + budget / rate
            budget -= rate * (brk - t)
            t = brk
        return math.inf


class Arrivals:
    """Generates payments and hands them to ``start``."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, population: Population,
                 streams: Streams, start: Callable[[Payment], None]) -> None:
        self.env = env
        self.scenario = scenario
        self.population = population
        self.schedule = ArrivalSchedule(scenario.arrivals, streams["arrivals"])
        self.start_payment = start
        n_cards = len(population.cardholders)
        self.pick_card = BlockSampler(streams["arrivals.cardholder"], lambda g, n: g.integers(0, n_cards, n))
        cats = list(scenario.population.merchants.categories.items())
        self.categories = [name for name, _ in cats]
        weights = np.asarray([c.weight for _, c in cats], dtype=float)
        p = weights / weights.sum()
        self.pick_category = BlockSampler(streams["arrivals.category"], lambda g, n: g.choice(len(p), n, p=p))
        self.pick_merchant = BlockSampler(streams["arrivals.merchant"], lambda g, n: g.random(n))
        self.amount = [amount_sampler(c.amount, streams[f"amounts.{name}"]) for name, c in cats]
        self.count = 0
        self.until_s = scenario.duration_s

    def start(self) -> None:
        self.env.process(self._run())

    def _run(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        sc = self.scenario
        from_s, until_s = sc.measure_from_s, sc.measure_until_s
        cards = self.population.cardholders
        merchants = self.population.merchants
        by_cat = self.population.merchants_by_category
        t = self.schedule.next_after(0.0, self.until_s)
        while t < self.until_s:
            yield env.timeout(t - env.now)
            ci = int(self.pick_card())
            k = int(self.pick_category())
            pool = by_cat[self.categories[k]]
            mi = pool[int(self.pick_merchant() * len(pool))]
            merchant = merchants[mi]
            pid = self.count
            self.count += 1
            req = AuthorizationRequest(f"a{pid}", cards[ci].card_id, merchant.merchant_id,
                                       merchant.acquirer_id, self.amount[k](), merchant.category, t)
            self.start_payment(Payment(pid, req, card_index=ci, merchant_index=mi, t_arrival_s=t,
                                       measured=from_s <= t < until_s))
            t = self.schedule.next_after(t, self.until_s)
