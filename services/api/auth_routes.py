"""Which role may call which route of a party service: one table, read where requests enter.

The table is checked by :class:`services.api.auth_middleware.AuthMiddleware` from the method and
the path alone, before the body is read, so a caller without the role is refused 403 at once.
A route not in the table needs a valid signature from any principal (it then answers 404 or
405); ``tests/test_auth.py`` fails when a party route is missing from the table.

Why each rule (docs/threat-model.md): money moves only on the word of the party that owes it —
the network authorizes, captures and advises at the issuer; the issuer sells at the exchange; a
payment message enters an inbox only from a party service (which one may send which message is
checked on the message itself, :func:`services.api.parties.base.inbox_router`); prices and halts
come only from the market-data feed; card blocks, wallets, deposits, settlements and retries are
the operator's; the books are read by the gateway and the operator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["ANY_PRINCIPAL", "PUBLIC", "ROUTE_ROLES", "RouteRule", "roles_for"]

PUBLIC: Final = frozenset({"*public*"})  # no credentials: liveness, metrics and the API's own description
ANY_PRINCIPAL: Final = frozenset({"*any*"})  # any valid signature
_OPS: Final = frozenset({"operator"})
_READERS: Final = frozenset({"operator", "gateway"})
_PARTIES: Final = frozenset({"exchange", "issuer", "network", "bank"})


@dataclass(frozen=True)
class RouteRule:
    method: str
    template: str
    roles: frozenset[str]

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(self.template)) + "$")


def _rules(method: str, roles: frozenset[str], *templates: str) -> list[RouteRule]:
    return [RouteRule(method, t, roles) for t in templates]


ROUTE_ROLES: Final[tuple[RouteRule, ...]] = tuple([
    *_rules("GET", PUBLIC, "/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"),
    # every service: messages, retries, the recovery report, the books
    *_rules("POST", _PARTIES, "/v1/inbox/{receiver}"),
    *_rules("POST", _OPS, "/v1/outbox/retry"),
    *_rules("GET", _READERS, "/v1/recovery", "/v1/ledger/invariants", "/v1/ledger/halves"),
    # exchange
    *_rules("POST", frozenset({"market"}), "/v1/prices", "/v1/halts"),
    *_rules("GET", ANY_PRINCIPAL, "/v1/prices"),
    *_rules("POST", _OPS, "/v1/wallets", "/v1/deposits"),
    *_rules("GET", frozenset({"operator", "gateway", "issuer"}), "/v1/wallets/{holder_id}"),
    *_rules("POST", frozenset({"issuer", "operator"}), "/v1/quotes"),
    *_rules("POST", frozenset({"issuer"}), "/v1/sells"),
    *_rules("GET", frozenset({"issuer", "operator"}), "/v1/sells/{sale_id}"),
    *_rules("GET", _READERS, "/v1/tax/statements/{holder_id}"),
    # exchange: CryptoCity's direct rail (the POS plays the merchant's terminal and the holder's app)
    *_rules("POST", frozenset({"pos"}), "/v1/direct/quotes", "/v1/direct/payments", "/v1/direct/refunds"),
    *_rules("POST", frozenset({"pos", "operator"}), "/v1/direct/conversions"),
    *_rules("GET", frozenset({"pos", "operator", "gateway"}), "/v1/direct/payments/{invoice_id}"),
    *_rules("GET", _READERS, "/v1/direct/merchants/{merchant_id}"),
    # issuer
    *_rules("POST", _OPS, "/v1/cards", "/v1/holds/expire"),
    *_rules("GET", frozenset({"operator", "network"}), "/v1/cards/{card_id}"),
    *_rules("POST", frozenset({"operator", "issuer"}), "/v1/cards/{card_id}/status"),
    *_rules("POST", frozenset({"network"}), "/v1/authorizations", "/v1/authorizations/{auth_id}/capture",
            "/v1/authorizations/{auth_id}/reverse", "/v1/authorizations/{auth_id}/refund", "/v1/advices",
            "/v1/interchange", "/v1/outgoing-payments"),
    *_rules("GET", frozenset({"network", "operator"}), "/v1/authorizations/{auth_id}"),
    # network + acquirers
    *_rules("POST", frozenset({"pos"}), "/v1/payments", "/v1/payments/{auth_id}/reverse", "/v1/presentments"),
    *_rules("GET", _READERS, "/v1/advices/pending", "/v1/settlements/{window_id}"),
    *_rules("POST", _OPS, "/v1/advices/retry", "/v1/settlements"),
    # banks
    *_rules("GET", _READERS, "/v1/banks/{bank_id}/customers/{party}",
            "/v1/banks/{bank_id}/customers/{party}/statement"),
])

_COMPILED: Final = tuple((rule.method, rule.pattern, rule) for rule in ROUTE_ROLES)


def roles_for(method: str, path: str) -> RouteRule | None:
    """The rule of a request (``HEAD`` is read as ``GET``), or ``None`` when no route matches."""
    method = "GET" if method == "HEAD" else method
    for rule_method, pattern, rule in _COMPILED:
        if rule_method == method and pattern.match(path):
            return rule
    return None
