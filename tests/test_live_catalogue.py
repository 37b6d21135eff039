"""The bad-input catalogue of issue 8 against every POST endpoint of the four live party services.

The exchange, issuer, network + acquirers and banks run in process (``tests/test_live_parties.py``'s
``Live``: the four apps calling each other through one routing transport), on SQLite and
PostgreSQL, after a short real history (payments, a JIT sale, captures, a refund, a reversal, an
advice, a wallet, a deposit, a settlement window), so that refusals meet real rows and every
idempotency store holds keys.

Each route has a valid body (its *template*); every case changes one thing in it (an amount, an
asset, an id, a header, the bytes on the wire, or the caller's credentials: unsigned, a role the
route does not admit, a body changed after signing, a signature sent twice or an hour old, an
unknown principal, another Host name — issue 15) and must be answered

- 4xx (the exact status for most cases) with an ``application/problem+json`` body naming the
  field at fault, and
- with **no row changed in any table of any party's database** (counted and hashed before and
  after, all tables, not just journals), and with no POST answered 2xx by any party meanwhile.

The routes come from the apps' OpenAPI documents: ``test_every_post_route_is_in_the_catalogue``
fails when a POST route exists that the catalogue does not cover, and when a route's amount or
integer fields differ from the ones the catalogue mutates. Each backend's totals (cases, status
codes, 5xx, row changes) are written to ``tests/artifacts/catalogue_<db>.json``.

The parties live for the whole module, one set per backend (a case that is refused changes
nothing, so the next case meets the same books). A case that fails today because of a bug in a
party module is in :data:`KNOWN`, marked ``xfail(strict=True)`` with the fix it needs.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import pytest_asyncio
import structlog
from conftest import SQL_BACKENDS
from signing import RoleAuth, principal_for, session_credentials
from sqlalchemy import create_engine, text
from test_live_parties import Live, make_seed, pay_body

from services.api import PROBLEM_MEDIA_TYPE
from services.api.auth import Principal, sign_headers, sign_request
from services.api.auth_routes import PUBLIC, roles_for
from services.api.fields import AMOUNT_UNITS_MAX, amount_in
from services.api.problems import ProblemError
from services.api.rate_limit import RateLimit, RateLimitMiddleware
from services.logging import configure_logging
from services.money import AssetRegistry

# The parties live for the whole module (one world per backend): its tests share its event loop.
in_world_loop = pytest.mark.asyncio(loop_scope="module")

ARTIFACTS: Final = Path(__file__).resolve().parent / "artifacts"
IDEM: Final = "Idempotency-Key"

# -- the routes ----------------------------------------------------------------------------------

PRICE: Final = -1  # the scale of a price field: a Decimal, at most 18 decimals (PriceText)
SALE_NET: Final = "<net of sale p-jit:sale>"  # replaced when sent: the sale's net, read after the history


def _msg(  # noqa: PLR0917 — one positional field per message field, in their order
    mid: str, purpose: str, payer: str, payee: str, payer_bank: str, payee_bank: str, ref: str = "",
) -> dict[str, Any]:
    """A payment message as the inbox endpoints take it, for 10.00 KZT."""
    return {"id": mid, "purpose": purpose, "payer": payer, "payee": payee, "payer_bank": payer_bank,
            "payee_bank": payee_bank, "amount": "10.00", "ref": ref}


@dataclass(frozen=True)
class Change:
    """A hand-written bad variant of a route's template: a wrong asset, an unknown id."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)  # JSON path → value
    path: str = ""  # another URL path (an unknown id in it)
    status: int = 422
    field: str = ""


@dataclass(frozen=True)
class Route:
    """One POST route: the party serving it, its OpenAPI path, and a valid request to vary."""

    party: str
    template: str
    path: str
    body: dict[str, Any] | None  # None: the route takes no body
    keyed: bool = False  # takes an Idempotency-Key
    amounts: dict[str, int] = field(default_factory=dict)  # JSON path → the asset's scale (PRICE)
    integers: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    path_param: str = ""  # the name of the id in the path, if any
    optional: tuple[str, ...] = ()  # amount fields for which null means "none" (no null case)

    @property
    def label(self) -> str:
        return f"{self.party} POST {self.template}"


_WALLET: Final = {"holder_id": "h-cat", "residency": "resident", "stablecoin": "10.00", "holdings": [
    {"asset": "ETH", "lots": [{"quantity": "1.5", "price_kzt": "1500000", "acquired_at_s": 0}]}]}
_ORDER: Final = {"id": "s-cat", "auth_id": "", "holder_id": "h1", "net": "1000.00", "asset_priority": ["BTC"],
                 "max_slippage_bps": 0, "quote_ttl_ms": 0}
_ORDER_CHANGES: Final = (
    Change("unknown holder", {"holder_id": "ghost"}, status=404, field="holder_id"),
    Change("asset without an order book", {"asset_priority": ["DOGE"]}, field="asset_priority[0]"),
    Change("lower-case asset", {"asset_priority": ["btc"]}, field="asset_priority[0]"),
    Change("no assets", {"asset_priority": []}, field="asset_priority"),
    Change("more than the holder has", {"net": "99999999.00"}, field="asset_priority"),
)
_INVOICE: Final = {"invoice_id": "d-cat", "holder_id": "h1", "merchant_id": "m1", "amount": "100.00",
                   "asset_priority": ["BTC"]}
_AUTH: Final = {"auth_id": "a-cat", "card_id": "c2", "merchant_id": "m1", "acquirer_id": "acq-1",
                "amount": "10.00", "category": "grocery"}
_INBOX_CHANGES: Final = (
    Change("unknown receiver", path="/v1/inbox/nobody", status=404, field="receiver"),
    Change("unknown purpose", {"purpose": "gift"}, field="purpose"),
    Change("currency field", {"currency": "USD"}, field="currency"),
)

