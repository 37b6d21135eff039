"""What ``ccsim run`` shows people: a progress bar while it runs, a headline table after.

On a terminal the bar (rich) shows virtual time, payments and the ETA; otherwise a few plain lines,
so logs from CI stay readable. ``--quiet`` shows nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sim.report.fmt import fmt_kzt_exact
from sim.runner import RunResult
from sim.world import Progress as ProgressFn

__all__ = ["print_headline", "progress_display"]


def _clock(t_s: float) -> str:
    h, rem = divmod(int(t_s), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


@contextmanager
def progress_display(duration_s: float, *, quiet: bool = False) -> Iterator[ProgressFn | None]:
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        marks = [duration_s * k / 4 for k in (1, 2, 3)]

        def plain(t_s: float, payments: int) -> None:
            while marks and t_s >= marks[0]:
                marks.pop(0)
                print(f"ccsim: virtual {_clock(t_s)}, {payments:,} payments", file=sys.stderr)

        yield plain
        return
    bar = Progress(
        TextColumn("[bold]virtual {task.fields[clock]}"), BarColumn(),
        TextColumn("{task.fields[payments]:>10,} payments"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )
    task = bar.add_task("run", total=duration_s, clock=_clock(0), payments=0)

    def update(t_s: float, payments: int) -> None:
        bar.update(task, completed=min(t_s, duration_s), clock=_clock(t_s), payments=payments)

    with bar:
        yield update


def print_headline(result: RunResult, report_path: Path | None) -> None:
    s = result.summary
    p = s["payments"]
    lat = s["auth_latency_ms"]
    table = Table(title=f"{s['scenario']} · seed {s['seed']} · {s['wall_s']:.1f} s wall", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("payments attempted", f"{p['attempted']:,}")
    table.add_row("approved (after warm-up)", f"{p['approved']:,} ({p['approval_rate']:.2%})")
    declined = ", ".join(f"{k}: {v:,}" for k, v in p["declined"].items()) or "none"
    table.add_row("declined by reason", declined)
    table.add_row("auth latency p50 / p99 / max", f"{lat['p50']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} ms")
    table.add_row("deadline misses", f"{s['deadline_miss_rate']:.3%} of {s['deadline_ms']:.0f} ms")
    table.add_row("stand-in approvals", f"{p['stand_in']:,}")
    table.add_row("orphaned sales", f"{p['orphaned_sales']:,} (stand-in {p['orphaned_sales_funding_stand_in']:,}, "
                                    f"unbacked {p['orphaned_sales_unbacked']:,})")
    table.add_row("approved per s (mean / peak)",
                  f"{s['throughput']['approved_per_s_mean']:.2f} / {s['throughput']['approved_per_s_peak']:.2f}")
    table.add_row("settlement latency p50", f"{s['settlement_latency_s']['p50'] / 3600:.2f} h")
    table.add_row("exchange peak pre-funding", fmt_kzt_exact(Decimal(s["liquidity"]["exchange_peak_prefund_kzt"])))
    pit, gap = (fmt_kzt_exact(Decimal(s["tax"][k])).removesuffix(" KZT") for k in ("pit_due_kzt", "tax_gap_kzt"))
    table.add_row("PIT due / tax gap", f"{pit} / {gap} KZT")
    table.add_row("ledger", "invariants hold, reconciled" if s["ledger"]["invariants_ok"] else "VIOLATIONS")
    for name, v in s["slo"].items():
        table.add_row(f"SLO {name}", "pass" if v["pass"] else f"FAIL ({v['value']:.6g})")
    table.add_row("run directory", str(result.run_dir))
    if report_path is not None:
        table.add_row("report", str(report_path))
    Console().print(table)
