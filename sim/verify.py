"""``ccsim verify RUN_DIR``: recompute the figures of ``summary.json`` from ``results.db``.

The figures are recomputed here by a path of their own: plain SQL over the rows the run wrote and a
few lines of arithmetic (percentiles by linear interpolation between closest ranks, sums with
``math.fsum``), not the simulation's metrics or summary code; the books are replayed by
:mod:`sim.verify_ledger`, which shares no code with the ledgers that wrote them. Each figure is
compared with the recorded one (integers and amounts exactly, other numbers to a relative 1e-9), and
every difference is a line naming the figure. The hash chain over the journal
(:mod:`sim.journal_chain`) is recomputed and compared with the head ``summary.json`` records.

A figure the database cannot reproduce (wall-clock time; station time integrals; taxable gains,
which need the opening cost-basis lots) is listed as recorded, not recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from sim.journal_chain import GENESIS, journal_chain
from sim.run_dir import RunDirError, check_run_dir
from sim.verify_ledger import replay_ledgers
from sim.verify_rails import check_rails, direct_tax
from sim.verify_rails import percentile as _percentile

__all__ = ["NOT_RECOMPUTED", "Verification", "verify_run"]

_REL_TOL: Final = 1e-9
NOT_RECOMPUTED: Final = (
    "wall_s", "payments_per_wall_s", "started_at", "legs.*.utilization", "legs.*.mean_queue_len",
    "legs.*.timeouts", "legs.*.failed_calls", "tax.realized_gain_kzt", "tax.realized_loss_kzt",
    "tax.pit_due_by_residency_kzt", "payments.advices_applied", "clearing.reversals", "clearing.refunds",
    "clearing.chargebacks",
    "clearing.capture_failed", "clearing.refund_failed",
)
_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


@dataclass
class Verification:
    """The outcome: every figure checked, and the ones that differ."""

    run_dir: Path
    label: str
    checked: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    ledger_findings: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def report(self) -> str:
        lines = [f"ccsim verify {self.label}"]
        lines += [f"DIFFERS {d}" for d in self.differences]
        lines.append(f"{len(self.checked)} figures recomputed from results.db, {len(self.differences)} differ")
        lines.append("recorded, not recomputable from results.db: " + ", ".join(NOT_RECOMPUTED))
        lines.append("verdict: " + ("every recomputed figure equals summary.json" if self.ok else "FAILED"))
        return "\n".join(lines)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _kzt(minor: int) -> Decimal:
    """Tiyn as KZT (the summary writes KZT as decimal strings; compared as numbers, exactly)."""
    return Decimal(minor).scaleb(-2)


class _Checker:
    def __init__(self, summary: dict[str, Any], out: Verification) -> None:
        self.summary, self.out = summary, out

    def recorded(self, path: str) -> Any:
        node: Any = self.summary
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def check(self, path: str, value: Any) -> None:
        recorded = self.recorded(path)
        self.out.checked.append(path)
        if recorded is _MISSING:
            self.out.differences.append(f"{path}: not in summary.json; recomputed {value!r}")
        elif not _same(recorded, value):
            self.out.differences.append(
                f"{path}: summary.json says {_shown(recorded)}, results.db gives {_shown(value)}")


_MISSING: Final = object()


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, Decimal | str) else repr(value)


def _same(recorded: Any, value: Any) -> bool:
    if isinstance(value, bool) or isinstance(recorded, bool):
        return bool(recorded) == bool(value) and type(recorded) is type(value)
    if isinstance(value, Decimal):
        return isinstance(recorded, str) and Decimal(recorded) == value
    if isinstance(value, str):
        return isinstance(recorded, str) and recorded == value
    if isinstance(value, int) and isinstance(recorded, int):
        return recorded == value
    if isinstance(value, dict):
        return isinstance(recorded, dict) and recorded.keys() == value.keys() and all(
            _same(recorded[k], value[k]) for k in value)
    if isinstance(recorded, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(float(recorded), float(value), rel_tol=_REL_TOL, abs_tol=1e-9)
    return bool(recorded == value)  # a list or None: as JSON reads it


def _payments(c: _Checker, db: sqlite3.Connection, lo: float, hi: float) -> None:
    rows = db.execute("SELECT t_arrival_s, t_done_s, latency_ms, outcome, reason, stand_in, deadline_missed, "
                      "orphaned, amount_kzt_minor, slippage_bps, fee_kzt_minor, settled_at_s FROM payments").fetchall()
    measured = [r for r in rows if lo <= r[0] < hi]
    approved = sum(1 for r in measured if r[3] == "approved")
    declined: dict[str, int] = {}
    for r in measured:
        if r[3] != "approved":
            declined[r[4]] = declined.get(r[4], 0) + 1
    c.check("payments.attempted", len(rows))
    c.check("payments.measured", len(measured))
    c.check("payments.approved", approved)
    c.check("payments.declined", dict(sorted(declined.items())))
    c.check("payments.approval_rate", approved / len(measured) if measured else 0.0)
    c.check("payments.stand_in", sum(1 for r in rows if r[5]))
    c.check("payments.stand_in_approved_kzt", _kzt(sum(r[8] for r in rows if r[5] and r[3] == "approved")))
    c.check("payments.orphaned_sales", sum(1 for r in rows if r[7]))
    funding = sum(1 for r in rows if r[7] and r[5] and r[3] == "approved")
    c.check("payments.orphaned_sales_funding_stand_in", funding)
    c.check("payments.orphaned_sales_unbacked", sum(1 for r in rows if r[7]) - funding)
    latency = sorted(r[2] for r in measured)
    c.check("auth_latency_ms.mean", _mean(latency))
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        c.check(f"auth_latency_ms.{name}", _percentile(latency, q))
    c.check("auth_latency_ms.max", latency[-1] if latency else 0.0)
    c.check("deadline_miss_rate", sum(1 for r in measured if r[6]) / len(measured) if measured else 0.0)
    bucket_s = float(c.recorded("throughput.bucket_s"))
    done = [r[1] for r in rows if r[3] == "approved" and lo <= r[1] < hi]
    counts: dict[int, int] = {}
    for t in done:
        counts[int((t - lo) // bucket_s)] = counts.get(int((t - lo) // bucket_s), 0) + 1
    c.check("throughput.approved_per_s_mean", len(done) / (hi - lo) if hi > lo else 0.0)
    c.check("throughput.approved_per_s_peak", max(counts.values()) / bucket_s if counts else 0.0)
    settle = sorted(r[11] - r[0] for r in rows if r[11] is not None and lo <= r[0] < hi)
    c.check("settlement_latency_s.p50", _percentile(settle, 50.0))
    c.check("settlement_latency_s.p99", _percentile(settle, 99.0))
    c.check("settlement_latency_s.max", settle[-1] if settle else 0.0)
    c.check("market.slippage_bps_mean", _mean([r[9] for r in measured if r[9] is not None]))
    c.check("market.payment_sale_fees_kzt", _kzt(sum(r[10] for r in rows)))


def _legs(c: _Checker, db: sqlite3.Connection, lo: float, hi: float) -> None:
    served = dict(db.execute("SELECT service, COUNT(*) FROM legs GROUP BY service").fetchall())
    measured: dict[str, list[tuple[float, float]]] = {}
    for service, wait, svc in db.execute(
            "SELECT l.service, l.wait_ms, l.service_ms FROM legs l JOIN payments p ON p.payment_id = l.payment_id "
            "WHERE p.t_arrival_s >= ? AND p.t_arrival_s < ?", (lo, hi)):
        measured.setdefault(service, []).append((wait, svc))
    for name in sorted(c.recorded("legs") or {}):
        rows = measured.get(name, [])
        waits = sorted(w for w, _ in rows)
        c.check(f"legs.{name}.served", int(served.get(name, 0)))
        c.check(f"legs.{name}.mean_wait_ms", _mean(waits))
        c.check(f"legs.{name}.p99_wait_ms", _percentile(waits, 99.0))
        c.check(f"legs.{name}.mean_service_ms", _mean([s for _, s in rows]))


def _money(c: _Checker, db: sqlite3.Connection) -> None:
    def total(where: str) -> int:
        sql = f"SELECT amount_minor FROM transfers WHERE party = 'exchange' AND {where}"
        return sum(int(a) for (a,) in db.execute(sql))
    fees = total("credit_account_id = 'fees:KZT'") - total("debit_account_id = 'fees:KZT'")
    c.check("market.fees_kzt", _kzt(fees))
    # The PIT book: the cardholders' sales, and their disposals on the direct rail; a zone merchant's
    # conversion (wallet:merchant:…, conv:…) is a company's, in the CIT book instead.
    direct_sales, direct_proceeds, direct_withheld = direct_tax(db)
    c.check("tax.sales", direct_sales + _one(db, "SELECT COUNT(*) FROM transfers WHERE party = 'exchange' AND "
                                            "code = 'sale' AND debit_account_id LIKE 'wallet:%' AND "
                                            "debit_account_id NOT LIKE 'wallet:merchant:%'"))
    c.check("tax.proceeds_kzt", _kzt(direct_proceeds + total(
        "debit_account_id = 'mm:KZT' AND code IN ('fee', 'pit', 'payout') AND transfer_id NOT LIKE 'conv:%'")))
    c.check("tax.pit_withheld_kzt", _kzt(direct_withheld + total("credit_account_id = 'tax_withheld:KZT'")))
    tax = c.recorded("tax")
    if isinstance(tax, dict) and "pit_due_kzt" in tax:  # the identities the tax figures must satisfy
        by_residency = sum(Decimal(v) for v in tax.get("pit_due_by_residency_kzt", {}).values())
        c.check("tax.pit_due_kzt", by_residency)
        c.check("tax.tax_gap_kzt", Decimal(tax["pit_due_kzt"]) - Decimal(tax["pit_withheld_kzt"])
                - Decimal(tax["pit_declared_kzt"]))
        c.check("tax.net_gain_kzt", Decimal(tax["realized_gain_kzt"]) - Decimal(tax["realized_loss_kzt"]))
    for metric, path in (("exchange_cash_kzt", "liquidity.exchange_peak_prefund_kzt"),
                         ("issuer_funding_kzt", "liquidity.issuer_peak_prefund_kzt")):
        values = [round(v * 100) for (v,) in db.execute(
            "SELECT value FROM timeseries WHERE metric = ? AND key = '' ORDER BY t_s, rowid", (metric,))]
        c.check(path, _kzt(max(0, values[0] - min(values))) if values else _kzt(0))
    exposure = [round(v * 100) for (v,) in db.execute(
        "SELECT value FROM timeseries WHERE metric = 'stand_in_exposure_kzt'")]
    c.check("liquidity.stand_in_exposure_peak_kzt", _kzt(max(exposure, default=0)))
    c.check("clearing.captured", _one(db, "SELECT COUNT(*) FROM payments WHERE captured_at_s IS NOT NULL"))
    c.check("clearing.settlement_windows", _one(db, "SELECT COUNT(DISTINCT window_id) FROM settlements"))


def _one(db: sqlite3.Connection, sql: str) -> int:
    return int(db.execute(sql).fetchone()[0])


def _journal(c: _Checker, db: sqlite3.Connection) -> None:
    has_journal = db.execute("SELECT name FROM sqlite_master WHERE name = 'accounts'").fetchone() is not None
    if not has_journal:
        c.out.differences.append("evidence: results.db has no accounts table (written by ccsim before verify existed)")
        return
    batches = list(journal_chain(db))
    c.check("evidence.journal_transfers", sum(b.rows for b in batches))
    c.check("evidence.journal_chain_batches", len(batches))
    head = batches[-1].digest if batches else GENESIS
    c.out.checked.append("evidence.journal_chain_head")
    if head != c.recorded("evidence.journal_chain_head"):
        recorded = {b: d for b, d in db.execute("SELECT batch, digest FROM journal_chain")}
        first = next((b for b in batches if recorded.get(b.index) != b.digest), None)
        where = f"; first differing batch {first.index} ({first.party} from seq {first.first_seq})" if first else ""
        c.out.differences.append(f"evidence.journal_chain_head: summary.json says "
                                 f"{c.recorded('evidence.journal_chain_head')}, the journal hashes to {head}{where}")
    replay = replay_ledgers(db)
    c.out.ledger_findings = {k: v for k, v in replay.findings.items() if v}
    for check in replay.checked:
        c.out.checked.append(f"ledger replay: {check}")
        for finding in replay.findings.get(check, []):
            c.out.differences.append(f"ledger replay: {check}: {finding}")
    replay_ok = not c.out.ledger_findings
    c.check("ledger.invariants_ok", replay_ok and bool(c.recorded("ledger.invariants_ok")))
    integrity_ok = all(bool(ok) for (ok,) in db.execute('SELECT ok FROM integrity'))
    if integrity_ok != bool(c.recorded("ledger.invariants_ok")):
        c.out.differences.append("integrity: the integrity table and summary.json's ledger.invariants_ok disagree")


def _slos(c: _Checker) -> None:
    for text, verdict in (c.recorded("slo") or {}).items():
        match = re.fullmatch(r"\s*([\w.]+)\s*(<=|>=|==|<|>)\s*(.+?)\s*", text)
        if match is None:
            c.out.differences.append(f"slo {text!r}: cannot be read")
            continue
        value = c.recorded(match.group(1))
        number = float(Decimal(value)) if isinstance(value, str) else float(value or 0)
        holds = _OPS[match.group(2)](number, float(verdict["threshold"]))
        c.out.checked.append(f"slo {text}")
        if holds != verdict["pass"] or not math.isclose(number, float(verdict["value"]), rel_tol=_REL_TOL):
            c.out.differences.append(f"slo {text}: summary.json says pass={verdict['pass']} at {verdict['value']}, "
                                     f"the figure is {number} (pass={holds})")


def _identity(c: _Checker, db: sqlite3.Connection) -> None:
    (yaml_text, sha) = db.execute("SELECT scenario_yaml, scenario_sha256 FROM runs").fetchone()
    c.check("scenario_sha256", hashlib.sha256(yaml_text.encode()).hexdigest())
    if sha != c.recorded("scenario_sha256"):
        c.out.differences.append("scenario_sha256: the runs row and summary.json disagree")


def verify_run(run_dir: Path, label: str | None = None) -> Verification:
    """Recompute and compare; raises :class:`sim.run_dir.RunDirError` for a directory that is not one
    run. ``label`` names the run in the report (default: its directory)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    if summary.get("mode") == "live":
        raise RunDirError(f"{run_dir} is a live load run: its figures were measured on running services, "
                          "whose books are not in results.db; verify checks simulated runs")
    out = Verification(run_dir, label or str(run_dir))
    c = _Checker(summary, out)
    db_path = run_dir / "results.db"
    wal = db_path.with_name(db_path.name + "-wal")
    db = sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?mode=ro" + ("" if wal.exists() else "&immutable=1"),
                         uri=True)
    try:
        lo = float(summary["warmup_s"])
        hi = float(summary["sim_duration_s"]) - float(summary.get("cooldown_s") or 0.0)
        _identity(c, db)
        _payments(c, db, lo, hi)
        _legs(c, db, lo, hi)
        _money(c, db)
        _journal(c, db)
        check_rails(c, db, lo, hi)
        _slos(c)
    finally:
        db.close()
    return out
