"""The whole system's integrity, read over HTTP from every party service.

Each service answers for its own books (``GET /v1/ledger/invariants``) and for the halves of the
cross-party messages it booked (``GET /v1/ledger/halves``). Here the halves of all services are put
together and matched (:func:`services.reconciliation.reconcile`): a message booked by some sides
but not by others, or for different amounts, is a break. The gateway of ``ccsim serve`` serves
both results across all parties; tests call them directly.

A service that does not answer is reported, never skipped silently: its invariants appear as an
``unreachable`` violation (``slow`` when it accepted the call but did not answer in time,
``unauthorized`` when it refused the caller's credentials), and the reconciliation raises
:class:`IntegrityUnavailableError` (matching without one party's halves would report false breaks).
The party services answer only a signed caller with the gateway's or the operator's role: pass
``auth`` (:class:`services.api.auth.SigningAuth`) or a client that signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from services.contracts import ReconciliationBreak
from services.money import AssetRegistry
from services.reconciliation import Half, reconcile

__all__ = ["IntegrityUnavailableError", "collect_halves", "collect_invariants", "collect_reconciliation"]

_TIMEOUT_S = 30.0  # a journal read on a large run takes a while; this is an operator's call


class IntegrityUnavailableError(RuntimeError):
    """A party service did not answer, so the system cannot be checked as a whole."""


def _named(base_urls: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(base_urls, Mapping):
        return {name: url.rstrip("/") for name, url in base_urls.items()}
    return {url.rstrip("/"): url.rstrip("/") for url in base_urls}


class _NoAnswer(Exception):  # noqa: N818 — not an error of the caller: why a party gave no answer
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(detail)
        self.invariant = invariant
        self.detail = detail


def _get(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        raise _NoAnswer("slow", "the service did not answer in time") from None
    except httpx.TransportError:
        raise _NoAnswer("unreachable", "the service did not answer") from None
    if response.status_code in (401, 403):
        raise _NoAnswer("unauthorized", f"the service refused the caller's credentials ({response.status_code})")
    body = response.json() if response.status_code == 200 else None
    if not isinstance(body, dict):
        raise _NoAnswer("unreachable", f"the service answered {response.status_code}")
    return body


def collect_invariants(base_urls: Mapping[str, str] | Sequence[str], *, timeout_s: float = _TIMEOUT_S,
                       client: httpx.Client | None = None, auth: httpx.Auth | None = None) -> dict[str, Any]:
    """Every party's invariants: ``{"ok": bool, "parties": {party: {"ok", "service", "violations"}}}``.

    ``base_urls`` maps a service name to its base URL (or lists the URLs). A service that does not
    answer adds a party named after it with an ``unreachable``, ``slow`` or ``unauthorized`` violation.
    """
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, auth=auth)
    parties: dict[str, Any] = {}
    try:
        for name, url in _named(base_urls).items():
            try:
                body = _get(http, f"{url}/v1/ledger/invariants")
            except _NoAnswer as exc:
                parties[name] = {"ok": False, "service": name, "violations": [
                    {"invariant": exc.invariant, "subject": url, "detail": exc.detail}]}
                continue
            for party in body.get("parties", []):
                parties[str(party["party"])] = {"ok": bool(party["ok"]), "service": str(body.get("service", name)),
                                                "violations": list(party.get("violations", []))}
    finally:
        if own:
            http.close()
    return {"ok": all(p["ok"] for p in parties.values()), "parties": parties}


def collect_halves(base_urls: Mapping[str, str] | Sequence[str], *, assets: AssetRegistry | None = None,
                   timeout_s: float = _TIMEOUT_S, client: httpx.Client | None = None,
                   auth: httpx.Auth | None = None) -> tuple[list[Half], set[str]]:
    """Every booked half of every message, and the ids legitimately in transit."""
    registry = assets or AssetRegistry()
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, auth=auth)
    halves: list[Half] = []
    in_transit: set[str] = set()
    try:
        for name, url in _named(base_urls).items():
            try:
                body = _get(http, f"{url}/v1/ledger/halves")
            except _NoAnswer as exc:
                raise IntegrityUnavailableError(f"{name} ({url}), GET /v1/ledger/halves: {exc.detail}") from None
            in_transit.update(str(i) for i in body.get("in_transit", []))
            halves.extend(Half(str(h["message_id"]), str(h["purpose"]), str(h["side"]), str(h["party"]),
                               registry.parse(str(h["amount"]), "KZT")) for h in body.get("halves", []))
    finally:
        if own:
            http.close()
    return halves, in_transit


def collect_reconciliation(base_urls: Mapping[str, str] | Sequence[str], *, timeout_s: float = _TIMEOUT_S,
                           client: httpx.Client | None = None,
                           auth: httpx.Auth | None = None) -> list[ReconciliationBreak]:
    """Every reconciliation break across the parties; an empty list means every message is booked
    on every side that should book it, for the same amount."""
    halves, in_transit = collect_halves(base_urls, timeout_s=timeout_s, client=client, auth=auth)
    return reconcile(halves, in_transit)
