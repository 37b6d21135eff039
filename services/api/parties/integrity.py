"""The whole system's integrity, read over HTTP from every party service.

Each service answers for its own books (``GET /v1/ledger/invariants``) and for the halves of the
cross-party messages it booked (``GET /v1/ledger/halves``). Here the halves of all services are put
together and matched (:func:`services.reconciliation.reconcile`): a message booked by some sides
but not by others, or for different amounts, is a break. The gateway of ``ccsim serve`` serves
both results across all parties; tests call them directly.

A service that does not answer is reported, never skipped silently: its invariants appear as an
``unreachable`` violation, and the reconciliation raises :class:`IntegrityUnavailableError`
(matching without one party's halves would report false breaks). A service that accepted the
request but did not answer within the timeout is **slow**, not unreachable: a check over a large
journal can take that long, and calling it a violation would be false. Its invariants are then
``{"ok": null, "state": "slow"}`` (not checked, no violation), the whole answer's ``ok`` is null
unless another party failed, and the reconciliation raises :class:`IntegritySlowError`. A service
that refuses the caller's credentials is listed with an ``unauthorized`` violation. The party
services answer only a signed caller with the gateway's or the operator's role: pass ``auth``
(:class:`services.api.auth.SigningAuth`) or a client that signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from services.contracts import ReconciliationBreak
from services.errors import CcsimError
from services.money import AssetRegistry
from services.reconciliation import Half, reconcile

__all__ = ["IntegritySlowError", "IntegrityUnavailableError", "collect_halves", "collect_invariants",
           "collect_reconciliation"]

_TIMEOUT_S = 30.0  # a journal read on a large run takes a while; this is an operator's call


class IntegrityUnavailableError(CcsimError, RuntimeError):
    """A party service did not answer, so the system cannot be checked as a whole."""


class IntegritySlowError(IntegrityUnavailableError):
    """A party service took the request but did not answer in time: slow, not down."""


_SLOW = "slow"
_UNREACHABLE = "unreachable"
_UNAUTHORIZED = "unauthorized"


def _named(base_urls: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(base_urls, Mapping):
        return {name: url.rstrip("/") for name, url in base_urls.items()}
    return {url.rstrip("/"): url.rstrip("/") for url in base_urls}


def _get(client: httpx.Client, url: str) -> dict[str, Any] | str:
    """The answer's JSON object, or why there is none: ``slow`` (connected, no answer in time),
    ``unauthorized`` (a 401 or 403: the caller's credentials were refused) or ``unreachable`` (no
    connection, or another answer that is not a 200 JSON object)."""
    try:
        response = client.get(url)
    except httpx.ConnectTimeout:
        return _UNREACHABLE
    except httpx.TimeoutException:
        return _SLOW
    except httpx.TransportError:
        return _UNREACHABLE
    if response.status_code in (401, 403):
        return _UNAUTHORIZED
    if response.status_code != 200:
        return _UNREACHABLE
    body = response.json()
    return body if isinstance(body, dict) else _UNREACHABLE


def _timeout_of(client: httpx.Client) -> str:
    read = client.timeout.read
    return f"{read:g} s" if read is not None else "the client's timeout"


def collect_invariants(base_urls: Mapping[str, str] | Sequence[str], *, timeout_s: float = _TIMEOUT_S,
                       client: httpx.Client | None = None, auth: httpx.Auth | None = None) -> dict[str, Any]:
    """Every party's invariants: ``{"ok", "parties": {party: {"ok", "service", "state", "violations"}}}``.

    ``base_urls`` maps a service name to its base URL (or lists the URLs). A service that does not
    answer adds a party named after it with an ``unreachable`` (or ``unauthorized``) violation; one
    that answers late adds
    it with ``"ok": None, "state": "slow"`` and no violation. ``ok`` is False when any party failed,
    else None when any was slow, else True.
    """
    own = client is None
    http = client or httpx.Client(timeout=timeout_s, auth=auth)
    parties: dict[str, Any] = {}
    try:
        for name, url in _named(base_urls).items():
            body = _get(http, f"{url}/v1/ledger/invariants")
            if body == _SLOW:
                parties[name] = {"ok": None, "service": name, "state": _SLOW, "violations": [], "detail": (
                    f"no answer within {_timeout_of(http)}: the check is slow, not failed; ask again later")}
                continue
            if body == _UNAUTHORIZED:
                parties[name] = {"ok": False, "service": name, "state": _UNAUTHORIZED, "violations": [
                    {"invariant": _UNAUTHORIZED, "subject": url,
                     "detail": "the service refused the caller's credentials"}]}
                continue
            if not isinstance(body, dict):
                parties[name] = {"ok": False, "service": name, "state": _UNREACHABLE, "violations": [
                    {"invariant": "unreachable", "subject": url, "detail": "the service did not answer"}]}
                continue
            for party in body.get("parties", []):
                parties[str(party["party"])] = {"ok": bool(party["ok"]), "service": str(body.get("service", name)),
                                                "state": "checked", "violations": list(party.get("violations", []))}
    finally:
        if own:
            http.close()
    verdicts = [p["ok"] for p in parties.values()]
    ok = False if False in verdicts else (None if None in verdicts else True)
    return {"ok": ok, "parties": parties}


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
            body = _get(http, f"{url}/v1/ledger/halves")
            if body == _SLOW:
                raise IntegritySlowError(f"{name} ({url}) is slow: no answer to GET /v1/ledger/halves within "
                                         f"{_timeout_of(http)} (not unreachable; ask again later)")
            if body == _UNAUTHORIZED:
                raise IntegrityUnavailableError(f"{name} ({url}) refused the caller's credentials for "
                                                "GET /v1/ledger/halves")
            if not isinstance(body, dict):
                raise IntegrityUnavailableError(f"{name} ({url}) did not answer GET /v1/ledger/halves")
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
