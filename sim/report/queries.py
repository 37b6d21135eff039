"""SQL aggregates over results.db: every chart's data, already reduced to a few hundred points.

A million-payment run has a million rows; the report needs histograms, quantiles and per-bucket
rates. SQLite computes those (GROUP BY, window functions), so Python only ever holds the small
result, and the HTML stays small however long the run was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Float, Integer, case, cast, func, select

from sim import results

__all__ = [
    "MAX_POINTS",
    "Histogram",
    "Series",
    "bucket_seconds",
    "fees_by_asset",
    "integrity_rows",
    "latency_bands",
    "latency_histogram",
    "latency_quantiles",
    "payment_count",
    "payment_rates",
    "prefunding_drawn",
    "run_row",
    "settlement_latency_histogram",
    "settlement_positions",
    "slippage_by_ticket",
    "span_seconds",
    "stage_latency",
    "tax_by_residency",
    "timeseries_by_key",
]

MAX_POINTS: Final = 400  # per line; enough for a screen-wide chart, small for a day-long run
_HIST_BINS: Final = 120
_P = results.payments.c
_TS = results.timeseries.c


@dataclass(frozen=True, slots=True)
class Histogram:
    """Equal-width bins from 0: ``counts[k][i]`` payments of group ``k`` in ``[i*w, (i+1)*w)``."""

    width: float
    counts: dict[str, list[int]]

    @property
    def lefts(self) -> list[float]:
        n = max((len(c) for c in self.counts.values()), default=0)
        return [i * self.width for i in range(n)]

    @property
    def total(self) -> int:
        return sum(sum(c) for c in self.counts.values())


@dataclass(slots=True)
class Series:
    """One line of a chart: x in seconds of simulated time, y in the metric's unit."""

    t_s: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _nice_width(span: float, bins: int) -> float:
    """A bin width of 1, 2 or 5 times a power of ten that gives at most ``bins`` bins."""
    if span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * power >= raw:
            return float(step * power)
    return float(10 * power)


def span_seconds(conn: Connection) -> float:
    """Simulated time covered by the payments (arrival of the last one)."""
    value = conn.execute(select(func.max(_P.t_done_s))).scalar()
    return float(value or 0.0)


def bucket_seconds(span_s: float, preferred_s: float = 60.0, max_points: int = MAX_POINTS) -> float:
    """Bucket width: per minute when that fits in ``max_points``, else whole minutes that do;
    short runs get finer buckets so a chart still has some twenty points."""
    if span_s <= 0:
        return preferred_s
    if span_s / preferred_s > max_points:
        return preferred_s * math.ceil(span_s / preferred_s / max_points)
    if span_s / preferred_s < 20:
        return max(1.0, _nice_width(span_s, 20))
    return preferred_s


def payment_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(results.payments)).scalar() or 0)


def latency_histogram(conn: Connection, bins: int = _HIST_BINS) -> Histogram:
    """Authorization latency of every payment, approved and declined apart."""
    max_ms = float(conn.execute(select(func.max(_P.latency_ms))).scalar() or 0.0)
    width = _nice_width(max_ms, bins)
    bucket = cast(_P.latency_ms / width, Integer)
    rows = conn.execute(
        select(_P.outcome, bucket.label("b"), func.count()).group_by(_P.outcome, bucket)
    ).all()
    return _fill(rows, width)


def _fill(rows: Sequence[Any], width: float) -> Histogram:
    n = max((int(r[1]) for r in rows), default=-1) + 1
    counts: dict[str, list[int]] = {}
    for group, b, count in rows:
        counts.setdefault(str(group), [0] * n)[int(b)] += int(count)
    return Histogram(width=width, counts=counts)


def latency_quantiles(conn: Connection, quantiles: Sequence[float]) -> list[tuple[float, float]]:
    """Nearest-rank quantiles of latency: ``(q, latency_ms)`` pairs for a CDF."""
    n = payment_count(conn)
    if n == 0:
        return []
    ranks = {q: max(1, math.ceil(q * n)) for q in quantiles}
    ranked = select(
        _P.latency_ms.label("ms"), func.row_number().over(order_by=_P.latency_ms).label("rn")
    ).subquery()
    rows = conn.execute(
        select(ranked.c.rn, ranked.c.ms).where(ranked.c.rn.in_(sorted(set(ranks.values()))))
    ).all()
    by_rank = {int(rn): float(ms) for rn, ms in rows}
    return [(q, by_rank[rank]) for q, rank in sorted(ranks.items())]