ROUTES: Final[tuple[Route, ...]] = (
    # -- exchange
    Route("exchange", "/v1/wallets", "/v1/wallets", _WALLET, keyed=True,
          amounts={"holdings[0].lots[0].quantity": 18, "holdings[0].lots[0].price_kzt": PRICE, "stablecoin": 2},
          integers=("holdings[0].lots[0].acquired_at_s",), changes=(
              Change("unknown asset", {"holdings[0].asset": "XYZ"}, field="holdings[0].asset"),
              Change("lower-case asset", {"holdings[0].asset": "eth"}, field="holdings[0].asset"),
              Change("the stablecoin as a lot", {"holdings[0].asset": "KZTE"}, field="holdings[0].asset"),
              # (a holder of its own: a wallet a known bug opened must not hide this case)
              Change("holdings in tenge", {"holder_id": "h-kzt", "holdings[0].asset": "KZT"},
                     field="holdings[0].asset"),
              Change("unknown residency", {"residency": "martian"}, field="residency"),
              Change("an existing holder, other holdings", {"holder_id": "h1"}, status=409, field="holder_id"),
          ), optional=("stablecoin",)),
    Route("exchange", "/v1/deposits", "/v1/deposits",
          {"id": "d-cat", "holder_id": "h-seed", "asset": "BTC", "quantity": "0.01", "price_kzt": "45000000"},
          keyed=True, amounts={"quantity": 8, "price_kzt": PRICE}, changes=(
              Change("unknown asset", {"asset": "XYZ"}, field="asset"),
              Change("lower-case asset", {"asset": "btc"}, field="asset"),
              Change("tenge (no holder has a KZT wallet)", {"asset": "KZT"}, status=404, field="holder_id"),
              Change("unknown holder", {"holder_id": "ghost"}, status=404, field="holder_id"),
              Change("crypto without a cost basis", {"price_kzt": None}, field="price_kzt"),
              Change("a deposit id used for another deposit", {"id": "d-seed", "asset": "ETH"}, status=409,
                     field="id"),
          )),
    Route("exchange", "/v1/prices", "/v1/prices", {"asset": "BTC", "price_kzt": "45000000"},
          amounts={"price_kzt": PRICE}, changes=(
              Change("unknown asset", {"asset": "XYZ"}, field="asset"),
              Change("the stablecoin", {"asset": "KZTE"}, field="asset"),
          )),
    Route("exchange", "/v1/halts", "/v1/halts", {"asset": "ETH", "halted": False}, changes=(
        Change("unknown asset", {"asset": "XYZ"}, field="asset"),
        Change("halted as text", {"halted": "false"}, field="halted"),
    )),
    Route("exchange", "/v1/quotes", "/v1/quotes", _ORDER, amounts={"net": 2},
          integers=("max_slippage_bps", "quote_ttl_ms"), changes=_ORDER_CHANGES),
    Route("exchange", "/v1/sells", "/v1/sells", _ORDER, keyed=True, amounts={"net": 2},
          integers=("max_slippage_bps", "quote_ttl_ms"), changes=_ORDER_CHANGES),
    Route("exchange", "/v1/inbox/{receiver}", "/v1/inbox/exchange",  # the re-buy of p-jit's sale, for its net
          {**_msg("p-jit:sale:rebuy", "rebuy", "issuer", "exchange", "bank-2", "bank-1", ref="p-jit:sale"),
           "amount": SALE_NET},
          keyed=True, amounts={"amount": 2}, changes=(
              *_INBOX_CHANGES,
              Change("re-buy of an unknown sale", {"ref": "ghost"}, status=None, field="ref"),
              Change("re-buy for another amount than the sale's", {"amount": "10.00"}, field="amount"),
              Change("a purpose the exchange does not receive", {"purpose": "proceeds"}, status=None, field="purpose"),
          ), path_param="receiver"),
    # -- exchange: the direct rail (the seed's merchants are card-only: an id in the template is a 404,
    # so every case here is refused on what the body says before the ids it names are looked up)
    Route("exchange", "/v1/direct/quotes", "/v1/direct/quotes", _INVOICE, keyed=True, amounts={"amount": 2},
          changes=(
              Change("unknown holder", {"holder_id": "ghost"}, status=404, field="holder_id"),
              Change("a merchant outside the zone", {"merchant_id": "m2"}, status=404, field="merchant_id"),
              Change("asset without an order book", {"asset_priority": ["DOGE"]}, field="asset_priority[0]"),
              Change("lower-case asset", {"asset_priority": ["btc"]}, field="asset_priority[0]"),
              Change("no assets", {"asset_priority": []}, field="asset_priority"),
              Change("nine assets", {"asset_priority": ["BTC"] * 9}, field="asset_priority"),
              Change("a time-to-live of a day", {"ttl_s": 86_400.0}, field="ttl_s"),
              Change("a negative time-to-live", {"ttl_s": -1.0}, field="ttl_s"),
          )),
    Route("exchange", "/v1/direct/payments", "/v1/direct/payments", {"invoice_id": "d-cat"}, keyed=True,
          changes=(Change("an invoice never quoted", {"invoice_id": "ghost"}, status=404, field="invoice_id"),)),
    Route("exchange", "/v1/direct/refunds", "/v1/direct/refunds",
          {"id": "r-cat", "invoice_id": "d-cat", "amount": "10.00"}, keyed=True, amounts={"amount": 2},
          changes=(Change("an invoice never paid", {"invoice_id": "ghost"}, status=404, field="invoice_id"),)),
    Route("exchange", "/v1/direct/conversions", "/v1/direct/conversions",
          {"merchant_id": "m1", "asset": "BTC", "quantity": "0.001"}, keyed=True, amounts={"quantity": 8},
          changes=(
              Change("unknown asset", {"asset": "XYZ"}, field="asset"),
              Change("lower-case asset", {"asset": "btc"}, field="asset"),
              Change("a merchant outside the zone", {"merchant_id": "m2"}, status=404, field="merchant_id"),
          )),
    # -- issuer
    Route("issuer", "/v1/cards", "/v1/cards", {
        "card_id": "c-cat", "holder_id": "h-cat", "residency": "resident", "kyc_tier": "standard",
        "funding_mode": "jit", "asset_priority": ["ETH"]}, changes=(
        Change("unknown asset", {"asset_priority": ["XYZ"]}, field="asset_priority"),
        Change("lower-case asset", {"asset_priority": ["eth"]}, field="asset_priority[0]"),
        Change("unknown tier", {"kyc_tier": "gold"}, field="kyc_tier"),
        Change("unknown funding mode", {"funding_mode": "credit"}, field="funding_mode"),
        Change("an existing card, other fields", {"card_id": "c2"}, status=409, field="card_id"),
    )),
    Route("issuer", "/v1/cards/{card_id}/status", "/v1/cards/c1/status", {"status": "active"}, changes=(
        Change("unknown card", path="/v1/cards/ghost/status", status=404, field="card_id"),
        Change("unknown status", {"status": "stolen"}, field="status"),
    ), path_param="card_id"),
    Route("issuer", "/v1/authorizations", "/v1/authorizations", _AUTH, keyed=True, amounts={"amount": 2},
          changes=(Change("currency field", {"currency": "USD"}, field="currency"),)),
    Route("issuer", "/v1/authorizations/{auth_id}/capture", "/v1/authorizations/p-held/capture",
          {"amount": "10.00"}, keyed=True, amounts={"amount": 2}, changes=(
              Change("unknown authorization", path="/v1/authorizations/ghost/capture", status=404,
                     field="auth_id"),
              Change("a second capture", path="/v1/authorizations/p-seed/capture", status=409, field="auth_id"),
              Change("above the padding", {"amount": "99999.00"}, field="amount"),
              Change("currency field", {"currency": "USD"}, field="currency"),
          ), path_param="auth_id"),
    Route("issuer", "/v1/authorizations/{auth_id}/reverse", "/v1/authorizations/p-held/reverse", {},
          keyed=True, changes=(
              Change("unknown authorization", path="/v1/authorizations/ghost/reverse", status=404,
                     field="auth_id"),
              Change("a captured authorization", path="/v1/authorizations/p-seed/reverse", status=409,
                     field="auth_id"),
          ), path_param="auth_id"),
    Route("issuer", "/v1/authorizations/{auth_id}/refund", "/v1/authorizations/p-seed/refund",
          {"amount": "10.00", "kind": "refund"}, keyed=True, amounts={"amount": 2}, changes=(
              Change("unknown authorization", path="/v1/authorizations/ghost/refund", status=404,
                     field="auth_id"),
              Change("not captured", path="/v1/authorizations/p-held/refund", status=409, field="auth_id"),
              Change("above the capture", {"amount": "4600.00"}, field="amount"),
              Change("unknown kind", {"kind": "gift"}, field="kind"),
          ), path_param="auth_id"),
    Route("issuer", "/v1/advices", "/v1/advices",
          {"request": {**_AUTH, "auth_id": "a-cat-advice"}, "response": {"code": "00", "approval_code": "A1"}},
          keyed=True, amounts={"request.amount": 2}, changes=(
              Change("unknown response code", {"response.code": "99"}, field="response.code"),
              Change("response code as a number", {"response.code": 0}, field="response.code"),
              Change("unknown card", {"request.card_id": "ghost"}, status=404, field="request.card_id"),
          )),
    Route("issuer", "/v1/interchange", "/v1/interchange", {"window_id": "w-cat", "amount": "1.00"}, keyed=True,
          amounts={"amount": 2}, changes=(
              Change("a booked window, another amount", {"window_id": "w-seed"}, status=409, field="amount"),
          )),
    Route("issuer", "/v1/outgoing-payments", "/v1/outgoing-payments",
          _msg("w-cat:issuer:in", "settlement_in", "issuer", "network", "bank-2", "bank-3", ref="w-cat"),
          keyed=True, amounts={"amount": 2}, changes=(
              Change("not the issuer's payment", {"payer": "exchange"}, field="purpose"),
              Change("another purpose", {"purpose": "proceeds"}, field="purpose"),
              Change("not the issuer's bank", {"payer_bank": "bank-1"}, field="payer_bank"),
              Change("unknown purpose", {"purpose": "gift"}, field="purpose"),
              Change("more than the issuer has", {"amount": "999999999999.00"}, field="amount"),
          )),
    Route("issuer", "/v1/inbox/{receiver}", "/v1/inbox/issuer",  # a card load from the holder's account
          _msg("m-cat", "card_load", "holder:h2", "issuer", "bank-2", "bank-2", ref="c2"),
          keyed=True, amounts={"amount": 2}, changes=(
              *_INBOX_CHANGES,
              Change("card load of an unknown card", {"ref": "ghost"}, status=None, field="ref"),
              Change("proceeds of an unknown sale", {"purpose": "proceeds", "payer": "exchange",
                                                     "payer_bank": "bank-1"}, status=None, field="id"),
          ), path_param="receiver"),
    # -- network and acquirers
    Route("network", "/v1/payments", "/v1/payments", pay_body("p-cat", card="c2", amount="10.00"), keyed=True,
          amounts={"amount": 2}, changes=(
              Change("unknown merchant", {"merchant_id": "ghost"}, status=404, field="merchant_id"),
              Change("currency field", {"currency": "USD"}, field="currency"),
          )),
    Route("network", "/v1/payments/{auth_id}/reverse", "/v1/payments/p-held/reverse", {}, keyed=True, changes=(
        Change("unknown authorization", path="/v1/payments/ghost/reverse", status=404, field="auth_id"),
        Change("a captured payment", path="/v1/payments/p-seed/reverse", status=409, field="auth_id"),
    ), path_param="auth_id"),
    Route("network", "/v1/presentments", "/v1/presentments", {"kind": "capture", "auth_id": "p-held",
                                                              "amount": "10.00"},
          keyed=True, amounts={"amount": 2}, changes=(
              Change("unknown authorization", {"auth_id": "ghost"}, status=404, field="auth_id"),
              Change("a second capture", {"auth_id": "p-seed"}, status=409, field="auth_id"),
              Change("refund above the capture", {"kind": "refund", "auth_id": "p-seed", "amount": "4600.00"},
                     field="amount"),
              Change("unknown kind", {"kind": "gift"}, field="kind"),
          )),
    Route("network", "/v1/settlements", "/v1/settlements", {"window_id": "w-cat"}, keyed=True, changes=(
        Change("window id with a space", {"window_id": "w cat"}, field="window_id"),
    )),
    Route("network", "/v1/inbox/{receiver}", "/v1/inbox/network",
          _msg("m-cat", "settlement_in", "issuer", "network", "bank-2", "bank-3", ref="w-cat"),
          keyed=True, amounts={"amount": 2}, changes=(
              *_INBOX_CHANGES,
              Change("a purpose the network does not receive", {"purpose": "proceeds"}, status=None, field="purpose"),
          ), path_param="receiver"),
    # -- banks
    Route("bank", "/v1/inbox/{receiver}", "/v1/inbox/bank-1",  # an acquirer pays its merchant, both at bank-1
          _msg("m-cat", "merchant_payout", "acq-1", "merchant:m1", "bank-1", "bank-1", ref="m1"),
          keyed=True, amounts={"amount": 2}, changes=(
              Change("unknown bank", path="/v1/inbox/bank-9", status=404, field="receiver"),
              *_INBOX_CHANGES[1:],
              Change("more than the payer has", {"amount": "999999999999.00"}, field="amount"),
              Change("unknown payer", {"payer": "ghost"}, status=None, field="payer"),
              Change("unknown payee", {"payee": "ghost"}, status=None, field="payee"),
          ), path_param="receiver"),
)

