"""The model tree of one run (desmod's shape): built from the scenario, then run, then read.

``World`` owns the SimPy environment, the domain chain on a sim clock, the population, the six
stations, the market, the authorization path, the after-authorization processes and the metrics.
Each component gets its own named rng stream; none reads another's.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import simpy

from services.chain import InProcessChain
from services.clock import FunctionClock
from services.contracts import SettlementReport
from sim.components.arrivals import Arrivals
from sim.components.authorization import AuthorizationPath, Payment
from sim.components.clearing import AfterAuthorization
from sim.components.market import Market
from sim.components.population import build_population
from sim.components.station import Station
from sim.distributions import time_sampler
from sim.domain import chain_config
from sim.metrics import Metrics
from sim.results import ResultsWriter
from sim.rng import Streams
from sim.scenario import SERVICE_NAMES, Scenario

__all__ = ["DRAIN_LIMIT_S", "GC_THRESHOLDS", "World", "few_collections"]

DRAIN_LIMIT_S = 3_600.0  # after the last arrival, in-flight payments get this long to finish
# A run allocates millions of objects that live to its end (ledger journals, tax lots, auths) and
# makes almost no reference cycles. With CPython's default thresholds (700, 10, 10) the cyclic
# collector rescans that growing heap again and again: a quarter or more of a run's CPU time, for
# nothing collected. These thresholds keep it running (cycles are still freed) far less often.
GC_THRESHOLDS = (100_000, 50, 100)


@contextmanager
def few_collections() -> Iterator[None]:
    """Run the block with :data:`GC_THRESHOLDS`; the previous thresholds come back after."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)

Progress = Callable[[float, int], None]  # (virtual seconds, payments so far)


class World:
    def __init__(self, scenario: Scenario, seed: int, writer: ResultsWriter) -> None:
        with few_collections():
            self._build(scenario, seed, writer)

    def _build(self, scenario: Scenario, seed: int, writer: ResultsWriter) -> None:
        self.scenario = scenario
        self.seed = seed
        self.streams = Streams(seed)
        self.env = simpy.Environment()
        env = self.env
        self.chain = InProcessChain(chain_config(scenario), FunctionClock(lambda: env.now), scenario.registry())
        self.market = Market(env, scenario.market, self.chain, self.streams)
        self.population = build_population(scenario, self.streams)
        for holder in self.population.cardholders:
            self.chain.open_cardholder(holder)
        for merchant in self.population.merchants:
            self.chain.open_merchant(merchant)
        window = (scenario.measure_from_s, scenario.measure_until_s)
        self.stations: dict[str, Station] = {}
        for name in SERVICE_NAMES:
            spec = scenario.services.get(name)
            ret = (time_sampler(spec.return_service_time, self.streams[f"latency.{name}.return"])
                   if spec.return_service_time is not None else None)
            self.stations[name] = Station(
                env, name, spec, sample=time_sampler(spec.service_time, self.streams[f"latency.{name}"]),
                sample_return=ret, window_s=window,
            )
        self.metrics = Metrics(
            env, scenario, self.population, stations=self.stations, writer=writer,
            probes={
                "exchange_cash_kzt": self.chain.exchange_kzt_cash,
                "issuer_funding_kzt": self.chain.issuer_funding_kzt,
                "stand_in_exposure_kzt": self.chain.stand_in_exposure_kzt,
            },
            prices=self.market.mid_prices,
        )
        self.after = AfterAuthorization(env, self.chain, scenario=scenario, rng=self.streams["clearing"],
                                        bank=self.stations["bank"], on_captured=self.metrics.captured,
                                        on_settled=self._settled)
        self.path = AuthorizationPath(env, self.chain, self.stations, scenario.network.deadline_ms / 1000.0,
                                      self._payment_done)
        self.arrivals = Arrivals(env, scenario, self.population, self.streams, self.path.start)
        self.settlement_reports: list[SettlementReport] = []

    def _payment_done(self, p: Payment) -> None:
        self.metrics.payment_done(p)
        if p.response is not None and p.response.approved:
            self.after.approved(p)

    def _settled(self, items: list[tuple[int, float]], t_s: float, report: SettlementReport) -> None:
        self.settlement_reports.append(report)
        self.metrics.settled(items, t_s, report.window_id, report.net_positions_kzt)

    def run(self, progress: Progress | None = None) -> None:
        with few_collections():
            self._run(progress)

    def _run(self, progress: Progress | None) -> None:
        sc = self.scenario
        self.market.start()
        self.after.start()
        self.arrivals.start()
        self.env.process(self.metrics.sampler())
        if progress is not None:
            self.env.process(self._progress(progress))
        self.env.run(until=sc.duration_s)
        limit = sc.duration_s + DRAIN_LIMIT_S
        while self.path.in_flight and self.env.now < limit:
            self.env.run(until=min(limit, self.env.now + 1.0))
        self.path.flush_deferred()
        if sc.settlement.settle_at_end:
            self.after.settle()
        for st in self.stations.values():
            st.finish()
        self.metrics.sample()
        if progress is not None:
            progress(self.env.now, self.arrivals.count)

    def _progress(self, progress: Progress) -> Generator[simpy.Event, Any, None]:
        step = max(1.0, self.scenario.duration_s / 200.0)
        while True:
            progress(self.env.now, self.arrivals.count)
            yield self.env.timeout(step)
