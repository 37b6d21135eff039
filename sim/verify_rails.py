"""``ccsim verify``: the ``rails`` section recomputed from ``results.db`` by its own path (SQL over
``payments``, ``direct_payments``, ``direct_conversions``, ``direct_holdings`` and ``timeseries``,
plain Python arithmetic), and the direct rail's rows tied to the hash-chained journal: every direct
payment the table says was paid is the exchange's ``{invoice}:direct`` transfer of that quantity,
and the conversions' tenge is what the exchange paid out under ``conv:…``.

The fee rates and the stablecoin's code are read from the scenario recorded in the run.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

import yaml

from sim.scenario_load import parse_scenario

__all__ = ["check_rails", "direct_tax", "percentile"]

_MODES = ("jit", "prefunded", "stablecoin")


class Checker(Protocol):
    def check(self, path: str, value: Any) -> None: ...

    def recorded(self, path: str) -> Any: ...


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (the usual definition, numpy's default)."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def _pct(values: Sequence[float], q: float) -> float:
    return percentile(sorted(values), q)


def _kzt(minor: int) -> Decimal:
    return Decimal(minor).scaleb(-2)


def _per_10000(cost: int, amount: int) -> Decimal:
    return _kzt(cost * 10_000 // amount) if amount > 0 else _kzt(0)


def direct_tax(db: sqlite3.Connection) -> tuple[int, int, int]:
    """(disposals, proceeds, PIT withheld) the direct rail adds to the PIT book."""
    if not _has(db, "direct_payments"):
        return 0, 0, 0
    row = db.execute("SELECT COUNT(*), COALESCE(SUM(proceeds_kzt_minor), 0), COALESCE(SUM(pit_withheld_kzt_minor), 0) "
                     "FROM direct_payments WHERE outcome = 'paid' AND stablecoin = 0").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def _has(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None


def _card(c: Checker, db: sqlite3.Connection, lo: float, hi: float, fees: Any) -> None:
    rows = db.execute("SELECT funding_mode, t_arrival_s, latency_ms, outcome, settled_at_s, pit_kzt_minor "
                      "FROM payments").fetchall()
    bps = (fees.mdr_bps, fees.interchange_bps, fees.scheme_fee_bps)
    cost = {"total": _kzt(bps[0] * 100), "interchange": _kzt(bps[1] * 100), "scheme_fees": _kzt(bps[2] * 100),
            "acquirer_margin": _kzt((bps[0] - bps[1] - bps[2]) * 100)}
    for mode in _MODES:
        mine = [r for r in rows if r[0] == mode]
        measured = [r for r in mine if lo <= r[1] < hi]
        approved = sum(1 for r in measured if r[3] == "approved")
        path = f"rails.card_{mode}"
        c.check(f"{path}.payments", len(measured))
        c.check(f"{path}.approved", approved)
        c.check(f"{path}.approval_rate", approved / len(measured) if measured else 0.0)
        c.check(f"{path}.auth_latency_ms", {"p50": _pct([r[2] for r in measured], 50.0),
                                            "p99": _pct([r[2] for r in measured], 99.0)})
        settled = [r[4] - r[1] for r in measured if r[4] is not None]
        c.check(f"{path}.tenge_to_merchant_s", {"p50": _pct(settled, 50.0), "p99": _pct(settled, 99.0)})
        c.check(f"{path}.merchant_cost_per_10000_kzt", cost)
        c.check(f"{path}.pit_due_kzt", _kzt(sum(r[5] for r in mine)))


def _direct(c: Checker, db: sqlite3.Connection, lo: float, hi: float, stable_code: str) -> None:
    rows = db.execute("SELECT t_arrival_s, latency_ms, outcome, decline, stablecoin, amount_kzt_minor, "
                      "fee_kzt_minor, pit_due_kzt_minor, pit_withheld_kzt_minor, tenge_at_s, refund "
                      "FROM direct_payments").fetchall()
    convs = db.execute("SELECT asset, fee_kzt_minor, mid_value_kzt_minor, gross_kzt_minor, basis_kzt_minor "
                       "FROM direct_conversions WHERE ok = 1").fetchall()
    held = db.execute("SELECT asset, value_kzt_minor, basis_kzt_minor FROM direct_holdings").fetchall()
    for stable, name in ((False, "direct_crypto"), (True, "direct_stablecoin")):
        mine = [r for r in rows if bool(r[4]) is stable]
        measured = [r for r in mine if lo <= r[0] < hi]
        paid = [r for r in mine if r[2] == "paid"]
        approved = sum(1 for r in measured if r[2] == "paid")
        declined: dict[str, int] = {}
        for r in measured:
            if r[2] != "paid":
                declined[r[3]] = declined.get(r[3], 0) + 1
        path = f"rails.{name}"
        c.check(f"{path}.payments", len(measured))
        c.check(f"{path}.approved", approved)
        c.check(f"{path}.approval_rate", approved / len(measured) if measured else 0.0)
        c.check(f"{path}.declined", dict(sorted(declined.items())))
        c.check(f"{path}.fell_back_to_card", sum(1 for r in measured if r[2] == "card"))
        latency = [r[1] for r in measured if r[2] != "card"]
        c.check(f"{path}.auth_latency_ms", {"p50": _pct(latency, 50.0), "p99": _pct(latency, 99.0)})
        tenge = [r[9] - r[0] for r in paid if lo <= r[0] < hi and r[9] is not None]
        c.check(f"{path}.tenge_to_merchant_s", {"p50": _pct(tenge, 50.0), "p99": _pct(tenge, 99.0),
                                                "still_held": sum(1 for r in paid if r[9] is None)})
        amount = sum(r[5] for r in paid)
        c.check(f"{path}.paid_kzt", _kzt(amount))
        my_convs = [v for v in convs if (v[0] == stable_code) is stable]
        fees = sum(r[6] for r in paid) + sum(v[1] for v in my_convs)
        slippage = sum(v[2] - v[3] for v in my_convs)
        pnl = sum(v[2] - v[4] for v in my_convs) + sum(h[1] - h[2] for h in held if (h[0] == stable_code) is stable)
        c.check(f"{path}.merchant_cost_per_10000_kzt", {
            "total": _per_10000(fees + slippage - pnl, amount), "exchange_fees": _per_10000(fees, amount),
            "slippage": _per_10000(slippage, amount), "price_pnl": _per_10000(pnl, amount)})
        c.check(f"{path}.pit_due_kzt", _kzt(sum(r[7] for r in paid)))
        c.check(f"{path}.pit_withheld_kzt", _kzt(sum(r[8] for r in paid)))
        refunds = [r[10] for r in mine if r[10]]
        c.check(f"{path}.refunds", {"refunded": refunds.count("refunded"),
                                    "refused": len(refunds) - refunds.count("refunded")})


def _merchants(c: Checker, db: sqlite3.Connection, categories: Sequence[str], sample_s: float) -> None:
    convs = db.execute("SELECT category, ok, mid_value_kzt_minor, basis_kzt_minor, gain_kzt_minor "
                       "FROM direct_conversions").fetchall()
    ok = [v for v in convs if v[1]]
    c.check("rails.merchants.conversions", len(ok))
    c.check("rails.merchants.conversions_refused", len(convs) - len(ok))
    bps = [(v[2] - v[3]) * 10_000 / v[3] for v in ok if v[3] > 0]
    c.check("rails.merchants.conversion_pnl_bps", {"min": min(bps, default=0.0), "p1": _pct(bps, 1.0),
                                                   "p50": _pct(bps, 50.0), "p99": _pct(bps, 99.0),
                                                   "max": max(bps, default=0.0)})
    series = [round(v * 100) for (v,) in db.execute(
        "SELECT value FROM timeseries WHERE metric = 'merchant_unrealized_pnl_kzt' ORDER BY t_s, rowid")]
    span = int(3_600.0 // sample_s)
    worst = 0
    for i, start in enumerate(series):
        for later in series[i + 1:i + 1 + span]:
            worst = min(worst, later - start)
    c.check("rails.merchants.worst_window_1h_kzt", _kzt(worst))
    held = db.execute("SELECT COALESCE(SUM(value_kzt_minor), 0), COALESCE(SUM(value_kzt_minor - basis_kzt_minor), 0) "
                      "FROM direct_holdings").fetchone()
    c.check("rails.merchants.held_at_end_kzt", _kzt(int(held[0])))
    c.check("rails.merchants.unrealized_pnl_at_end_kzt", _kzt(int(held[1])))
    gains = dict.fromkeys(categories, 0)
    for v in ok:
        gains[v[0]] += v[4]
    c.check("rails.merchants.realized_gain_by_segment_kzt", {k: _kzt(v) for k, v in sorted(gains.items())})
    c.check("rails.merchants.cit_estimate_by_segment_kzt",
            {k: _kzt(max(0, v) * 20 // 100) for k, v in sorted(gains.items())})  # seed §2.1.1: 20 %
    paid = [a for (a,) in db.execute("SELECT amount_kzt_minor FROM direct_payments WHERE outcome = 'paid'")]
    c.check("rails.merchants.vat_in_goods_kzt", _kzt(sum(a * 12 // 112 for a in paid)))  # seed §2.1.3


def _journal_ties(c: Any, db: sqlite3.Connection) -> None:
    """The direct rows against the exchange's hash-chained journal."""
    booked = dict(db.execute("SELECT transfer_id, amount_minor FROM transfers WHERE party = 'exchange' "
                             "AND code = 'direct_payment'").fetchall())
    for pid, quantity in db.execute("SELECT payment_id, quantity_minor FROM direct_payments WHERE outcome = 'paid'"):
        if booked.get(f"d{pid}:direct") != quantity:
            c.out.differences.append(f"direct_payments {pid}: paid {quantity}, the exchange's journal books "
                                     f"{booked.get(f'd{pid}:direct')}")
    c.out.checked.append("direct_payments against the exchange's journal")
    paid_out = sum(int(a) for (a,) in db.execute("SELECT amount_minor FROM transfers WHERE party = 'exchange' "
                                                 "AND code = 'payout' AND transfer_id LIKE 'conv:%'"))
    net = db.execute("SELECT COALESCE(SUM(net_kzt_minor), 0) FROM direct_conversions WHERE ok = 1").fetchone()[0]
    c.out.checked.append("direct_conversions against the exchange's journal")
    if int(net) != paid_out:
        c.out.differences.append(f"direct_conversions: tenge {net}, the exchange paid out {paid_out} under conv:")


def check_rails(c: Any, db: sqlite3.Connection, lo: float, hi: float) -> None:
    """Recompute ``rails`` (see the module docstring)."""
    if c.recorded("rails") is None or not isinstance(c.recorded("rails"), dict):
        return  # a run from before the rails section
    (yaml_text,) = db.execute("SELECT scenario_yaml FROM runs").fetchone()
    scenario = parse_scenario(yaml.safe_load(yaml_text), "scenario as run")
    _card(c, db, lo, hi, scenario.fees)
    for key in ("exchange_peak_prefund_kzt", "issuer_peak_prefund_kzt"):
        c.check(f"rails.prefunding.{key}", Decimal(c.recorded(f"liquidity.{key}")))
    if not scenario.direct.enabled:
        return
    _direct(c, db, lo, hi, scenario.exchange.stablecoin_asset)
    _merchants(c, db, list(scenario.population.merchants.categories), scenario.metrics.sample_s)
    if _has(db, "transfers"):
        _journal_ties(c, db)