# POST routes that take no input at all (no body, no parameter): nothing to vary. The coverage
# test checks that they still take none.
NO_INPUT: Final = frozenset({
    ("exchange", "/v1/outbox/retry"), ("issuer", "/v1/outbox/retry"), ("network", "/v1/outbox/retry"),
    ("issuer", "/v1/holds/expire"), ("network", "/v1/advices/retry"),
})

# -- the cases -----------------------------------------------------------------------------------

FRESH: Final = object()  # a fresh Idempotency-Key
REPLAY: Final = object()  # a key this party already answered for another request


@dataclass(frozen=True)
class Case:
    route: Route
    name: str
    body: Any  # JSON-able, or bytes sent as they are
    status: int | None  # None: any 4xx
    field: str
    path: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    key: Any = FRESH  # FRESH, REPLAY, None (no header; ``headers`` may carry a bad one)
    chunked: bool = False  # send the body without a Content-Length
    reason: str = ""  # a word the problem's reason for ``field`` must contain (byte-level cases)
    auth: str = "signed"  # how the caller proves who it is: one of :data:`AUTH_MODES`

    @property
    def id(self) -> str:
        return f"{self.route.party}{self.route.template} {self.name}"


_PART_RE: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _PART_RE.findall(path)]


def put(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with ``value`` at ``path`` (``holdings[0].lots[0].quantity``)."""
    out = json.loads(json.dumps(body))
    parts = _parts(path)
    node: Any = out
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return out


def _raw(body: dict[str, Any], path: str, literal: str) -> bytes:
    """``body`` as JSON with the bare ``literal`` (``NaN``, ``1e309``…) at ``path``."""
    marker = "__literal__"
    return json.dumps(put(body, path, marker)).replace(f'"{marker}"', literal).encode()


def _decimals(scale: int) -> str:
    return "1." + "0" * (18 if scale == PRICE else scale) + "1"


def _amount_cases(route: Route, path: str, scale: int) -> Iterator[Case]:
    body = route.body
    assert body is not None
    for name, value in [
        ("zero", "0"), ("zero with decimals", "0.00"), ("negative", "-5.00"), ("minus zero", "-0"),
        ("more decimals than the scale", _decimals(scale)), ("NaN as text", "NaN"),
        ("Infinity as text", "Infinity"), ("1e309 as text", "1e309"), ("2^63 as text", str(2**63)),
        ("2^128 as text", str(2**128)), ("thousands separator", "1,000"), ("Arabic-Indic digits", "١٠"),
        ("full-width digits", "１０"), ("leading plus", "+10"), ("spaces", " 10"), ("exponent", "1e3"),
        ("empty", ""), ("null", None),
    ]:
        if value is None and path in route.optional:
            continue
        yield Case(route, f"{path}: {name}", put(body, path, value), 422, path)
    for name, literal, status in [
        ("NaN literal", "NaN", 400), ("Infinity literal", "Infinity", 400), ("-Infinity literal", "-Infinity", 400),
        ("1e309 literal", "1e309", 400), ("2^63 as a number", str(2**63), 422),
        ("2^128 as a number", str(2**128), 422), ("a float", "10.5", 422),
    ]:
        yield Case(route, f"{path}: {name}", _raw(body, path, literal), status, "body" if status == 400 else path,
                   reason="number" if status == 400 else "")


def _integer_cases(route: Route, path: str) -> Iterator[Case]:
    body = route.body
    assert body is not None
    for name, literal, status in [
        ("2^63", str(2**63), 422), ("2^128", str(2**128), 422), ("a float", "1.5", 422), ("text", '"10"', 422),
        ("NaN literal", "NaN", 400), ("1e309 literal", "1e309", 400),
    ]:
        yield Case(route, f"{path}: {name}", _raw(body, path, literal), status, "body" if status == 400 else path,
                   reason="number" if status == 400 else "")


def _first_text_field(body: dict[str, Any]) -> str:
    return next(k for k, v in body.items() if isinstance(v, str) and v)


def _plus(raw: bytes, member: bytes) -> bytes:
    """The JSON object ``raw`` with one more ``"key": value`` member (bytes, as they are)."""
    return b"{" + member + b"}" if raw == b"{}" else raw[:-1] + b", " + member + b"}"


def _shape_cases(route: Route) -> Iterator[Case]:
    body = route.body
    assert body is not None
    raw = json.dumps(body).encode()
    yield Case(route, "extra field", {**body, "colour": "red"}, 422, "colour")
    yield Case(route, "not an object", [body], 422, "body")
    yield Case(route, "empty body", b"", 400, "body")
    yield Case(route, "truncated JSON", raw[:-1], 400, "body")
    yield Case(route, "wrong content type", raw, 415, "Content-Type", headers={"content-type": "text/plain"})
    yield Case(route, "form content type", b"a=1", 415, "Content-Type",
               headers={"content-type": "application/x-www-form-urlencoded"})
    yield Case(route, "JSON in Latin-1", raw, 415, "Content-Type",
               headers={"content-type": "application/json; charset=latin-1"})
    yield Case(route, "invalid UTF-8", _plus(raw, b'"x": "\xff\xfe"'), 400, "body", reason="UTF-8")
    yield Case(route, "NUL byte", _plus(raw, b'"x": "a\x00b"'), 400, "body", reason="control character")
    yield Case(route, "NUL byte after the JSON", raw + b"\x00", 400, "body", reason="extra data")
    yield Case(route, "duplicate keys", _plus(raw, b'"x": 1, "x": 2'), 400, "body", reason="duplicate key")
    yield Case(route, "JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, 413, "body")
    yield Case(route, "JSON nested 1,000 deep", _plus(raw, b'"x": ' + b"[" * 1000 + b"]" * 1000), 400, "body",
               reason="nested")
    yield Case(route, "body over the limit", json.dumps({**body, "pad": "x" * 70_000}).encode(), 413, "body")
    yield Case(route, "body over the limit, chunked", json.dumps({**body, "pad": "x" * 70_000}).encode(), 413,
               "body", chunked=True)
    if body:
        first = next(iter(body))
        yield Case(route, "duplicate key of a field", b'{"' + first.encode() + b'": null, ' + raw[1:], 400, "body",
                   reason="duplicate key")
        text_field = _first_text_field(body) if any(isinstance(v, str) and v for v in body.values()) else ""
        if text_field:
            yield Case(route, f"{text_field}: NUL escaped", put(body, text_field, "a\u0000b"), 422, text_field)
            yield Case(route, f"{text_field}: lone surrogate", _raw(body, text_field, '"\\ud800"'), 422, text_field)
            yield Case(route, f"{text_field}: 129 characters", put(body, text_field, "x" * 129), 422, text_field)
            yield Case(route, f"{text_field}: a number", put(body, text_field, 7), 422, text_field)
        number_at = next(iter(route.amounts), first)
        for literal in ("NaN", "Infinity", "1e309"):
            if number_at not in route.amounts:  # amount fields have these already
                yield Case(route, f"{number_at}: {literal} literal", _raw(body, number_at, literal), 400, "body",
                           reason="number")


def _key_cases(route: Route) -> Iterator[Case]:
    body = route.body
    yield Case(route, "missing key", body, 400, IDEM, key=None)
    yield Case(route, "empty key", body, 400, IDEM, key=None, headers={IDEM: ""})
    yield Case(route, "key of 129 characters", body, 400, IDEM, key=None, headers={IDEM: "k" * 129})
    yield Case(route, "non-ASCII key", body, 400, IDEM, key=None, headers={IDEM: "ключ".encode()})
    yield Case(route, "key with a space", body, 400, IDEM, key=None, headers={IDEM: "a key"})
    yield Case(route, "key with a control character", body, 400, IDEM, key=None, headers={IDEM: "a\tb"})
    yield Case(route, "replay with another body", body, 422, IDEM, key=REPLAY)


def _path_cases(route: Route) -> Iterator[Case]:
    if not route.path_param:
        return
    if route.path_param == "receiver":
        head, tail = route.path.rsplit("/", 1)[0], ""
    else:
        head, tail = route.path.rsplit("/", 2)[0], "/" + route.path.rsplit("/", 1)[1]
    for name, bad in [("with a space", "bad%20id"), ("of 129 characters", "x" * 129), ("non-ASCII", "%D0%BA")]:
        yield Case(route, f"{route.path_param} in the path {name}", route.body, 422, route.path_param,
                   path=f"{head}/{bad}{tail}")


# How a case's caller signs (issue 15, F2): "signed" as a role the route admits (signing.RoleAuth),
# or one of the hostile callers below; each is refused before anything changes.
AUTH_MODES: Final = ("signed", "unsigned", "wrong role", "forged body", "replayed", "stale", "other host",
                     "unknown principal")


def _auth_cases(route: Route) -> Iterator[Case]:
    body = route.body
    yield Case(route, "unsigned", body, 401, "Authorization", auth="unsigned")
    yield Case(route, "signed by a role the route does not admit", body, 403, "Authorization", auth="wrong role")
    yield Case(route, "signed, then the body changed", body, 401, "Authorization", auth="forged body")
    yield Case(route, "a signature sent twice", {**(body or {}), "colour": "red"}, 401, "Authorization",
               auth="replayed")
    yield Case(route, "a signature an hour old", body, 401, "Authorization", auth="stale")
    yield Case(route, "signed by an unknown principal", body, 401, "Authorization", auth="unknown principal")
    yield Case(route, "another Host name", body, 400, "Host", auth="other host")


def cases_of(route: Route) -> list[Case]:
    if route.body is None:
        return []
    out = [*_shape_cases(route), *_path_cases(route), *_auth_cases(route)]
    for path, scale in route.amounts.items():
        out += _amount_cases(route, path, scale)
    for path in route.integers:
        out += _integer_cases(route, path)
    for change in route.changes:
        body = route.body
        for at, value in change.set.items():
            body = put(body, at, value)
        out.append(Case(route, change.name, body, change.status, change.field, path=change.path))
    if route.keyed:
        out += _key_cases(route)
    return out


CATALOGUE: Final = [case for route in ROUTES for case in cases_of(route)]

# Cases that fail today because of a bug in a party module (services/api/parties/*.py, durable.py);
# each reason names the fix. strict: the day a fix lands, its xfails fail and the entries must go.
KNOWN: Final[dict[str, str]] = {
}


def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[c.id])] if c.id in KNOWN
                         else []) for c in CATALOGUE]


# -- the parties, their rows, and what they were asked ------------------------------------------


class Recorder(httpx.AsyncBaseTransport):
    """Wraps one party's transport in the router: every POST it answers, with its key and status."""

    def __init__(self, inner: httpx.AsyncBaseTransport, party: str, log: list[tuple[str, str, str, int]]) -> None:
        self.inner, self.party, self.log = inner, party, log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.log.append((self.party, request.url.path, request.headers.get(IDEM, ""), response.status_code))
        return response


class Rows:
    """Every table of every party's database: its row count and a hash of its rows."""

    def __init__(self, live: Live) -> None:
        self.prefix = live.prefix
        self._columns: dict[tuple[int, str], str] = {}
        self._tables: dict[str, list[str]] = {}
        if live.pg:
            self.engines = {"postgres": create_engine(live.pg, pool_size=1)}
        else:
            files = sorted((live.tmp_path / "data").glob("*.db"))
            assert {f.stem for f in files} >= {"exchange", "issuer", "network", "bank"}, files
            self.engines = {f.stem: create_engine(f"sqlite:///{f}") for f in files}

    def snapshot(self) -> dict[str, tuple[int, str]]:
        """One query per database: each table's count and a hash of its rows, and the number of
        tables (a table created since the last snapshot is read again at once)."""
        out: dict[str, tuple[int, str]] = {}
        for name, engine in self.engines.items():
            with engine.connect() as conn:
                while True:
                    tables = self._tables.get(name) or self._list(name, conn)
                    rows = conn.execute(text(self._query(name, conn, tables))).all()
                    if int(rows[-1][1]) == len(tables):
                        break
                    self._tables[name] = self._list(name, conn)
                for table, count, content in rows[:-1]:
                    short = table.removeprefix(self.prefix) if name == "postgres" else table
                    out[f"{name}:{short}"] = (int(count), hashlib.sha256(str(content).encode()).hexdigest()[:16])
        return out

    def _list(self, name: str, conn: Any) -> list[str]:
        if name == "postgres":
            found = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                      "AND starts_with(tablename, :p) ORDER BY tablename"), {"p": self.prefix})
        else:
            found = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
        self._tables[name] = [r[0] for r in found]
        return self._tables[name]

    def _query(self, name: str, conn: Any, tables: list[str]) -> str:
        if name == "postgres":  # PostgreSQL renders and hashes each table's rows itself
            parts = [f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                     f'FROM "{t}" AS x' for t in tables]
            parts.append(f"SELECT '#', count(*), '' FROM pg_tables WHERE schemaname = current_schema() "
                         f"AND starts_with(tablename, '{self.prefix}')")
        else:
            parts = [f"SELECT '{t}', (SELECT count(*) FROM \"{t}\"), (SELECT group_concat(r, '|') FROM "
                     f"(SELECT {self._row_text(conn, t)} AS r FROM \"{t}\" ORDER BY r))" for t in tables]
            parts.append("SELECT '#', count(*), '' FROM sqlite_master WHERE type = 'table'")
        return " UNION ALL ".join(parts)

    def _row_text(self, conn: Any, table: str) -> str:
        """A SQLite expression: one row of ``table`` as text (``quote()`` of every column)."""
        if (id(conn.engine), table) not in self._columns:
            names = [r[1] for r in conn.execute(text(f'PRAGMA table_info("{table}")'))]
            self._columns[id(conn.engine), table] = " || ',' || ".join(f'quote("{c}")' for c in names)
        return self._columns[id(conn.engine), table]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


