"""Settings of a live party service: the shared :class:`ApiSettings` plus the seed and its peers.

``ccsim serve`` passes these to each party process as ``CCSIM_*`` environment variables; tests
pass them as arguments. Nothing is built when this module is imported.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from services.api.settings import ApiSettings

__all__ = ["PartySettings"]


class PartySettings(ApiSettings):
    """One party service: its database, the seed file every party shares, and where the others are."""

    seed_file: Path | None = Field(
        None, description="JSON written by ccsim serve (services.api.parties.seed); none: an empty chain")
    exchange_url: str = Field("", description="base URL of the exchange service, e.g. http://127.0.0.1:8003")
    issuer_url: str = Field("", description="base URL of the issuer service")
    network_url: str = Field("", description="base URL of the network + acquirer service")
    bank_url: str = Field("", description="base URL of the bank service")
    deadline_ms: int = Field(0, ge=0, le=120_000,
                             description="the network's wait for the issuer; 0 means the seed's value")
    reset: bool = Field(False, description="drop this party's tables at start (its books, command log, outbox and "
                                           "idempotency keys)")
    resume: bool = Field(False, description="start on the books an earlier run left: the party rebuilds its state "
                                            "by replaying its command log and checks it against its books")
    relay_interval_s: float = Field(0.5, gt=0, le=60, description="outbox relay: pause between passes, and the "
                                                                  "first backoff step of a row that failed")
    admission_in_flight_max: int = Field(
        32, ge=0, le=10_000, description="network: payments run at once; more queue, and one whose expected wait "
                                         "exceeds a quarter of the deadline is refused at once (503, Retry-After). "
                                         "0: no limit")
    breaker_failures: int = Field(5, ge=1, le=1000, description="issuer → exchange: consecutive failures that "
                                                                "open the circuit breaker")
    breaker_cooldown_s: float = Field(5.0, gt=0, le=600, description="how long an open breaker refuses calls "
                                                                     "before one probe is let through")
    snapshot_every_commands: int = Field(
        5_000, ge=0, le=10_000_000,
        description="write a snapshot of the replayed state every this many logged commands, so a restart "
                    "replays at most about this many (services.api.parties.snapshots); 0: never")
    credentials_file: Path | None = Field(
        None, description="the principals' keys (services.api.auth; ccsim serve writes it, mode 0600); "
                          "none: <data_dir>/credentials.json. The service does not start without it")
    allowed_hosts: list[str] = Field(
        default_factory=list, max_length=32,
        description="Host header names answered besides loopback and the hosts of the configured peer URLs")
    auth_window_s: float = Field(900.0, ge=1, le=3600,
                                 description="a signed request's timestamp may be this far from the service's "
                                             "clock (15 min, as AWS SigV4: a clock stepped by 10 min still "
                                             "works); its nonce is remembered until then")

    def credentials_path(self) -> Path:
        return self.credentials_file or self.data_dir / "credentials.json"

    def host_names(self) -> list[str]:
        """The ``Host`` names this service answers: loopback, every peer URL's host, and ``allowed_hosts``."""
        peers = (self.exchange_url, self.issuer_url, self.network_url, self.bank_url)
        names = ["127.0.0.1", "localhost", "::1", *(urlsplit(u).hostname or "" for u in peers if u),
                 *self.allowed_hosts]
        return sorted({n.lower() for n in names if n})
