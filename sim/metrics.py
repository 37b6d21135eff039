"""Measurement, kept apart from behaviour (Mesa's ``DataCollector`` idea).

Per payment: a row in ``payments`` and one row per leg in ``legs``, streamed to the results
database in batches. In memory only compact numeric arrays (8 bytes per payment per array), from
which percentiles are computed over **all** samples after warm-up (never averages of averages):
latency, arrival and completion times, outcome. Per station the exact time integrals live in
:class:`sim.components.station.Station`. A sampler process records utilization, queue lengths, mid
prices and liquidity every ``metrics.sample_s`` into ``timeseries``.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from services.contracts import FundingMode
from sim.components.authorization import Payment
from sim.components.population import Population
from sim.components.station import Station
from sim.results import ResultsWriter, legs, payment_events, payments, settlements, timeseries
from sim.scenario import Scenario

__all__ = ["FUNDING_MODES", "LEG_COLUMNS", "PAYMENT_COLUMNS", "Metrics", "percentiles"]

FUNDING_MODES = (FundingMode.JIT, FundingMode.PREFUNDED, FundingMode.STABLECOIN)
_MODE_INDEX = {mode: i for i, mode in enumerate(FUNDING_MODES)}

# The column order of the tuples written to ``payments`` (checked against the table by the tests).
PAYMENT_COLUMNS = (
    "payment_id", "t_arrival_s", "t_done_s", "latency_ms", "outcome", "reason", "stand_in",
    "deadline_missed", "orphaned", "amount_kzt_minor", "merchant_id", "category", "acquirer_id",
    "funding_mode", "residency", "asset_sold", "crypto_minor", "slippage_bps", "fee_kzt_minor",
    "gain_kzt_minor", "pit_kzt_minor", "captured_at_s", "settled_at_s",
)
LEG_COLUMNS = ("payment_id", "service", "wait_ms", "service_ms")

_PCTS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def percentiles(values: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p99, p999 and max of ``values`` (zeros when empty)."""
    if values.size == 0:
        return {"mean": 0.0, **{name: 0.0 for name, _ in _PCTS}, "max": 0.0}
    out = {"mean": float(values.mean())}
    qs = np.percentile(values, [q for _, q in _PCTS])
    out.update({name: float(v) for (name, _), v in zip(_PCTS, qs, strict=True)})
    out["max"] = float(values.max())
    return out


