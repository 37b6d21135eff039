"""``export_run``: a run's payments, legs and time series as CSV or Parquet files.

For analysts who want the raw rows in a spreadsheet, pandas or DuckDB. Rows stream from SQLite in
batches, so exporting a million-payment run does not load it into memory. Money columns keep their
exact integer minor units; in Parquet ``crypto_minor`` (text in the database, because 18-decimal
assets overflow 64-bit integers) becomes ``decimal128(38, 0)``, exact and still numeric. Beside it,
``crypto_amount`` is the same quantity in whole units as a decimal string with the asset's scale
(``"0.008591989744872437"``): a spreadsheet that reads 19-digit integers as floating point rounds
``crypto_minor``, and the string keeps every digit. Files are written 0644 (readable by all).
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
import yaml
from sqlalchemy import Boolean, Connection, Float, Integer, Table, select

from services.money import DEFAULT_ASSETS, AssetRegistry, MoneyError, format_amount
from sim import results
from sim.report import queries
from sim.report.errors import ReportError
from sim.report.rundata import open_run
from sim.scenario_load import ScenarioError, parse_scenario

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


def _registry(conn: Connection) -> AssetRegistry:
    """The run's assets (the scenario may add some); the built-in ones when it cannot be read."""
    row = queries.run_row(conn) or {}
    try:
        raw = yaml.safe_load(str(row.get("scenario_yaml") or "")) or {}
        return parse_scenario(raw).registry() if isinstance(raw, dict) else AssetRegistry(DEFAULT_ASSETS)
    except (yaml.YAMLError, ScenarioError):
        return AssetRegistry(DEFAULT_ASSETS)


class _Rows:
    """A table's export columns: its own, plus ``crypto_amount`` after ``crypto_minor``."""

    def __init__(self, conn: Connection, table: Table) -> None:
        self.names = [c.name for c in table.columns]
        self.amount_at = self.names.index("crypto_minor") + 1 if "crypto_minor" in self.names else None
        self.registry = _registry(conn) if self.amount_at is not None else None
        self.asset_at = self.names.index("asset_sold") if self.amount_at is not None else -1

    @property
    def header(self) -> list[str]:
        if self.amount_at is None:
            return self.names
        return [*self.names[: self.amount_at], "crypto_amount", *self.names[self.amount_at:]]

    def row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if self.amount_at is None:
            return tuple(row)
        return (*row[: self.amount_at], self._amount(row[self.asset_at], row[self.amount_at - 1]),
                *row[self.amount_at:])

    def _amount(self, asset: str | None, minor: str | None) -> str | None:
        if asset is None or minor is None or self.registry is None:
            return None
        try:
            return format_amount(int(minor), self.registry.get(asset))
        except (MoneyError, KeyError, ValueError):
            return None


def _write_csv(conn: Connection, table: Table, path: Path) -> None:
    rows = _Rows(conn, table)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows.header)
        for batch in _batches(conn, table):
            writer.writerows(rows.row(row) for row in batch)


def _write_parquet(conn: Connection, table: Table, path: Path) -> None:
    rows = _Rows(conn, table)
    types = {c.name: _arrow_type(c) for c in table.columns}
    schema = pa.schema([pa.field(name, types.get(name, pa.string()), nullable=True) for name in rows.header])
    with pq.ParquetWriter(path, schema) as writer:
        wrote = False
        for batch in _batches(conn, table):
            out = [rows.row(row) for row in batch]
            columns = {name: [_arrow_value(name, row[i]) for row in out] for i, name in enumerate(rows.header)}
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
                    os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600: an export is for sharing
                    os.replace(tmp_name, path)
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
                done.append(path)
        except BaseException:
            for path in done:
                path.unlink(missing_ok=True)
            raise
    return done
