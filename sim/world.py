"""The model tree of one run (desmod's shape): built from the scenario, then run, then read.

``World`` owns the SimPy environment, the domain chain on a sim clock, the population, the six
stations, the market, the authorization path, the after-authorization processes and the metrics.
Each component gets its own named rng stream; none reads another's.

``bounded=True`` (what ``ccsim run`` and sweeps use) keeps memory bounded over a long run: every
party's journal streams into ``results.db`` as it is written, and the world tells the chain when
each payment is over (:mod:`services.bounded_books`), so the books keep balances, pending holds and
the payments still in flight, not the history. The results are the same either way.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import simpy

from services.chain import InProcessChain
from services.clock import FunctionClock
from services.contracts import SettlementReport
from services.ledger import Transfer
from sim.components.arrivals import Arrivals
from sim.components.authorization import AuthorizationPath, Payment
from sim.components.clearing import AfterAuthorization
from sim.components.direct import DirectPath, stable_wallets
from sim.components.market import Market
from sim.components.population import build_population
from sim.components.station import Station
from sim.distributions import time_sampler
from sim.domain import chain_config
from sim.metrics import Metrics
from sim.results import ResultsWriter, legs, transfers
from sim.rng import Streams
from sim.scenario import SERVICE_NAMES, Scenario

__all__ = ["DRAIN_LIMIT_S", "GC_THRESHOLDS", "OPEN_FLUSH_EVERY", "World", "few_collections"]

DRAIN_LIMIT_S = 3_600.0  # after the last arrival, in-flight payments get this long to finish
# A run allocates millions of objects that live to its end (ledger journals, tax lots, auths) and
# makes almost no reference cycles. With CPython's default thresholds (700, 10, 10) the cyclic
# collector rescans that growing heap again and again: a quarter or more of a run's CPU time, for
# nothing collected. These thresholds keep it running (cycles are still freed) far less often.
GC_THRESHOLDS = (100_000, 50, 100)
OPEN_FLUSH_EVERY = 4_096  # a bounded world streams the journals after opening this many cardholders


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
    def __init__(self, scenario: Scenario, seed: int, writer: ResultsWriter, *, bounded: bool = False) -> None:
        with few_collections():
            self._build(scenario, seed, writer, bounded)

    def _build(self, scenario: Scenario, seed: int, writer: ResultsWriter, bounded: bool) -> None:
        self.scenario = scenario
        self.seed = seed
        self.bounded = bounded
        self.writer = writer
        self.streams = Streams(seed)
        self.env = simpy.Environment()
        env = self.env
        self.chain = InProcessChain(chain_config(scenario), FunctionClock(lambda: env.now), scenario.registry())
        if bounded:
            keep = scenario.metrics.write_transfers and writer.keeps_rows
            self.chain.stream_journals(self._export if keep else _discard)
        self.market = Market(env, scenario.market, self.chain, self.streams)
        self.population = build_population(scenario, self.streams)
        cardholders = self.population.cardholders
        if scenario.direct.enabled and scenario.direct.assets.stablecoin > 0:
            stable_wallets(scenario, self.streams, cardholders)
        for i, holder in enumerate(cardholders):
            self.chain.open_cardholder(holder)
            if bounded:
                # The exchange and the tax book hold the wallets and lots now; the run reads only
                # the card, its funding mode and residency from the population.
                cardholders[i] = replace(holder, holdings=())
                if (i + 1) % OPEN_FLUSH_EVERY == 0:
                    self.chain.flush_journals()
        self.chain.flush_journals()
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
        probes = {
            "exchange_cash_kzt": self.chain.exchange_kzt_cash,
            "issuer_funding_kzt": self.chain.issuer_funding_kzt,
            "stand_in_exposure_kzt": self.chain.stand_in_exposure_kzt,
        }
        self.direct: DirectPath | None = None
        if scenario.direct.enabled:
            self.direct = DirectPath(env, self.chain, scenario, self.population, stations=self.stations,
                                     streams=self.streams, start_card=self._start_card, write_legs=self._direct_legs)
            probes["merchant_unrealized_pnl_kzt"] = self.direct.unrealized_kzt
        self.metrics = Metrics(env, scenario, self.population, stations=self.stations, writer=writer,
                               probes=probes, prices=self.market.mid_prices)
        self.after = AfterAuthorization(env, self.chain, scenario=scenario, rng=self.streams["clearing"],
                                        bank=self.stations["bank"], on_captured=self.metrics.captured,
                                        on_settled=self._settled, on_done=self._clearing_done if bounded else None)
        self.path = AuthorizationPath(env, self.chain, self.stations, scenario.network.deadline_ms / 1000.0,
                                      self._payment_done, on_closed=self._authorization_closed if bounded else None)
        self.arrivals = Arrivals(env, scenario, self.population, self.streams,
                                 self.path.start if self.direct is None else self._route)
        self.settlement_reports: list[SettlementReport] = []

    def _route(self, p: Payment) -> None:
        """A payment to a zone merchant may take the direct rail (``direct.share``)."""
        direct = self.direct
        if direct is not None and direct.takes(p):
            direct.start(p)
        else:
            self.path.start(p)

    def _direct_legs(self, leg_id: int, log: list[tuple[str, float, float]]) -> None:
        self.writer.add_rows(legs, [(leg_id, name, wait_s * 1000.0, svc_s * 1000.0) for name, wait_s, svc_s in log])

    def _start_card(self, p: Payment) -> None:
        """A direct payment that falls back to the card (the card's request, same arrival)."""
        self.path.start(p)

    def _payment_done(self, p: Payment) -> None:
        self.metrics.payment_done(p)
        if p.response is not None and p.response.approved:
            self.after.approved(p)

    # -- bounded books: when a payment is over (services.bounded_books) -------------------------
    def _authorization_closed(self, p: Payment) -> None:
        if p.after:
            self.chain.close_authorization(p.req.auth_id)  # clearing events still to come
        else:
            self.chain.retire(p.req.auth_id)

    def _clearing_done(self, p: Payment) -> None:
        if p.closed:
            self.chain.retire(p.req.auth_id)

    def _export(self, party: str, seq: int, batch: list[Transfer]) -> None:
        """A streamed journal batch into ``transfers`` (columns in the table's order)."""
        self.writer.add_rows(transfers, [
            (party, seq + i, t.id, t.debit_account_id, t.credit_account_id, str(t.amount), t.asset, t.code,
             int(t.flags), t.pending_id, t.user_data, t.timestamp)
            for i, t in enumerate(batch)
        ])

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
        if self.direct is not None:
            self.env.process(self.direct.end_of_day())
        self.env.process(self.metrics.sampler())
        if progress is not None:
            self.env.process(self._progress(progress))
        self.env.run(until=sc.duration_s)
        limit = sc.duration_s + DRAIN_LIMIT_S
        while (self.path.in_flight or (self.direct is not None and self.direct.in_flight)) and self.env.now < limit:
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


def _discard(party: str, seq: int, batch: list[Transfer]) -> None:
    """A journal export that keeps nothing (``metrics.write_transfers: false``, or a writer that
    keeps no rows)."""
