"""``export_run``: a run's payments, legs and time series as CSV or Parquet files.

For analysts who want the raw rows in a spreadsheet, pandas or DuckDB. Rows stream from SQLite in
batches, so exporting a million-payment run does not load it into memory. Money columns keep their
exact integer minor units; in Parquet ``crypto_minor`` (text in the database, because 18-decimal
assets overflow 64-bit integers) becomes ``decimal128(38, 0)``, exact and still numeric.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Boolean, Connection, Float, Integer, Table, select

from sim import results
from sim.report.errors import ReportError
from sim.report.rundata import open_run

__all__ = ["EXPORT_DIR", "EXPORT_FORMATS", "EXPORT_TABLES", "export_run"]

EXPORT_FORMATS: Final = ("csv", "parquet")
EXPORT_TABLES: Final = (results.payments, results.legs, results.timeseries)
EXPORT_DIR: Final = "export"
_BATCH_ROWS: Final = 50_000
_DECIMAL_COLUMNS: Final = {"crypto_minor": pa.decimal128(38, 0)}


def _batches(conn: Connection, table: Table) -> Iterator[Sequence[Any]]:
    result = conn.execution_options(yield_per=_BATCH_ROWS).execute(select(table))
    yield from result.partitions()


def _arrow_type(column: Any) -> pa.DataType:
    if column.name in _DECIMAL_COLUMNS:
        return _DECIMAL_COLUMNS[column.name]
    if isinstance(column.type, Boolean):
        return pa.bool_()
    if isinstance(column.type, Integer):
        return pa.int64()
    if isinstance(column.type, Float):
        return pa.float64()
    return pa.string()


def _arrow_value(name: str, value: Any) -> Any:
    if value is not None and name in _DECIMAL_COLUMNS:
        return Decimal(int(value))
    return value


def _write_csv(conn: Connection, table: Table, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([c.name for c in table.columns])
        for batch in _batches(conn, table):
            writer.writerows(tuple(row) for row in batch)


def _write_parquet(conn: Connection, table: Table, path: Path) -> None:
    schema = pa.schema([pa.field(c.name, _arrow_type(c), nullable=True) for c in table.columns])
    names = [c.name for c in table.columns]
    with pq.ParquetWriter(path, schema) as writer:
        wrote = False
        for batch in _batches(conn, table):
            columns = {name: [_arrow_value(name, row[i]) for row in batch]
                       for i, name in enumerate(names)}
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())


def export_run(run_dir: Path, fmt: str, out_dir: Path | None = None) -> list[Path]:
    """Write payments, legs and timeseries of a run as ``fmt`` files into ``out_dir``
    (default ``RUN_DIR/export``); return their paths. All three files or none are left."""
    if fmt not in EXPORT_FORMATS:
        raise ReportError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    run_dir = Path(run_dir)
    target = Path(out_dir) if out_dir is not None else run_dir / EXPORT_DIR
    write = _write_csv if fmt == "csv" else _write_parquet
    done: list[Path] = []
    with open_run(run_dir) as run:
        target.mkdir(parents=True, exist_ok=True)
        try:
            for table in EXPORT_TABLES:
                path = target / f"{table.name}.{fmt}"
                fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=target)
                os.close(fd)
                try:
                    write(run.conn, table, Path(tmp_name))
                    os.replace(tmp_name, path)
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
                done.append(path)
        except BaseException:
            for path in done:
                path.unlink(missing_ok=True)
            raise
    return done