@dataclass
class World:
    live: Live
    rows: Rows
    log: list[tuple[str, str, str, int]]
    used: dict[tuple[str, str], str]  # (party, route template) → a key it answered 2xx for
    last: dict[str, tuple[int, str]]
    sale_net: str
    tally: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    fresh: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))


def _template_of(party: str, path: str) -> str:
    for route in ROUTES:
        if route.party == party and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", route.template), path):
            return route.template
    return path


async def _history(live: Live) -> None:
    """A short real day that leaves a held, a captured and a reversed payment, a refund, an advice, a JIT
    sale, a wallet, a deposit and a settled window: the refusals meet real rows, and each keyed route
    but the exchange's inbox has answered 2xx for a key (there, the replay case sends a key the
    exchange answered on another route: another request all the same)."""
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("http://network/v1/payments", pay_body("p-seed", card="c2"), 200),
        ("http://network/v1/payments", pay_body("p-jit", card="c1", merchant="m2", amount="3000.00"), 200),
        ("http://network/v1/payments", pay_body("p-held", card="c2", amount="2000.00"), 200),
        ("http://network/v1/payments", pay_body("p-rev", card="c2", amount="100.00"), 200),
        ("http://network/v1/payments/p-rev/reverse", {}, 200),
        ("http://network/v1/presentments", {"kind": "capture", "auth_id": "p-seed", "amount": "5000.00"}, 201),
        ("http://network/v1/presentments", {"kind": "refund", "auth_id": "p-seed", "amount": "500.00"}, 201),
        ("http://issuer/v1/advices", {"request": {**_AUTH, "auth_id": "a-advice", "amount": "300.00"},
                                      "response": {"code": "00"}}, 200),
        ("http://exchange/v1/wallets", {"holder_id": "h-seed", "residency": "non_resident", "holdings": [
            {"asset": "ETH", "lots": [{"quantity": "1.5", "price_kzt": "1500000"}]}]}, 201),
        ("http://exchange/v1/deposits", {"id": "d-seed", "holder_id": "h-seed", "asset": "ETH", "quantity": "0.5",
                                         "price_kzt": "1550000"}, 201),
        ("http://network/v1/settlements", {"window_id": "w-seed"}, 201),
    ]
    for i, (url, body, status) in enumerate(steps):
        r = await live.post(url, body, f"history-{i}")
        assert r.status_code == status, (url, r.text)


