"""The results database of one run: table definitions and a batched writer.

A run writes its per-payment rows, leg timings, time series, settlement positions and integrity
checks into one SQLite file (``results.db``) through SQLAlchemy Core. Rows are buffered and inserted
in batches (design §5: per-row commits cap near 2,000 rows/s, batched Core inserts reach >100,000),
so a run of a million payments never holds them all in memory.

The report (``sim.report``) reads these tables; their names and columns are a contract:

- ``runs``: one row per run (scenario, seed, hash, version, wall time, summary and scenario text).
- ``payments``: one row per authorization attempt (amounts in KZT minor units; ``crypto_minor`` is
  text because 18-decimal assets overflow 64-bit integers and SQLite's NUMERIC would round them).
- ``legs``: per payment and service, the queue wait and service time in milliseconds.
- ``timeseries``: long format ``(t_s, metric, key, value)``; see :data:`TIMESERIES_METRICS`.
- ``settlements``: net position per participant per settlement window (KZT minor; sums to 0).
- ``integrity``: each ledger invariant and reconciliation check with ok/detail.
- ``transfers``: every party's ledger journal at the end of the run (when ``metrics.write_transfers``).
- ``accounts``: every party's accounts and balances at the end of the run.
- ``journal_chain``: the hash chain over ``transfers``, batch by batch (:mod:`sim.journal_chain`).
- ``direct_payments``, ``direct_conversions``, ``direct_holdings``: the direct rail's payments, the zone
  merchants' conversions and what they still hold at the end (:mod:`sim.components.direct`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    update,
)

__all__ = [
    "BATCH_ROWS",
    "TIMESERIES_METRICS",
    "ResultsWriter",
    "accounts",
    "direct_conversions",
    "direct_holdings",
    "direct_payments",
    "integrity",
    "journal_chain",
    "legs",
    "metadata",
    "open_engine",
    "payment_events",
    "payments",
    "runs",
    "settlements",
    "timeseries",
    "transfers",
]

BATCH_ROWS: Final = 5_000

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("scenario_name", String, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("scenario_sha256", String, nullable=False),
    Column("ccsim_version", String, nullable=False),
    Column("wall_s", Float, nullable=False),
    Column("summary_json", Text, nullable=False),
    Column("scenario_yaml", Text, nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Integer, primary_key=True),
    Column("t_arrival_s", Float, nullable=False),
    Column("t_done_s", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("outcome", String, nullable=False),  # 'approved' | 'declined'
    Column("reason", String, nullable=False),  # ISO 8583 code ("00" when approved) or a fault name
    Column("stand_in", Boolean, nullable=False),
    Column("deadline_missed", Boolean, nullable=False),
    Column("orphaned", Boolean, nullable=False),
    Column("amount_kzt_minor", BigInteger, nullable=False),
    Column("merchant_id", String, nullable=False),
    Column("category", String, nullable=False),
    Column("acquirer_id", String, nullable=False),
    Column("funding_mode", String, nullable=False),
    Column("residency", String, nullable=False),
    Column("asset_sold", String, nullable=True),  # first asset sold; NULL when no sale
    Column("crypto_minor", String, nullable=True),  # minor units of asset_sold, as decimal text
    Column("slippage_bps", Float, nullable=True),
    Column("fee_kzt_minor", BigInteger, nullable=False),
    Column("gain_kzt_minor", BigInteger, nullable=False),
    Column("pit_kzt_minor", BigInteger, nullable=False),
    Column("captured_at_s", Float, nullable=True),
    Column("settled_at_s", Float, nullable=True),
)

legs = Table(
    "legs",
    metadata,
    Column("payment_id", Integer, nullable=False),
    Column("service", String, nullable=False),
    Column("wait_ms", Float, nullable=False),
    Column("service_ms", Float, nullable=False),
    Index("ix_legs_payment", "payment_id"),
)

timeseries = Table(
    "timeseries",
    metadata,
    Column("t_s", Float, nullable=False),
    Column("metric", String, nullable=False),
    Column("key", String, nullable=False),  # "" when the metric has no key
    Column("value", Float, nullable=False),
    Index("ix_timeseries_metric", "metric", "t_s"),
)

settlements = Table(
    "settlements",
    metadata,
    Column("window_id", String, nullable=False),
    Column("t_s", Float, nullable=False),
    Column("participant", String, nullable=False),
    Column("net_kzt_minor", BigInteger, nullable=False),  # positive: receives
)

integrity = Table(
    "integrity",
    metadata,
    Column("check", String, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
)

# Every party's ledger journal at the end of the run (design §3: one ledger per party). Amounts are
# decimal text: 18-decimal assets overflow 64-bit integers.
transfers = Table(
    "transfers",
    metadata,
    Column("party", String, nullable=False),
    Column("seq", Integer, nullable=False),  # commit order within the party's journal
    Column("transfer_id", String, nullable=False),
    Column("debit_account_id", String, nullable=False),
    Column("credit_account_id", String, nullable=False),
    Column("amount_minor", String, nullable=False),
    Column("asset", String, nullable=False),
    Column("code", String, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("pending_id", String, nullable=False),
    Column("user_data", String, nullable=False),
    Column("t_s", Float, nullable=False),
    Index("ix_transfers_party_seq", "party", "seq", unique=True),
)

# Every party's accounts as its ledger holds them at the end of the run: ``ccsim verify`` replays the
# journal and compares. Balances are decimal text (18-decimal assets), flags are AccountFlags bits
# (1: debits must not exceed credits; 2: credits must not exceed debits).
accounts = Table(
    "accounts",
    metadata,
    Column("party", String, nullable=False),
    Column("account_id", String, nullable=False),
    Column("asset", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("debits_pending", String, nullable=False),
    Column("debits_posted", String, nullable=False),
    Column("credits_pending", String, nullable=False),
    Column("credits_posted", String, nullable=False),
)

# The hash chain over ``transfers`` (sim/journal_chain.py): one row per batch; the last digest is
# ``summary.json``'s ``evidence.journal_chain_head``.
journal_chain = Table(
    "journal_chain",
    metadata,
    Column("batch", Integer, primary_key=True),
    Column("party", String, nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("digest", String, nullable=False),
)

# The direct rail (sim/components/direct.py): one row per direct payment, written at the end of the
# run (a receipt's conversion comes later); amounts in tiyn, crypto as decimal text.
direct_payments = Table(
    "direct_payments",
    metadata,
    Column("payment_id", Integer, primary_key=True),  # the arrival's id (a fallback's card row shares it)
    Column("t_arrival_s", Float, nullable=False),
    Column("t_done_s", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("outcome", String, nullable=False),  # 'paid' | 'declined' | 'card' (fell back to the card)
    Column("decline", String, nullable=False),  # services.flows.direct.DirectDecline ('' when paid)
    Column("merchant_id", String, nullable=False),
    Column("category", String, nullable=False),
    Column("stablecoin", Boolean, nullable=False),
    Column("asset", String, nullable=False),
    Column("quantity_minor", String, nullable=False),
    Column("amount_kzt_minor", BigInteger, nullable=False),
    Column("fee_kzt_minor", BigInteger, nullable=False),  # the direct fee's value
    Column("basis_kzt_minor", BigInteger, nullable=False),  # the merchant's receipt at its value
    Column("gain_kzt_minor", BigInteger, nullable=False),  # the holder's realized gain
    Column("pit_due_kzt_minor", BigInteger, nullable=False),
    Column("pit_withheld_kzt_minor", BigInteger, nullable=False),
    Column("proceeds_kzt_minor", BigInteger, nullable=False),  # the disposal in the PIT book (0: stablecoin)
    Column("tenge_at_s", Float, nullable=True),  # its crypto's tenge reached the merchant's bank (NULL: held)
    Column("refund", String, nullable=False),  # '' | 'refunded' | why a refund was refused
)

# Every conversion a zone merchant attempted (ok or not); the report and verify read the P&L here.
direct_conversions = Table(
    "direct_conversions",
    metadata,
    Column("t_s", Float, nullable=False),
    Column("merchant_id", String, nullable=False),
    Column("category", String, nullable=False),
    Column("asset", String, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("reason", String, nullable=False),
    Column("quantity_minor", String, nullable=False),
    Column("mid_value_kzt_minor", BigInteger, nullable=False),  # the quantity at the mid price
    Column("gross_kzt_minor", BigInteger, nullable=False),  # what the book paid (mid − slippage)
    Column("fee_kzt_minor", BigInteger, nullable=False),  # taker fee (or the redemption fee)
    Column("net_kzt_minor", BigInteger, nullable=False),  # tenge to the merchant's bank account
    Column("basis_kzt_minor", BigInteger, nullable=False),  # the receipts' value when received
    Column("gain_kzt_minor", BigInteger, nullable=False),  # the CIT book's realized gain
)

# Merchant holdings not converted by the end of the run, at the last mid price.
direct_holdings = Table(
    "direct_holdings",
    metadata,
    Column("merchant_id", String, nullable=False),
    Column("asset", String, nullable=False),
    Column("value_kzt_minor", BigInteger, nullable=False),
    Column("basis_kzt_minor", BigInteger, nullable=False),
)

# Capture and settlement happen hours after a payment's row is written; they are appended here as
# events and folded into ``payments`` once at the end of the run (then the table is emptied).
payment_events = Table(
    "payment_events",
    metadata,
    Column("payment_id", Integer, nullable=False),
    Column("kind", String, nullable=False),  # 'captured' | 'settled'
    Column("t_s", Float, nullable=False),
    Index("ix_payment_events", "payment_id", "kind"),
)

TIMESERIES_METRICS: Final[Mapping[str, str]] = {
    "arrivals_per_s": "payments arriving per second, per minute bucket (key '')",
    "approved_per_s": "approvals per second, per minute bucket (key '')",
    "declined_per_s": "declines per second, per minute bucket (key = reason code)",
    "p50_ms": "median authorization latency of payments arriving in the minute (key '')",
    "p99_ms": "99th percentile authorization latency of payments arriving in the minute (key '')",
    "utilization": "busy workers / capacity over the sampling interval (key = service)",
    "queue_len": "payments waiting for a worker at the sampling instant (key = service)",
    "mid_price_kzt": "mid price in KZT per major unit (key = asset)",
    "exchange_cash_kzt": "the exchange's tenge at its bank, in KZT (key '')",
    "issuer_funding_kzt": "the issuer's settlement funding need, in KZT (key '')",
    "stand_in_exposure_kzt": "approved-by-stand-in amount not yet covered by an advice (key '')",
    "merchant_unrealized_pnl_kzt": "zone merchants' price gain on the crypto they still hold, in KZT (key '')",
}


def open_engine(path: Path) -> Engine:
    """An SQLite engine tuned for one writer doing batched inserts."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class ResultsWriter:
    """Buffers rows per table and inserts them in batches of :data:`BATCH_ROWS`.

    Rows are buffered as tuples in the table's column order and inserted with the driver's
    ``executemany`` (one compiled ``INSERT`` per table): SQLAlchemy's per-row parameter processing
    cost more than SQLite's insert itself. The hot path (:mod:`sim.metrics`) hands over tuples with
    :meth:`add_row` / :meth:`add_rows`; :meth:`add` / :meth:`add_many` take dicts keyed by column
    name for everything else. The values are the same either way (booleans are stored as 0/1, as
    SQLAlchemy's ``Boolean`` does on SQLite).
    """

    keeps_rows = True  # False for a writer that drops every row (a sweep's summary-only run)

    def __init__(self, path: Path, batch_rows: int = BATCH_ROWS) -> None:
        self.path = path
        self.engine = open_engine(path)
        metadata.create_all(self.engine)
        self._batch_rows = batch_rows
        self._buffers: dict[str, list[tuple[Any, ...]]] = {t: [] for t in metadata.tables}
        self._columns = {name: tuple(c.name for c in t.columns) for name, t in metadata.tables.items()}
        self._insert_sql = {
            name: 'INSERT INTO "{}" ({}) VALUES ({})'.format(
                name, ", ".join(f'"{c}"' for c in cols), ", ".join("?" * len(cols)))
            for name, cols in self._columns.items()
        }

    def _tuple(self, table: Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(c) for c in self._columns[table.name])

    def add(self, table: Table, row: dict[str, Any]) -> None:
        self.add_row(table, self._tuple(table, row))

    def add_many(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self.add_rows(table, [self._tuple(table, row) for row in rows])

    def add_row(self, table: Table, row: tuple[Any, ...]) -> None:
        """One row as a tuple in the table's column order (``table.columns``)."""
        buf = self._buffers[table.name]
        buf.append(row)
        if len(buf) >= self._batch_rows:
            self._flush_table(table)

    def add_rows(self, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows as tuples in the table's column order; a long iterable is inserted batch by batch."""
        buf = self._buffers[table.name]
        size = self._batch_rows
        if isinstance(rows, list) and len(buf) + len(rows) < size:
            buf.extend(rows)
            return
        for row in rows:
            buf.append(row)
            if len(buf) >= size:
                self._flush_table(table)
                buf = self._buffers[table.name]

    def _flush_table(self, table: Table) -> None:
        buf = self._buffers[table.name]
        if not buf:
            return
        self._buffers[table.name] = []
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._insert_sql[table.name], buf)

    def flush(self) -> None:
        for table in metadata.sorted_tables:
            self._flush_table(table)

    def fold_payment_events(self) -> None:
        """Copy capture/settlement times into ``payments`` and empty the event table."""
        self.flush()
        with self.engine.begin() as conn:
            for kind, column in (("captured", "captured_at_s"), ("settled", "settled_at_s")):
                # One set-based UPDATE in SQLite: nothing is pulled into Python memory.
                event_time = (
                    select(payment_events.c.t_s)
                    .where(payment_events.c.payment_id == payments.c.payment_id)
                    .where(payment_events.c.kind == kind)
                    .limit(1)
                    .scalar_subquery()
                )
                conn.execute(update(payments).values({column: event_time}))
            conn.execute(payment_events.delete())

    def close(self) -> None:
        self.flush()
        self.engine.dispose()
