"""Settings of one party service, read from arguments or ``CCSIM_*`` environment variables.

Nothing is built when this module is imported: ``create_*_app(settings)`` builds engines and
tables from an :class:`ApiSettings` it is handed, so tests and ``ccsim serve`` can run several
parties, each with its own database, in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.api.rate_limit import CALLERS_MAX_DEFAULT, DEFAULT_RATE_LIMITS, RateLimit
from services.api.strict_json import JSON_DEPTH_MAX_DEFAULT

__all__ = ["ApiSettings"]


class ApiSettings(BaseSettings):
    """One party service's configuration. Every limit has a default and an upper bound."""

    model_config = SettingsConfigDict(env_prefix="CCSIM_", extra="forbid")

    party: str = Field("ledger", pattern=r"^[a-z][a-z0-9_]{0,31}$",
                       description="party name: logs, metrics and the default database file")
    data_dir: Path = Field(Path("data"), description="where the default SQLite files live")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means sqlite:///<data_dir>/<party>.db",
    )
    table_prefix: str = Field("", pattern=r"^[a-z0-9_]{0,40}$",
                              description="prefix for this party's tables (several parties, one database)")
    body_limit_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    body_timeout_s: float = Field(10.0, gt=0, le=300,
                                  description="a request body not received whole this long after the request "
                                              "started is answered 408")
    json_depth_max: int = Field(JSON_DEPTH_MAX_DEFAULT, ge=2, le=256)
    idempotency_lease_s: float = Field(
        60.0, gt=0, le=3600,
        description="an in-flight idempotency key older than this is taken over (its request died)",
    )
    statement_page_max: int = Field(500, ge=1, le=10_000)
    outbound_timeout_s: float = Field(5.0, gt=0, le=120, description="calls to other parties: total")
    outbound_connect_timeout_s: float = Field(1.0, gt=0, le=60)
    outbound_retries_max: int = Field(3, ge=0, le=10)

    rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict,
        description="per-caller limits on the routes anyone could spam (services.api.rate_limit), by name: "
                    f"{', '.join(DEFAULT_RATE_LIMITS)}; each {{per_s, burst}} replaces the default, per_s 0 is "
                    "no limit")
    rate_callers_max: int = Field(CALLERS_MAX_DEFAULT, ge=1, le=1_000_000,
                                  description="callers each limit keeps a bucket for (least recent go first)")

    @field_validator("rate_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        unknown = sorted(set(value) - set(DEFAULT_RATE_LIMITS))
        if unknown:
            raise ValueError(f"unknown rate limit {', '.join(unknown)}; the limits are "
                             f"{', '.join(DEFAULT_RATE_LIMITS)}")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / (self.party + '.db')}"
        return self

    def ensure_data_dir(self) -> None:
        """Create the data directory of a default SQLite file (called by the app factory)."""
        if self.database_url.startswith("sqlite:///"):
            Path(self.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