def latency_bands(conn: Connection, bucket_s: float,
                  quantiles: Sequence[float] = (0.5, 0.9, 0.99, 0.999)) -> dict[float, Series]:
    """Per bucket of arrival time, nearest-rank latency quantiles (one window sort in SQLite)."""
    bucket = cast(_P.t_arrival_s / bucket_s, Integer)
    ranked = select(
        bucket.label("b"),
        _P.latency_ms.label("ms"),
        func.row_number().over(partition_by=bucket, order_by=_P.latency_ms).label("rn"),
        func.count().over(partition_by=bucket).label("n"),
    ).subquery()
    c = ranked.c
    columns = [func.min(case((c.rn >= cast(c.n, Float) * q, c.ms))) for q in quantiles]
    rows = conn.execute(select(c.b, *columns).group_by(c.b).order_by(c.b)).all()
    bands = {q: Series() for q in quantiles}
    for row in rows:
        t = (int(row[0]) + 0.5) * bucket_s
        for q, value in zip(quantiles, row[1:], strict=True):
            bands[q].t_s.append(t)
            bands[q].values.append(float(value))
    return bands


def payment_rates(conn: Connection, bucket_s: float) -> dict[str, dict[str, Series]]:
    """Per second rates per bucket: arrivals (by arrival time), approvals and declines by reason
    (by completion time). Counted from the payments themselves, so buckets with none are zeros."""
    out: dict[str, dict[str, Series]] = {"arrivals": {}, "approved": {}, "declined": {}}
    n_buckets = 0
    arrivals = cast(_P.t_arrival_s / bucket_s, Integer)
    done = cast(_P.t_done_s / bucket_s, Integer)
    counted: list[tuple[str, str, int, int]] = []
    for b, count in conn.execute(select(arrivals, func.count()).group_by(arrivals)).all():
        counted.append(("arrivals", "", int(b), int(count)))
    query = select(_P.outcome, _P.reason, done, func.count()).group_by(_P.outcome, _P.reason, done)
    for outcome, reason, b, count in conn.execute(query).all():
        group = "approved" if outcome == "approved" else "declined"
        counted.append((group, "" if group == "approved" else str(reason), int(b), int(count)))
    n_buckets = max((b for _, _, b, _ in counted), default=-1) + 1
    grid = [(i + 0.5) * bucket_s for i in range(n_buckets)]
    for group, key, b, count in counted:
        series = out[group].setdefault(key, Series(list(grid), [0.0] * n_buckets))
        series.values[b] += count / bucket_s
    return out


def timeseries_by_key(conn: Connection, metric: str,
                      max_points: int = MAX_POINTS) -> dict[str, Series]:
    """A sampled metric per key, averaged into at most ``max_points`` buckets per key."""
    bounds = conn.execute(
        select(func.min(_TS.t_s), func.max(_TS.t_s)).where(_TS.metric == metric)
    ).one()
    if bounds[0] is None:
        return {}
    span = float(bounds[1]) - float(bounds[0])
    width = max(span / max_points, 1e-9)
    bucket = cast((_TS.t_s - float(bounds[0])) / width, Integer)
    rows = conn.execute(
        select(_TS.key, func.avg(_TS.t_s), func.avg(_TS.value))
        .where(_TS.metric == metric)
        .group_by(_TS.key, bucket)
        .order_by(_TS.key, bucket)
    ).all()
    out: dict[str, Series] = {}
    for key, t, value in rows:
        series = out.setdefault(str(key), Series())
        series.t_s.append(float(t))
        series.values.append(float(value))
    return out


def prefunding_drawn(conn: Connection, metric: str, max_points: int = MAX_POINTS) -> Series:
    """Pre-funding drawn so far, in KZT: the opening sample of ``metric`` minus its lowest sample
    up to each time (never below zero). The last value is the summary's peak pre-funding, found
    the same way; each of at most ``max_points`` buckets keeps its highest value, so the line's
    peak is exactly that figure."""
    rows = conn.execute(
        select(_TS.t_s, _TS.value).where(_TS.metric == metric, _TS.key == "").order_by(_TS.t_s)
    ).all()
    series = Series()
    if not rows:
        return series
    opening = round(float(rows[0][1]) * 100)  # the samples are KZT; the summary works in tiyn
    lowest = opening
    span = float(rows[-1][0]) - float(rows[0][0])
    width = max(span / max_points, 1e-9)
    last_bucket = -1
    for t, value in rows:
        lowest = min(lowest, round(float(value) * 100))
        drawn_kzt = max(0, opening - lowest) / 100
        bucket = int((float(t) - float(rows[0][0])) / width)
        if bucket == last_bucket:  # the running figure only grows: the bucket's last is its highest
            series.t_s[-1], series.values[-1] = float(t), drawn_kzt
        else:
            series.t_s.append(float(t))
            series.values.append(drawn_kzt)
            last_bucket = bucket
    return series