@pytest.fixture(scope="module", autouse=True)
def _service_logging() -> Iterator[None]:
    """Log as the services do when not on a terminal (JSON lines, tracebacks without locals), the
    cheaper rendering for over two thousand requests. Put back afterwards."""
    saved = structlog.get_config()
    configure_logging(json=True)
    yield
    structlog.configure(**saved)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=SQL_BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    # The catalogue sends every case of a route at once; the operator's limit on holds/expire would
    # answer some of them 429 instead of checking them. The limits have their own cases (below).
    live = Live(request.param, tmp_path_factory.mktemp(f"catalogue-{request.param}"), make_seed(),
                rate_limits={"operations": RateLimit(per_s=0, burst=1)})
    log: list[tuple[str, str, str, int]] = []
    for party, transport in list(live.router.apps.items()):
        live.router.apps[party] = Recorder(transport, party, log)
    rows = Rows(live)
    try:
        await _history(live)
        used: dict[tuple[str, str], str] = {}
        for party, path, key, status in log:
            if key and 200 <= status < 300:
                used.setdefault((party, _template_of(party, path)), key)
                used.setdefault((party, "*"), key)
        sale = await live.client.get("http://exchange/v1/sells/p-jit:sale")
        assert sale.status_code == 200, sale.text
        world = World(live, rows, log, used, rows.snapshot(), sale.json()["net"])
        yield world
        _write_artifact(request.param, world)
    finally:
        rows.close()
        await live.close()