class Metrics:
    """Collects everything the summary, the report and the time series need."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, population: Population, *,
                 stations: dict[str, Station], writer: ResultsWriter,
                 probes: dict[str, Callable[[], int]], prices: Callable[[], dict[str, float]]) -> None:
        self.env = env
        self.scenario = scenario
        self.population = population
        self.stations = stations
        self.writer = writer
        self.probes = probes  # name -> int tiyn reading (exchange cash, issuer funding, exposure)
        self.prices = prices
        self.from_s, self.until_s = scenario.measure_from_s, scenario.measure_until_s
        # -- every payment (compact) -----------------------------------------------------------
        self.t_arrival = array("d")
        self.t_done = array("d")
        self.outcome = array("h")  # index into self.reasons; 0 = approved
        self.reasons: list[str] = ["00"]
        self._reason_index: dict[str, int] = {"00": 0}
        # -- measured payments -----------------------------------------------------------------
        self.latency_ms = array("d")
        self.measured = 0
        self.approved = 0
        self.declined: Counter[str] = Counter()
        self.deadline_missed = 0
        self.slippage_bps = array("d")
        # -- whole run -------------------------------------------------------------------------
        self.attempted = 0
        self.stand_in = 0
        self.stand_in_approved_kzt = 0
        self.orphaned = 0
        self.orphaned_stand_in = 0  # orphaned sales whose payment the network approved by stand-in
        self.fees_kzt = 0  # taker fees of the payments' own sales (top-up and advice sales are not here)
        self.gain_kzt = 0
        self.pit_kzt = 0
        self.settlement_latency_s = array("d")
        # -- by card rail (funding mode), for summary.json's "rails" -----------------------------
        self.card_mode = array("b")  # per measured payment, aligned with latency_ms: FUNDING_MODES index
        self.card_approved = array("b")  # per measured payment: 1 approved
        self.pit_by_mode = [0] * len(FUNDING_MODES)  # PIT due on the payments' own sales, whole run
        self.settle_mode = array("b")  # aligned with settlement_latency_s
        self._mode_of_pid = bytearray()  # payment id -> FUNDING_MODES index + 1
        self.probe_series: dict[str, array[int]] = {}  # every probe reading, in sampling order
        self.probe_start: dict[str, int] = {}
        self.probe_min: dict[str, int] = {}
        self.probe_max: dict[str, int] = {}

    # -- per payment -------------------------------------------------------------------------
    def payment_done(self, p: Payment) -> None:
        resp = p.response
        approved = resp is not None and resp.approved
        reason = resp.code.value if resp is not None else "96"
        idx = self._reason_index.get(reason)
        if idx is None:
            idx = self._reason_index[reason] = len(self.reasons)
            self.reasons.append(reason)
        latency_ms = (p.t_done_s - p.t_arrival_s) * 1000.0
        self.t_arrival.append(p.t_arrival_s)
        self.t_done.append(p.t_done_s)
        self.outcome.append(0 if approved else idx)
        self.attempted += 1
        if p.stand_in:
            self.stand_in += 1
            if approved:
                self.stand_in_approved_kzt += p.req.amount_kzt
        if p.orphaned:
            self.orphaned += 1
            if p.stand_in and approved:  # the sale's tenge covers what the stand-in approved
                self.orphaned_stand_in += 1
        if p.measured:
            self.measured += 1
            self.latency_ms.append(latency_ms)
            if approved:
                self.approved += 1
            else:
                self.declined[reason] += 1
            if p.deadline_missed:
                self.deadline_missed += 1
        asset_sold = crypto = slippage = None
        fee = gain = pit = 0
        sale = p.sale
        if sale is not None and sale.ok and sale.legs:
            first = sale.legs[0]
            asset_sold, crypto, slippage = first.asset, str(first.quantity_minor), float(first.slippage_bps)
            for leg in sale.legs:
                fee += leg.fee_kzt
                gain += leg.realized_gain_kzt
                pit += leg.pit_kzt
            if p.measured:
                self.slippage_bps.append(slippage)
            self.fees_kzt += fee
            self.gain_kzt += gain
            self.pit_kzt += pit
        card = self.population.cardholders[p.card_index]
        self._by_mode(p, _MODE_INDEX[card.funding_mode], approved, pit)
        req = p.req
        pid = p.pid
        add_row = self.writer.add_row
        add_row(payments, (  # PAYMENT_COLUMNS order
            pid, p.t_arrival_s, p.t_done_s, latency_ms, "approved" if approved else "declined",
            reason, p.stand_in, p.deadline_missed, p.orphaned, req.amount_kzt,
            req.merchant_id, req.category, req.acquirer_id, card.funding_mode.value,
            card.residency.value, asset_sold, crypto, slippage, fee, gain, pit, None, None,
        ))
        self.writer.add_rows(legs, [(pid, name, wait_s * 1000.0, svc_s * 1000.0) for name, wait_s, svc_s in p.legs])

    def _by_mode(self, p: Payment, mode: int, approved: bool, pit_kzt: int) -> None:
        """Remember the payment's card rail (its funding mode) for the ``rails`` section."""
        self.pit_by_mode[mode] += pit_kzt
        mode_of = self._mode_of_pid
        if len(mode_of) <= p.pid:
            mode_of.extend(bytes(p.pid + 1 - len(mode_of)))
        mode_of[p.pid] = mode + 1
        if p.measured:
            self.card_mode.append(mode)
            self.card_approved.append(1 if approved else 0)

    def captured(self, pid: int, t_s: float) -> None:
        self.writer.add_row(payment_events, (pid, "captured", t_s))

    def settled(self, items: list[tuple[int, float]], t_s: float, window_id: str,
                net_positions_kzt: dict[str, int]) -> None:
        self.writer.add_rows(payment_events, [(pid, "settled", t_s) for pid, _ in items])
        mode_of = self._mode_of_pid
        for pid, t_auth in items:
            if self.from_s <= t_auth < self.until_s:
                self.settlement_latency_s.append(t_s - t_auth)
                self.settle_mode.append(mode_of[pid] - 1)
        self.writer.add_many(settlements, [
            {"window_id": window_id, "t_s": t_s, "participant": who, "net_kzt_minor": net}
            for who, net in sorted(net_positions_kzt.items())
        ])

    # -- sampling ----------------------------------------------------------------------------
    def sampler(self) -> Generator[simpy.Event, Any, None]:
        step = self.scenario.metrics.sample_s
        while True:
            self.sample()
            yield self.env.timeout(step)

    def sample(self) -> None:
        t = self.env.now
        rows: list[tuple[float, str, str, float]] = []  # timeseries columns: t_s, metric, key, value
        for name, st in self.stations.items():
            if st.capacity is not None:
                rows.append((t, "utilization", name, st.busy / st.capacity))
            rows.append((t, "queue_len", name, float(st.queue_len)))
        for code, price in self.prices().items():
            rows.append((t, "mid_price_kzt", code, price))
        for name, probe in self.probes.items():
            value = probe()
            series = self.probe_series.get(name)
            if series is None:
                series = self.probe_series[name] = array("q")
            series.append(value)
            self.probe_start.setdefault(name, value)
            if value < self.probe_min.get(name, value + 1):
                self.probe_min[name] = value
            if value > self.probe_max.get(name, value - 1):
                self.probe_max[name] = value
            rows.append((t, name, "", value / 100.0))
        self.writer.add_rows(timeseries, rows)

    # -- end of run --------------------------------------------------------------------------
    def bucket_series(self) -> None:
        """Per-bucket throughput and latency percentiles into ``timeseries``."""
        if not self.t_arrival:
            return
        bucket_s = self.scenario.metrics.bucket_s
        t_arr = np.frombuffer(self.t_arrival, dtype=float)
        t_done = np.frombuffer(self.t_done, dtype=float)
        outcome = np.frombuffer(self.outcome, dtype=np.int16)
        n = int(max(t_arr.max(), t_done.max()) // bucket_s) + 1
        arr_b = (t_arr // bucket_s).astype(np.int64)
        done_b = (t_done // bucket_s).astype(np.int64)
        rows: list[dict[str, Any]] = []
        arrivals = np.bincount(arr_b, minlength=n) / bucket_s
        approved = np.bincount(done_b[outcome == 0], minlength=n) / bucket_s
        lat = (t_done - t_arr) * 1000.0
        order = np.lexsort((lat, arr_b))
        sorted_b, sorted_lat = arr_b[order], lat[order]
        starts = np.searchsorted(sorted_b, np.arange(n))
        ends = np.searchsorted(sorted_b, np.arange(n), side="right")
        for b in range(n):
            t = b * bucket_s
            rows.append({"t_s": t, "metric": "arrivals_per_s", "key": "", "value": float(arrivals[b])})
            rows.append({"t_s": t, "metric": "approved_per_s", "key": "", "value": float(approved[b])})
            if ends[b] > starts[b]:
                chunk = sorted_lat[starts[b]:ends[b]]
                p50, p99 = np.percentile(chunk, [50.0, 99.0])
                rows.append({"t_s": t, "metric": "p50_ms", "key": "", "value": float(p50)})
                rows.append({"t_s": t, "metric": "p99_ms", "key": "", "value": float(p99)})
        for idx, reason in enumerate(self.reasons):
            if idx == 0:
                continue
            counts = np.bincount(done_b[outcome == idx], minlength=n)
            for b in np.flatnonzero(counts).tolist():
                rows.append({"t_s": b * bucket_s, "metric": "declined_per_s", "key": reason,
                             "value": float(counts[b]) / bucket_s})
        self.writer.add_many(timeseries, rows)

    def approved_rates(self) -> tuple[float, float]:
        """Mean and peak approvals per second inside the measurement window."""
        span = self.until_s - self.from_s
        if not self.t_done or span <= 0:
            return 0.0, 0.0
        bucket_s = self.scenario.metrics.bucket_s
        t_done = np.frombuffer(self.t_done, dtype=float)
        ok = (np.frombuffer(self.outcome, dtype=np.int16) == 0) & (t_done >= self.from_s) & (t_done < self.until_s)
        times = t_done[ok]
        mean = times.size / span
        if times.size == 0:
            return mean, 0.0
        counts = np.bincount(((times - self.from_s) // bucket_s).astype(np.int64))
        return mean, float(counts.max()) / bucket_s