def stage_latency(conn: Connection, from_s: float, until_s: float) -> dict[str, dict[str, float]]:
    """Per stage (``legs.service``), the time a payment arriving in ``[from_s, until_s)`` spent there
    — waiting and served, over all its calls — as ``mean``/``p50``/``p95``/``p99`` (nearest rank)
    and ``payments``. The same figure for a simulated run (a row per call) and a live one (a row
    per leg and payment, ``ccsim load``), so ``ccsim compare`` can put them side by side."""
    per_payment = (
        select(results.legs.c.service.label("s"),
               func.sum(results.legs.c.wait_ms + results.legs.c.service_ms).label("ms"))
        .select_from(results.legs.join(results.payments,
                                       results.payments.c.payment_id == results.legs.c.payment_id))
        .where(_P.t_arrival_s >= from_s, _P.t_arrival_s < until_s)
        .group_by(results.legs.c.service, results.legs.c.payment_id)
        .subquery()
    )
    ranked = select(
        per_payment.c.s, per_payment.c.ms,
        func.row_number().over(partition_by=per_payment.c.s, order_by=per_payment.c.ms).label("rn"),
        func.count().over(partition_by=per_payment.c.s).label("n"),
    ).subquery()
    c = ranked.c
    quantiles = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
    columns = [func.min(case((c.rn >= cast(c.n, Float) * q, c.ms))) for _, q in quantiles]
    rows = conn.execute(select(c.s, func.count(), func.avg(c.ms), *columns).group_by(c.s)).all()
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out[str(row[0])] = {"payments": float(row[1]), "mean": float(row[2]),
                            **{name: float(v) for (name, _), v in zip(quantiles, row[3:], strict=True)}}
    return out


def slippage_by_ticket(conn: Connection) -> list[tuple[float, float, float, int]]:
    """Per ticket-size band (powers of ten split in quarters, in KZT): mean and max slippage in
    basis points and the number of sales. ``(band_floor_kzt, mean_bps, max_bps, n)``."""
    band = cast(func.round(func.log10(func.max(_P.amount_kzt_minor, 100) / 100.0) * 4), Integer)
    rows = conn.execute(
        select(band, func.avg(_P.slippage_bps), func.max(_P.slippage_bps), func.count())
        .where(_P.slippage_bps.is_not(None))
        .group_by(band)
        .order_by(band)
    ).all()
    return [(10 ** (int(b) / 4), float(mean), float(mx), int(n)) for b, mean, mx, n in rows]


def fees_by_asset(conn: Connection) -> list[tuple[str, int, int]]:
    """Exchange fees per asset sold: ``(asset, fee_kzt_minor, sales)``."""
    rows = conn.execute(
        select(_P.asset_sold, func.sum(_P.fee_kzt_minor), func.count())
        .where(_P.asset_sold.is_not(None))
        .group_by(_P.asset_sold)
        .order_by(_P.asset_sold)
    ).all()
    return [(str(asset), int(fee or 0), int(n)) for asset, fee, n in rows]


def settlement_latency_histogram(conn: Connection, bins: int = 60) -> Histogram:
    """Hours from authorization to the merchant's credit, per funding mode."""
    hours = (_P.settled_at_s - _P.t_arrival_s) / 3600.0
    max_h = float(conn.execute(select(func.max(hours))).scalar() or 0.0)
    width = _nice_width(max_h, bins)
    bucket = cast(hours / width, Integer)
    rows = conn.execute(
        select(_P.funding_mode, bucket, func.count())
        .where(_P.settled_at_s.is_not(None))
        .group_by(_P.funding_mode, bucket)
    ).all()
    return _fill(rows, width)


def settlement_positions(conn: Connection) -> dict[str, list[tuple[float, str, int]]]:
    """Net position per participant per window: participant → ``(t_s, window_id, net_minor)``."""
    s = results.settlements.c
    rows = conn.execute(
        select(s.participant, s.t_s, s.window_id, s.net_kzt_minor).order_by(s.t_s, s.participant)
    ).all()
    out: dict[str, list[tuple[float, str, int]]] = {}
    for participant, t, window, net in rows:
        out.setdefault(str(participant), []).append((float(t), str(window), int(net)))
    return out


def tax_by_residency(conn: Connection) -> list[tuple[str, int, int, int]]:
    """``(residency, gain_kzt_minor, pit_kzt_minor, sales)`` from the payments that sold crypto."""
    rows = conn.execute(
        select(_P.residency, func.sum(_P.gain_kzt_minor), func.sum(_P.pit_kzt_minor), func.count())
        .where(_P.asset_sold.is_not(None))
        .group_by(_P.residency)
        .order_by(_P.residency)
    ).all()
    return [(str(r), int(g or 0), int(p or 0), int(n)) for r, g, p, n in rows]


def integrity_rows(conn: Connection) -> list[tuple[str, bool, str]]:
    i = results.integrity.c
    rows = conn.execute(select(i.check, i.ok, i.detail)).all()
    return [(str(check), bool(ok), str(detail)) for check, ok, detail in rows]


def run_row(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(select(results.runs)).mappings().first()
    return dict(row) if row is not None else None
