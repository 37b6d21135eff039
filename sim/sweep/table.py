"""The sweep table on disk: ``replications.csv`` streamed row by row, then Parquet and the points.

``replications.csv`` is the sweep's journal: each finished replication is appended and flushed at
once, so an interrupted sweep loses at most the replications still running, and ``--resume``
reads it back to skip the ones recorded ``ok``. A line cut short by the interruption is dropped.
When the sweep ends the journal is rewritten sorted (one row per replication, the latest if one was
re-run) and written again as ``replications.parquet``; the aggregate per grid point goes to
``points.csv`` and ``points.parquet``.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sim.sweep.metrics import is_kzt

__all__ = [
    "FIXED_COLUMNS",
    "INT_COLUMNS",
    "POINTS_CSV",
    "REPLICATIONS_CSV",
    "WALL_CLOCK_COLUMNS",
    "Journal",
    "kzt_float",
    "read_journal",
    "row_key",
    "write_table",
]

REPLICATIONS_CSV: Final = "replications.csv"
POINTS_CSV: Final = "points.csv"
FIXED_COLUMNS: Final = ("point", "replication", "seed", "scenario_sha256", "status", "error", "exit_code",
                        "wall_s", "cpu_s")  # the time one replication took, wall clock and CPU of its process
WALL_CLOCK_COLUMNS: Final = frozenset({"wall_s", "cpu_s"})  # the only columns two runs of a seed differ in
INT_COLUMNS: Final = frozenset({"replication", "seed", "exit_code"})
_TEXT_COLUMNS: Final = frozenset({"point", "scenario_sha256", "status", "error"})


def row_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    """What identifies a replication for ``--resume``: grid point, replication, seed, scenario hash."""
    return (str(row["point"]), int(row["replication"]), int(row["seed"]), str(row["scenario_sha256"]))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _typed(column: str, text: str, grid_keys: frozenset[str]) -> Any:
    """A CSV cell back to its value: ints, floats, KZT decimal strings, YAML scalars for grid values."""
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    if column in INT_COLUMNS:
        return int(text)
    if column in grid_keys:
        return yaml.safe_load(text)
    if is_kzt(column):
        return text
    return float(text)


def read_journal(path: Path, grid_keys: Iterable[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and the complete rows of an existing journal (a cut-short row is dropped)."""
    if not path.exists():
        return [], []
    keys = frozenset(grid_keys)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows: list[dict[str, Any]] = []
        for cells in reader:
            if len(cells) != len(header):
                continue
            try:
                row = {c: _typed(c, t, keys) for c, t in zip(header, cells, strict=True)}
                row_key(row)
            except (ValueError, KeyError, TypeError, yaml.YAMLError):
                continue
            rows.append(row)
    return header, rows


class Journal:
    """Appends replication rows to ``replications.csv``, flushing each one."""

    def __init__(self, path: Path, columns: Sequence[str], existing: Sequence[dict[str, Any]] = ()) -> None:
        self.path = path
        self.columns = list(columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(path, self.columns, existing)  # the old rows under today's header
        self._handle: IO[str] = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)

    def append(self, row: dict[str, Any]) -> None:
        self._writer.writerow([_cell(row.get(c)) for c in self.columns])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a sweep table is meant to be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _arrow_column(name: str, values: list[Any]) -> tuple[pa.DataType, list[Any]]:
    present = [v for v in values if v is not None]
    if name in INT_COLUMNS:
        return pa.int64(), values
    if name in _TEXT_COLUMNS or is_kzt(name):
        return pa.string(), [None if v is None else str(v) for v in values]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_(), values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present) and present:
        return pa.int64(), values
    if all(_is_number(v) for v in present):
        return pa.float64(), [None if v is None else float(v) for v in values]
    return pa.string(), [None if v is None else str(v) for v in values]


def write_table(out_dir: Path, stem: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``stem.csv`` and ``stem.parquet`` with these columns (Parquet types inferred per column)."""
    csv_path = out_dir / f"{stem}.csv"
    _write_csv(csv_path, columns, rows)
    fields, arrays = [], []
    for name in columns:
        dtype, values = _arrow_column(name, [r.get(name) for r in rows])
        fields.append(pa.field(name, dtype, nullable=True))
        arrays.append(pa.array(values, type=dtype))
    parquet_path = out_dir / f"{stem}.parquet"
    fd, tmp = tempfile.mkstemp(prefix=f".{parquet_path.name}.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, parquet_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return [csv_path, parquet_path]


def kzt_float(value: Any) -> float | None:
    """A KZT decimal string as a float for statistics (a mean of amounts is an estimate, not money)."""
    if value is None:
        return None
    try:
        return float(Decimal(str(value)))
    except InvalidOperation:
        return None