def _write_artifact(backend: str, world: World) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    t = world.tally
    report = {
        "database": backend, "routes": len(ROUTES), "cases_total": len(CATALOGUE), "cases": t["cases"],
        "complete": t["cases"] == len(CATALOGUE), "answered_4xx": t["4xx"], "5xx": t["5xx"], "2xx_or_3xx": t["other"],
        "row_changes": t["row_changes"], "accepted_downstream": t["downstream"],
        "5xx_outside_known_bugs": t["5xx_not_known"], "row_changes_outside_known_bugs": t["row_changes_not_known"],
        "problem_body_missing": t["not_problem"], "field_not_named": t["field_missing"],
        "wrong_status": t["wrong_status"], "known_bugs": sorted(KNOWN),
        "statuses": {str(k): v for k, v in sorted(world.statuses.items())},
        "failures": world.failures,
    }
    (ARTIFACTS / f"catalogue_{backend}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"\ncatalogue on {backend}: {t['cases']} cases over {len(ROUTES)} routes, {t['5xx']} × 5xx and "
          f"{t['row_changes']} with rows changed ({len(KNOWN)} known bugs, xfail; outside them "
          f"{t['5xx_not_known']} × 5xx, {t['row_changes_not_known']} row changes) -> "
          f"{ARTIFACTS / f'catalogue_{backend}.json'}")


# -- the tests -----------------------------------------------------------------------------------


async def _send(world: World, case: Case) -> httpx.Response:
    route = case.route
    url = f"http://{route.party}{case.path or route.path}"
    headers: dict[str, Any] = dict(case.headers)
    if case.key is FRESH and route.keyed:
        headers[IDEM] = f"catalogue-{next(world.fresh)}"
    elif case.key is REPLAY:
        used = world.used.get((route.party, route.template)) or world.used[(route.party, "*")]
        headers[IDEM] = used
    client = world.live.client
    body = _resolve(case.body, world.sale_net)
    if case.auth != "signed":
        return await _send_hostile(world, case, url, body, headers)
    if isinstance(body, bytes):
        headers.setdefault("content-type", "application/json")
        if case.chunked:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(body), 8192):
                    yield body[i:i + 8192]

            return await client.post(url, content=chunks(), headers=headers)
        return await client.post(url, content=body, headers=headers)
    return await client.post(url, json=body, headers=headers)


_WRONG_ROLE: Final = ("market", "pos")  # a role the route does not admit: the first of these that is not


async def _send_hostile(world: World, case: Case, url: str, body: Any, headers: dict[str, Any]) -> httpx.Response:
    """A case whose caller does not prove who it is, or proves it wrongly (:data:`AUTH_MODES`)."""
    client = world.live.client
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **headers}
    if case.auth == "unsigned":
        return await client.post(url, content=raw, headers=headers, auth=None)
    target = httpx.URL(url)
    credentials = session_credentials()
    name = principal_for(credentials, "POST", target.path, raw).name
    if case.auth == "wrong role":
        rule = roles_for("POST", target.path)
        name = next(r for r in _WRONG_ROLE if rule is None or r not in rule.roles)
    principal = credentials.principal(name)
    if case.auth == "unknown principal":
        principal = Principal("intruder", "operator", principal.secret)
    key = str(headers.get(IDEM, ""))
    now_s = time.time() - 3600 if case.auth == "stale" else None
    host = "evil.example" if case.auth == "other host" else target.host
    signed = {**headers, "Host": host, **sign_headers(principal, "POST", host, target.raw_path.decode(), raw,
                                                      idempotency_key=key, now_s=now_s)}
    if case.auth == "forged body":
        raw = raw.replace(b"{", b'{"forged": 1, ', 1) if raw.startswith(b"{") else raw + b" "
    if case.auth == "replayed":  # the first send is refused by the route (an extra field) but spends the nonce
        first = await client.post(url, content=raw, headers=signed)
        assert first.status_code == 422, first.text
    return await client.post(url, content=raw, headers=signed)


