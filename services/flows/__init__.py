"""The Crypto Card's cross-party flows, written once and driven two ways (design.md §3).

Each flow is an ``async`` function over small ports — sell, move money between banks, book a
party's half of a message, send a message — never over HTTP or SimPy. The in-process chain
(:class:`services.chain.InProcessChain`, for ``ccsim run``) plugs in the party objects of one
process and drives a flow at once (:func:`run_now`); the live party services (``ccsim serve``) plug
in HTTP, the outbox and idempotency, and await it. A differential test
(``tests/test_differential.py``) holds the two drivers to the same journals.

- :mod:`~services.flows.config` — every knob of the chain;
- :mod:`~services.flows.topology` — which bank each party uses, and messages between parties;
- :mod:`~services.flows.opening` — each party's side of the opening state;
- :mod:`~services.flows.authorization` — screen, sell, proceeds, finalize, auto top-up;
- :mod:`~services.flows.advice` — the stand-in advice and the orphaned sale (re-buy);
- :mod:`~services.flows.clearing` — capture, refund and chargeback: the issuer resolves, the acquirer presents;
- :mod:`~services.flows.settlement` — settlement windows and netting;
- :mod:`~services.flows.integrity` — the system's invariants beyond each ledger.
"""

from __future__ import annotations

from services.flows.advice import AdvicePorts, OrphanOutcome, OrphanPorts, apply_advice, orphaned_sale
from services.flows.authorization import AuthorizationPorts, SalePorts, authorize, finalize, sell, sell_and_pay
from services.flows.clearing import ClearingPorts, Resolution, present
from services.flows.config import DEFAULT_TIER_LIMITS_KZT, ChainConfig
from services.flows.drive import run_now
from services.flows.integrity import tenge_conserved
from services.flows.settlement import SettlementPorts, settle_window
from services.flows.topology import Topology, holder_party, unique_cards

__all__ = [
    "DEFAULT_TIER_LIMITS_KZT",
    "AdvicePorts",
    "AuthorizationPorts",
    "ChainConfig",
    "ClearingPorts",
    "OrphanOutcome",
    "OrphanPorts",
    "Resolution",
    "SalePorts",
    "SettlementPorts",
    "Topology",
    "apply_advice",
    "authorize",
    "finalize",
    "holder_party",
    "orphaned_sale",
    "present",
    "run_now",
    "sell",
    "sell_and_pay",
    "settle_window",
    "tenge_conserved",
    "unique_cards",
]
