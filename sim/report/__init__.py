"""Reports of simulation runs: a self-contained HTML page, run comparisons, and data exports.

Public surface::

    build_report(run_dir) -> Path              RUN_DIR/report.html
    compare_runs(run_dirs, out_dir) -> Path    OUT_DIR/compare.html
    format_compare_table(run_dirs) -> str      the comparison as a terminal table
    export_run(run_dir, fmt, out_dir) -> list  payments, legs, timeseries as CSV or Parquet
    ReportError                                every user-caused failure (bad path, corrupt db)
"""

from sim.report.build import build_report
from sim.report.compare import compare_runs, format_compare_table
from sim.report.errors import ReportError
from sim.report.export import export_run

__all__ = ["ReportError", "build_report", "compare_runs", "export_run", "format_compare_table"]