def _resolve(body: Any, sale_net: str) -> Any:
    """``body`` with :data:`SALE_NET` replaced by the sale's real net."""
    if isinstance(body, bytes):
        return body.replace(SALE_NET.encode(), sale_net.encode())
    if isinstance(body, dict):
        return {k: _resolve(v, sale_net) for k, v in body.items()}
    if isinstance(body, list):
        return [_resolve(v, sale_net) for v in body]
    return sale_net if body == SALE_NET else body


def _problems(case: Case, r: httpx.Response) -> list[str]:
    """What is wrong with the answer (empty: a proper refusal)."""
    out = []
    if not 400 <= r.status_code < 500:
        out.append(f"status {r.status_code}, not 4xx")
    elif case.status is not None and r.status_code != case.status:
        out.append(f"status {r.status_code}, expected {case.status}")
    if r.headers.get("content-type") != PROBLEM_MEDIA_TYPE:
        out.append(f"content type {r.headers.get('content-type')!r}")
        return out
    body = r.json()
    if body.get("status") != r.status_code or not str(body.get("type", "")).startswith("urn:ccsim:problem:"):
        out.append(f"not a ccsim problem: {body}")
    errors = [e for e in body.get("errors", []) if isinstance(e, dict)]
    fields = [e.get("field") for e in errors]
    if case.field not in fields:
        out.append(f"field {case.field!r} not named: {fields} ({body.get('detail')})")
    elif case.reason and not any(case.reason.lower() in str(e.get("reason", "")).lower()
                                 for e in errors if e.get("field") == case.field):
        out.append(f"reason for {case.field!r} does not say {case.reason!r}: {errors}")
    return out


@in_world_loop
@pytest.mark.parametrize("case", _params())
async def test_bad_input_is_a_4xx_problem_and_changes_no_row(world: World, case: Case) -> None:
    before = world.last
    logged = len(world.log)
    response = await _send(world, case)
    after = world.rows.snapshot()
    world.last = after
    changed = sorted(t for t in after.keys() | before.keys() if after.get(t) != before.get(t))
    accepted = [x for x in world.log[logged:] if 200 <= x[3] < 300]
    problems = _problems(case, response)
    t = world.tally
    t["cases"] += 1
    world.statuses[response.status_code] += 1
    t["4xx" if 400 <= response.status_code < 500 else "5xx" if response.status_code >= 500 else "other"] += 1
    t["row_changes"] += bool(changed)
    t["downstream"] += bool(accepted)
    if case.id not in KNOWN:
        t["5xx_not_known"] += response.status_code >= 500
        t["row_changes_not_known"] += bool(changed)
    t["not_problem"] += response.headers.get("content-type") != PROBLEM_MEDIA_TYPE
    t["field_missing"] += any(p.startswith("field") for p in problems)
    t["wrong_status"] += any(p.startswith("status") for p in problems)
    if changed:
        problems.append(f"rows changed in {changed}")
    if accepted:
        problems.append(f"POSTs answered 2xx while it ran: {accepted}")
    if problems:
        world.failures.append(f"{case.id}: {'; '.join(problems)}")
    assert not problems, f"{case.id}: {response.status_code} {response.text[:400]}\n" + "\n".join(problems)


