"""Generate docs/api-reference.md from the OpenAPI documents of every live service.

    python -m sim.live.api_reference > docs/api-reference.md     (or: make api-reference)

The page is written from the apps themselves, so it cannot drift: tests/test_docs_api_reference.py
regenerates it and fails when the page and the apps differ. Each app is built on a throwaway
SQLite directory; nothing is served and no request is made.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.api import ApiSettings, create_ledger_app
from services.api.auth import create_credentials
from services.api.parties import (
    PartySettings,
    create_bank_app,
    create_exchange_app,
    create_issuer_app,
    create_network_app,
)
from services.logging import configure_logging
from sim.live.gateway import create_gateway_app

__all__ = ["main", "render"]

_HEADER = """# API reference

Generated from the services' OpenAPI documents by `python -m sim.live.api_reference`
(`make api-reference`); a test fails when this page and the code differ. Conventions that hold for
every endpoint — amounts as decimal strings with the asset's scale, `Idempotency-Key` on every POST
that moves money, errors as `application/problem+json` naming the field — are explained in
[API conventions](api.md); how the services fit together is in [Live mode](live-mode.md). Every
party route but `/healthz`, `/metrics` and the OpenAPI document takes a signed request from a
role the route admits (401, 403 otherwise): see the [threat model](threat-model.md).

Each service also serves its own interactive schema at `/docs` and the raw document at
`/openapi.json`.
"""

_METHODS = ("get", "post", "put", "patch", "delete")


def _apps(data_dir: Path) -> Iterator[tuple[str, str, FastAPI]]:
    credentials = data_dir / "credentials.json"
    create_credentials(credentials)  # a party does not start without its keys; these are thrown away

    def party(name: str, factory: Callable[[PartySettings], FastAPI]) -> FastAPI:
        return factory(PartySettings(party=name, data_dir=data_dir, credentials_file=credentials,
                                     database_url=f"sqlite:///{data_dir / name}.db"))

    yield "Network and acquirer", "the POS-facing front: payments, presentments, settlement windows", \
        party("network", create_network_app)
    yield "Issuer", "cards, authorizations, clearing, advices", party("issuer", create_issuer_app)
    yield "Exchange", "custodial wallets, prices, quotes and sells", party("exchange", create_exchange_app)
    yield "Bank", "interbank payment messages and accounts", party("bank", create_bank_app)
    yield "Ledger service", "a party's ledger over HTTP: accounts, transfers, statements", create_ledger_app(
        ApiSettings(party="ledger", data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'ledger'}.db"))
    yield "Gateway", "dashboard, simulation runs, cross-party integrity", create_gateway_app(
        ApiSettings(party="gateway", data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'gateway'}.db"))


def _schema_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return _schema_name(prop["$ref"])
    if "anyOf" in prop:
        return " or ".join(_type_of(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_type_of(prop.get('items', {}))}"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    return str(prop.get("type", "any"))


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _body_fields(doc: dict[str, Any], ref: str) -> list[str]:
    schema = doc.get("components", {}).get("schemas", {}).get(_schema_name(ref), {})
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        need = "yes" if name in required else "no"
        rows.append(f"| `{name}` | {_cell(_type_of(prop))} | {need} | {_cell(prop.get('description', ''))} |")
    return rows


def _operation(doc: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> list[str]:
    out = [f"### `{method.upper()} {path}`", ""]
    summary = op.get("description") or op.get("summary") or ""
    if summary:
        out += [" ".join(summary.split()), ""]
    headers = [p for p in op.get("parameters", ()) if p.get("in") == "header"]
    for h in headers:
        need = "required" if h.get("required") else "optional"
        out.append(f"- header `{h['name']}` ({need})")
    for p in op.get("parameters", ()):
        if p.get("in") in ("path", "query"):
            out.append(f"- {p['in']} `{p['name']}`: {_cell(_type_of(p.get('schema', {})))}")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    statuses = ", ".join(sorted(op.get("responses", {})))
    out.append(f"- answers: {statuses}")
    if "$ref" in body:
        out += ["", f"Body `{_schema_name(body['$ref'])}`:", "",
                "| field | type | required | meaning |", "|---|---|---|---|", *_body_fields(doc, body["$ref"])]
    out.append("")
    return out


def render() -> str:
    """The whole page, as Markdown."""
    lines = [_HEADER]
    with tempfile.TemporaryDirectory(prefix="ccsim-api-ref-") as tmp:
        for title, what, app in _apps(Path(tmp)):
            doc = app.openapi()
            lines += [f"## {title}", "", f"{what[0].upper()}{what[1:]}.", ""]
            for path, item in sorted(doc.get("paths", {}).items()):
                for method in _METHODS:
                    if method in item:
                        lines += _operation(doc, method, path, item[method])
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    configure_logging(level="warning")  # the page goes to stdout; log lines, if any, to stderr
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
