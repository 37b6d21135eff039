"""The parties of the Crypto Card as live services, each over its own database (docs/live-mode.md).

``create_exchange_app``, ``create_issuer_app``, ``create_network_app`` (network + acquirers) and
``create_bank_app`` each take a :class:`PartySettings` and build nothing at import time. They call
each other over HTTP (:class:`services.api.transport_http.HttpTransport`); the integrity of the
whole system is read back with :func:`collect_invariants` and :func:`collect_reconciliation`.
"""

from __future__ import annotations

from services.api.parties.bank import create_bank_app
from services.api.parties.base import StartupError
from services.api.parties.exchange import create_exchange_app
from services.api.parties.integrity import IntegrityUnavailableError, collect_invariants, collect_reconciliation
from services.api.parties.issuer import create_issuer_app
from services.api.parties.network import create_network_app
from services.api.parties.seed import PartySeed, read_seed, write_seed
from services.api.parties.settings import PartySettings
from services.flows import Topology

__all__ = [
    "IntegrityUnavailableError",
    "PartySeed",
    "PartySettings",
    "StartupError",
    "Topology",
    "collect_invariants",
    "collect_reconciliation",
    "create_bank_app",
    "create_exchange_app",
    "create_issuer_app",
    "create_network_app",
    "read_seed",
    "write_seed",
]