def _schema_fields(spec: dict[str, Any], schema: dict[str, Any], at: str = "",
                   nullable: bool = False) -> Iterator[tuple[str, str]]:
    """(JSON path, kind) of every decimal-string and integer field under ``schema``; the kind is
    ``amount``, ``integer``, or ``amount or null`` for an amount that may be null."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    options = schema.get("anyOf", [])
    for option in options:
        if option.get("type") != "null":
            yield from _schema_fields(spec, option, at, any(o.get("type") == "null" for o in options))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            yield from _schema_fields(spec, sub, f"{at}.{name}" if at else name)
    elif kind == "array":
        yield from _schema_fields(spec, schema.get("items", {}), f"{at}[0]")
    elif kind == "integer":
        yield at, "integer"
    elif kind == "string" and re.match(r"^\^-?\[0-9\]", schema.get("pattern", "")) and "\\." in schema["pattern"]:
        yield at, "amount or null" if nullable else "amount"


@in_world_loop
async def test_every_post_route_is_in_the_catalogue(world: World) -> None:
    """A POST route the catalogue does not cover fails here; so does a route whose amount or
    integer fields are not the ones the catalogue varies, or a key it does not check."""
    by_label = {(r.party, r.template): r for r in ROUTES}
    seen: set[tuple[str, str]] = set()
    for party, app in world.live.apps.items():
        spec = app.openapi()
        for path, item in spec["paths"].items():
            op = item.get("post")
            if op is None:
                continue
            seen.add((party, path))
            params = {p["name"] for p in op.get("parameters", [])}
            body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if (party, path) in NO_INPUT:
                assert not params and body_schema is None, f"{party} POST {path} takes input now: catalogue it"
                continue
            route = by_label.get((party, path))
            assert route is not None, f"{party} POST {path} is not in the bad-input catalogue"
            assert route.keyed == (IDEM in params), f"{route.label}: Idempotency-Key taken: {IDEM in params}"
            assert body_schema is not None and route.body is not None
            fields = list(_schema_fields(spec, body_schema))
            assert {p for p, k in fields if k.startswith("amount")} == set(route.amounts), (route.label, fields)
            assert set(route.optional) <= {p for p, k in fields if k == "amount or null"}, (route.label, fields)
            assert {p for p, k in fields if k == "integer"} == set(route.integers), (route.label, fields)
            assert {p for p in params if p != IDEM} == ({route.path_param} if route.path_param else set())
    missing = set(by_label) | NO_INPUT
    assert missing <= seen, f"catalogued routes that no longer exist: {sorted(missing - seen)}"


def test_the_catalogue_covers_issue_8() -> None:
    """Every kind of bad input issue 8 lists is in the catalogue, for every route it applies to."""
    names = [c.id for c in CATALOGUE]
    assert len(names) == len(set(names)), [n for n, k in Counter(names).items() if k > 1]
    for route in ROUTES:
        got = {c.name for c in CATALOGUE if c.route is route}
        wanted = {"wrong content type", "invalid UTF-8", "NUL byte", "JSON nested 100,000 deep", "duplicate keys",
                  "body over the limit"}
        for path in route.amounts:
            wanted |= {f"{path}: {n}" for n in (
                "zero", "negative", "minus zero", "more decimals than the scale", "NaN as text", "Infinity as text",
                "1e309 as text", "NaN literal", "Infinity literal", "1e309 literal", "2^63 as text", "2^128 as text",
                "2^63 as a number", "2^128 as a number", "thousands separator", "Arabic-Indic digits",
                "full-width digits")}
        if route.keyed:
            wanted |= {"missing key", "empty key", "key of 129 characters", "non-ASCII key", "replay with another body"}
        assert wanted <= got, (route.label, sorted(wanted - got))
    assert any("asset" in c.name for c in CATALOGUE) and any("unknown" in c.name for c in CATALOGUE)
    assert set(KNOWN) <= set(names), f"known bugs that are no case: {sorted(set(KNOWN) - set(names))}"
    assert len(CATALOGUE) >= 1000


@in_world_loop
async def test_every_partys_invariants_hold_after_the_catalogue(world: World) -> None:
    """Runs after the cases (pytest keeps a module's tests in order for each backend): whatever was
    refused, and whatever a known bug let through, every party's own books still balance."""
    for party in world.live.apps:
        r = await world.live.client.get(f"http://{party}/v1/ledger/invariants")
        assert r.status_code == 200 and r.json()["ok"], r.text


@in_world_loop
async def test_an_undeclared_method_is_a_405_naming_every_method_of_the_path(world: World) -> None:
    """DELETE on each catalogued path: a 405 problem whose ``Allow`` lists every method the path
    serves (``/v1/prices`` takes GET and POST: two routes, one path), and no row changed."""
    before = world.rows.snapshot()
    for route in ROUTES:
        r = await world.live.client.delete(f"http://{route.party}{route.path}")
        assert r.status_code == 405 and r.headers["content-type"] == PROBLEM_MEDIA_TYPE, (route.label, r.text)
        assert "POST" in r.headers["allow"].split(", "), (route.label, r.headers["allow"])
    r = await world.live.client.put("http://exchange/v1/prices", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert world.rows.snapshot() == before
    world.last = before


def test_the_party_amount_bound_is_exact() -> None:
    """Below 10^15 whole units is taken, to the last minor unit; 10^15 is refused, naming the field."""
    kzt, eth = AssetRegistry().get("KZT"), AssetRegistry().get("ETH")
    assert amount_in("999999999999999.99", kzt, "amount") == AMOUNT_UNITS_MAX * 100 - 1
    assert amount_in("0.000000000000000001", eth, "quantity") == 1
    for text_, asset in (("1000000000000000", kzt), ("1000000000000000.00", kzt), (str(2**63), kzt)):
        with pytest.raises(ProblemError) as refused:
            amount_in(text_, asset, "amount")
        assert refused.value.status_code == 422 and [e.field for e in refused.value.errors] == ["amount"]
    with pytest.raises(ProblemError):  # the ledger's own bound still holds for 18-decimal assets
        amount_in("999999999999999", eth, "quantity")


# -- rate limits (issue 15) ----------------------------------------------------------------------

# The routes of each party that any caller could spam, with the caller a test plays: a peer address
# for the public ones (no credentials), a principal for the rest (its verified key id).
LIMITED: Final = [
    (party, method, path, limit)
    for party in ("exchange", "issuer", "network", "bank")
    for method, path, limit in (("GET", "/healthz", "health"), ("GET", "/metrics", "metrics"),
                                ("GET", "/openapi.json", "docs"), ("GET", "/v1/ledger/invariants", "checks"),
                                ("GET", "/v1/ledger/halves", "checks"))
] + [("issuer", "POST", "/v1/holds/expire", "operations")]
BURST: Final = 2


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=SQL_BACKENDS)
async def tight_set(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    """The four parties with every limit at a burst of 2 and (for the module's length) no refill;
    one set per database for the module's limit cases (starting a set per case was 44 starts)."""
    limits = {name: RateLimit(per_s=0.0001, burst=BURST) for name in ("health", "metrics", "docs", "checks",
                                                                        "operations")}
    live = Live(request.param, tmp_path_factory.mktemp(f"limits-{request.param}"), make_seed(), rate_limits=limits)
    try:
        yield live
    finally:
        await live.close()


@pytest.fixture
def tight(tight_set: Live) -> Live:
    """The module's set with every caller's buckets full again, as a set just started has them."""
    for app in tight_set.apps.values():
        node: Any = app.middleware_stack  # None until the app's first request: nothing spent yet
        while node is not None:
            if isinstance(node, RateLimitMiddleware):
                for buckets in node.buckets.values():
                    buckets._buckets.clear()
            node = getattr(node, "app", None)
    return tight_set


async def _call(live: Live, party: str, method: str, path: str, *, peer: str = "10.0.0.1",
                principal: str = "") -> httpx.Response:
    """A request from ``peer``, signed by ``principal`` (or by the role the route admits) unless public."""
    transport = httpx.ASGITransport(app=live.apps[party], client=(peer, 40000))
    rule = roles_for(method, path)
    auth: Any = None
    if rule is not None and rule.roles is not PUBLIC:
        auth = RoleAuth() if not principal else _As(principal)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{party}", auth=auth) as client:
        return await client.request(method, path, json={} if method == "POST" else None)


class _As(httpx.Auth):
    def __init__(self, name: str) -> None:
        self.principal = session_credentials().principal(name)

    def auth_flow(self, request: httpx.Request) -> Any:
        sign_request(request, self.principal)
        yield request


@in_world_loop
@pytest.mark.parametrize(("party", "method", "path", "limit"), LIMITED, ids=[f"{p}{m} {x}" for p, m, x, _ in LIMITED])
async def test_a_caller_past_its_limit_is_a_429_naming_the_limit_and_changes_no_row(
        tight: Live, party: str, method: str, path: str, limit: str) -> None:
    rows = Rows(tight)
    try:
        for _ in range(BURST):
            assert (await _call(tight, party, method, path)).status_code == 200
        before = rows.snapshot()
        r = await _call(tight, party, method, path)
        assert rows.snapshot() == before  # refused before the route ran
    finally:
        rows.close()
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE and int(r.headers["retry-after"]) >= 1
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["rate_limit"] and errors[0]["reason"].startswith(f"{limit}:"), errors
    # Another caller has a bucket of its own: another address for a public route, another principal
    # for the checks (holds/expire admits the operator only).
    if limit in ("health", "metrics", "docs"):
        assert (await _call(tight, party, method, path, peer="10.0.0.2")).status_code == 200
    elif limit == "checks":
        assert (await _call(tight, party, method, path, principal="gateway")).status_code == 200


@in_world_loop
async def test_the_chains_own_traffic_is_not_limited(tight: Live) -> None:
    """With every limit spent, payments, their messages and sales go on: none of them is limited."""
    for _ in range(BURST + 1):
        await _call(tight, "network", "GET", "/healthz", peer="127.0.0.1")
    for i in range(3 * BURST):
        paid = await tight.post("http://network/v1/payments", pay_body(f"p-rl-{i}", card="c2", amount="10.00"),
                                f"k-rl-{i}")
        assert paid.status_code == 200 and paid.json()["approved"], paid.text
